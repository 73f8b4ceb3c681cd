"""`push` reads the image's loaded record first: it skips what is loaded, says "up to date" when nothing
changed (nothing written, no lock, no trigger), `--force` sends everything, an older loader gets
everything, each target is decided alone, and `--dry-run` writes nothing (docs/protocol.md,
"Pushing (client)", step 0)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cli_runner import run_in_process
from fake_loader import FakeLoader
from helpers import class_def, make_package, method, shop_packages, staging_listing
from hotload.staging import protocol
from hotload.staging.protocol import LoadedRecord
from test_tonel import class_file, tonel_method, write_package


@pytest.fixture
def packages(tmp_path):
    return shop_packages(tmp_path / "src")


@pytest.fixture
def staging(fake_staging):
    return fake_staging


def push(*args):
    result = run_in_process("push", *map(str, args))
    assert "Traceback" not in result.stdout + result.stderr and result.returncode != 70, result.stderr
    return result


def push_json(*args):
    result = push(*args, "--json")
    report = json.loads(result.stdout)
    return report, result


def loaded(staging: Path) -> LoadedRecord:
    return LoadedRecord.parse((staging / protocol.LOADED).read_text())


def test_a_repush_of_loaded_packages_is_up_to_date_and_writes_nothing(staging, packages):
    first, _ = push_json(*packages, "--to", staging, "--wait")
    assert first["result"] == "ok" and first["skipped"] == []
    before = staging_listing(staging)
    again, result = push_json(*packages, "--to", staging, "--wait")
    assert result.returncode == 0
    assert again["result"] == "up-to-date" and again["bytes"] == 0 and again["packages"] == []
    assert again["skipped"] == ["Shop-Core-tester.1", "Shop-Web-tester.1"]
    assert staging_listing(staging) == before  # no lock, no batch, no trigger, no save
    human = push(*packages, "--to", staging)
    assert human.returncode == 0
    assert "skipped 2 package(s) already loaded: Shop-Core-tester.1, Shop-Web-tester.1" in human.stdout
    assert "up to date" in human.stdout and "pushed batch" not in human.stdout
    assert staging_listing(staging) == before


def test_only_the_changed_package_is_sent(staging, packages, tmp_path):
    web, core = packages
    push_json(*packages, "--to", staging, "--wait")
    newer_web = make_package(
        tmp_path / "src", "Shop-Web",
        class_def("ShopPage", "ShopItem", "Shop-Web") + method("ShopPage", "title\n\t^ 'Shop 2'"),
    )  # packed beside the first: Shop-Web-tester.2 descends from .1
    report, result = push_json(newer_web, core, "--to", staging, "--wait")
    assert result.returncode == 0, result.stderr
    assert report["packages"] == ["Shop-Web-tester.2"] and report["skipped"] == ["Shop-Core-tester.1"]
    assert report["bytes"] == newer_web.stat().st_size
    assert [d["why"] for d in report["decisions"] if d["action"] == "send"] == [
        "Shop-Web-tester.2 descends from the loaded Shop-Web-tester.1"
    ]
    record = loaded(staging)
    assert record.packages["Shop-Web"].version == "Shop-Web-tester.2"
    assert record.packages["Shop-Core"].batch != report["batch"]  # still the first batch's
    assert sorted(os.listdir(staging / protocol.PACKAGES)) == ["Shop-Core-tester.1.mcz", "Shop-Web-tester.2.mcz"]


def test_force_sends_everything(staging, packages):
    push_json(*packages, "--to", staging, "--wait")
    report, result = push_json(*packages, "--to", staging, "--wait", "--force")
    assert result.returncode == 0 and report["result"] == "ok"
    assert report["packages"] == ["Shop-Core-tester.1", "Shop-Web-tester.1"] and report["skipped"] == []
    assert all(d["why"].endswith("(sent: --force)") for d in report["decisions"])


def test_an_older_loader_gets_everything_and_says_why(tmp_path, packages):
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, interval=0.05, record=False).start()
    try:
        push_json(*packages, "--to", staging, "--wait")
        result = push(*packages, "--to", staging, "--wait")
        status = run_in_process("status", "--to", staging, "--json")
    finally:
        loader.stop()
    assert result.returncode == 0, result.stderr
    assert "every package is sent: the loader keeps no loaded record; update it with hotload install-loader" in result.stdout
    assert "pushed batch" in result.stdout and len(loader.batches) == 2
    state = json.loads(status.stdout)
    assert state["loaded"] is None
    assert state["notes"] == ["the loader keeps no loaded record; update it with hotload install-loader"]


def test_each_target_is_decided_alone(tmp_path, packages):
    stagings = [tmp_path / "image-a", tmp_path / "image-b"]
    loaders = [FakeLoader(path, interval=0.05).start() for path in stagings]
    try:
        push_json(*packages, "--to", stagings[0], "--wait")
        reports, result = push_json(*packages, "--to", stagings[0], "--to", stagings[1], "--wait")
    finally:
        for loader in loaders:
            loader.stop()
    assert result.returncode == 0, result.stderr
    assert [r["result"] for r in reports] == ["up-to-date", "ok"]
    assert reports[1]["packages"] == ["Shop-Core-tester.1", "Shop-Web-tester.1"]
    assert [len(loader.batches) for loader in loaders] == [1, 1]


def test_dry_run_shows_what_would_be_skipped_and_sent_with_the_diff_and_writes_nothing(staging, packages, tmp_path):
    web, core = packages
    push_json(*packages, "--to", staging, "--wait")
    newer_web = make_package(
        tmp_path / "src", "Shop-Web",
        class_def("ShopPage", "ShopItem", "Shop-Web") + method("ShopPage", "title\n\t^ 'Shop 2'"),
    )
    before = staging_listing(staging)
    human = push(newer_web, core, "--to", staging, "--dry-run")
    report, result = push_json(newer_web, core, "--to", staging, "--dry-run")
    assert staging_listing(staging) == before
    assert human.returncode == 0 and result.returncode == 0
    assert "would skip 1 package(s) already loaded: Shop-Core-tester.1" in human.stdout
    assert "would send Shop-Web-tester.2 (Shop-Web-tester.2 descends from the loaded Shop-Web-tester.1)" in human.stdout
    assert "Shop-Web-tester.1 (loaded) -> Shop-Web-tester.2: 1 method changed" in human.stdout
    assert re.search(r"^\s+-\s+\^ 'Shop'$", human.stdout, re.M) and re.search(r"^\s+\+\s+\^ 'Shop 2'$", human.stdout, re.M)
    assert "nothing was uploaded or written" in human.stdout
    assert report["result"] == "dry-run" and report["skipped"] == ["Shop-Core-tester.1"]
    [diffed] = report["diff"]["packages"]
    assert (diffed["package"], diffed["status"], diffed["loaded_version"]) == ("Shop-Web", "changed", "Shop-Web-tester.1")


def test_dry_run_of_an_unchanged_set_is_up_to_date(staging, packages):
    push_json(*packages, "--to", staging, "--wait")
    result = push(*packages, "--to", staging, "--dry-run")
    assert result.returncode == 0
    assert "up to date; a push would send nothing" in result.stdout


# -- folders: packed on top of the loaded version --------------------------------------------


def tonel_core(root: Path, total: str = "\t^ 0") -> Path:
    folder = root / "Shop-Core"
    if folder.exists():
        shutil.rmtree(folder)
    return write_package(
        folder, {"Cart.class.st": class_file("Cart", package="Shop-Core", methods=tonel_method("Cart >> total", total))}
    )


def test_a_folder_continues_the_loaded_ancestry_and_is_skipped_when_unchanged(staging, tmp_path, monkeypatch):
    monkeypatch.setenv("HOTLOAD_AUTHOR", "jd")
    core = tonel_core(tmp_path / "src")
    first, _ = push_json(core, "--to", staging, "--wait")
    assert first["packages"] == ["Shop-Core-jd.1"]
    again, result = push_json(core, "--to", staging, "--wait")
    assert result.returncode == 0 and again["result"] == "up-to-date", again
    assert again["decisions"][0]["why"] == "the sources of Shop-Core are those of the loaded Shop-Core-jd.1"
    tonel_core(tmp_path / "src", "\t^ 42")
    changed, result = push_json(core, "--to", staging, "--wait")
    assert result.returncode == 0 and changed["result"] == "ok", changed
    assert changed["packages"] == ["Shop-Core-jd.2"]  # not a second .1: it continues from the loaded .1
    assert loaded(staging).packages["Shop-Core"].version == "Shop-Core-jd.2"
    forced, _ = push_json(core, "--to", staging, "--wait", "--force")
    assert forced["packages"] == ["Shop-Core-jd.3"]


def test_a_filetree_folder_continues_from_its_stored_version_then_from_the_loaded_one(staging, tmp_path, monkeypatch):
    from hotload.formats.mcz import VersionInfo
    from hotload.formats.pack import version_sexpr
    from test_filetree import write_class

    monkeypatch.setenv("HOTLOAD_AUTHOR", "jd")
    package = tmp_path / "repository" / "Shop-Core.package"
    (package / "monticello.meta").mkdir(parents=True)
    (package / "monticello.meta" / "package").write_text("(name 'Shop-Core')")
    write_class(package, "Cart", {"super": "Object", "category": "Shop-Core", "type": "normal"},
                methods=[("instance", "total.st", "accessing\ntotal\n\t^ 0")])
    stored = VersionInfo(name="Shop-Core-pmm.3", id="id-3", ancestors=(VersionInfo(name="Shop-Core-pmm.2", id="id-2"),))
    (package / "monticello.meta" / "version").write_text(version_sexpr(stored))
    first, _ = push_json(package, "--to", staging, "--wait")
    assert first["packages"] == ["Shop-Core-jd.4"]  # not loaded: the stored version is the ancestor
    again, _ = push_json(package, "--to", staging, "--wait")
    assert again["result"] == "up-to-date" and again["skipped"] == ["Shop-Core-jd.4"]
    cart = package / "Cart.class" / "instance"
    cart.mkdir(exist_ok=True)
    (cart / "discount.st").write_text("pricing\ndiscount\n\t^ 0")
    changed, result = push_json(package, "--to", staging, "--wait")
    assert result.returncode == 0 and changed["packages"] == ["Shop-Core-jd.5"], changed
    assert changed["decisions"][0]["why"] == "Shop-Core-jd.5 descends from the loaded Shop-Core-jd.4"


# -- a record the client cannot use -------------------------------------------------------------


def spoil(staging: Path, how: str, outside: Path):
    record = staging / protocol.LOADED
    record.unlink()
    if how == "fifo":
        os.mkfifo(record)
    elif how == "symlink":
        outside.write_text(protocol.render_record(protocol.LOADED, [("image", "/elsewhere.im")]))
        os.symlink(outside, record)
    else:
        record.write_text("hotload-loaded\t2\npackage\tShop-Core\tbroken\n")


@pytest.mark.parametrize("how", ["fifo", "symlink", "garbage"])
def test_an_unusable_record_is_one_line_and_never_followed(tmp_path, packages, how):
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, interval=0.05)
    loader.start()
    try:
        push_json(*packages, "--to", staging, "--wait")
        spoil(staging, how, tmp_path / "outside")
        before = staging_listing(staging)
        refused = push(*packages, "--to", staging)
        status = run_in_process("status", "--to", staging)
        unchecked = push(*packages, "--to", staging, "--allow-downgrade", "--wait")
    finally:
        loader.stop()
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 5 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("hotload: cannot tell what") and "--allow-downgrade" in lines[0]
    assert status.returncode == 0 and "problem: loaded" in status.stdout, status.stdout
    assert unchecked.returncode == 0, unchecked.stderr
    assert "every package is sent unchecked (--allow-downgrade)" in unchecked.stdout
    kind = os.lstat(staging / protocol.LOADED).st_mode
    assert (how == "fifo") == (kind & 0o170000 == 0o010000) and (how == "symlink") == os.path.islink(staging / protocol.LOADED)
    if how != "garbage":
        assert before[protocol.LOADED] == staging_listing(staging)[protocol.LOADED]


def test_a_fifo_at_loaded_over_sftp_is_one_line_and_never_opened(ssh_home, tmp_path, packages):
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, interval=0.05).start()
    try:
        push_json(*packages, "--to", staging, "--wait")
        spoil(staging, "fifo", tmp_path / "outside")
        refused = push(*packages, "--to", ssh_home.url(staging))
        status = run_in_process("status", "--to", ssh_home.url(staging), "--json")
    finally:
        loader.stop()
    assert refused.returncode == 5 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "loaded is a special file, not a file" in refused.stderr
    assert status.returncode == 0 and json.loads(status.stdout)["loaded"] is None
    assert "loaded is a special file, not a file; hotload never follows or opens it" in json.loads(status.stdout)["problems"]


# -- over the loopback sshd: a re-push sends no package byte --------------------------------------


def test_a_repush_over_sftp_uploads_nothing(ssh_home, tmp_path, packages, monkeypatch):
    from hotload.staging.transports.sftp import SftpTransport

    uploaded, writes = [], []
    real_upload, real_write = SftpTransport.upload, SftpTransport.write
    monkeypatch.setattr(SftpTransport, "upload", lambda self, local, name, progress=None: (
        uploaded.append(os.path.getsize(local)), real_upload(self, local, name, progress))[1])
    monkeypatch.setattr(SftpTransport, "write", lambda self, name, data: (writes.append(name), real_write(self, name, data))[1])
    real_many = SftpTransport.upload_many

    def upload_many(self, items, progress=None, on_file=None):  # the packages and the manifest, pipelined
        for source, name in items:
            (writes.append(name) if isinstance(source, bytes) else uploaded.append(os.path.getsize(source)))
        return real_many(self, items, progress, on_file)

    monkeypatch.setattr(SftpTransport, "upload_many", upload_many)
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, interval=0.05).start()
    try:
        first, _ = push_json(*packages, "--to", ssh_home.url(staging), "--wait")
        first_bytes, first_writes = sum(uploaded), len(writes)
        uploaded.clear(), writes.clear()
        again, result = push_json(*packages, "--to", ssh_home.url(staging), "--wait")
    finally:
        loader.stop()
    assert first["result"] == "ok" and first_bytes == sum(p.stat().st_size for p in packages) and first_writes > 0
    assert result.returncode == 0 and again["result"] == "up-to-date"
    assert uploaded == []
    assert [name for name in writes if not name.startswith(protocol.TEMP_PREFIX + "clock")] == []  # only the clock probe
