"""Rollback on the live gst image (docs/protocol.md, "kept/" and "Rolling back (client)"): the loader keeps the
last batches, `hotload history` lists them, and `hotload rollback` loads the versions of an earlier state again
from the server's kept files and unloads the packages added since, as one batch that is verified,
health-checked and saved like a push.

A probe page (its own Seaside application, loaded with the first batch and never changed) says whether the
class of the package that comes and goes is in the running image."""

import hashlib
import json

import pytest

from conftest import NEEDS_GST, run_hotload
from helpers import class_def, make_package, method, staging_names
from hotload.staging import protocol
from hotload.images.example_app import heading_of
from hotload.formats.pack import Packer
from hotload.staging.protocol import LoadedRecord

pytestmark = NEEDS_GST

INTERVAL_MS = 500

PROBE = """WAComponent subclass: #HLRollbackProbe
	instanceVariableNames: ''
	classVariableNames: ''
	poolDictionaries: ''
	category: 'Counter-Probe'!

!HLRollbackProbe class methodsFor: 'testing'!
canBeRoot
	^ true
! !

!HLRollbackProbe class methodsFor: 'initialization'!
initialize
	(WADispatcher default entryPoints includesKey: 'probe')
		ifFalse: [ self registerAsApplication: 'probe' ]
! !

!HLRollbackProbe methodsFor: 'rendering'!
renderContentOn: html
	html heading: 'extras ' , ((Smalltalk includesKey: #HLRollbackExtras)
		ifTrue: [ (Smalltalk at: #HLRollbackExtras) new greeting ]
		ifFalse: [ 'absent' ])
! !

HLRollbackProbe initialize!
"""


def extras(folder, number: int, ancestor=None):
    """Counter-Extras: a class whose greeting (`hello <number>`) the probe shows."""
    source = folder / f"extras-{number}" / "Counter-Extras.st"
    source.parent.mkdir()
    source.write_text(class_def("HLRollbackExtras", category="Counter-Extras")
                      + method("HLRollbackExtras", f"greeting\n\t^ 'hello {number}'"))
    return Packer(author="tester", package_name="Counter-Extras").pack(source, source.parent, ancestor).path


@pytest.fixture(scope="module")
def packages(tmp_path_factory, versions):
    folder = tmp_path_factory.mktemp("rollback")
    probe = make_package(folder / "probe", "Counter-Probe", PROBE)
    first = extras(folder, 1)
    second = extras(folder, 2, ancestor=first)
    return {"v1": versions[0], "v2": versions[1], "probe": probe, "extras1": first, "extras2": second}


