"""`hotload diff` against a staging directory: the loaded record and packages/ as a loader writes them
(docs/protocol.md), read over the local transport and over the loopback sshd; every way the kept .mcz
can be missing or wrong is one line for that package and exit 0, never a traceback."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from cli_runner import run_in_process
from conftest import run_hotload
from fake_loader import FakeLoader
from helpers import class_def, example_versions, make_package, method
from hotload.staging import protocol
from hotload.staging.diff import compare_with_target
from hotload.staging.loaded import TargetPackages
from hotload.formats.mcz import read_mcz
from hotload.formats.pack import Packer
from hotload.staging.protocol import render_record
from hotload.staging.transports import LocalTransport
from test_tonel import class_file, tonel_method, write_package

BATCH = "20261122T203700Z-3fa9c1"


def stage(staging: Path, *packages: Path, record=True, keep=True) -> Path:
    """What a loader leaves after loading packages: the loaded record and packages/<file>."""
    staging.mkdir(parents=True, exist_ok=True)
    rows = [("image", "/srv/app/app.im")]
    for path in packages:
        package = read_mcz(path)
        data = path.read_bytes()
        rows.append(("package", package.name, package.version.name, path.name, len(data),
                     hashlib.sha256(data).hexdigest(), BATCH, 1795379820, "2026-11-22T20:37:00Z"))
        if keep:
            (staging / protocol.PACKAGES).mkdir(exist_ok=True)
            shutil.copy(path, staging / protocol.PACKAGES / path.name)
    if record:
        (staging / protocol.LOADED).write_text(render_record(protocol.LOADED, sorted(rows, key=lambda r: r[:2])))
    return staging


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    return example_versions(tmp_path_factory.mktemp("dist"))


def diff_json(*args):
    result = run_in_process("diff", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_example_app_v1_loaded_and_v2_given(tmp_path, versions):
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1)
    result = run_in_process("diff", v2, "--to", staging)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("Counter-App Counter-App-demo.1 (loaded) -> Counter-App-demo.2: "
                        "1 class changed, 1 method added, 1 method removed, 1 method changed")
    assert "  - HLCounter>>legacyBanner  (rendering)" in lines
    assert "  + HLCounter>>reset  (actions)" in lines
    assert "  ~ HLCounter>>renderContentOn:  (rendering)" in lines
    assert "      +    html heading: 'Counter v2'." in lines  # the source's tab shown as 4 spaces
    data = diff_json(v2, "--to", staging)
    assert data["target"] == str(staging)
    [package] = data["packages"]
    assert (package["status"], package["loaded_version"], package["new_version"]) == \
        ("changed", "Counter-App-demo.1", "Counter-App-demo.2")
    assert {(m["selector"], m["change"]) for m in package["methods"]} == \
        {("legacyBanner", "removed"), ("reset", "added"), ("renderContentOn:", "changed")}
    assert package["classes"] == [{"class": "HLCounter", "change": "changed", "fields": [{
        "field": "comment",
        "old": "hotload example: a Seaside counter (version 1). Registered at /seaside/counter.",
        "new": "hotload example: a Seaside counter (version 2). Registered at /seaside/counter."}]}]


def test_against_what_the_fake_loader_kept_after_a_push(tmp_path, versions):
    v1, v2 = versions
    staging = tmp_path / "staging"
    loader = FakeLoader(staging).start()
    try:
        pushed = run_in_process("push", v1, "--to", staging, "--wait")
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    finally:
        loader.stop()
    assert loader.errors == []
    [package] = diff_json(v2, "--to", staging)["packages"]
    assert (package["status"], package["loaded_version"]) == ("changed", "Counter-App-demo.1")
    assert {(m["selector"], m["change"]) for m in package["methods"]} == \
        {("legacyBanner", "removed"), ("reset", "added"), ("renderContentOn:", "changed")}
    assert diff_json(v1, "--to", staging)["packages"][0]["status"] == "unchanged"


def test_the_loaded_version_itself_is_the_same_and_a_package_not_loaded_is_all_added(tmp_path, versions):
    v1, _ = versions
    staging = stage(tmp_path / "staging", v1)
    other = make_package(tmp_path / "dist", "Shop-Core", class_def("ShopItem", category="Shop-Core")
                         + method("ShopItem", "price\n\t^ 1"))
    data = diff_json(v1, other, "--to", staging)
    assert [(p["package"], p["status"]) for p in data["packages"]] == [("Counter-App", "unchanged"), ("Shop-Core", "new")]
    assert data["packages"][1]["summary"]["classes_added"] == 1 and data["packages"][1]["summary"]["methods_added"] == 1
    text = run_in_process("diff", v1, other, "--to", staging).stdout
    assert "Counter-App Counter-App-demo.1: same as loaded (Counter-App-demo.1)" in text
    assert "Shop-Core Shop-Core-tester.1: not loaded; 1 class added, 1 method added" in text


def test_a_tonel_folder_is_packed_on_the_fly_and_compared(tmp_path, versions):
    staging = tmp_path / "staging"
    loaded = make_package(tmp_path / "dist", "Shop-Core", class_def("ShopItem", category="Shop-Core", ivars="price")
                          + method("ShopItem", "price\n\t^ price", "accessing"))
    stage(staging, loaded)
    folder = write_package(tmp_path / "src" / "Shop-Core", {"ShopItem.class.st": class_file(
        "ShopItem", "\n\t#instVars : [ 'price', 'name' ],", package="Shop-Core",
        methods=tonel_method("ShopItem >> price", "\t^ price ifNil: [ 0 ]", "accessing"))})
    [package] = diff_json(folder, "--to", staging)["packages"]
    assert package["status"] == "changed"
    assert package["classes"][0]["fields"] == [{"field": "instance_variables", "old": ["price"], "new": ["price", "name"]}]
    [changed] = package["methods"]
    assert changed["selector"] == "price" and "+\t^ price ifNil: [ 0 ]" in changed["source_diff"]


def rewrite_record(staging: Path, data: bytes = None, size: int = None):
    """The package line's size and SHA-256 set to those of data (or only the size set)."""
    lines = (staging / protocol.LOADED).read_text().split("\n")
    for index, line in enumerate(lines):
        fields = line.split("\t")
        if fields[0] == "package":
            fields[4] = str(len(data) if data is not None else size)
            if data is not None:
                fields[5] = hashlib.sha256(data).hexdigest()
            lines[index] = "\t".join(fields)
    (staging / protocol.LOADED).write_text("\n".join(lines))


