"""Fault injection on a real GNU Smalltalk image: the image is killed at every step of a batch and of its
save, then started again from its file (docs/protocol.md, "Crash during a batch" and "Saving the image").

Each case restores the same image (v1 loaded and saved), pushes v2, and has the loader's step hook
stop the loader at one step; the test then SIGKILLs the VM at that instant. Afterwards the image
file must be complete (the VM starts from it and serves), the page must show v1 or v2 exactly as
the step implies, and the loader must say what happened to the batch: never silent.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import run_hotload
from hotload.staging import protocol
from hotload.images.example_app import CounterApp, heading_of
from helpers import assert_reported_after_restart, example_versions, wait_for_snapshot
from hotload.staging.protocol import Status

pytestmark = pytest.mark.skipif(
    not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)"
)

INTERVAL_MS = 500

# The step hook stops the loader at the step named by HOTLOAD_TEST_STOP_AT, after writing a marker
# file; with the variable unset (after the restart) it does nothing.
STOP_HOOK = """HLLoader stepHook: [ :step | | wanted marker |
    wanted := Smalltalk getenv: 'HOTLOAD_TEST_STOP_AT'.
    (wanted notNil and: [ wanted = step asString ]) ifTrue: [
        marker := FileStream open: (Smalltalk getenv: 'HOTLOAD_TEST_MARKER') mode: FileStream write.
        marker nextPutAll: step asString; close.
        Semaphore new wait ] ]!
