"""The SFTP upload pipelined across files (hotload/staging/transports/sftp.py, `upload_many`): the protocol's order
still holds as the server sees it, an error reply in the middle fails the push with one line and the
clean-up runs, paramiko's public calls still work, and the round trips a push waits for do not grow with
its number of packages. No timings are asserted."""

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from cli_runner import run_in_process
from helpers import class_def, make_package, method
from hotload.staging import protocol
from hotload.errors import TargetError
from hotload.formats.mcz import read_mcz
from hotload.formats.plan import LoadPlan
from hotload.staging.push import Pusher
from hotload.staging.targets import parse_target
from hotload.staging.transports import open_transport
from hotload.staging.transports import sftp as sftp_module
from relay import Relay
from test_client_faults import big_package, ssh_alias, tmpfs


def plan_of(paths):
    return LoadPlan.build([read_mcz(p) for p in paths])


def small_packages(folder: Path, count: int):
    paths = []
    for number in range(count):
        name = f"Pipe{number:02d}-Core"
        source = class_def(f"Pipe{number:02d}Thing", category=name) + method(f"Pipe{number:02d}Thing", f"answer\n\t^ {number}")
        paths.append(make_package(folder, name, source))
    return paths


class _Recorder(FileSystemEventHandler):
    """Every creation, rename and close-after-writing in the staging directory, as the server's kernel saw it."""

    def __init__(self, root: Path):
        self.root = root
        self.events = []
        self.lock = threading.Lock()

    def _relative(self, path) -> str:
        return os.path.relpath(path, self.root) if path else ""

    def on_any_event(self, event):
        if event.event_type in ("created", "moved", "closed") and event.src_path != str(self.root):
            with self.lock:
                self.events.append((event.event_type, self._relative(event.src_path), self._relative(getattr(event, "dest_path", ""))))


def test_the_server_sees_every_file_closed_before_the_publish_and_the_trigger_last(ssh_home, tmp_path):
    """Through a relay with a delay: the watcher adds its watch of the new temporary folder when it hears of
    the folder, and a round trip between the folder's mkdir and the first open leaves it the time (on
    loopback, a busy machine let the first files be closed before the folder was watched)."""
    staging = tmp_path / "stage"
    staging.mkdir(mode=0o700)
    packages = small_packages(tmp_path / "src", 12) + [big_package(tmp_path / "src", "Pipe-Big", 1.5)]
    recorder = _Recorder(staging)
    observer = Observer()
    observer.schedule(recorder, str(staging), recursive=True)
    observer.start()
    try:
        time.sleep(0.2)
        with Relay(ssh_home.port, delay=0.05) as relay, ssh_alias(ssh_home, port=relay.port) as alias, \
                open_transport(parse_target(f"{alias}:{staging}")) as transport:
            result = Pusher(transport).push(plan_of(packages))
        deadline = time.time() + 5
        while time.time() < deadline and not any(e[1] == protocol.TRIGGER or e[2] == protocol.TRIGGER for e in recorder.events):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        observer.stop()
        observer.join()
    batch, temporary = result.batch, protocol.temp_folder(result.batch)
    events = recorder.events
    published = [i for i, e in enumerate(events) if e[0] == "moved" and e[1] == temporary and e[2] == batch]
    assert len(published) == 1, events
    publish_at = published[0]
    expected = sorted([protocol.MANIFEST] + [p.name for p in packages])
    closed = sorted(src.split("/", 1)[1] for kind, src, _ in events[:publish_at] if kind == "closed" and src.startswith(temporary + "/"))
    assert sorted(set(closed)) == expected  # every file was complete (closed) before the folder was renamed
    created = [src.split("/", 1)[1] for kind, src, _ in events[:publish_at] if kind == "created" and src.startswith(temporary + "/")]
    assert created[-1] == protocol.MANIFEST  # opened last, after every package
    # the trigger comes into place after the publish, and nothing is created or moved after it
    trigger = [i for i, e in enumerate(events) if e[0] in ("created", "moved") and protocol.TRIGGER in (e[1], e[2])]
    assert len(trigger) == 1 and trigger[0] > publish_at
    assert not [e for e in events[trigger[0] + 1:] if e[0] in ("created", "moved")]
    assert not [e for e in events if e[0] == "created" and (e[1] == batch or e[1].startswith(batch + "/"))]
    for path in packages:
        assert (staging / batch / path.name).read_bytes() == path.read_bytes()


