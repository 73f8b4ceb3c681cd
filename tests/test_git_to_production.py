"""docs/git-to-production.md is run as it is written: each `sh` block, in order, in one working folder,
against the live gst image (the example app's, with its loader); each must exit 0, and every line of
the `text` block after it must appear in its output (`<...>` stands for any text)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import serving_counter
from hotload.staging import protocol
from hotload.formats.mcz import read_mcz
from hotload.staging.protocol import LoadedRecord

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "git-to-production.md"

pytestmark = pytest.mark.skipif(
    not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)"
)

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


def doc_steps(text: str):
    """[(shell script, [expected output lines])] in the order of the document."""
    steps = []
    for kind, body in _FENCE.findall(text):
        if kind == "sh":
            steps.append((body, []))
        elif kind == "text":
            assert steps, "a text block before any sh block"
            steps[-1][1].extend(line for line in body.split("\n") if line.strip())
    return steps


def _pattern(line: str):
    parts = re.split(r"<[a-z ]+>", line.rstrip())
    return re.compile(".*?".join(re.escape(part) for part in parts))


def test_the_steps_are_those_the_walkthrough_promises():
    steps = doc_steps(DOC.read_text())
    commands = " ".join(script for script, _ in steps)
    for command in ("git commit", "hotload diff src", "hotload push src", "hotload status"):
        assert command in commands
    assert all(expected for _, expected in steps if "hotload diff" in _)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with serving_counter(tmp_path_factory.mktemp("counter"), 500) as counter:
        yield counter


def test_the_walkthrough_runs_as_written(app, tmp_path):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    wrapper = bin_folder / "hotload"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hotload "$@"\n')  # this checkout's hotload
    wrapper.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("GIT_", "HOTLOAD_"))  # the folder's git author, not a test's
    }
    env.update(
        PATH=f"{bin_folder}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT), HOME=str(tmp_path),
        GIT_CONFIG_NOSYSTEM="1", TARGET=str(app.staging), DOC_PWD=str(work),
    )
    for script, expected in doc_steps(DOC.read_text()):
        result = subprocess.run(
            ["bash", "-e", "-c", f"{script}\npwd > {tmp_path / 'pwd'}"], cwd=env["DOC_PWD"], env=env,
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, f"{script}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
        env["DOC_PWD"] = (tmp_path / "pwd").read_text().strip()  # a `cd` carries over to the next block
        lines = [line.rstrip() for line in result.stdout.split("\n")]
        for line in expected:
            pattern = _pattern(line)
            assert any(pattern.fullmatch(actual) for actual in lines), \
                f"{line!r} is not in the output of\n{script}\n--- output:\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
    record = LoadedRecord.parse((app.staging / protocol.LOADED).read_text())
    assert record.packages["Greeting"].version == "Greeting-JaneDoe.2"
    status = subprocess.run(["hotload", "status", "--to", str(app.staging)], env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "Greeting-JaneDoe.2" in status.stdout  # status names what the image runs
    kept = read_mcz(app.staging / protocol.PACKAGES / "Greeting-JaneDoe.2.mcz")
    assert [ancestor.name for ancestor in kept.version.ancestors] == ["Greeting-JaneDoe.1"]
    again = subprocess.run(["hotload", "push", "src", "--to", str(app.staging), "--json"], cwd=env["DOC_PWD"],
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0 and '"up-to-date"' in again.stdout, again.stdout + again.stderr  # as the doc says
