"""A hostile staging directory, against the real gst loader in a running Seaside image.

docs/protocol.md: the loader never follows a symbolic link and never writes outside the staging directory;
an entry of the wrong kind (a link, a FIFO, a folder where a file belongs, a file where a folder belongs) at
a name the protocol uses is reported as a `problem` (in `heartbeat`, or in `status` when `heartbeat` itself is
the bad entry), the loader keeps polling and processes the next good batch. Over-limit batches (manifest size,
package count, .mcz size, inflated member and batch sizes) are rejected before anything is inflated, with a
message naming the limit and how to raise it, while the web app keeps answering.

One image serves the whole module; batches are crafted by hand (manifest and trigger written here), so the
client's own checks are bypassed. Every link points into a folder outside the staging directory whose whole
tree is compared before and after. The loader's own temporary names (`.hotload-loader-<12 random hex>`) are
not predictable, so they are not planted.
"""

import hashlib
import os
import shutil
import stat
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from conftest import run_hotload
from hotload.staging import protocol
from helpers import example_versions, serving_counter
from hotload.images.example_app import heading_of
from request_loop import RequestLoop
from hotload.staging.protocol import Heartbeat, Manifest, ManifestEntry, Status

pytestmark = pytest.mark.skipif(
    not shutil.which("gst") or not shutil.which("unzip"),
    reason="GNU Smalltalk and unzip are needed (run .ci/install-system as root)",
)

INTERVAL_MS = 250
MIB = 1024 * 1024
#: lowered in the test image so that a batch over it stays small (the default is 512 MiB)
TEST_MAX_BATCH_BYTES = 300_000
OUTSIDE_TEXT = b"outside the staging directory: hotload must never change this\n"


