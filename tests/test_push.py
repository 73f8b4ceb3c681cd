"""Pushing into a staging directory, locally and over a real OpenSSH sshd."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from cli_runner import run_in_process
from conftest import run_hotload
from fake_loader import FakeLoader
from helpers import class_def, make_package, method, shop_packages
from hotload.staging import protocol
from hotload.errors import InputError, LockBusy, NoLoaderRunning, TargetError
from hotload.formats.mcz import read_mcz
from hotload.formats.plan import LoadPlan
from hotload.staging.protocol import Manifest
from hotload.staging.push import Pusher
from hotload.staging.targets import parse_target
from hotload.staging.transports import LocalTransport, open_transport
from hotload.staging.transports.base import Transport


@pytest.fixture
def packages(tmp_path):
    return shop_packages(tmp_path / "src")  # deliberately out of order


def cli(*args, env=None, check=False):
    """The command line in this process (HOME from the ssh_home fixture); `run_hotload` for a real process."""
    result = run_in_process(*args)
    if check and result.returncode != 0:
        raise AssertionError(f"hotload {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def plan_of(paths):
    return LoadPlan.build([read_mcz(p) for p in paths])


def assert_complete_batch(staging: Path, paths, batch):
    """Protocol 2: `<batch>/` holds the packages and the manifest; `load` names the batch; nothing else of ours."""
    names = sorted(os.listdir(staging))
    assert not [n for n in names if n.startswith(protocol.TEMP_PREFIX)]
    assert protocol.LOCK not in names
    assert protocol.MANIFEST not in names and not [n for n in names if n.endswith(".mcz")]  # nothing top-level (v1)
    folder = staging / batch
    assert folder.is_dir() and not folder.is_symlink()
    manifest = Manifest.parse((folder / protocol.MANIFEST).read_text())
    assert manifest.batch == batch
    assert [e.version for e in manifest.entries] == ["Shop-Core-tester.1", "Shop-Web-tester.1"]
    by_name = {Path(p).name: Path(p) for p in paths}
    for entry in manifest.entries:
        data = (folder / entry.file).read_bytes()
        assert data == by_name[entry.file].read_bytes()
        assert entry.size == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(os.listdir(folder)) == sorted([protocol.MANIFEST] + [e.file for e in manifest.entries])
    trigger = (staging / protocol.TRIGGER).read_text()
    assert trigger == protocol.render_trigger(batch)
    assert trigger.startswith(f"hotload-trigger\t{protocol.VERSION}\n") and protocol.parse_trigger(trigger) == batch


def test_local_push_delivers_a_complete_batch(tmp_path, packages):
    staging = tmp_path / "stage" / "app"
    with LocalTransport(staging) as transport:
        result = Pusher(transport).push(plan_of(packages))
    assert result.created_directory
    assert (staging.stat().st_mode & 0o777) == 0o700
    assert_complete_batch(staging, packages, result.batch)


class _Recorder(FileSystemEventHandler):
    def __init__(self, root: Path):
        self.root = root
        self.events = []  # (type, path relative to the staging directory, destination or None, is a folder)

    def _relative(self, path):
        return str(Path(path).relative_to(self.root)) if path else None

    def on_any_event(self, event):
        if event.event_type in ("created", "moved") and event.src_path != str(self.root):
            self.events.append(
                (event.event_type, self._relative(event.src_path), self._relative(getattr(event, "dest_path", "")), event.is_directory)
            )


def test_trigger_appears_last_seen_by_a_watcher(tmp_path, packages):
    """The batch folder appears under its final name only by a rename of the complete temporary folder,
    and the trigger is created last, once."""
    staging = tmp_path / "stage"
    staging.mkdir(mode=0o700)
    recorder = _Recorder(staging)
    observer = Observer()
    observer.schedule(recorder, str(staging), recursive=True)
    observer.start()
    try:
        time.sleep(0.2)
        with LocalTransport(staging) as transport:
            result = Pusher(transport).push(plan_of(packages))
        deadline = time.time() + 5
        while time.time() < deadline and not any(e[1] == protocol.TRIGGER for e in recorder.events):
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        observer.stop()
        observer.join()
    batch, temporary = result.batch, protocol.temp_folder(result.batch)
    events = recorder.events
    # Top-level names that are not temporary, in the order they appeared (created or renamed into place).
    final = [(kind, dest or src) for kind, src, dest, _ in events
             if "/" not in (dest or src) and not (dest or src).startswith(protocol.TEMP_PREFIX)]
    assert final == [("created", protocol.LOCK), ("moved", batch), ("created", protocol.TRIGGER)]
    published = [e for e in events if e[0] == "moved" and e[2] == batch]
    assert published == [("moved", temporary, batch, True)]  # the folder was published by a rename
    publish_at = events.index(published[0])
    # Packages and the manifest were written inside the temporary folder, the manifest last, all before publishing.
    # (inotify watches a new folder only once the observer has seen it: the first files written there may come
    # before its watch, so what is seen inside is a subset; the batch's contents are checked below.)
    inside = [src.split("/", 1)[1] for kind, src, _, is_dir in events[:publish_at] if kind == "created" and src.startswith(temporary + "/")]
    assert set(inside) <= {protocol.MANIFEST, *(Path(p).name for p in packages)}
    assert protocol.MANIFEST not in inside or inside[-1] == protocol.MANIFEST
    written_after = [e for e in events[publish_at + 1:] if e[0] in ("created", "modified") and e[1].startswith(temporary + "/")]
    assert written_after == []  # (watchdog reports the children of the renamed folder as moved too)
    # Nothing was ever created under the final name: it only appeared whole.
    assert not [e for e in events if e[0] == "created" and (e[1] == batch or e[1].startswith(batch + "/"))]
    trigger_at = events.index(("created", protocol.TRIGGER, None, False))
    assert trigger_at > publish_at and events[trigger_at + 1:] == []  # the trigger is the last thing created
    assert sum(1 for e in events if (e[2] or e[1]) == protocol.TRIGGER) == 1
    assert_complete_batch(staging, packages, batch)


class RecordingTransport:
    """Wraps a transport, logging every write and rename; optionally interrupts at one operation."""

    def __init__(self, inner, interrupt_when=None):
        self.inner = inner
        self.log = []
        self.interrupt_when = interrupt_when
        self.description = inner.description

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _note(self, *entry):
        self.log.append(entry)
        if self.interrupt_when and self.interrupt_when(entry):
            raise KeyboardInterrupt

    def write(self, name, data):
        self._note("write", name)
        return self.inner.write(name, data)

    def make_folder(self, name):
        self._note("make-folder", name)
        return self.inner.make_folder(name)

    def remove(self, name):
        self._note("remove", name)
        return self.inner.remove(name)

    def upload_many(self, items, progress=None, on_file=None):
        """File by file through `upload` and `write`, as every transport may do it, so each is logged."""
        return Transport.upload_many(self, items, progress, on_file)

    def upload(self, local_path, name, progress=None):
        self._note("upload", name)

        def half_way(sent):
            self._note("upload-progress", name)
            if progress:
                progress(sent)
        return self.inner.upload(local_path, name, half_way)

    def rename_replacing(self, source, target):
        self._note("rename", target)
        return self.inner.rename_replacing(source, target)

    def rename_exclusive(self, source, target):
        self._note("rename-exclusive", target)
        return self.inner.rename_exclusive(source, target)


def test_sftp_push_operation_order_and_contents(ssh_home, tmp_path, packages):
    staging = tmp_path / "remote" / "staging"
    with open_transport(parse_target(ssh_home.url(staging))) as sftp:
        recorder = RecordingTransport(sftp)
        result = Pusher(recorder).push(plan_of(packages))
    assert (staging.stat().st_mode & 0o777) == 0o700
    assert_complete_batch(staging, packages, result.batch)
    batch, temporary = result.batch, protocol.temp_folder(result.batch)
    renames = [entry[1] for entry in recorder.log if entry[0].startswith("rename")]
    assert renames == [protocol.LOCK, batch, protocol.TRIGGER]  # every rename is the exclusive one
    assert not [entry for entry in recorder.log if entry[0] == "rename"]
    writes = [entry[1] for entry in recorder.log if entry[0] == "write"]
    assert all(name.startswith(protocol.TEMP_PREFIX) for name in writes)
    assert writes == [protocol.temp_name(batch, protocol.LOCK), f"{temporary}/{protocol.MANIFEST}", protocol.temp_name(batch, protocol.TRIGGER)]
    uploads = [entry[1] for entry in recorder.log if entry[0] == "upload"]
    assert uploads == [f"{temporary}/Shop-Core-tester.1.mcz", f"{temporary}/Shop-Web-tester.1.mcz"]  # in load order
    order = [entry for entry in recorder.log if entry[0] != "upload-progress"]
    position = {entry: index for index, entry in reversed(list(enumerate(order)))}
    assert (
        position[("rename-exclusive", protocol.LOCK)]
        < position[("make-folder", temporary)]
        < position[("upload", uploads[0])]
        < position[("upload", uploads[1])]
        < position[("write", f"{temporary}/{protocol.MANIFEST}")]
        < position[("rename-exclusive", batch)]
        < position[("write", protocol.temp_name(batch, protocol.TRIGGER))]
        < position[("rename-exclusive", protocol.TRIGGER)]
        < position[("remove", protocol.LOCK)]
    )


def test_ssh_config_alias_resolves(ssh_home, tmp_path, packages):
    staging = tmp_path / "aliased"
    result = run_hotload("push", *packages, "--to", f"{ssh_home.alias}:{staging}", "--json", env=ssh_home.env(), check=True)
    report = json.loads(result.stdout)
    assert report["result"] == "pushed"
    assert_complete_batch(staging, packages, report["batch"])


def test_unknown_and_changed_host_keys_are_refused(ssh_home, tmp_path, monkeypatch):
    known = ssh_home.home / ".ssh" / "known_hosts"
    original = known.read_text()
    try:
        known.write_text("")
        with pytest.raises(TargetError, match="not in known_hosts") as unknown:
            open_transport(parse_target(ssh_home.url(tmp_path / "x")))
        assert "ssh-keyscan -p" in str(unknown.value)
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        kind, key = (tmp_path / "other_key.pub").read_text().split()[:2]
        known.write_text(f"[127.0.0.1]:{ssh_home.port} {kind} {key}\n")
        with pytest.raises(TargetError, match="CHANGED") as changed:
            open_transport(parse_target(ssh_home.url(tmp_path / "x")))
        assert "ssh-keygen -R" in str(changed.value)
        result = cli("status", "--to", ssh_home.url(tmp_path / "x"), env=ssh_home.env())
        assert result.returncode == 5 and "CHANGED" in result.stderr  # exit 5: target error (hotload/errors.py)
        assert "Traceback" not in result.stderr
    finally:
        known.write_text(original)
    assert not (tmp_path / "x").exists()


def test_concurrent_pushes_are_serialized_by_the_lock(ssh_home, tmp_path, packages):
    staging = tmp_path / "shared-staging"
    loader = FakeLoader(staging, interval=0.05).start()
    timeline = []
    holders = []

    def push(label):
        with open_transport(parse_target(ssh_home.url(staging))) as sftp:
            def step(name):
                timeline.append((time.monotonic(), label, name))
                if name.startswith("upload"):
                    holders.append((label, (staging / protocol.LOCK).read_text()))
                    time.sleep(0.3)  # hold the lock a while so the other push must wait
            Pusher(sftp, on_step=step, lock_wait=20).push(plan_of(packages))

    try:
        threads = [threading.Thread(target=push, args=(label,)) for label in ("A", "B")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        deadline = time.time() + 10
        while len(loader.batches) < 2 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        loader.stop()
    assert len(loader.batches) == 2
    triggers = {label: t for t, label, name in timeline if name == "trigger"}
    first_upload = {label: min(t for t, l, n in timeline if l == label and n.startswith("upload")) for label in "AB"}
    first, second = sorted("AB", key=lambda label: triggers[label])
    assert first_upload[second] > triggers[first]  # the second push uploaded only after the first had finished
    for label, lock_text in holders:
        batch = protocol.LockRecord.parse(lock_text).batch
        assert batch in {b.batch for b in loader.batches}
    assert not (staging / protocol.LOCK).exists()


def test_stale_lock_is_reported_and_broken_only_on_request(ssh_home, tmp_path, packages):
    staging = tmp_path / "stale"
    staging.mkdir(mode=0o700)
    lock = staging / protocol.LOCK
    lock.write_text(protocol.LockRecord("ghost@old-laptop", 999, "20200101T000000Z-abcdef", 0).render())
    old = time.time() - 3600
    os.utime(lock, (old, old))
    result = cli("push", *packages, "--to", ssh_home.url(staging), env=ssh_home.env())
    assert result.returncode == 4
    assert "stale lock" in result.stderr and "ghost@old-laptop" in result.stderr
    assert re.search(r", 3[56]\d\d s old", result.stderr)
    assert "--break-lock" in result.stderr
    assert not (staging / protocol.TRIGGER).exists()
    result = cli("push", *packages, "--to", ssh_home.url(staging), "--break-lock", "--json", env=ssh_home.env(), check=True)
    assert_complete_batch(staging, packages, json.loads(result.stdout)["batch"])


def test_a_fresh_lock_makes_the_push_wait_then_give_up(tmp_path, packages):
    staging = tmp_path / "busy"
    staging.mkdir(mode=0o700)
    (staging / protocol.LOCK).write_text(protocol.LockRecord("colleague@desk", 42, "20261122T000000Z-123456", time.time()).render())
    with LocalTransport(staging) as transport:
        with pytest.raises(LockBusy, match="colleague@desk"):
            Pusher(transport, lock_wait=0.5).push(plan_of(packages))
    assert sorted(os.listdir(staging)) == [protocol.LOCK]


PHASES = {
    "taking the lock": lambda entry: entry[0] == "rename-exclusive" and entry[1] == protocol.LOCK,
    "making the folder": lambda entry: entry[0] == "make-folder",
    "mid-upload": lambda entry: entry[0] == "upload-progress",
    "writing the manifest": lambda entry: entry[0] == "write" and entry[1].endswith("/manifest"),
    "publishing the folder": lambda entry: entry[0] == "rename-exclusive" and protocol.is_batch_id(entry[1]),
    "writing the trigger": lambda entry: entry[0] == "write" and entry[1].endswith("-load"),
    "renaming the trigger": lambda entry: entry[0] == "rename-exclusive" and entry[1] == protocol.TRIGGER,
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_ctrl_c_at_each_phase_leaves_no_trigger(ssh_home, tmp_path, packages, phase):
    staging = tmp_path / "interrupted"
    with open_transport(parse_target(ssh_home.url(staging))) as sftp:
        with pytest.raises(KeyboardInterrupt):
            Pusher(RecordingTransport(sftp, PHASES[phase])).push(plan_of(packages))
    names = os.listdir(staging)
    assert protocol.TRIGGER not in names
    assert protocol.LOCK not in names
    assert not [n for n in names if n.startswith(protocol.TEMP_PREFIX)]
    assert not [n for n in names if protocol.is_batch_id(n)]  # a published but untriggered folder is removed too
    # The next push cleans up and delivers.
    with open_transport(parse_target(ssh_home.url(staging))) as sftp:
        result = Pusher(sftp).push(plan_of(packages))
    assert_complete_batch(staging, packages, result.batch)


@pytest.fixture
def big_package(tmp_path):
    """A package of about 12 MB (incompressible bytes in a stored member) so an upload takes a while."""
    import zipfile

    path = make_package(tmp_path / "big", "Big-Data", class_def("BigThing", category="Big-Data"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("resources/blob.bin", os.urandom(12 * 1024 * 1024))
    return path


def _wait_for_temp_file(staging: Path, timeout=30):
    """Wait until a package is being uploaded into a `.hotload-tmp-<batch>/` folder."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            for folder in staging.iterdir():
                if folder.name.startswith(protocol.TEMP_PREFIX) and folder.is_dir():
                    if [p for p in folder.iterdir() if p.name.endswith(".mcz") and p.stat().st_size > 0]:
                        return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError("the upload never started")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_real_sigint_mid_upload(ssh_home, tmp_path, big_package, signum):
    """Ctrl-C, or SIGTERM (a cancelled CI job), mid-upload: the push removes everything it wrote, lock included."""
    staging = tmp_path / "sigint"
    process = subprocess.Popen(
        [sys.executable, "-m", "hotload", "push", str(big_package), "--to", ssh_home.url(staging)],
        env=ssh_home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_temp_file(staging)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert sorted(os.listdir(staging)) == []


def test_kill_mid_upload_then_next_push_cleans_up(ssh_home, tmp_path, big_package):
    staging = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "hotload", "push", str(big_package), "--to", ssh_home.url(staging)],
        env=ssh_home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _wait_for_temp_file(staging)
    process.kill()
    process.wait(30)
    time.sleep(0.5)  # let sshd notice the dead connection
    names = os.listdir(staging)
    assert protocol.TRIGGER not in names and protocol.MANIFEST not in names
    assert not [n for n in names if protocol.is_batch_id(n)]  # never published
    assert [n for n in names if n.startswith(protocol.TEMP_PREFIX)]  # the upload stays in its temporary folder
    assert protocol.LOCK in names  # a killed push cannot release its lock
    refused = cli("push", str(big_package), "--to", ssh_home.url(staging), "--lock-wait", "1", env=ssh_home.env())
    assert refused.returncode == 4 and "no longer running" in refused.stderr and "--break-lock" in refused.stderr
    assert f"pid {process.pid}" in refused.stderr
    result = cli("push", str(big_package), "--to", ssh_home.url(staging), "--break-lock", "--json", env=ssh_home.env(), check=True)
    report = json.loads(result.stdout)
    assert any(name.startswith(protocol.TEMP_PREFIX) for name in report["cleaned"])
    names = os.listdir(staging)
    assert not [n for n in names if n.startswith(protocol.TEMP_PREFIX)]
    assert sorted(names) == sorted([protocol.TRIGGER, report["batch"]])


