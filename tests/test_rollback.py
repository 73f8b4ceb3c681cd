"""Rollback on the client (hotload/staging/rollback.py): reading kept/ (hostile entries included), choosing the state to go
back to, and what a rollback sends and unloads, against staging folders written here as a loader writes them.
The live loader's side is tests/test_rollback_gst.py."""

import hashlib
import os
import shutil
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import class_def, make_package, method
from hotload.staging import protocol
from hotload.staging.deploy import DRY_RUN, PushOptions
from hotload.formats.pack import Packer
from hotload.errors import InputError, LockBusy, NoLoaderRunning, TargetError
from hotload.staging.protocol import iso, render_record
from hotload.staging.rollback import KeptHistory, Rollback
from hotload.staging.transports.local import LocalTransport

EXAMPLES = int(os.environ.get("HOTLOAD_FUZZ_EXAMPLES", "200"))
B1, B2, B3 = "20261122T203700Z-aaaaaa", "20261123T203700Z-bbbbbb", "20261124T203700Z-cccccc"


def package_row(path, batch, origin="added"):
    data = path.read_bytes()
    name, version = path.stem.rsplit("-", 1)[0], path.stem
    return ("package", name, version, path.name, len(data), hashlib.sha256(data).hexdigest(), batch, 1795379820,
            "2026-11-22T20:37:00Z", origin)


def loaded_text(rows, kept_at=None):
    head = [("image", "/srv/app/app.im"), ("id", "3f9a0c12d4e5")]
    tail = [("kept", kept_at, iso(kept_at))] if kept_at is not None else []
    return render_record("loaded", head + rows + tail)


def heartbeat(folder, features=("health", "rollback")):
    now = time.time()
    rows = [("time", int(now), iso(now)), ("loader", "gst", "priority 5", "interval 2000", "image /srv/app/app.im"),
            ("id", "3f9a0c12d4e5")]
    if features:
        rows.append(("features", *features))
    (folder / protocol.HEARTBEAT).write_text(render_record("heartbeat", rows))


def keep(folder, batch, rows, kept_at, sent=()):
    kept = folder / protocol.KEPT / batch
    kept.mkdir(parents=True)
    (kept / protocol.LOADED).write_text(loaded_text(rows, kept_at))
    manifest = [("batch", batch), ("created", kept_at, iso(kept_at)), ("client", "hotload", "t@h")]
    manifest += [("package", n, p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest(), p.stem)
                 for n, p in enumerate(sent, start=1)]
    (kept / protocol.MANIFEST).write_text(render_record("manifest", manifest))


@pytest.fixture
def staged(tmp_path):
    """Batch 1 loaded Shop-Core 1; batch 2 Shop-Core 2 and Shop-Extras 1, which the image runs now."""
    src, staging = tmp_path / "src", tmp_path / "staging"
    core1 = make_package(src / "1", "Shop-Core", class_def("ShopItem", category="Shop-Core") + method("ShopItem", "price\n\t^ 1"))
    (src / "1" / "Shop-Core.st").write_text(class_def("ShopItem", category="Shop-Core") + method("ShopItem", "price\n\t^ 2"))
    core2 = Packer(author="tester", package_name="Shop-Core").pack(src / "1" / "Shop-Core.st", src / "1", core1).path
    extras = make_package(src / "3", "Shop-Extras", class_def("ShopExtra", category="Shop-Extras"))
    (staging / protocol.PACKAGES).mkdir(parents=True)
    for path in (core1, core2, extras):
        (staging / protocol.PACKAGES / path.name).write_bytes(path.read_bytes())
    now_rows = [package_row(core2, B2), package_row(extras, B2)]
    keep(staging, B1, [package_row(core1, B1)], 1795379820, [core1])
    keep(staging, B2, now_rows, 1795466220, [core2, extras])
    (staging / protocol.LOADED).write_text(loaded_text(now_rows))
    heartbeat(staging)
    return staging


def history_of(folder) -> KeptHistory:
    with LocalTransport(folder) as transport:
        return KeptHistory.read(transport)


def select(folder, to_batch=None):
    with LocalTransport(folder) as transport:
        return Rollback(str(folder), lambda: folder.parent, PushOptions(), to_batch).select(transport)


def current(folder):
    return protocol.LoadedRecord.parse((folder / protocol.LOADED).read_text())


def test_kept_batches_are_read_newest_first_with_what_they_sent(staged):
    history = history_of(staged)
    assert [kept.batch for kept in history.batches] == [B2, B1] and history.problems == []
    assert history.batches[0].sent == ["Shop-Core-tester.2", "Shop-Extras-tester.1"]
    assert history.previous(current(staged)).batch == B1
    assert [row[4] for row in history.rows(current(staged))] == ["current", "rollback"]