def test_a_folder_is_packed_on_top_of_the_loaded_version_as_push_packs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTLOAD_AUTHOR", "jd")
    folder = write_package(tmp_path / "src" / "Shop-Core", {"ShopItem.class.st": class_file(
        "ShopItem", package="Shop-Core", methods=tonel_method("ShopItem >> price", "\t^ 1", "accessing"))})
    [loaded] = Packer(author="jd").pack_folder(folder, tmp_path / "dist")
    staging = stage(tmp_path / "staging", loaded.path)
    result = run_in_process("diff", folder, "--to", staging)
    assert result.stdout.strip() == "Shop-Core Shop-Core-jd.1: same as loaded (Shop-Core-jd.1)"
    (folder / "ShopItem.class.st").write_text(class_file(
        "ShopItem", package="Shop-Core", methods=tonel_method("ShopItem >> price", "\t^ 2", "accessing")))
    [package] = diff_json(folder, "--to", staging)["packages"]
    assert (package["loaded_version"], package["new_version"]) == ("Shop-Core-jd.1", "Shop-Core-jd.2")
    assert [(m["selector"], m["change"]) for m in package["methods"]] == [("price", "changed")]


def kept_file(staging: Path, path: Path) -> Path:
    return staging / protocol.PACKAGES / path.name