#: run before examples/counter/serve.st: a batch limit small enough to test
PRELUDE = f"HLLimits current maxBatchBytes: {TEST_MAX_BATCH_BYTES}!\n"


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    return example_versions(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def app(tmp_path_factory, versions):
    """Serving Counter v1. Every bad batch of this module carries v2: the page must stay v1."""
    with serving_counter(tmp_path_factory.mktemp("hostile"), INTERVAL_MS, before=PRELUDE) as counter:
        run_hotload("push", versions[0], "--to", counter.staging, "--wait", check=True)
        assert heading_of(counter.get(counter.url)[1]) == "Counter v1"
        yield counter


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A folder beside the staging directory that links point into; it must never change."""
    root = tmp_path_factory.mktemp("outside")
    (root / "target.txt").write_bytes(OUTSIDE_TEXT)
    (root / "dir").mkdir()
    (root / "dir" / "keep.txt").write_bytes(OUTSIDE_TEXT)
    return root


def tree(root: Path) -> dict:
    """Every entry under root: kind, mode, size and content hash (links are not followed)."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
            target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            entries[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_mode, info.st_size, digest, target)
    return entries


@pytest.fixture
def untouched(outside):
    """Asserts, after the test, that nothing outside the staging directory changed or appeared."""
    before = tree(outside)
    yield outside
    assert tree(outside) == before


# -- helpers -----------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_for(position: int, path: Path, version: str = None) -> ManifestEntry:
    return ManifestEntry(position, path.name, path.stat().st_size, sha256_of(path), version or path.name[: -len(".mcz")])


def manifest_text(batch: str, entries) -> str:
    return Manifest.new(list(entries), batch=batch).render()


def new_batch(app, packages=(), text=None) -> tuple:
    """A batch folder under its final name holding copies of `packages` and a manifest for them
    (or `text` as the manifest). Answers (batch id, folder)."""
    batch = protocol.new_batch_id()
    folder = app.staging / batch
    folder.mkdir()
    entries = []
    for position, package in enumerate(packages, 1):
        shutil.copyfile(package, folder / package.name)
        entries.append(entry_for(position, folder / package.name))
    (folder / protocol.MANIFEST).write_text(text if text is not None else manifest_text(batch, entries))
    return batch, folder


def trigger(app, batch: str):
    """Publish the trigger as the client does: a temporary file linked to `load` (fails if one is there)."""
    temp = app.staging / protocol.temp_name(batch, "load")
    temp.write_text(protocol.render_trigger(batch))
    os.link(temp, app.staging / protocol.TRIGGER)
    temp.unlink()


def status_of(app):
    path = app.staging / protocol.STATUS
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return Status.parse(path.read_text())
    except protocol.ProtocolError:
        return None


def wait_for_status(app, batch: str, timeout: float = 60) -> Status:
    found = []

    def arrived():
        status = status_of(app)
        if status is not None and status.batch == batch:
            found.append(status)
            return True
        return False

    app.wait_until(arrived, f"the status of batch {batch}", timeout)
    app.wait_until(lambda: not os.path.lexists(app.staging / protocol.TRIGGER), "the loader to delete load")
    return found[0]


def heartbeat_of(app):
    path = app.staging / protocol.HEARTBEAT
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return Heartbeat.parse(path.read_text())
    except protocol.ProtocolError:
        return None


def identity(path: Path):
    """Changes each time the loader rewrites the record (a new file renamed over it)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def wait_rewritten(app, name: str, times: int = 2):
    """The loader keeps rewriting `name` (its heartbeat, or status when the heartbeat is bad): it polls."""
    path = app.staging / name
    seen = [identity(path)]

    def advanced():
        now = identity(path)
        if now is not None and now != seen[-1] and stat.S_ISREG(os.lstat(path).st_mode):
            seen.append(now)
        return len(seen) > times

    app.wait_until(advanced, f"the loader to rewrite {name} {times} times")


def wait_healthy(app):
    """A heartbeat with no problem line: the loader has seen the bad entry go."""
    app.wait_until(lambda: heartbeat_of(app) is not None and not heartbeat_of(app).problems, "a heartbeat without problems")


def assert_serving_v1(app):
    status, page, _ = app.get(app.url)
    assert status == 200 and heading_of(page) == "Counter v1", page[:500]


def push_v1(app, versions):
    """A real batch (--force: v1 is loaded already), to show the loader still loads."""
    result = run_hotload("push", versions[0], "--to", app.staging, "--wait", "--json", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"result": "ok"' in result.stdout


def remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def make_bad(path: Path, kind: str, outside: Path):
    """Put an entry of the wrong kind at path."""
    remove(path)
    if kind == "link-to-file":
        path.symlink_to(outside / "target.txt")
    elif kind == "link-to-folder":
        path.symlink_to(outside / "dir")
    elif kind == "folder":
        path.mkdir()
        (path / "inside.txt").write_text("a folder where a file belongs\n")
    elif kind == "file":
        path.write_text("a file where a folder belongs\n")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        raise ValueError(kind)


KIND_WORDS = {
    "link-to-file": "a symbolic link",
    "link-to-folder": "a symbolic link",
    "folder": "a folder",
    "file": "a file",
    "fifo": "a special file",
}


# -- entries of the wrong kind at the protocol's names --------------------------------------------------------

FILE_NAMES = ["heartbeat", "status", "history.log", "lock", "load", "journal", "conflict", "loaded"]
BAD_FILE_KINDS = ["link-to-file", "link-to-folder", "folder", "fifo"]
BAD_FOLDER_KINDS = ["link-to-folder", "link-to-file", "file", "fifo"]


@pytest.mark.parametrize("kind", BAD_FILE_KINDS)
@pytest.mark.parametrize("name", FILE_NAMES)
def test_wrong_kind_at_a_file_name_is_reported_and_polling_goes_on(app, versions, untouched, name, kind):
    path = app.staging / name
    make_bad(path, kind, untouched)
    try:
        # The report: in heartbeat, or in status when heartbeat is the bad entry.
        record = "status" if name == "heartbeat" else "heartbeat"
        expected = f"{name} is {KIND_WORDS[kind]}"

        def reported():
            found = status_of(app) if record == "status" else heartbeat_of(app)
            return found is not None and any(p.startswith(expected) for p in found.problems)

        app.wait_until(reported, f"the problem {expected!r} in {record}")
        wait_rewritten(app, record)  # still polling (a FIFO was not opened: nothing hangs)
        assert_serving_v1(app)
        assert os.path.lexists(path) and stat.S_IFMT(os.lstat(path).st_mode) == {
            "link-to-file": stat.S_IFLNK, "link-to-folder": stat.S_IFLNK, "folder": stat.S_IFDIR, "fifo": stat.S_IFIFO,
        }[kind]  # left alone: not removed, replaced or followed
    finally:
        remove(path)
    wait_healthy(app)
    push_v1(app, versions)
    assert_serving_v1(app)


@pytest.mark.parametrize("kind", ["link-to-file", "fifo"])
@pytest.mark.parametrize("name", ["heartbeat", "status", "history.log", "journal", "loaded"])
def test_a_batch_triggered_while_a_record_is_bad_is_loaded_and_nothing_outside_changes(app, versions, untouched, name, kind):
    """The records the loader writes during a batch: a bad one is never written through; the batch is loaded
    (the bookkeeping it cannot do is logged), or, for the journal, waits until the journal can be written."""
    path = app.staging / name
    make_bad(path, kind, untouched)
    batch, folder = new_batch(app, [versions[0]])
    loaded = lambda: not os.path.lexists(folder) and not os.path.lexists(app.staging / protocol.TRIGGER)
    try:
        trigger(app, batch)
        if name == "journal":
            wait_rewritten(app, protocol.HEARTBEAT, 3)
            assert folder.is_dir() and (app.staging / protocol.TRIGGER).is_file()  # not started without a journal
        else:
            app.wait_until(loaded, "the batch to be loaded")
        wait_rewritten(app, protocol.STATUS if name == "heartbeat" else protocol.HEARTBEAT)
        assert_serving_v1(app)
    finally:
        remove(path)
    app.wait_until(loaded, "the batch to be loaded")
    if name != "status":
        assert wait_for_status(app, batch).result == "ok"
    wait_healthy(app)
    push_v1(app, versions)


def test_a_heartbeat_from_the_future_does_not_stand_the_loader_by_for_ever(app, versions):
    """Another loader's heartbeat dated an hour ahead (a clock set wrong, or a hostile file) is not fresh."""
    ours = heartbeat_of(app).id
    fake = protocol.render_record("heartbeat", [
        ("time", int(time.time()) + 3600, protocol.iso(time.time() + 3600)),
        ("loader", "gst", "priority 5", "interval 2000", "image /elsewhere/other.im"),
        ("id", "0123456789ab"),
    ])
    temp = app.staging / "heartbeat.fake"
    temp.write_text(fake)
    temp.rename(app.staging / protocol.HEARTBEAT)
    app.wait_until(lambda: heartbeat_of(app) is not None and heartbeat_of(app).id == ours, "the loader to own the directory again")
    wait_rewritten(app, protocol.HEARTBEAT)
    assert_serving_v1(app)
    push_v1(app, versions)


def _bad_batch(app, versions):
    """A batch the loader must reject without loading anything (its manifest is a FIFO)."""
    batch, folder = new_batch(app, [versions[1]])
    (folder / protocol.MANIFEST).unlink()
    os.mkfifo(folder / protocol.MANIFEST)
    return batch, folder


@pytest.mark.parametrize("kind", BAD_FOLDER_KINDS)
def test_wrong_kind_at_failed_is_reported_and_a_rejected_batch_stays_in_place(app, versions, untouched, kind):
    path = app.staging / protocol.FAILED
    kept = path.with_name("failed.kept")
    if path.is_dir() and not path.is_symlink():
        path.rename(kept)
    make_bad(path, kind, untouched)
    try:
        expected = f"failed is {KIND_WORDS[kind]}"
        app.wait_until(
            lambda: heartbeat_of(app) is not None and any(p.startswith(expected) for p in heartbeat_of(app).problems),
            f"the problem {expected!r} in heartbeat",
        )
        batch, folder = _bad_batch(app, versions)
        trigger(app, batch)
        status = wait_for_status(app, batch)
        assert status.result == "failed" and "manifest" in status.error and "special file" in status.error
        assert stat.S_ISDIR(os.lstat(folder).st_mode)  # not moved into (or through) the bad failed entry
        wait_rewritten(app, protocol.HEARTBEAT)
        assert_serving_v1(app)
    finally:
        remove(path)
        if kept.exists():
            kept.rename(path)
    remove(folder)
    wait_healthy(app)
    push_v1(app, versions)


@pytest.mark.parametrize("kind", BAD_FOLDER_KINDS)
def test_wrong_kind_at_packages_is_reported_and_a_batch_loads_without_keeping_its_files(app, versions, untouched, kind):
    path = app.staging / protocol.PACKAGES
    kept = path.with_name("packages.kept")
    if path.is_dir() and not path.is_symlink():
        path.rename(kept)
    make_bad(path, kind, untouched)
    try:
        expected = f"packages is {KIND_WORDS[kind]}"
        app.wait_until(
            lambda: heartbeat_of(app) is not None and any(p.startswith(expected) for p in heartbeat_of(app).problems),
            f"the problem {expected!r} in heartbeat",
        )
        batch, folder = new_batch(app, [versions[0]])
        trigger(app, batch)
        assert wait_for_status(app, batch).result == "ok"
        assert not os.path.lexists(folder)  # loaded and cleaned up; nothing moved into or through packages
        assert_serving_v1(app)
    finally:
        remove(path)
        if kept.exists():
            kept.rename(path)
    wait_healthy(app)
    push_v1(app, versions)


@pytest.mark.parametrize("kind", ["link-to-folder", "link-to-file", "file", "fifo"])
def test_wrong_kind_at_failed_batch_is_never_used(app, versions, untouched, kind):
    batch, folder = _bad_batch(app, versions)
    (app.staging / protocol.FAILED).mkdir(exist_ok=True)
    path = app.staging / protocol.FAILED / batch
    make_bad(path, kind, untouched)
    try:
        trigger(app, batch)
        status = wait_for_status(app, batch)
        assert status.result == "failed" and "special file" in status.error
        assert_serving_v1(app)
        assert not os.path.lexists(folder)
        moved = [p for p in (app.staging / protocol.FAILED).iterdir() if p.name.startswith(batch + "-")]
        assert len(moved) == 1 and (moved[0] / "reason").is_file()  # kept beside the bad entry, not in it
        assert "special file" in (moved[0] / "reason").read_text()
    finally:
        remove(path)
    wait_rewritten(app, protocol.HEARTBEAT)
    push_v1(app, versions)


# -- entries of the wrong kind inside a pushed batch --------------------------------------------------------


def _stage_outside_copy(outside: Path, versions, batch: str) -> Path:
    """A complete, valid batch folder outside the staging directory (what a link would lead to)."""
    folder = outside / f"batch-{batch}"
    folder.mkdir()
    shutil.copyfile(versions[1], folder / versions[1].name)
    (folder / protocol.MANIFEST).write_text(manifest_text(batch, [entry_for(1, folder / versions[1].name)]))
    return folder


@pytest.mark.parametrize("kind", ["link-to-folder", "file", "fifo"])
def test_batch_folder_of_the_wrong_kind_is_rejected(app, versions, outside, kind):
    batch = protocol.new_batch_id()
    real = _stage_outside_copy(outside, versions, batch)
    before = tree(outside)
    path = app.staging / batch
    if kind == "link-to-folder":
        path.symlink_to(real)
    else:
        make_bad(path, kind, outside)
    try:
        trigger(app, batch)
        status = wait_for_status(app, batch)
        assert status.result == "failed" and not status.loaded
        assert f"the batch folder {batch} is {KIND_WORDS[kind]}" in status.error
        assert_serving_v1(app)
        assert tree(outside) == before
        assert (app.staging / protocol.FAILED / batch / "reason").is_file()
        assert os.path.lexists(path)  # a link, file or FIFO is never moved or deleted
    finally:
        remove(path)
        shutil.rmtree(real)


@pytest.mark.parametrize("kind", ["link-to-file", "folder", "fifo"])
@pytest.mark.parametrize("what", ["manifest", "package"])
def test_batch_member_of_the_wrong_kind_is_rejected(app, versions, outside, what, kind):
    batch, folder = new_batch(app, [versions[1]])
    real = _stage_outside_copy(outside, versions, batch)
    before = tree(outside)
    name = protocol.MANIFEST if what == "manifest" else versions[1].name
    if kind == "link-to-file":
        (folder / name).unlink()
        (folder / name).symlink_to(real / name)  # the same bytes: only the kind is wrong
    else:
        make_bad(folder / name, kind, outside)
    try:
        trigger(app, batch)
        status = wait_for_status(app, batch)
        assert status.result == "failed" and not status.loaded
        expected = f"the manifest of {batch} is {KIND_WORDS[kind]}" if what == "manifest" else f"{name} is {KIND_WORDS[kind]}"
        assert expected in status.error
        assert_serving_v1(app)
        assert tree(outside) == before
        failed = app.staging / protocol.FAILED / batch
        assert (failed / "reason").is_file() and os.path.lexists(failed / name)
        if kind == "link-to-file":
            assert os.readlink(failed / name) == str(real / name)  # moved as a link, never followed
    finally:
        shutil.rmtree(real)


@pytest.mark.parametrize("kind", ["link-to-file", "folder", "fifo"])
def test_reason_of_the_wrong_kind_in_a_rejected_batch_is_not_written_through(app, versions, untouched, kind):
    """failed/<batch>/ is the batch folder moved: a `reason` the client's side put there is never used."""
    batch, folder = _bad_batch(app, versions)
    make_bad(folder / "reason", kind, untouched)
    trigger(app, batch)
    status = wait_for_status(app, batch)
    assert status.result == "failed" and "special file" in status.error
    assert_serving_v1(app)
    failed = app.staging / protocol.FAILED / batch
    assert failed.is_dir() and not os.path.lexists(folder)
    assert not (failed / "reason").is_file() or (failed / "reason").is_symlink()


@pytest.mark.parametrize("name", ["heartbeat", "load", "journal", "conflict", "status", "lock", "history.log"])
def test_a_huge_record_is_never_read_whole(app, versions, name):
    """A 1 GiB (sparse) regular file at a record's name: read with a limit or not at all; polling goes on."""
    path = app.staging / name
    kept = path.with_name(name + ".kept")
    if path.is_file():
        path.rename(kept)
    memory_before = vm_hwm(app)
    with open(path, "wb") as out:
        out.truncate(1024 * MIB)
    try:
        if name == "load":
            app.wait_until(lambda: not path.exists(), "the loader to reject the oversized trigger")
            status = status_of(app)
            assert status.result == "failed" and "trigger" in status.error and "4096" in status.error, status
        elif name == "journal":
            app.wait_until(lambda: not path.exists(), "the loader to remove the unreadable journal")
        elif name == "heartbeat":
            app.wait_until(lambda: heartbeat_of(app) is not None, "the loader to replace the heartbeat")
        wait_rewritten(app, protocol.HEARTBEAT)
        assert_serving_v1(app)
        grown = vm_hwm(app) - memory_before
        assert grown < 100 * MIB, f"the image's peak memory grew by {grown // MIB} MiB"
    finally:
        remove(path)
        if kept.exists():
            kept.rename(path)
    wait_rewritten(app, protocol.HEARTBEAT)  # a put-back heartbeat is old: wait for a fresh one
    push_v1(app, versions)


def test_a_link_inside_a_good_batch_is_left_alone(app, versions, untouched):
    """The batch loads; the clean-up deletes what the client wrote and never a link (nor what it points to)."""
    batch, folder = new_batch(app, [versions[0]])
    (folder / "Other-x.1.mcz").symlink_to(untouched / "target.txt")
    (folder / "stray").symlink_to(untouched / "dir")
    trigger(app, batch)
    status = wait_for_status(app, batch)
    assert status.result == "ok", status
    assert sorted(p.name for p in folder.iterdir()) == ["Other-x.1.mcz", "stray"]
    shutil.rmtree(folder)
    assert_serving_v1(app)


# -- limits ----------------------------------------------------------------------------------------------------


def vm_hwm(app) -> int:
    """The image's peak resident memory so far, in bytes."""
    for line in Path(f"/proc/{app.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def write_zip(path: Path, members):
    """A zip written by hand, member by member, each given as (name, deflated bytes iterable, crc, size):
    streamed, so a 1 GiB member costs the test no memory."""
    central = []
    with open(path, "wb") as out:
        for name, chunks, crc, size in members:
            offset = out.tell()
            raw = name.encode()
            out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, 0, 0, 0, len(raw), 0) + raw)
            compressed = 0
            for chunk in chunks:
                out.write(chunk)
                compressed += len(chunk)
            end = out.tell()
            out.seek(offset + 14)
            out.write(struct.pack("<3L", crc, compressed, size))
            out.seek(end)
            central.append(
                struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, compressed, size, len(raw), 0, 0, 0, 0,
                            0o100644 << 16, offset) + raw
            )
        start = out.tell()
        for record in central:
            out.write(record)
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0))