def test_a_full_disk_in_the_middle_of_a_pipelined_upload_fails_with_one_line_and_cleans_up(ssh_home, tmp_path):
    """Small packages before and after one that does not fit: the error reply to one pipelined write (or
    close) fails the push; nothing is published, no trigger, the lock and the temporary entries are gone."""
    folder = tmp_path / "src"
    packages = small_packages(folder, 6) + [big_package(folder, "Pipe-Huge", 2)] + small_packages(folder / "more", 0)
    staging = tmp_path / "full"
    with tmpfs(staging, "1m", {"notes.txt": b"mine\n"}):
        with open_transport(parse_target(ssh_home.url(staging))) as transport:
            with pytest.raises(TargetError) as error:
                Pusher(transport).push(plan_of(packages))
            line = str(error.value)
            assert "\n" not in line and "disk" in line and "full" in line, line
            assert "Pipe-Huge" in line  # names the file whose request failed
            assert transport.lost is None  # the connection stays usable: the clean-up ran over it
        assert os.listdir(staging) == ["notes.txt"]


def test_a_full_disk_with_many_packages_exits_5_with_one_line(ssh_home, tmp_path):
    folder = tmp_path / "src"
    packages = small_packages(folder, 4) + [big_package(folder, "Pipe-Huge", 2)]
    staging = tmp_path / "full"
    with tmpfs(staging, "1m", {"notes.txt": b"mine\n"}):
        result = run_in_process("push", *packages, "--to", ssh_home.url(staging))
        assert result.returncode == 5, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hotload: ") and "full" in lines[0], result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert os.listdir(staging) == ["notes.txt"]


def test_a_folder_where_a_package_goes_fails_the_push_with_one_line(ssh_home, tmp_path, monkeypatch):
    """An error reply to an open sent ahead (its name is a folder on the server) fails the push at once."""
    packages = small_packages(tmp_path / "src", 5)
    staging = tmp_path / "stage"
    staging.mkdir(mode=0o700)
    original = sftp_module.SftpTransport.make_folder

    def make_folder_and_block(self, name):
        original(self, name)
        os.mkdir(staging / name / packages[2].name)  # where the third package goes

    monkeypatch.setattr(sftp_module.SftpTransport, "make_folder", make_folder_and_block)
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        with pytest.raises(TargetError) as error:
            Pusher(transport).push(plan_of(packages))
    line = str(error.value)
    assert "\n" not in line and packages[2].name in line, line
    names = os.listdir(staging)
    assert protocol.LOCK not in names and protocol.TRIGGER not in names
    # the folder with the user's-looking entry inside is kept or removed, but never published
    assert not [n for n in names if not n.startswith(protocol.TEMP_PREFIX)]


def test_without_paramikos_private_calls_the_public_path_pushes_and_reads(ssh_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sftp_module, "_has_private_write_calls", lambda sftp: False)
    packages = small_packages(tmp_path / "src", 3) + [big_package(tmp_path / "src", "Pipe-Public", 0.3)]
    staging = tmp_path / "stage"
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        result = Pusher(transport).push(plan_of(packages))
        assert transport.read(f"{result.batch}/{packages[-1].name}", limit=1 << 20) == packages[-1].read_bytes()
        assert sorted(transport.list_names(result.batch)) == sorted([protocol.MANIFEST] + [p.name for p in packages])
    for path in packages:
        assert (staging / result.batch / path.name).read_bytes() == path.read_bytes()
    assert protocol.parse_trigger((staging / protocol.TRIGGER).read_text()) == result.batch


@pytest.mark.parametrize("size", [0, 1, 32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, 200_000])
def test_pipelined_reads_return_the_whole_file_and_refuse_a_larger_one(ssh_home, tmp_path, size):
    staging = tmp_path / "stage"
    staging.mkdir(mode=0o700)
    data = os.urandom(size)
    (staging / "file").write_bytes(data)
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        assert transport.read("file", limit=1 << 20) == data
        assert transport.read("file", limit=max(size, 1), tail=True) == data
        if size > 10:
            assert transport.read("file", limit=10, tail=True) == data[-10:]
            with pytest.raises(TargetError, match="larger than"):
                transport.read("file", limit=10)
        assert transport.read("missing") is None


