"""No silent downgrade: a version older than the loaded one, of another branch, or other content under
the loaded version's name is refused with both version names (exit 2) unless --allow-downgrade; when the
kept .mcz of the loaded version cannot be used, the relation cannot be told and the push is refused too."""

import json
import os
import shutil
from pathlib import Path

import pytest

from cli_runner import run_in_process
from fake_loader import FakeLoader
from helpers import class_def, make_package, method, staging_names
from hotload.staging import protocol
from hotload.staging.protocol import LoadedRecord


@pytest.fixture
def staging(fake_staging):
    return fake_staging


def counter(folder: Path, answer: int, author="tester") -> Path:
    """Counter-Core, packed into folder: the number goes up with each pack into the same folder."""
    return make_package(
        folder, "Counter-Core",
        class_def("HLDownCounter", category="Counter-Core") + method("HLDownCounter", f"answer\n\t^ {answer}"),
        author=author,
    )


def push(*args):
    result = run_in_process("push", *map(str, args))
    assert "Traceback" not in result.stdout + result.stderr and result.returncode != 70, result.stderr
    return result


def loaded_version(staging: Path) -> str:
    return LoadedRecord.parse((staging / protocol.LOADED).read_text()).packages["Counter-Core"].version


def refusal(result) -> list:
    """The refusal's lines: each starts `hotload: `, the last says what to do; nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert all(line.startswith("hotload: ") for line in lines), lines
    assert "--allow-downgrade" in lines[-1]
    return lines


def test_an_older_version_is_refused_then_allowed(staging, tmp_path):
    first = counter(tmp_path / "dist", 1)
    second = counter(tmp_path / "dist", 2)  # Counter-Core-tester.2, descending from .1
    assert push(second, "--to", staging, "--wait").returncode == 0
    before = staging_names(staging)
    lines = refusal(push(first, "--to", staging, "--wait"))
    assert "Counter-Core-tester.1 is older than the loaded Counter-Core-tester.2 (an ancestor of it)" in lines[0]
    assert staging_names(staging) == before and loaded_version(staging) == "Counter-Core-tester.2"
    allowed = push(first, "--to", staging, "--wait", "--allow-downgrade", "--json")
    assert allowed.returncode == 0, allowed.stderr
    report = json.loads(allowed.stdout)
    assert report["packages"] == ["Counter-Core-tester.1"]
    assert report["decisions"][0]["why"].endswith("(sent: --allow-downgrade)")
    assert loaded_version(staging) == "Counter-Core-tester.1"


def test_dry_run_says_what_would_be_refused_and_exits_2(staging, tmp_path):
    first = counter(tmp_path / "dist", 1)
    second = counter(tmp_path / "dist", 2)
    assert push(second, "--to", staging, "--wait").returncode == 0
    result = push(first, "--to", staging, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "would refuse Counter-Core-tester.1: Counter-Core-tester.1 is older than the loaded Counter-Core-tester.2" \
        in result.stdout
    assert "nothing was uploaded or written" in result.stdout and loaded_version(staging) == "Counter-Core-tester.2"
    report = json.loads(push(first, "--to", staging, "--dry-run", "--json").stdout)
    assert report["result"] == "dry-run" and report["refused"] == ["Counter-Core-tester.1"]
    assert report["diff"]["packages"][0]["status"] == "changed"


def test_a_newer_version_goes_through(staging, tmp_path):
    first = counter(tmp_path / "dist", 1)
    assert push(first, "--to", staging, "--wait").returncode == 0
    second = counter(tmp_path / "dist", 2)
    result = push(second, "--to", staging, "--wait")
    assert result.returncode == 0, result.stderr
    assert loaded_version(staging) == "Counter-Core-tester.2"


def test_another_branch_is_refused(staging, tmp_path):
    mine = counter(tmp_path / "mine", 1)
    counter(tmp_path / "mine", 2)
    theirs = counter(tmp_path / "theirs", 3, author="other")  # Counter-Core-other.1: no common history
    assert push(mine, "--to", staging, "--wait").returncode == 0
    lines = refusal(push(theirs, "--to", staging, "--json"))
    assert ("Counter-Core-other.1 and the loaded Counter-Core-tester.1 are on different branches "
            "(neither descends from the other)") in lines[0]


def test_other_content_under_the_loaded_name_is_refused_even_with_force(staging, tmp_path):
    loaded = counter(tmp_path / "a", 1)
    other = counter(tmp_path / "b", 2)  # also Counter-Core-tester.1, other code
    assert loaded.name == other.name
    assert push(loaded, "--to", staging, "--wait").returncode == 0
    lines = refusal(push(other, "--to", staging, "--force"))
    assert "Counter-Core-tester.1 is loaded with other content" in lines[0]
    assert "different content under the same version name" in lines[0]
    assert push(other, "--to", staging, "--wait", "--allow-downgrade").returncode == 0


@pytest.mark.parametrize("damage", ["missing", "replaced", "symlink"])
def test_without_the_kept_mcz_the_relation_cannot_be_told(staging, tmp_path, damage):
    first = counter(tmp_path / "dist", 1)
    second = counter(tmp_path / "dist", 2)
    assert push(second, "--to", staging, "--wait").returncode == 0
    kept = staging / protocol.PACKAGES / second.name
    if damage == "missing":
        kept.unlink()
    elif damage == "replaced":
        shutil.copy(first, kept)
    else:
        kept.unlink()
        os.symlink(second, kept)
    lines = refusal(push(first, "--to", staging))
    assert "Counter-Core-tester.1 does not descend from the loaded Counter-Core-tester.2, and whether it is older " \
           "cannot be told" in lines[0]
    assert f"{protocol.PACKAGES}/{second.name}" in lines[0]
    # an upgrade needs only the pushed version's history: the kept file is not read
    third = counter(tmp_path / "dist", 3)
    assert push(third, "--to", staging, "--wait").returncode == 0


def test_a_refusal_at_the_canary_stops_the_rollout(tmp_path):
    stagings = [tmp_path / "image-a", tmp_path / "image-b"]
    loaders = [FakeLoader(path, interval=0.05).start() for path in stagings]
    try:
        first = counter(tmp_path / "dist", 1)
        second = counter(tmp_path / "dist", 2)
        assert push(second, "--to", stagings[0], "--wait").returncode == 0
        result = push(first, "--to", stagings[0], "--to", stagings[1], "--wait", "--json")
    finally:
        for loader in loaders:
            loader.stop()
    assert result.returncode == 2
    reports = json.loads(result.stdout)
    assert [r["result"] for r in reports] == ["refused", "not pushed"]
    assert reports[0]["refused"] == ["Counter-Core-tester.1"]
    assert not list(stagings[1].glob("2*"))  # image-b was left untouched