def test_wait_follows_the_loader(ssh_home, tmp_path, packages):
    staging = tmp_path / "waited"
    loader = FakeLoader(staging).start()
    try:
        result = cli("push", *packages, "--to", ssh_home.url(staging), "--wait", "--json", env=ssh_home.env())
    finally:
        loader.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "ok"
    assert report["loaded"] == ["Shop-Core-tester.1", "Shop-Web-tester.1"]
    assert loader.batches[0].batch == report["batch"]


def test_wait_exits_1_when_the_loader_fails_the_batch(tmp_path, packages):
    staging = tmp_path / "failing"
    loader = FakeLoader(staging, fail_package="Shop-Web-tester.1.mcz").start()
    try:
        result = cli("push", *packages, "--to", staging, "--wait")
    finally:
        loader.stop()
    assert result.returncode == 1
    assert "failed" in result.stdout and "Shop-Web-tester.1" in result.stdout


def test_wait_without_a_loader_exits_3(tmp_path, packages):
    staging = tmp_path / "nobody"
    result = cli("push", *packages, "--to", staging, "--wait")
    assert result.returncode == 3
    assert f"no loader is running at {staging} (no heartbeat)" in result.stderr
    staging.mkdir(exist_ok=True)
    beat = time.time() - 120
    (staging / protocol.HEARTBEAT).write_text(protocol.render_record("heartbeat", [("time", int(beat), protocol.iso(beat)), ("loader", "gst", "priority 5", "interval 2000")]))
    result = cli("push", *packages, "--to", staging, "--wait")
    assert result.returncode == 3
    assert re.search(r"no loader is running at .* \(heartbeat 12\d s old\)", result.stderr)
    assert protocol.TRIGGER not in os.listdir(staging)


