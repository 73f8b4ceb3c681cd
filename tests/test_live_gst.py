"""The live proof: a running GNU Smalltalk image with Seaside on Swazoo, upgraded while it serves.

The tests share one image and run in file order: v1 is pushed, v2 is pushed through sshd while a
client keeps requesting, a failing batch is rejected, and the image restarts.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import NEEDS_GST, run_hotload
from helpers import class_def, make_package, method
from hotload.staging import protocol
from hotload.images.example_app import count_of, link
from request_loop import RequestLoop
from hotload.images.gst import Gst

pytestmark = NEEDS_GST

INTERVAL_MS = 1000


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()



def test_hot_upgrade_while_serving(app, versions, sshd):
    v1, v2 = versions
    pushed = run_hotload("push", v1, "--to", app.staging, "--wait", check=True)
    assert "ok" in pushed.stdout and "requests paused" in pushed.stdout
    status, page, session_url = app.get(app.url)
    assert "<h1>Counter v1</h1>" in page and "legacy banner" in page
    for _ in range(3):
        status, page, session_url = app.get(link(page, "++"))
    assert count_of(page) == 3
    saved_before = app.image.stat().st_mtime_ns

    hammer = RequestLoop([app.url, session_url])
    hammer.start()
    time.sleep(1.0)
    result = run_hotload("push", v2, "--to", sshd.url(app.staging), "--wait", "--json", env=sshd.env())
    time.sleep(1.0)
    hammer.done.set()
    hammer.join(30)

    assert result.returncode == 0, result.stderr
    assert '"result": "ok"' in result.stdout
    report = json.loads(result.stdout)
    assert report["paused_ms"] == report["timings_ms"]["install"]  # measured in the image
    assert "compile-ahead" in report["timings_ms"]  # v2's methods of HLCounter, compiled while requests ran
    assert hammer.failures() == []
    assert len(hammer.records) > 20
    status, page, _ = app.get(session_url)
    assert "<h1>Counter v2</h1>" in page
    assert count_of(page) == 3  # the open session kept its state
    assert "legacy banner" not in page
    assert app.image.stat().st_mtime_ns > saved_before
    assert (app.folder / "app.im.bak").is_file()
    history = (app.staging / protocol.HISTORY).read_text()
    assert "Counter-App-demo.2" in history


def _broken_batch(folder: Path, failure: str):
    """A good first package and a second that fails to compile or whose class initialization raises."""
    good = make_package(
        folder, "Counter-Extras", class_def("HLCounterExtras", category="Counter-Extras") + method("HLCounterExtras", "hello\n\t^ 'hi'")
    )
    if failure == "initialize":
        body = class_def("HLBroken", category="Counter-Broken") + (
            "!HLBroken class methodsFor: 'initialization'!\ninitialize\n\t^ 1 / 0! !\n\nHLBroken initialize!\n"
        )
    else:
        body = class_def("HLBroken", category="Counter-Broken") + method("HLBroken", "oops\n\t^ (1 + ")
    broken = make_package(folder, "Counter-Broken", body)
    return good, broken


@pytest.mark.parametrize("failure", ["initialize", "compile"])
def test_failing_batch_saves_nothing_and_app_keeps_serving(app, tmp_path, failure):
    good, broken = _broken_batch(tmp_path, failure)
    image_before = sha256(app.image)
    result = run_hotload("push", good, broken, "--to", app.staging, "--allow-downgrade", "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "failed"
    assert report["failed_package"] == "Counter-Broken-tester.1"
    expected = "ZeroDivide" if failure == "initialize" else "HLBroken>>oops does not parse"
    assert expected in report["error"]
    assert report["stack"]
    assert sha256(app.image) == image_before  # the image on disk is the last good one
    failed = app.staging / protocol.FAILED / report["batch"]
    assert (failed / "reason").is_file() and (failed / broken.name).is_file()
    assert not (app.staging / protocol.TRIGGER).exists()
    status, page, _ = app.get(app.url)
    assert status == 200 and "<h1>Counter v" in page
    # The first package's changes were undone in memory, and a following good push succeeds. The test's
    # packages of Counter-Extras come from different authors, unrelated versions: --allow-downgrade.
    fixed = make_package(tmp_path / "fixed", "Counter-Extras", class_def("HLCounterExtras", category="Counter-Extras"), author="fixer")
    result = run_hotload("push", fixed, "--to", app.staging, "--allow-downgrade", "--wait", check=True)
    assert "ok" in result.stdout


def test_a_failed_save_is_reported_not_hidden(app, tmp_path):
    blocker = app.folder / "app.im.hotload-new"  # the loader snapshots to <image>.hotload-new first: make that impossible
    blocker.mkdir()
    image_before = sha256(app.image)
    try:
        package = make_package(tmp_path, "Counter-Extras", class_def("HLCounterExtras", category="Counter-Extras") + method("HLCounterExtras", "unsaved\n\t^ 3"), author="saver")
        result = run_hotload("push", package, "--to", app.staging, "--allow-downgrade", "--wait", "--json")
    finally:
        blocker.rmdir()
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["result"] == "failed"
    assert "could not be saved" in report["error"] and "directory" in report["error"]
    assert sha256(app.image) == image_before
    assert app.get(app.url)[0] == 200


def test_saved_image_serves_v2_after_a_fresh_start_and_loader_resumes(app, tmp_path):
    app.stop()
    check = Gst().run(
        "(Smalltalk at: #HLCounter ifAbsent: [ Seaside at: #HLCounter ]) printNl!\n"
        "((Seaside at: #HLCounter) includesSelector: #legacyBanner) printNl!\n"
        "((Seaside at: #HLCounter) includesSelector: #reset) printNl!\n"
        "ObjectMemory quit!\n",
        image=app.image,
    )
    assert "false\ntrue" in check  # legacyBanner was removed by the v2 load, reset was added
    heartbeat = app.staging / protocol.HEARTBEAT
    heartbeat_before = heartbeat.stat().st_mtime
    time.sleep(3)  # a restart long after the save (gst's clock must be reset before the loader sleeps)
    started = time.time()
    app.start(serve=False)  # no serve script: Swazoo and the loader come back by themselves
    status, page, _ = app.get(app.url)
    assert "<h1>Counter v2</h1>" in page
    app.wait_until(lambda: heartbeat.stat().st_mtime > heartbeat_before + 0.5, "the loader's heartbeat after the restart")
    assert heartbeat.stat().st_mtime - started <= INTERVAL_MS / 1000 + 0.5  # polling again within one interval
    again = make_package(tmp_path, "Counter-Extras", class_def("HLCounterExtras", category="Counter-Extras") + method("HLCounterExtras", "again\n\t^ 2"), author="later")
    result = run_hotload("push", again, "--to", app.staging, "--allow-downgrade", "--wait", check=True)
    assert "ok" in result.stdout


def test_save_only_trigger_saves_and_loads_nothing(app):
    before = app.image.stat().st_mtime_ns
    history_before = (app.staging / protocol.HISTORY).read_text()
    (app.staging / "Stray-x.1.mcz").write_bytes(b"not loaded")  # a package with no manifest
    (app.staging / protocol.TRIGGER).write_text("")
    app.wait_until(
        lambda: "\tsaved" in (app.staging / protocol.HISTORY).read_text()[len(history_before):],
        "the loader to record the save-only trigger",
    )
    assert not (app.staging / protocol.TRIGGER).exists()
    assert app.image.stat().st_mtime_ns > before
    assert (app.staging / "Stray-x.1.mcz").exists()  # nothing was loaded or consumed
    (app.staging / "Stray-x.1.mcz").unlink()


def test_a_dotted_namespace_superclass_loads_as_a_class_definition(app, tmp_path):
    """`Seaside.WAComponent subclass: #Foo` is a class definition for the client and the loader alike."""
    source = class_def("HLDotted", superclass="Seaside.WAComponent", category="Counter-Dotted") + method(
        "HLDotted", "greeting\n\t^ 'dotted'"
    )
    package = make_package(tmp_path, "Counter-Dotted", source, author="dots")
    result = run_hotload("push", package, "--to", app.staging, "--allow-downgrade", "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["result"] == "ok"  # as a doit, the method would fail: no class HLDotted


def test_a_protocol_1_push_is_refused_with_a_clear_status_and_its_files_left_alone(app, versions):
    """A v1 client writes top-level files and a bare batch id in `load` (docs/protocol.md, mixed versions)."""
    v1, _ = versions
    batch = "20261129T010203Z-0a1b2c"
    stray = app.staging / v1.name
    shutil.copy2(v1, stray)
    (app.staging / "manifest").write_text(f"hotload-manifest\t1\nbatch\t{batch}\nend\n")
    (app.staging / protocol.TRIGGER).write_text(f"{batch}\n")
    app.wait_until(lambda: not (app.staging / protocol.TRIGGER).exists(), "the loader to take the v1 trigger")
    status = protocol.Status.parse((app.staging / protocol.STATUS).read_text())
    assert status.batch == batch and status.result == "failed"
    assert "protocol-1 client" in status.error and "update hotload on the client" in status.error
    assert stray.read_bytes() == v1.read_bytes() and (app.staging / "manifest").exists()  # not touched
    stray.unlink()
    (app.staging / "manifest").unlink()
