"""The loaded record and packages/ on the live gst image (docs/protocol.md, "loaded" and "packages/").

The tests share one image and run in file order: v1 and v2 of the example app are pushed, a failing batch
changes nothing, the record is written again from the image after a restart, and an image started from
its older file says so. The client's parser reads what the loader wrote.
"""

import hashlib
import json
import os
import shutil

from conftest import NEEDS_GST, run_hotload
from helpers import class_def, make_package, method
from hotload.staging import protocol
from hotload.staging.protocol import LoadedRecord

pytestmark = NEEDS_GST

INTERVAL_MS = 500



def loaded(app) -> LoadedRecord:
    return LoadedRecord.parse((app.staging / protocol.LOADED).read_text())


def push(app, *packages) -> dict:
    result = run_hotload("push", *packages, "--to", app.staging, "--wait", "--json")
    report = json.loads(result.stdout)
    report["exit"] = result.returncode
    return report


def kept(app) -> dict:
    folder = app.staging / protocol.PACKAGES
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_a_fresh_loader_writes_an_empty_record(app):
    app.wait_until(lambda: (app.staging / protocol.LOADED).is_file(), "the loaded record at the first poll")
    record = loaded(app)
    assert record.image == str(app.image)
    assert record.packages == {}


def test_each_push_records_the_package_and_keeps_only_the_loaded_mcz(app, versions):
    v1, v2 = versions
    first = push(app, v1)
    assert first["exit"] == 0, first
    package = loaded(app).packages["Counter-App"]
    assert (package.version, package.file, package.batch) == ("Counter-App-demo.1", v1.name, first["batch"])
    assert package.size == v1.stat().st_size
    assert package.sha256 == hashlib.sha256(v1.read_bytes()).hexdigest()
    assert abs(package.loaded_at - os.path.getmtime(app.staging / protocol.STATUS)) < 5
    assert kept(app) == {v1.name: package.sha256}

    second = push(app, v2)
    assert second["exit"] == 0, second
    package = loaded(app).packages["Counter-App"]
    assert (package.version, package.batch) == ("Counter-App-demo.2", second["batch"])
    # v1's file stays: the state after the first batch, kept for rollback, names it
    assert kept(app) == {v1.name: hashlib.sha256(v1.read_bytes()).hexdigest(), v2.name: package.sha256}
    for batch, version in ((first["batch"], "Counter-App-demo.1"), (second["batch"], "Counter-App-demo.2")):
        folder = app.staging / protocol.KEPT / batch
        assert sorted(path.name for path in folder.iterdir()) == [protocol.LOADED, protocol.MANIFEST]
        state = LoadedRecord.parse((folder / protocol.LOADED).read_text())
        assert state.packages["Counter-App"].version == version and state.kept_at > 0


def test_a_failed_batch_changes_neither_the_record_nor_packages(app, tmp_path):
    record_before = (app.staging / protocol.LOADED).read_text()
    kept_before = kept(app)
    good = make_package(tmp_path, "Counter-Extras", class_def("HLLoadedExtras", category="Counter-Extras")
                        + method("HLLoadedExtras", "hello\n\t^ 'hi'"))
    broken = make_package(tmp_path, "Counter-Broken", class_def("HLLoadedBroken", category="Counter-Broken")
                          + method("HLLoadedBroken", "oops\n\t^ (1 + "))
    report = push(app, good, broken)
    assert report["exit"] == 1 and report["failed_package"] == "Counter-Broken-tester.1", report
    assert (app.staging / protocol.LOADED).read_text() == record_before
    assert kept(app) == kept_before


def test_a_second_package_joins_the_record_sorted(app, tmp_path):
    extras = make_package(tmp_path, "Counter-Extras", class_def("HLLoadedExtras", category="Counter-Extras")
                          + method("HLLoadedExtras", "hello\n\t^ 'hi'"))
    report = push(app, extras)
    assert report["exit"] == 0, report
    text = (app.staging / protocol.LOADED).read_text()
    assert [line.split("\t")[1] for line in text.splitlines() if line.startswith("package\t")] == \
        ["Counter-App", "Counter-Extras"]
    kept_states = [LoadedRecord.parse((folder / protocol.LOADED).read_text())
                   for folder in (app.staging / protocol.KEPT).iterdir()]
    named = {p.file for record in [loaded(app), *kept_states] for p in record.packages.values()}
    assert sorted(kept(app)) == sorted(named)  # what the image or a kept state names, nothing else


def test_the_record_is_written_again_from_the_image_after_a_restart(app):
    expected = loaded(app)
    (app.staging / protocol.LOADED).unlink()
    app.stop()
    app.start(serve=False)
    app.wait_until(lambda: (app.staging / protocol.LOADED).is_file(), "the loaded record after the restart")
    again = loaded(app)
    assert again.packages == expected.packages and again.image == expected.image
    assert again.loader_id and again.loader_id != expected.loader_id  # written by this start of the image
    # The record comes first, then the heartbeat of the same start.
    app.wait_until(lambda: protocol.Heartbeat.parse((app.staging / protocol.HEARTBEAT).read_text()).id == again.loader_id,
                   "the heartbeat of the loader that wrote the record")


def test_an_image_started_from_its_older_file_says_what_it_runs(app):
    """app.im.bak is the image before the last save: it never loaded Counter-Extras."""
    app.stop()
    newest = app.folder / "newest.im"
    shutil.copy2(app.image, newest)
    shutil.copy2(app.folder / "app.im.bak", app.image)
    try:
        app.start(serve=False)
        app.wait_until(lambda: "Counter-Extras" not in (app.staging / protocol.LOADED).read_text(),
                       "the record of the older image")
        assert sorted(loaded(app).packages) == ["Counter-App"]
        assert loaded(app).packages["Counter-App"].version == "Counter-App-demo.2"
    finally:
        app.stop()
        shutil.copy2(newest, app.image)
        app.start(serve=False)


def test_a_link_at_packages_is_reported_and_never_written_through(app, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(app.staging / protocol.PACKAGES)
    (app.staging / protocol.PACKAGES).symlink_to(elsewhere)
    try:
        extras = make_package(tmp_path, "Counter-Extras", class_def("HLLoadedExtras", category="Counter-Extras")
                              + method("HLLoadedExtras", "again\n\t^ 2"), author="later")
        report = push(app, extras)
        assert report["exit"] == 0, report
        assert list(elsewhere.iterdir()) == []
        assert loaded(app).packages["Counter-Extras"].version == "Counter-Extras-later.1"
        heartbeat = (app.staging / protocol.HEARTBEAT)
        app.wait_until(lambda: "packages is a symbolic link" in heartbeat.read_text(), "the problem in the heartbeat")
    finally:
        (app.staging / protocol.PACKAGES).unlink()