def hotload(*args, cwd=None):
    result = run_hotload(*args, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def as_json(result) -> dict:
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    report["exit"] = result.returncode
    return report


def page(app, name="counter") -> str:
    return heading_of(app.get(app.url.replace("/counter", f"/{name}"))[1])


def running(app) -> dict:
    record = LoadedRecord.parse((app.staging / protocol.LOADED).read_text())
    return {name: package.version for name, package in record.packages.items()}


def kept_batches(app) -> list:
    return sorted(path.name for path in (app.staging / protocol.KEPT).iterdir())


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pushed(app, packages):
    """Batch 1: counter v1 and the probe; batch 2: counter v2 and Counter-Extras 1."""
    first = as_json(hotload("push", packages["v1"], packages["probe"], "--to", app.staging, "--wait", "--json"))
    assert first["exit"] == 0, first
    assert (page(app), page(app, "probe")) == ("Counter v1", "extras absent")
    second = as_json(hotload("push", packages["v2"], packages["extras1"], "--to", app.staging, "--wait", "--json"))
    assert second["exit"] == 0, second
    assert (page(app), page(app, "probe")) == ("Counter v2", "extras hello 1")
    return first["batch"], second["batch"]


def test_history_lists_the_kept_batches_newest_first(app, pushed):
    first, second = pushed
    report = as_json(hotload("history", "--to", app.staging, "--json"))
    assert report["exit"] == 0 and report["problems"] == []
    assert [(kept["batch"], kept["mark"]) for kept in report["kept"]] == [(second, "current"), (first, "rollback")]
    assert report["kept"][0]["sent"] == ["Counter-App-demo.2", "Counter-Extras-tester.1"]
    assert report["kept"][1]["state"] == ["Counter-App-demo.1", "Counter-Probe-tester.1"]
    table = hotload("history", "--to", app.staging).stdout
    assert first in table and second in table and "current" in table and "rollback" in table


def test_a_dry_run_says_what_would_be_sent_and_unloaded_and_writes_nothing(app, pushed):
    image, record = sha256(app.image), (app.staging / protocol.LOADED).read_text()
    report = as_json(hotload("rollback", "--to", app.staging, "--dry-run", "--json"))
    assert report["exit"] == 0 and report["result"] == "dry-run", report
    assert [d["version"] for d in report["decisions"] if d["action"] == "send"] == ["Counter-App-demo.1"]
    assert [d["version"] for d in report["decisions"] if d["action"] == "skip"] == ["Counter-Probe-tester.1"]
    assert report["unloads"] == ["Counter-Extras-tester.1"]
    assert "HLCounter" in json.dumps(report["diff"])  # the diff of the version it would load again
    assert sha256(app.image) == image and (app.staging / protocol.LOADED).read_text() == record
    assert page(app) == "Counter v2"


def test_a_rollback_whose_health_check_fails_is_undone_unload_included(app, pushed, tmp_path):
    """The check wants the extras' greeting, which the rollback unloads: the loader undoes the batch."""
    probe_url = app.url.replace("/counter", "/probe")
    (tmp_path / "hotload.toml").write_text(
        f'[env.live]\ntargets = ["{app.staging}"]\n\n[env.live.health]\nurl = "{probe_url}"\nstatus = 200\nbody = "hello"\n')
    image, record = sha256(app.image), (app.staging / protocol.LOADED).read_text()
    report = as_json(hotload("rollback", "--env", "live", "--json", cwd=tmp_path))
    assert report["exit"] == 1 and report["result"] == "failed", report
    assert report["error"].startswith("health check failed") and "undo incomplete" not in report["error"], report
    assert (page(app), page(app, "probe")) == ("Counter v2", "extras hello 1")  # the unload was undone too
    assert sha256(app.image) == image and (app.staging / protocol.LOADED).read_text() == record
    assert (app.staging / protocol.FAILED / report["batch"] / "manifest").is_file()


def test_rollback_goes_back_to_the_state_before_the_last_batch(app, pushed):
    first, second = pushed
    image = sha256(app.image)
    report = as_json(hotload("rollback", "--to", app.staging, "--json"))
    assert report["exit"] == 0 and report["result"] == "ok", report
    assert report["packages"] == ["Counter-App-demo.1"] and report["unloads"] == ["Counter-Extras-tester.1"]
    assert (page(app), page(app, "probe")) == ("Counter v1", "extras absent")
    assert running(app) == {"Counter-App": "Counter-App-demo.1", "Counter-Probe": "Counter-Probe-tester.1"}
    assert sha256(app.image) != image  # saved
    assert kept_batches(app) == sorted([first, second, report["batch"]])
    marks = {kept["batch"]: kept["mark"] for kept in as_json(hotload("history", "--to", app.staging, "--json"))["kept"]}
    assert marks == {report["batch"]: "current", first: "current", second: "rollback"}


def test_a_second_rollback_goes_forward_again(app, pushed):
    report = as_json(hotload("rollback", "--to", app.staging, "--json"))
    assert report["exit"] == 0 and report["result"] == "ok", report
    assert report["packages"] == ["Counter-App-demo.2", "Counter-Extras-tester.1"] and report["unloads"] == []
    assert (page(app), page(app, "probe")) == ("Counter v2", "extras hello 1")


def test_to_batch_picks_an_older_state_and_an_unknown_one_is_refused(app, pushed):
    first, _ = pushed
    unknown = as_json(hotload("rollback", "--to", app.staging, "--to-batch", "20200101T000000Z-000000", "--json"))
    assert unknown["exit"] == 2 and "is not kept there" in unknown["error"] and first in unknown["error"], unknown
    report = as_json(hotload("rollback", "--to", app.staging, "--to-batch", first, "--json"))
    assert report["exit"] == 0 and report["result"] == "ok", report
    assert (page(app), page(app, "probe")) == ("Counter v1", "extras absent")


def test_a_kept_file_that_is_not_the_recorded_one_stops_the_rollback(app, pushed, packages):
    """The state to go back to (batch 2's) needs Counter-Extras-tester.1.mcz from packages/: altered, it is refused."""
    kept_file = app.staging / protocol.PACKAGES / packages["extras1"].name
    original = kept_file.read_bytes()
    kept_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        before = staging_names(app.staging)
        result = hotload("rollback", "--to", app.staging)
        assert result.returncode == 5, result.stdout + result.stderr
        assert "is not the loaded file" in result.stderr and "push Counter-Extras-tester.1 by hand" in result.stderr
        assert staging_names(app.staging) == before  # nothing staged
    finally:
        kept_file.write_bytes(original)


def test_the_loader_keeps_the_newest_five_and_only_their_files(app, pushed, packages):
    first, _ = pushed
    report = as_json(hotload("push", packages["extras2"], "--to", app.staging, "--wait", "--json"))
    assert report["exit"] == 0, report
    batches = kept_batches(app)
    assert len(batches) == 5 and first not in batches and report["batch"] in batches
    named = {p.file for folder in batches
             for p in LoadedRecord.parse((app.staging / protocol.KEPT / folder / protocol.LOADED).read_text()).packages.values()}
    assert sorted(path.name for path in (app.staging / protocol.PACKAGES).iterdir()) == sorted(named)
    assert page(app, "probe") == "extras hello 2"


def test_a_link_at_kept_is_reported_and_never_written_through(app, tmp_path):
    elsewhere, aside = tmp_path / "elsewhere", tmp_path / "kept-aside"
    elsewhere.mkdir()
    (app.staging / protocol.KEPT).rename(aside)
    (app.staging / protocol.KEPT).symlink_to(elsewhere)
    before = {path.name for path in (app.staging / protocol.PACKAGES).iterdir()}
    try:
        other = make_package(tmp_path / "other", "Counter-Other", class_def("HLRollbackOther", category="Counter-Other"))
        report = as_json(hotload("push", other, "--to", app.staging, "--wait", "--json"))
        assert report["exit"] == 0, report  # the batch is loaded and saved; only its keeping is skipped
        assert list(elsewhere.iterdir()) == []
        # Not kept, so not pruned either: every file a kept state names is still there.
        assert before <= {path.name for path in (app.staging / protocol.PACKAGES).iterdir()}
        app.wait_until(lambda: "kept is a symbolic link" in (app.staging / protocol.HEARTBEAT).read_text(), "the problem line")
        history = hotload("history", "--to", app.staging)
        assert history.returncode == 0 and "kept is a symbolic link, not a folder" in history.stdout, history.stdout
    finally:
        (app.staging / protocol.KEPT).unlink()
        aside.rename(app.staging / protocol.KEPT)


def test_a_package_the_image_had_before_hotload_is_never_unloaded(app, tmp_path):
    """Counter-Baked's class is in the image before hotload first loads the package (as code baked into an
    image is): the loaded record says `replaced`, and a rollback to a state without it is refused, since no
    kept file holds the code it replaced; nothing is pushed."""
    app.stop()
    app.start(before="Object subclass: #HLRollbackBaked instanceVariableNames: '' classVariableNames: '' "
                     "poolDictionaries: '' category: 'Counter-Baked'!\n")
    baked = make_package(tmp_path / "baked", "Counter-Baked",
                         class_def("HLRollbackBaked", category="Counter-Baked") + method("HLRollbackBaked", "baked\n\t^ 2"))
    report = as_json(hotload("push", baked, "--to", app.staging, "--wait", "--json"))
    assert report["exit"] == 0, report
    record = LoadedRecord.parse((app.staging / protocol.LOADED).read_text())
    assert record.packages["Counter-Baked"].origin == "replaced" and record.packages["Counter-Extras"].origin == "added"
    listing = staging_names(app.staging)
    result = hotload("rollback", "--to", app.staging)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "does not have Counter-Baked" in result.stderr and "the image had code of it before" in result.stderr
    assert staging_names(app.staging) == listing