def deflated(data: bytes):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return [compressor.compress(data) + compressor.flush()], zlib.crc32(data), len(data)


def spaces_deflated(size: int, declared: int = None):
    """`size` spaces, deflated (as write_zip takes a member): one 1 MiB block compressed once and repeated
    (a full flush makes each block independent and byte-aligned), so a 1 GiB member is quick to build.
    `declared` is the size the headers claim (a lying header when it differs)."""
    assert size % MIB == 0
    block = b" " * MIB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH) == first
    tail = compressor.flush()
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(block, crc)

    def chunks():
        for _ in range(size // MIB):
            yield first
        yield tail

    return chunks(), crc, size if declared is None else declared


def small_members(package: Path) -> list:
    """The package and version members of a real .mcz, as write_zip takes them."""
    with zipfile.ZipFile(package) as archive:
        return [(name, *deflated(archive.read(name))) for name in ("package", "version")]


def zip_bomb(path: Path, like: Path, declared: int = None) -> Path:
    """A small .mcz whose snapshot/source.st inflates to 1 GiB of spaces (its headers say `declared`)."""
    write_zip(path, small_members(like) + [("snapshot/source.st", *spaces_deflated(1024 * MIB, declared))])
    return path


def over_limit_batch(app, versions, tmp_path, limit: str):
    """A batch over one limit (or whose zip header lies about a member's size), bypassing the client's checks:
    answers the batch id. Each is small on disk or sparse; only the bomb's member would be large, inflated."""
    v2 = versions[1]
    if limit == "maxManifestBytes":
        batch, folder = new_batch(app, [v2])
        text = (folder / protocol.MANIFEST).read_text()
        padding = "note\t" + "x" * (20 * MIB) + "\n"
        (folder / protocol.MANIFEST).write_text(text[: -len("end\n")] + padding + "end\n")
    elif limit == "maxPackages":
        batch = protocol.new_batch_id()
        entries = [ManifestEntry(i, f"P{i}-x.1.mcz", 1000, "ab" * 32, f"P{i}-x.1") for i in range(1, 1002)]
        batch, folder = _named_batch(app, batch, manifest_text(batch, entries))
    elif limit == "maxPackageBytes":
        big = tmp_path / "Counter-App-big.1.mcz"
        with open(big, "wb") as out:  # sparse: 64 MiB + 1 byte that the loader must not read
            out.truncate(64 * MIB + 1)
        batch, folder = new_batch(app, [big])
        big.unlink()
    elif limit in ("maxMemberBytes", "lying header"):
        bomb = zip_bomb(tmp_path / "Counter-App-bomb.1.mcz", v2, None if limit == "maxMemberBytes" else 1000)
        batch, folder = new_batch(app, [bomb])
    elif limit == "maxBatchBytes":
        packages = []
        for name in ("Big-One", "Big-Two"):
            source = (" " * 200_000).encode()  # each within maxMemberBytes, together over the test image's maxBatchBytes
            path = tmp_path / f"{name}-x.1.mcz"
            write_zip(path, small_members(v2) + [("snapshot/source.st", *deflated(source))])
            packages.append(path)
        batch, folder = new_batch(app, packages)
    else:
        raise ValueError(limit)
    return batch


def _named_batch(app, batch: str, text: str):
    folder = app.staging / batch
    folder.mkdir()
    (folder / protocol.MANIFEST).write_text(text)
    return batch, folder


@pytest.mark.parametrize("limit", ["maxMemberBytes", "lying header", "maxPackageBytes", "maxManifestBytes", "maxPackages", "maxBatchBytes"])
def test_over_limit_batch_is_rejected_in_bounded_memory_while_serving(app, versions, tmp_path, limit):
    _, _, session_url = app.get(app.url)
    batch = over_limit_batch(app, versions, tmp_path, limit)
    memory_before = vm_hwm(app)
    requests = RequestLoop([session_url])
    requests.start()
    try:
        app.wait_until(lambda: len(requests.records) >= 3, "the first requests")
        trigger(app, batch)
        status = wait_for_status(app, batch, timeout=90)
    finally:
        requests.done.set()
        requests.join(30)
    assert status.result == "failed" and not status.loaded, status
    if limit == "lying header":
        assert "header" in status.error, status.error
    else:
        assert limit in status.error and f"HLLimits current {limit}: " in status.error, status.error
    grown = vm_hwm(app) - memory_before
    assert grown < 100 * MIB, f"the image's peak memory grew by {grown // MIB} MiB while rejecting the batch"
    assert requests.records and requests.failures() == []
    assert_serving_v1(app)
    shutil.rmtree(app.staging / protocol.FAILED / batch)


def test_client_refuses_the_zip_bomb_before_uploading(versions, tmp_path):
    bomb = zip_bomb(tmp_path / "Counter-App-bomb.1.mcz", versions[1])
    staging = tmp_path / "staging"
    result = run_hotload("push", bomb, "--to", staging, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "max_member_bytes" in result.stderr and "HOTLOAD_MAX_MEMBER_MB" in result.stderr, result.stderr
    assert not staging.exists() or not any(staging.iterdir())