def _replace_with_link(staging, v1):
    kept_file(staging, v1).unlink()
    kept_file(staging, v1).symlink_to(v1)


def _replace_with_fifo(staging, v1):
    kept_file(staging, v1).unlink()
    os.mkfifo(kept_file(staging, v1))


def _replace_with_folder(staging, v1):
    kept_file(staging, v1).unlink()
    kept_file(staging, v1).mkdir()


def _link_the_folder(staging, v1):
    elsewhere = staging.parent / "elsewhere"
    shutil.move(str(staging / protocol.PACKAGES), str(elsewhere))
    (staging / protocol.PACKAGES).symlink_to(elsewhere)


def _garbage_with_a_matching_record(staging, v1):
    kept_file(staging, v1).write_bytes(b"not a zip at all")
    rewrite_record(staging, b"not a zip at all")


def _another_version_with_a_matching_record(staging, v1):
    v2 = v1.with_name("Counter-App-demo.2.mcz")
    data = v2.read_bytes()
    kept_file(staging, v1).write_bytes(data)
    rewrite_record(staging, data)


@pytest.mark.parametrize("damage, reason", [
    (lambda staging, v1: shutil.rmtree(staging / protocol.PACKAGES), "packages is missing (an older loader?)"),
    (lambda staging, v1: kept_file(staging, v1).unlink(), "packages/Counter-App-demo.1.mcz is missing"),
    (lambda staging, v1: kept_file(staging, v1).write_bytes(v1.read_bytes() + b"x"), "does not match the loaded record"),
    (lambda staging, v1: kept_file(staging, v1).write_bytes(v1.read_bytes()[:-1]), "does not match the size and SHA-256"),
    (lambda staging, v1: kept_file(staging, v1).write_bytes(v1.read_bytes()[:-1] + b"?"), "does not match the size and SHA-256"),
    (_replace_with_link, "is a symbolic link, not a file"),
    (_replace_with_fifo, "is a special file, not a file"),
    (_replace_with_folder, "is a folder, not a file"),
    (_link_the_folder, "packages is a symbolic link, not a folder"),
    (_garbage_with_a_matching_record, "cannot be read (not a zip archive"),
    (_another_version_with_a_matching_record, "holds Counter-App-demo.2, not Counter-App-demo.1"),
], ids=["no-packages-folder", "missing", "longer", "shorter", "other-bytes", "link", "fifo", "folder",
        "linked-folder", "garbage", "other-version"])
def test_a_kept_mcz_that_cannot_be_trusted_is_one_line_and_exit_0(tmp_path, versions, damage, reason):
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1)
    damage(staging, v1)
    result = run_in_process("diff", v2, "--to", staging)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("Counter-App Counter-App-demo.2: the loaded .mcz of Counter-App (Counter-App-demo.1) "
                           "is not kept on the server: ")
    assert reason in line and line.endswith("; diff unavailable")
    [package] = diff_json(v2, "--to", staging)["packages"]
    assert (package["status"], package["loaded_version"]) == ("unavailable", "Counter-App-demo.1")
    assert reason in package["reason"]


@pytest.mark.parametrize("record, reason", [
    (None, "no loaded record at"),
    ("garbage", "the loaded record at"),
    ("hotload-loaded\t3\nend\n", "protocol version 3"),
    ("hotload-loaded\t2\npackage\tCounter-App\n", "truncated"),
], ids=["older-loader", "garbage", "other-version", "truncated"])
def test_no_usable_record_makes_every_diff_unavailable(tmp_path, versions, record, reason):
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1, record=False)
    if record is not None:
        (staging / protocol.LOADED).write_text(record)
    other = make_package(tmp_path / "dist", "Shop-Core", class_def("ShopItem", category="Shop-Core"))
    result = run_in_process("diff", v2, other, "--to", staging)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line]
    assert [line.split(" ", 1)[0] for line in lines] == ["Counter-App", "Shop-Core"]
    for line in lines:
        assert reason in line and line.endswith("; diff unavailable")