def test_a_listing_of_many_names_is_complete(ssh_home, tmp_path):
    staging = tmp_path / "stage"
    (staging / "many").mkdir(parents=True)
    names = [f"entry-{number:04d}" for number in range(450)]  # several readdir replies
    for name in names:
        (staging / "many" / name).write_text("")
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        assert transport.list_names("many") == names
        assert transport.list_names("missing") == []


def test_the_round_trips_a_push_waits_for_do_not_grow_with_its_packages(ssh_home, tmp_path):
    """Through a relay with a delay, a push of 30 packages waits for about as many round trips as a push of
    one (the relay counts the times the client spoke again after a silence): opens, writes and closes are
    pipelined across the files."""
    one = small_packages(tmp_path / "one", 1)
    many = small_packages(tmp_path / "many", 30)
    turns = {"one": [], "many": []}
    with Relay(ssh_home.port, delay=0.02) as relay, ssh_alias(ssh_home, port=relay.port) as alias:
        for attempt, (label, packages) in enumerate([("one", one), ("many", many)] * 2):
            staging = tmp_path / f"stage-{label}-{attempt}"
            staging.mkdir(mode=0o700)
            plan = plan_of(packages)
            with open_transport(parse_target(f"{alias}:{staging}")) as transport:
                Pusher(transport).push(plan)
            turns[label].append(relay.turns())
    # The fewest of two pushes each: on a busy machine the client itself can fall silent mid-pipeline.
    assert min(turns["many"]) <= min(turns["one"]) + 2, turns


@pytest.mark.skipif(not shutil.which("sftp"), reason="OpenSSH's sftp client is not installed")
def test_a_one_package_push_waits_for_no_more_round_trips_than_openssh_sftp(ssh_home, tmp_path):
    """The fixed cost of a push: `hotload push one.mcz --to host:path` as a whole (connection, the reads
    before the push, lock, upload, publish, trigger, unlock) into a new staging directory, against `sftp -b`
    making a folder and putting the same file, both through the same relay at 50 ms. Each counted three
    times, the fewest taken (a busy machine can make a client fall silent mid-pipeline)."""
    package = small_packages(tmp_path / "one", 1)[0]
    ssh = ssh_home.home / ".ssh"
    turns = {"sftp": [], "hotload": []}
    with Relay(ssh_home.port, delay=0.025) as relay, ssh_alias(ssh_home, port=relay.port) as alias:
        for attempt in range(3):
            remote = tmp_path / f"sftp-{attempt}"
            batch = tmp_path / "sftp-batch"
            batch.write_text(f"mkdir {remote}\nput {package} {remote}/{package.name}\n")
            subprocess.run(
                ["sftp", "-q", "-b", str(batch), "-F", str(ssh / "config"), "-o", f"UserKnownHostsFile={ssh / 'known_hosts'}",
                 "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", alias],
                env=ssh_home.env(), check=True, stdout=subprocess.DEVNULL, timeout=60,
            )
            assert (remote / package.name).read_bytes() == package.read_bytes()
            turns["sftp"].append(relay.turns())
            staging = tmp_path / f"hotload-{attempt}"
            result = run_in_process("push", package, "--to", f"{alias}:{staging}")
            assert result.returncode == 0, result.stdout + result.stderr
            turns["hotload"].append(relay.turns())
            batch_id = protocol.parse_trigger((staging / protocol.TRIGGER).read_text())
            assert (staging / batch_id / package.name).read_bytes() == package.read_bytes()
            assert sorted(os.listdir(staging)) == sorted([protocol.TRIGGER, batch_id])  # unlocked, nothing left
    assert min(turns["hotload"]) <= min(turns["sftp"]), turns


@pytest.mark.parametrize("depth", [1, 3])
def test_a_missing_staging_directory_is_made_with_mode_0700(ssh_home, tmp_path, depth):
    """One level missing: mkdir and chmod pipelined; more: made folder by folder, each 0700."""
    staging = tmp_path.joinpath(*[f"level{n}" for n in range(depth)])
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        assert transport.ensure_directory() is True
        assert transport.ensure_directory() is False
    assert staging.is_dir() and (staging.stat().st_mode & 0o777) == 0o700