"""

#: step -> (image on disk after the kill has v2, what the loader reports after the restart)
STEPS = {
    "journalInstall": (False, "failed"),  # verification about to start
    "installed": (False, "failed"),  # v2 installed in memory only
    "journalSave": (False, "failed"),  # about to snapshot
    "writing": (False, "failed"),  # killed while the snapshot is being written (no hook: the file appears)
    "snapshot": (False, "failed"),  # <image>.hotload-new written, <image> is still the old one
    "backup": (False, "failed"),  # <image>.bak linked, <image> is still the old one
    "renamed": (True, "ok"),  # the new image is in place; nothing recorded yet
    "saved": (True, "ok"),
    "recorded": (True, "ok"),  # status and history written, journal and trigger not yet deleted
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """An app image with v1 loaded and saved (kept as a pristine copy), and the v2 package."""
    folder = tmp_path_factory.mktemp("faults")
    app = CounterApp(folder, interval_ms=INTERVAL_MS)
    v1, v2 = example_versions(tmp_path_factory.mktemp("dist"), author="fault")
    app.build()
    app.start(before=STOP_HOOK)
    try:
        run_hotload("push", v1, "--to", app.staging, "--wait", check=True)
    finally:
        app.stop()
    pristine = folder / "pristine.im"
    shutil.copy2(app.image, pristine)
    return app, pristine, v2


def reset(app: CounterApp, pristine: Path):
    shutil.copy2(pristine, app.image)
    for name in os.listdir(app.staging):
        path = app.staging / name
        if name in ("loader",):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@pytest.mark.parametrize("step", list(STEPS))
def test_killed_at_each_step_the_image_survives_and_the_loader_reports(prepared, step, tmp_path):
    app, pristine, v2 = prepared
    new_on_disk, expected = STEPS[step]
    reset(app, pristine)
    marker = tmp_path / "stopped-at"
    app.start(before=STOP_HOOK, env={"HOTLOAD_TEST_STOP_AT": step, "HOTLOAD_TEST_MARKER": str(marker)})
    try:
        pushed = run_hotload("push", v2, "--to", app.staging, "--json", check=True)
        batch = json.loads(pushed.stdout)["batch"]
        if step == "writing":
            wait_for_snapshot(app.image, 30)
        else:
            app.wait_until(marker.exists, f"the loader to reach step {step}")
    finally:
        app.stop()  # SIGKILL, at that very step

    # At every instant there is a complete image under its name: the VM starts from it and serves.
    assert app.image.is_file()
    assert (sha256(app.image) == sha256(pristine)) != new_on_disk
    app.start()
    try:
        status, page, _ = app.get(app.url)
        assert status == 200
        assert heading_of(page) == ("Counter v2" if new_on_disk else "Counter v1")

        # The loader says what happened to the batch, and cleans up.
        status_path = app.staging / protocol.STATUS

        def reported():
            return status_path.exists() and Status.parse(status_path.read_text()).batch == batch and not (
                app.staging / protocol.JOURNAL
            ).exists()

        app.wait_until(reported, f"the loader to report batch {batch} after the restart")
        app.wait_until(lambda: not (app.staging / protocol.TRIGGER).exists(), "the trigger to be consumed")
        assert_reported_after_restart(Status.parse(status_path.read_text()), app.staging, app.folder,
                                      (app.staging / protocol.HISTORY).read_text(), batch, expected, step)

        # The loader goes on: the same batch pushed again loads (it was not retried by itself).
        if not new_on_disk:
            again = run_hotload("push", v2, "--to", app.staging, "--wait")
            assert again.returncode == 0, again.stdout + again.stderr
            assert heading_of(app.get(app.url)[1]) == "Counter v2"
    finally:
        app.stop()


def test_a_cancelled_batch_is_never_loaded_by_a_later_save_only_trigger(prepared, tmp_path):
    """A push killed after publishing its folder but before its trigger: a scheduled save loads nothing."""
    app, pristine, v2 = prepared
    reset(app, pristine)
    app.start()
    try:
        batch = "20261129T000000Z-abcdef"
        folder = app.staging / batch
        folder.mkdir()
        shutil.copy2(v2, folder / v2.name)
        from hotload.staging.protocol import Manifest, ManifestEntry

        entry = ManifestEntry(1, v2.name, v2.stat().st_size, sha256(v2), v2.stem)
        (folder / protocol.MANIFEST).write_text(Manifest.new([entry], batch).render())
        history = app.staging / protocol.HISTORY
        (app.staging / protocol.TRIGGER).write_text("")  # the nightly `touch load`
        app.wait_until(lambda: history.exists() and "\tsaved" in history.read_text(), "the save-only trigger to be taken")
        assert heading_of(app.get(app.url)[1]) == "Counter v1"
        assert folder.is_dir()  # untouched by the loader; the next push's clean-up removes it
    finally:
        app.stop()


def test_two_images_on_one_staging_directory(prepared, tmp_path):
    """The second loader stands by; push --wait and status name both images; only the first loads."""
    app, pristine, v2 = prepared
    reset(app, pristine)
    second = CounterApp(tmp_path / "second", interval_ms=INTERVAL_MS)
    second.folder.mkdir()
    shutil.copy2(pristine, second.image)  # the same baked staging directory
    app.start()
    try:
        app.wait_until(lambda: (app.staging / protocol.HEARTBEAT).exists(), "the first loader's heartbeat")
        second.start()
        conflict = app.staging / protocol.CONFLICT
        second.wait_until(conflict.exists, "the second loader to report the conflict")
        text = conflict.read_text()
        assert str(second.image) in text and str(app.image) in text

        result = run_hotload("push", v2, "--to", app.staging, "--wait")
        assert result.returncode == 3, result.stdout + result.stderr
        assert str(second.image) in result.stderr and str(app.image) in result.stderr
        status = run_hotload("status", "--to", app.staging)
        assert status.returncode == 3 and "two images poll" in status.stdout

        pushed = run_hotload("push", v2, "--to", app.staging, "--json", check=True)
        batch = json.loads(pushed.stdout)["batch"]
        app.wait_until(
            lambda: Status.parse((app.staging / protocol.STATUS).read_text()).batch == batch, "the batch to load"
        )
        time.sleep(2 * INTERVAL_MS / 1000)  # the standing-by loader has had polls to misbehave in
        assert heading_of(app.get(app.url)[1]) == "Counter v2"
        assert heading_of(second.get(second.url)[1]) == "Counter v1"
        assert "standing by" in second.log.read_text()
    finally:
        second.stop()
        app.stop()