@pytest.mark.parametrize("name", ["Shop Core;rm.mcz", os.fsdecode(b"Shop-Core\xfe-jd.1.mcz")])
def test_bad_file_names_are_refused_before_anything_is_written(tmp_path, packages, name):
    odd = tmp_path / "src" / name  # the second is not UTF-8: Python lists it with a lone surrogate
    odd.write_bytes(Path(packages[1]).read_bytes())
    staging = tmp_path / "never"
    result = cli("push", odd, "--to", staging)
    assert result.returncode == 2
    assert "package file name" in result.stderr and "Traceback" not in result.stderr
    assert not staging.exists()


@pytest.mark.parametrize("name", ["../evil.mcz", "a/b.mcz", "x\x01.mcz", "..mcz", ".hidden.mcz", "noext", "a" * 197 + ".mcz"])
def test_protocol_rejects_unsafe_names(name):
    with pytest.raises(InputError):  # a bad local file name is bad input (exit 2)
        protocol.check_package_file_name(name)


def test_watch_packs_and_pushes_on_change(tmp_path):
    source = tmp_path / "Shop-Watch.st"
    source.write_text(class_def("WatchedThing", category="Shop-Watch"))
    staging = tmp_path / "watched-staging"
    loader = FakeLoader(staging).start()
    process = subprocess.Popen(
        [sys.executable, "-m", "hotload", "watch", str(source), "--to", str(staging), "--dist", str(tmp_path / "dist"), "--author", "watcher"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.5)
        for round_number in (1, 2):
            source.write_text(class_def("WatchedThing", category="Shop-Watch") + method("WatchedThing", f"round\n\t^ {round_number}"))
            deadline = time.time() + 20
            while len(loader.batches) < round_number and time.time() < deadline:
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
        loader.stop()
    assert [b.entries[0].version for b in loader.batches] == ["Shop-Watch-watcher.1", "Shop-Watch-watcher.2"]
    assert read_mcz(tmp_path / "dist" / "Shop-Watch-watcher.2.mcz").version.ancestors[0].name == "Shop-Watch-watcher.1"


def test_a_method_whose_selector_cannot_be_read_is_not_pushed(tmp_path):
    bad = make_package(tmp_path / "src", "Shop-Bad", class_def("BadThing", category="Shop-Bad") + method("BadThing", "123 notASelector"))
    staging = tmp_path / "bad-staging"
    result = cli("push", bad, "--to", staging)
    assert result.returncode == 2 and "cannot read the selector" in result.stderr
    assert not staging.exists()


def test_push_to_many_images_and_status(tmp_path, packages):
    stagings = [tmp_path / "image-a", tmp_path / "image-b"]
    loaders = [FakeLoader(path).start() for path in stagings]
    try:
        result = cli("push", *packages, *sum((["--to", str(p)] for p in stagings), []), "--wait", "--json")
        status = cli("status", "--to", stagings[1], "--json")
    finally:
        for loader in loaders:
            loader.stop()
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [r["result"] for r in reports] == ["ok", "ok"]
    assert len({r["batch"] for r in reports}) == 2
    assert status.returncode == 0
    state = json.loads(status.stdout)
    assert state["loader_running"] and state["last_batch"] == reports[1]["batch"] and state["last_result"] == "ok"
    beat = time.time() - 100  # as a loader that stopped 100 s ago left it
    (stagings[0] / protocol.HEARTBEAT).write_text(protocol.render_record("heartbeat", [("time", int(beat), protocol.iso(beat)), ("loader", "gst", "priority 5", "interval 2000")]))
    human = cli("status", "--to", stagings[0])
    assert human.returncode == 3
    assert "loader not running" in human.stdout and re.search(r"heartbeat 10\d s old", human.stdout)
    assert "batch " + reports[0]["batch"] + ": ok" in human.stdout


def test_status_without_a_loader(tmp_path):
    result = cli("status", "--to", tmp_path / "empty")
    assert result.returncode == 3
    assert "no loader heartbeat" in result.stdout


def test_proxy_command_from_ssh_config(ssh_home, tmp_path, packages):
    config = ssh_home.home / ".ssh" / "config"
    original = config.read_text()
    relay = Path(__file__).resolve().parent / "relay.py"
    config.write_text(
        original + f"\nHost via-proxy\n    HostName 127.0.0.1\n    Port {ssh_home.port}\n    User {ssh_home.user}\n"
        f"    IdentityFile {ssh_home.home / '.ssh' / 'id_ed25519'}\n"
        f"    ProxyCommand {sys.executable} {relay} %p\n"
    )
    try:
        staging = tmp_path / "proxied"
        result = run_hotload("push", *packages, "--to", f"via-proxy:{staging}", "--json", env=ssh_home.env(), check=True)
    finally:
        config.write_text(original)
    assert_complete_batch(staging, packages, json.loads(result.stdout)["batch"])


def test_an_unconsumed_trigger_is_never_replaced(tmp_path, packages):
    staging = tmp_path / "cron"
    staging.mkdir(mode=0o700)
    (staging / protocol.TRIGGER).write_text("")  # the 2 am save-only trigger, not consumed yet
    with LocalTransport(staging) as transport:
        with pytest.raises(NoLoaderRunning, match="no loader is running"):  # waited, then found nobody to take it
            Pusher(transport, pending_wait=0.5).push(plan_of(packages))
    assert sorted(os.listdir(staging)) == [protocol.TRIGGER]  # the published folder went with the push
    assert (staging / protocol.TRIGGER).read_text() == ""
    loader = FakeLoader(staging).start()  # consumes the save-only trigger; the push then goes through
    try:
        with LocalTransport(staging) as transport:
            result = Pusher(transport, pending_wait=10).push(plan_of(packages))
        deadline = time.time() + 10
        while not loader.batches and time.time() < deadline:
            time.sleep(0.05)
    finally:
        loader.stop()
    assert loader.saves == 1 and not loader.errors
    assert loader.batches[0].batch == result.batch


def test_two_packages_with_one_file_name_are_refused(tmp_path):
    one = make_package(tmp_path / "a", "Same-Name", class_def("SameA", category="Same-Name"))
    other = make_package(tmp_path / "b", "Other-Pkg", class_def("SameB", category="Other-Pkg"))
    renamed = other.with_name(one.name)
    other.rename(renamed)
    result = cli("push", one, renamed, "--to", tmp_path / "stage")
    assert result.returncode == 2 and "same file name" in result.stderr