def test_the_time_kept_orders_them_not_the_batch_id(staged):
    """Batch ids carry the pushing client's clock; the loader's `kept` time decides."""
    (staged / protocol.KEPT / B1).rename(staged / protocol.KEPT / B3)
    assert [kept.batch for kept in history_of(staged).batches] == [B2, B3]


def test_a_rollback_sends_the_older_version_and_unloads_what_came_since(staged):
    selection = select(staged)
    assert [(d.version, d.action) for d in selection.decisions] == [("Shop-Core-tester.1", "send")]
    assert [p.version for p in selection.unloads] == ["Shop-Extras-tester.1"]
    assert [e.version for e in selection.entries] == ["Shop-Core-tester.1"] and not selection.up_to_date


@pytest.mark.parametrize("origin, why", [("replaced", "the image had code of it before hotload first loaded it"),
                                         ("unknown", "its loader did not record")])
def test_a_package_hotload_did_not_add_is_never_unloaded(staged, origin, why):
    """Shop-Extras was baked into the image (or nobody recorded): unloading it would lose code no kept file holds."""
    record = (staged / protocol.LOADED).read_text().replace("\tadded\n", "\t%s\n" % origin)
    (staged / protocol.LOADED).write_text(record)
    with pytest.raises(InputError, match=f"does not have Shop-Extras.*{why}.*push the version of Shop-Extras"):
        select(staged)


def test_a_rollback_waits_for_no_pending_trigger(staged):
    (staged / protocol.TRIGGER).write_text(protocol.render_trigger(B3))
    with pytest.raises(LockBusy, match="still waiting for the loader"):
        select(staged)


def test_a_dry_run_writes_nothing(staged):
    before = sorted(str(p.relative_to(staged)) for p in staged.rglob("*"))
    result = Rollback(str(staged), lambda: staged.parent, PushOptions(dry_run=True)).run()
    assert result.result == DRY_RUN and result.to_json()["unloads"] == ["Shop-Extras-tester.1"]
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*")) == before


def test_nothing_to_go_back_to_is_bad_input(staged):
    shutil.rmtree(staged / protocol.KEPT / B1)
    with pytest.raises(InputError, match="nothing to roll back to"):
        select(staged)
    shutil.rmtree(staged / protocol.KEPT)
    with pytest.raises(InputError, match="kept no batch"):
        select(staged)
    with pytest.raises(InputError, match="is not kept there"):
        select(staged, to_batch=B3)


def test_a_kept_file_missing_or_altered_stops_it_before_anything_is_written(staged):
    kept = staged / protocol.PACKAGES / "Shop-Core-tester.1.mcz"
    kept.write_bytes(kept.read_bytes() + b"x")
    with pytest.raises(TargetError, match="is not the loaded file.*push Shop-Core-tester.1 by hand"):
        select(staged)
    kept.unlink()
    with pytest.raises(TargetError, match="is missing"):
        select(staged)


def test_a_loader_that_cannot_unload_is_refused(staged):
    heartbeat(staged, features=("health",))
    with pytest.raises(NoLoaderRunning, match="update it with `hotload install-loader`"):
        select(staged)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_hostile_entries_in_kept_are_reported_never_followed(staged, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / protocol.LOADED).write_text(loaded_text([], 1795999999))
    kept = staged / protocol.KEPT
    (kept / B3).symlink_to(outside)  # a link to a folder that looks kept and is newest
    (kept / B1 / protocol.LOADED).unlink()
    os.mkfifo(kept / B1 / protocol.LOADED)  # would block a reader that opened it
    (kept / "not-a-batch").mkdir()
    history = history_of(staged)
    assert [k.batch for k in history.batches] == [B2]
    assert history.problems == [
        f"kept/{B1}/loaded in {staged} is a special file, not a file; hotload did not write it, so it is left alone: "
        "remove it by hand",
        f"kept/{B3} is a symbolic link, not a folder; hotload never follows it",
    ]
    shutil.rmtree(kept)
    kept.write_text("a file")
    assert history_of(staged).problems == ["kept is a file, not a folder; the loader keeps no batch until it is removed"]


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None)
@given(state=st.binary(max_size=600), manifest=st.binary(max_size=600))
def test_fuzz_any_kept_folder_is_read_or_reported(tmp_path_factory, state, manifest):
    folder = tmp_path_factory.mktemp("kept")
    (folder / protocol.KEPT / B1).mkdir(parents=True)
    (folder / protocol.KEPT / B1 / protocol.LOADED).write_bytes(state)
    (folder / protocol.KEPT / B1 / protocol.MANIFEST).write_bytes(manifest)
    history = history_of(folder)
    assert len(history.batches) + len(history.problems) == 1