def test_a_link_or_fifo_at_loaded_is_never_opened(tmp_path, versions):
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1)
    (staging / protocol.LOADED).unlink()
    os.mkfifo(staging / protocol.LOADED)  # opening it would block
    [package] = diff_json(v2, "--to", staging)["packages"]
    assert package["status"] == "unavailable" and "special file" in package["reason"]
    (staging / protocol.LOADED).unlink()
    (staging / protocol.LOADED).symlink_to(tmp_path / "elsewhere")
    [package] = diff_json(v2, "--to", staging)["packages"]
    assert package["status"] == "unavailable" and "symbolic link" in package["reason"]


def test_no_staging_directory_is_one_line(tmp_path, versions):
    _, v2 = versions
    [package] = diff_json(v2, "--to", tmp_path / "missing")["packages"]
    assert package["status"] == "unavailable" and package["reason"].startswith("there is no staging directory at")


def test_a_file_at_the_staging_path_is_a_target_error(tmp_path, versions):
    _, v2 = versions
    (tmp_path / "file").write_text("x")
    result = run_in_process("diff", v2, "--to", tmp_path / "file")
    assert result.returncode == 5 and "not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_package_is_exit_2_and_bad_arguments_are_usage_errors(tmp_path, versions):
    bad = tmp_path / "Bad-jd.1.mcz"
    bad.write_bytes(b"junk")
    result = run_in_process("diff", bad, "--to", tmp_path)
    assert result.returncode == 2 and "Bad-jd.1.mcz" in result.stderr
    assert run_in_process("diff", versions[1]).returncode == 2  # no --to
    assert run_in_process("diff", "--to", tmp_path).returncode == 2  # no package


def test_an_over_limit_kept_file_is_not_read(tmp_path, versions, monkeypatch):
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1)
    rewrite_record(staging, size=2 * 1024 * 1024)
    monkeypatch.setenv("HOTLOAD_MAX_MCZ_MB", "1")
    [package] = diff_json(v2, "--to", staging)["packages"]
    assert "over the limit of 1,048,576 bytes (max_mcz_bytes); set HOTLOAD_MAX_MCZ_MB" in package["reason"]


def test_the_api_for_other_commands(tmp_path, versions):
    """compare_with_target is what push --dry-run calls."""
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1)
    with LocalTransport(staging) as transport:
        report = compare_with_target(transport, [read_mcz(v2)])
        target = TargetPackages(transport)
    assert report.packages[0].status == "changed"
    assert "- HLCounter>>legacyBanner" in report.render_plain()
    assert target.kept("Counter-App").package.version.name == "Counter-App-demo.1"
    assert target.kept("Other").loaded is None


def test_over_the_loopback_sshd(ssh_home, tmp_path, versions):
    v1, v2 = versions
    staging = stage(tmp_path / "staging", v1)
    result = run_hotload("diff", v2, "--to", ssh_home.url(staging), "--json", env=ssh_home.env(), check=True)
    [package] = json.loads(result.stdout)["packages"]
    assert (package["status"], package["loaded_version"]) == ("changed", "Counter-App-demo.1")
    assert {(m["selector"], m["change"]) for m in package["methods"]} == \
        {("legacyBanner", "removed"), ("reset", "added"), ("renderContentOn:", "changed")}
    _replace_with_link(staging, v1)
    result = run_hotload("diff", v2, "--to", ssh_home.url(staging), env=ssh_home.env(), check=True)
    assert "is a symbolic link, not a file; diff unavailable" in result.stdout
    kept_file(staging, v1).unlink()
    kept_file(staging, v1).write_bytes(v1.read_bytes() * 2)  # larger than the record says: not read whole
    result = run_hotload("diff", v2, "--to", f"{ssh_home.alias}:{staging}", env=ssh_home.env(), check=True)
    assert "does not match the loaded record" in result.stdout
