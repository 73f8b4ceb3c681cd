"""Adversarial tests of the client (docs/protocol.md, "Failure model"): nothing lost, nothing partial,
nothing outside the staging directory, one line and a documented exit code for every fault.

Exit codes are hotload/errors.py's table: 2 bad input, 3 no usable loader, 4 busy, 5 target or network,
6 timed out waiting for the loader. A test that sees 70 (internal error) has found a bug.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from cli_runner import run_in_process
from conftest import run_hotload
from fake_loader import FakeLoader
from helpers import class_def, make_package, shop_packages
from hotload.staging import protocol
from hotload.errors import TargetError
from hotload.staging.lock import StagingLock
from hotload.formats.mcz import read_mcz
from hotload.formats.plan import LoadPlan
from hotload.staging.protocol import LockRecord, Manifest, ManifestEntry, render_record
from hotload.staging.push import Pusher
from hotload.staging.targets import parse_target
from hotload.staging.transports import LocalTransport, open_transport
from hotload.staging.transports.sftp import SftpTransport
from relay import Relay

TESTS = Path(__file__).resolve().parent
CHILD = TESTS / "push_child.py"
TIMEOUT = 30  # no command may take longer: a hang fails the test instead of stalling the suite


# -- helpers ------------------------------------------------------------------------------------


def plan_of(paths):
    return LoadPlan.build([read_mcz(p) for p in paths])


def hotload(*args, env=None, timeout=TIMEOUT, isolated=False):
    """Run the command line: in a child process when `isolated` (anything that could hang, signals, SSH
    connections cut under paramiko's threads), else in this process (the same code, much faster).
    In this process, HOME comes from the `ssh_home` fixture rather than from `env`."""
    if isolated:
        return run_hotload(*args, env=env, timeout=timeout)
    return run_in_process(*args)


def one_line_error(result, code) -> str:
    """The command failed with `code`, one `hotload:` line on stderr and no traceback anywhere."""
    text = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{text}"
    assert "Traceback" not in text and "internal error" not in text
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotload: "), result.stderr
    return lines[0]


def no_traceback(result):
    text = result.stdout + result.stderr
    assert "Traceback" not in text and "internal error" not in text and result.returncode != 70, text


def heartbeat(staging: Path, age: float = 0.0, version: int = 2, loader_id: str = "live0001", image="/srv/app/app.im"):
    beat = time.time() - age
    text = render_record("heartbeat", [
        ("time", int(beat), protocol.iso(beat)),
        ("loader", "gst", "priority 5", "interval 2000", f"image {image}"),
        ("id", loader_id),
    ])
    if version != protocol.VERSION:
        text = text.replace(f"hotload-heartbeat\t{protocol.VERSION}\n", f"hotload-heartbeat\t{version}\n")
    (staging / protocol.HEARTBEAT).write_text(text)


def wait_until(condition, timeout=15.0, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def packages(tmp_path):
    return shop_packages(tmp_path / "src")  # deliberately out of order


def big_package(folder: Path, name: str, megabytes: float) -> Path:
    """A package with an incompressible stored member, so that it takes space and time to upload."""
    path = make_package(folder, name, class_def(name.replace("-", ""), category=name))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("resources/blob.bin", os.urandom(int(megabytes * 1024 * 1024)))
    return path


# -- a staging directory full of the user's own files ----------------------------------------------

#: names a hotload push may create or remove in the user's folder (everything else is the user's)
USER_FILES = {
    "notes.txt": b"my notes\n",
    "Other-y.1.mcz": os.urandom(3000),
    "manifest": b"my own manifest, not hotload's\n",
    "20250101T000000Z-abcdef/notes.txt": b"a folder of mine that happens to have a batch id's name\n",
    "20250101T000000Z-abcdef/Other-y.1.mcz": os.urandom(500),
    "20250101T000000Z-abcdef/manifest": b"not a hotload manifest\n",
    "20250102T000000Z-bcdef0/Other-y.2.mcz": os.urandom(700),  # only package-named files: still mine
    "20250103T000000Z-cdef01": b"a file named like a batch id\n",
    "archive/load": b"a file named load, deeper down\n",
}
#: a folder named like a batch id holding a real hotload manifest of *another* batch: not hotload's to remove
FOREIGN_BATCH = "20250104T000000Z-def012"


USER_BATCH_FOLDERS = {"20250101T000000Z-abcdef", "20250102T000000Z-bcdef0", FOREIGN_BATCH}


def batch_folders(staging: Path) -> set:
    return {n for n in os.listdir(staging) if protocol.is_batch_id(n) and (staging / n).is_dir()}


def make_user_files(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(USER_FILES)
    entry = ManifestEntry(1, "Copied-z.1.mcz", 4, "ab" * 32, "Copied-z.1")
    files[f"{FOREIGN_BATCH}/manifest"] = Manifest("20250104T000000Z-aaaaaa", 0, "me@here", [entry]).render().encode()
    files[f"{FOREIGN_BATCH}/Copied-z.1.mcz"] = b"abcd"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / ".hotload-tmp-junk").write_bytes(b"hotload's name: a push may remove it")
    return files


def assert_user_files_intact(folder: Path, files: dict):
    for name, data in files.items():
        path = folder / name
        assert path.is_file() and not path.is_symlink(), f"{name} is gone"
        assert path.read_bytes() == data, f"{name} changed"


@contextlib.contextmanager
def running(loader: FakeLoader):
    loader.start()
    try:
        yield loader
    finally:
        loader.stop()
    assert not loader.errors, loader.errors


# -- data loss ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("over", ["local", "sftp"])
def test_push_into_the_folder_holding_the_package_keeps_every_user_file(tmp_path, request, over):
    """`hotload push dist/Foo-x.1.mcz --to dist`: the staging directory is the user's own folder."""
    dist = tmp_path / "dist"
    files = make_user_files(dist)
    package = make_package(dist, "Foo", class_def("Foo", category="Foo"), author="x")
    files[package.name] = package.read_bytes()
    target, env = str(dist), None
    if over == "sftp":
        sshd = request.getfixturevalue("ssh_home")
        target, env = sshd.url(dist), sshd.env()
    with running(FakeLoader(dist, interval=0.05)) as loader:
        first = hotload("push", package, "--to", target, "--wait", "--json", env=env)
        second = hotload("push", package, "--to", target, "--wait", "--json", "--force", env=env)  # it is loaded
    for result in (first, second):
        assert result.returncode == 0, result.stderr
    reports = [json.loads(first.stdout), json.loads(second.stdout)]
    assert [b.batch for b in loader.batches] == [r["batch"] for r in reports]
    assert_user_files_intact(dist, files)
    # The user's folders named like batch ids are reported, never emptied.
    assert any(k.startswith("20250101T000000Z-abcdef") for k in reports[0]["kept"])
    assert any(k.startswith(FOREIGN_BATCH) for k in reports[0]["kept"])
    assert not (dist / ".hotload-tmp-junk").exists()  # hotload's own name: cleaned
    assert not (dist / protocol.LOCK).exists() and not (dist / protocol.TRIGGER).exists()


def test_a_push_after_a_killed_push_keeps_every_user_file(tmp_path, packages):
    dist = tmp_path / "dist"
    files = make_user_files(dist)
    killed = protocol.new_batch_id()
    child = start_child(str(dist), killed, "manifest", tmp_path / "ready", packages)
    kill_when_ready(child, tmp_path / "ready", signal.SIGKILL)
    assert (dist / protocol.temp_folder(killed)).is_dir()  # the killed upload's leftovers
    with running(FakeLoader(dist, interval=0.05)) as loader:
        result = hotload("push", *packages, "--to", dist, "--wait", "--break-lock", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert protocol.temp_folder(killed) in report["cleaned"]
    assert [b.batch for b in loader.batches] == [report["batch"]]
    assert_user_files_intact(dist, files)
    assert not [n for n in os.listdir(dist) if n.startswith(protocol.TEMP_PREFIX)]


# -- a cancelled batch is never loaded ----------------------------------------------------------------


def start_child(target: str, batch: str, step: str, ready: Path, packages, env=None):
    return subprocess.Popen(
        [sys.executable, str(CHILD), target, batch, step, str(ready), *map(str, packages)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def kill_when_ready(child, ready: Path, signum):
    try:
        wait_until(lambda: ready.exists() or child.poll() is not None, TIMEOUT, "the child to reach its step")
        assert ready.exists(), child.communicate()[1]
        child.send_signal(signum)
        child.wait(TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode


KILL_POINTS = ["lock", "clean up", "upload Mid-Big-tester.1.mcz", "mid-upload", "upload Shop-Web-tester.1.mcz",
               "manifest", "publish", "trigger", "trigger-wait"]


@pytest.fixture
def three_packages(tmp_path, packages):
    """Shop-Web, Shop-Core and Mid-Big (about 0.5 MB, so that its upload reports progress many times)."""
    return packages + [big_package(tmp_path / "src", "Mid-Big", 0.5)]


@pytest.mark.parametrize("step", KILL_POINTS)
def test_a_killed_push_is_never_loaded_and_the_next_push_cleans_up(ssh_home, tmp_path, three_packages, step):
    staging = tmp_path / "staging"
    files = make_user_files(staging)
    if step == "trigger-wait":
        (staging / protocol.TRIGGER).write_text("")  # the 2 am save-only trigger, not yet taken
    killed = protocol.new_batch_id()
    child = start_child(ssh_home.url(staging), killed, step, tmp_path / "ready", three_packages, env=ssh_home.env())
    assert kill_when_ready(child, tmp_path / "ready", signal.SIGKILL) == -signal.SIGKILL
    if step == "mid-upload":
        time.sleep(0.3)  # let sshd notice the dead connection and finish the writes already sent
    if os.path.lexists(staging / protocol.TRIGGER):
        assert protocol.parse_trigger((staging / protocol.TRIGGER).read_text()) is None  # never names the killed batch
    else:
        (staging / protocol.TRIGGER).write_text("")  # `touch load`: a save-only trigger after the kill
    with running(FakeLoader(staging, interval=0.05)) as loader:
        assert loader.wait_idle(), "the loader did not take the save-only trigger"
        assert loader.saves == 1 and loader.batches == [] and loader.rejected == []
        with open_transport(parse_target(ssh_home.url(staging))) as sftp:
            result = Pusher(sftp, break_lock=True, lock_wait=5).push(plan_of(three_packages[:2]))
        wait_until(lambda: loader.batches, what="the next batch to be loaded")
        assert loader.wait_idle()
    assert [b.batch for b in loader.batches] == [result.batch]
    assert killed not in loader.rejected
    assert_user_files_intact(staging, files)
    leftovers = [n for n in os.listdir(staging) if n.startswith(protocol.TEMP_PREFIX) or n == killed]
    assert leftovers == []
    assert batch_folders(staging) == USER_BATCH_FOLDERS


INTERRUPT_POINTS = ["clean up", "upload Mid-Big-tester.1.mcz", "mid-upload", "manifest", "publish", "trigger", "trigger-wait"]


@pytest.mark.parametrize("step", INTERRUPT_POINTS)
def test_ctrl_c_removes_the_push_at_once_and_it_is_never_loaded(ssh_home, tmp_path, three_packages, step):
    """A real SIGINT to this process at each step: the push removes its entries and lock at once."""
    staging = tmp_path / "staging"
    files = make_user_files(staging)
    if step == "trigger-wait":
        (staging / protocol.TRIGGER).write_text("")
    sent = []

    def interrupt(name):
        if name == step and not sent:
            sent.append(name)
            os.kill(os.getpid(), signal.SIGINT)

    with open_transport(parse_target(ssh_home.url(staging))) as sftp:
        pusher = Pusher(sftp, pending_wait=30, on_step=interrupt, on_progress=lambda name, n: interrupt("mid-upload"))
        with pytest.raises(KeyboardInterrupt):
            pusher.push(plan_of(three_packages))
    assert sent == [step]
    names = os.listdir(staging)
    assert protocol.LOCK not in names
    assert not [n for n in names if n.startswith(protocol.TEMP_PREFIX)]
    assert batch_folders(staging) == USER_BATCH_FOLDERS  # the published folder went with the push
    if step != "trigger-wait":
        assert protocol.TRIGGER not in names
    else:
        assert (staging / protocol.TRIGGER).read_text() == ""
    with running(FakeLoader(staging, interval=0.05)) as loader:
        if step != "trigger-wait":
            (staging / protocol.TRIGGER).write_text("")
        assert loader.wait_idle()
    assert loader.saves == 1 and loader.batches == [] and loader.rejected == []
    assert_user_files_intact(staging, files)


def test_ctrl_c_while_waiting_says_the_batch_is_still_taken(tmp_path, packages):
    """After the trigger, Ctrl-C cannot take the batch back: the message must not say nothing was triggered."""
    staging = tmp_path / "staging"
    with running(FakeLoader(staging, consume=False)):
        process = subprocess.Popen(
            [sys.executable, "-m", "hotload", "push", *map(str, packages), "--to", str(staging), "--wait"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_until(lambda: (staging / protocol.TRIGGER).exists() and not (staging / protocol.LOCK).exists(),
                       TIMEOUT, "the trigger")
            time.sleep(0.2)  # in the waiting loop
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130 and "Traceback" not in stderr
    batch = protocol.parse_trigger((staging / protocol.TRIGGER).read_text())
    assert f"batch {batch} was pushed and triggered" in stderr


# -- a cut or stalled connection -----------------------------------------------------------------


@contextlib.contextmanager
def ssh_alias(sshd, port=None, proxy_command=None):
    """An ~/.ssh/config alias `hotload-via` to the test sshd, through a relay port or a ProxyCommand."""
    ssh = sshd.home / ".ssh"
    config, known = ssh / "config", ssh / "known_hosts"
    saved_config, saved_known = config.read_text(), known.read_text()
    kind, key = saved_known.split()[1:3]
    entry = (
        f"\nHost hotload-via\n    HostName 127.0.0.1\n    Port {port or sshd.port}\n    User {sshd.user}\n"
        f"    IdentityFile {ssh / 'id_ed25519'}\n"
    )
    if proxy_command:
        entry += f"    ProxyCommand {proxy_command}\n"
    config.write_text(saved_config + entry)
    if port:
        known.write_text(saved_known + f"[127.0.0.1]:{port} {kind} {key}\n")
    try:
        yield "hotload-via"
    finally:
        config.write_text(saved_config)
        known.write_text(saved_known)


def test_a_cut_connection_exits_5_with_one_line_and_the_next_push_succeeds(ssh_home, tmp_path):
    staging = tmp_path / "staging"
    files = make_user_files(staging)
    package = big_package(tmp_path / "src", "Cut-Big", 4)
    with Relay(ssh_home.port, cut_after=1_500_000) as relay, ssh_alias(ssh_home, port=relay.port) as alias:
        result = hotload("push", package, "--to", f"{alias}:{staging}", env=ssh_home.env(), isolated=True)
        line = one_line_error(result, 5)
        assert "connection was lost" in line
        assert relay.connections == 2  # the push connected again to release its lock
        names = os.listdir(staging)
        assert protocol.TRIGGER not in names and protocol.LOCK not in names
        assert not [n for n in names if n.startswith(protocol.TEMP_PREFIX)]
        again = hotload("push", package, "--to", f"{alias}:{staging}", "--json", env=ssh_home.env())
    assert again.returncode == 0, again.stderr  # no --break-lock needed
    batch = json.loads(again.stdout)["batch"]
    assert protocol.parse_trigger((staging / protocol.TRIGGER).read_text()) == batch
    assert_user_files_intact(staging, files)


def test_a_proxy_command_that_dies_mid_push_exits_5_instead_of_hanging(ssh_home, tmp_path):
    """paramiko's own ProxyCommand never notices that the command has exited: the push used to hang."""
    staging = tmp_path / "staging"
    staging.mkdir()
    package = big_package(tmp_path / "src", "Proxy-Big", 4)
    proxy = f"{sys.executable} {TESTS / 'relay.py'} %p --cut-after 1500000"
    with ssh_alias(ssh_home, proxy_command=proxy) as alias:
        result = hotload("push", package, "--to", f"{alias}:{staging}", env=ssh_home.env(), isolated=True)
        line = one_line_error(result, 5)
        assert "connection was lost" in line
        assert protocol.TRIGGER not in os.listdir(staging) and protocol.LOCK not in os.listdir(staging)
    again = hotload("push", package, "--to", ssh_home.url(staging), "--json", env=ssh_home.env())  # not via the proxy
    assert again.returncode == 0, again.stderr


def test_a_stalled_connection_fails_after_the_io_timeout(ssh_home, tmp_path, packages):
    """A network that stops answering without closing: the push fails with one error, it does not hang."""
    staging = tmp_path / "staging"
    staging.mkdir()
    with Relay(ssh_home.port) as relay, ssh_alias(ssh_home, port=relay.port) as alias:
        target = parse_target(f"{alias}:{staging}")
        sftp = SftpTransport.connect(target, io_timeout=1.0)
        pusher = Pusher(
            sftp, on_step=lambda step: relay.stall() if step == "manifest" else None,
            reconnect=lambda: SftpTransport.connect(target, timeout=5, io_timeout=1.0),
        )
        started = time.monotonic()
        with pytest.raises(TargetError, match="did not answer for 1 s") as error:
            pusher.push(plan_of(packages))
        assert time.monotonic() - started < TIMEOUT
        sftp.close()
    assert "\n" not in str(error.value)
    names = os.listdir(staging)
    assert protocol.TRIGGER not in names and protocol.LOCK not in names  # released over a new connection
    assert not [n for n in names if n.startswith(protocol.TEMP_PREFIX)]


# -- the lock ------------------------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(staging: Path, holder: str, pid: int, age: float = 0.0) -> Path:
    staging.mkdir(parents=True, exist_ok=True)
    lock = staging / protocol.LOCK
    lock.write_text(LockRecord(holder, pid, "20261122T000000Z-123456", time.time() - age).render())
    if age:
        os.utime(lock, (time.time() - age, time.time() - age))
    return lock


def test_a_lock_whose_holder_died_on_this_host_is_reported(tmp_path, packages):
    staging = tmp_path / "staging"
    pid = dead_pid()
    lock = write_lock(staging, protocol.holder_name(), pid)
    before = lock.read_bytes()
    line = one_line_error(hotload("push", *packages, "--to", staging, "--lock-wait", "5"), 4)
    assert "no longer running" in line and f"pid {pid}" in line and "--break-lock" in line
    assert lock.read_bytes() == before and not (staging / protocol.TRIGGER).exists()


def test_break_lock_removes_a_dead_lock_and_the_push_succeeds(tmp_path, packages):
    staging = tmp_path / "staging"
    write_lock(staging, protocol.holder_name(), dead_pid())
    result = hotload("push", *packages, "--to", staging, "--break-lock", "--json")
    assert result.returncode == 0, result.stderr
    batch = json.loads(result.stdout)["batch"]
    assert protocol.parse_trigger((staging / protocol.TRIGGER).read_text()) == batch
    assert not (staging / protocol.LOCK).exists()


def test_a_young_lock_of_another_host_is_never_broken(tmp_path, packages):
    staging = tmp_path / "staging"
    lock = write_lock(staging, "colleague@other-host", 4242, age=300)  # pid 4242 means nothing here
    before = lock.read_bytes()
    line = one_line_error(hotload("push", *packages, "--to", staging, "--break-lock", "--lock-wait", "0.5"), 4)
    assert "another push holds the lock" in line and "colleague@other-host" in line
    assert lock.read_bytes() == before
    assert sorted(os.listdir(staging)) == [protocol.LOCK]


def test_an_old_lock_of_another_host_is_reported_stale_with_age_and_holder(tmp_path, packages):
    staging = tmp_path / "staging"
    lock = write_lock(staging, "colleague@other-host", 4242, age=700)
    before = lock.read_bytes()
    line = one_line_error(hotload("push", *packages, "--to", staging, "--lock-wait", "5"), 4)
    assert "stale lock" in line and "colleague@other-host" in line and "--break-lock" in line
    assert re.search(r", 70\d s old", line)  # its age: 700 s (or a little more)
    assert lock.read_bytes() == before
    result = hotload("push", *packages, "--to", staging, "--break-lock")
    assert result.returncode == 0, result.stderr


def test_breaking_a_lock_never_removes_one_taken_since_it_was_judged(tmp_path):
    """Two pushes with --break-lock judge the same dead lock; the first breaks it and takes the lock.
    The second must not remove that new, live lock."""
    staging = tmp_path / "staging"
    lock = write_lock(staging, protocol.holder_name(), dead_pid())
    judged = lock.read_bytes()
    live = LockRecord("first@breaker", os.getpid(), "20261122T000001Z-aaaaaa", time.time()).render()
    lock.write_text(live)  # the first push broke the dead lock and took its own
    with LocalTransport(staging) as transport:
        StagingLock(transport, "20261122T000002Z-bbbbbb")._break(judged)
    assert lock.read_text() == live
    assert sorted(os.listdir(staging)) == [protocol.LOCK]
    with LocalTransport(staging) as transport:
        StagingLock(transport, "20261122T000002Z-bbbbbb")._break(live.encode())  # the judged one: removed
    assert os.listdir(staging) == []


@pytest.mark.parametrize("break_lock", [False, True])
def test_a_lock_that_is_a_folder_is_never_removed(tmp_path, packages, break_lock):
    """Exit 5, not 4: no push holds it, so waiting or --break-lock cannot help; the table's 5 covers an
    entry of the wrong kind, which the user must remove by hand."""
    staging = tmp_path / "staging"
    (staging / protocol.LOCK).mkdir(parents=True)
    (staging / protocol.LOCK / "mine.txt").write_text("mine")
    args = ["--break-lock"] if break_lock else []
    line = one_line_error(hotload("push", *packages, "--to", staging, *args), 5)
    assert "lock" in line and "folder" in line and "by hand" in line
    assert (staging / protocol.LOCK / "mine.txt").read_text() == "mine"
    assert sorted(os.listdir(staging)) == [protocol.LOCK]


# -- the target ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str, files=None, read_only=False):
    """A small tmpfs at `path` (skips the test where mounting is not permitted)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); "
                    "needs root in a container that allows mount")
    try:
        for name, data in (files or {}).items():
            (path / name).write_bytes(data)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("over", ["local", "sftp"])
def test_a_read_only_staging_directory_exits_5(tmp_path, request, packages, over):
    """As root permissions do not apply, so the directory is a read-only mount."""
    staging = tmp_path / "ro"
    beat = time.time()
    record = render_record("heartbeat", [("time", int(beat), protocol.iso(beat)), ("loader", "gst", "priority 5", "interval 2000")])
    with tmpfs(staging, "2m", {"notes.txt": b"mine\n", protocol.HEARTBEAT: record.encode()}, read_only=True):
        target, env = str(staging), None
        if over == "sftp":
            sshd = request.getfixturevalue("ssh_home")
            target, env = sshd.url(staging), sshd.env()
        line = one_line_error(hotload("push", *packages, "--to", target, env=env), 5)
        assert "read-only" in line
        assert sorted(os.listdir(staging)) == [protocol.HEARTBEAT, "notes.txt"]
        assert (staging / "notes.txt").read_bytes() == b"mine\n"
        status = hotload("status", "--to", target, env=env)  # reading needs no write access
        assert status.returncode == 0, status.stdout + status.stderr
        assert "loader running" in status.stdout


@pytest.mark.parametrize("over", ["local", "sftp"])
def test_a_full_disk_exits_5_and_removes_the_partial_upload(tmp_path, request, over):
    staging = tmp_path / "full"
    package = big_package(tmp_path / "src", "Too-Big", 2)
    with tmpfs(staging, "1m", {"notes.txt": b"mine\n"}):
        target, env = str(staging), None
        if over == "sftp":
            sshd = request.getfixturevalue("ssh_home")
            target, env = sshd.url(staging), sshd.env()
        line = one_line_error(hotload("push", package, "--to", target, env=env), 5)
        assert "disk" in line and "full" in line
        assert os.listdir(staging) == ["notes.txt"]  # no temporary entries, no lock, no trigger


def test_a_staging_path_that_is_a_file(tmp_path, packages):
    staging = tmp_path / "staging"
    staging.write_text("my file\n")
    line = one_line_error(hotload("push", *packages, "--to", staging), 5)
    assert "not a folder" in line
    line = one_line_error(hotload("status", "--to", staging), 5)
    assert "not a folder" in line
    assert staging.read_text() == "my file\n"


@pytest.mark.parametrize("over", ["local", "sftp"])
def test_status_reads_the_end_of_a_long_history_and_refuses_an_oversized_record(tmp_path, request, over):
    staging = tmp_path / "staging"
    staging.mkdir()
    heartbeat(staging)
    with open(staging / protocol.HISTORY, "w") as history:
        for number in range(60000):  # about 3 MB: more than is read
            history.write(f"{number}\t2026-01-01T00:00:00Z\t-\tsaved\t-\n")
    (staging / protocol.STATUS).write_bytes(b"x" * (2 << 20))  # no loader writes a status this large
    target = str(staging)
    if over == "sftp":
        target = request.getfixturevalue("ssh_home").url(staging)
    result = hotload("status", "--to", target, "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["history"][-1].startswith("59999\t") and len(state["history"]) == 10
    assert [p for p in state["problems"] if p.startswith("status: ") and "larger than" in p]
    assert not [p for p in state["problems"] if p.startswith(protocol.HISTORY)]


def test_failed_that_is_a_file_is_a_problem_line_in_status(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    heartbeat(staging)
    (staging / protocol.FAILED).write_text("mine\n")
    result = hotload("status", "--to", staging)
    no_traceback(result)
    assert result.returncode == 0, result.stderr  # the loader runs; the problem is reported
    assert "problem: failed is a file, not a folder" in result.stdout
    assert (staging / protocol.FAILED).read_text() == "mine\n"


def make_wrong_kind(staging: Path, name: str, kind: str, outside: Path):
    path = staging / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        (path / "mine.txt").write_text("mine")
    else:  # a link to a file outside the staging directory that holds a valid record
        os.symlink(outside, path)


def valid_record(name: str) -> bytes:
    now = time.time()
    if name == protocol.HEARTBEAT:
        return render_record("heartbeat", [("time", int(now), protocol.iso(now)), ("loader", "gst", "priority 5", "interval 2000", "image /outside.im"), ("id", "outside1")]).encode()
    if name == protocol.STATUS:
        return render_record("status", [("batch", "20200101T000000Z-0u7s1d"), ("result", "ok")]).encode()
    return LockRecord("outside@elsewhere", 1, "20200101T000000Z-abcdef", 0).render().encode()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
@pytest.mark.parametrize("name", [protocol.STATUS, protocol.HEARTBEAT, protocol.LOCK])
def test_a_protocol_name_of_the_wrong_kind_is_never_opened_followed_or_removed(tmp_path, packages, name, kind):
    staging = tmp_path / "staging"
    staging.mkdir()
    outside = tmp_path / f"outside-{name}"
    outside.write_bytes(valid_record(name))
    outside_before = outside.read_bytes()
    os.utime(outside, (0, 0))
    if name != protocol.HEARTBEAT:
        heartbeat(staging)  # a live loader, so that only `name` is wrong
    make_wrong_kind(staging, name, kind, outside)
    fifo = kind == "fifo"  # in a child process with a timeout: a FIFO opened by mistake would block it
    status = hotload("status", "--to", staging, isolated=fifo)
    no_traceback(status)
    assert f"problem: {name}: {name} in {staging} is a" in status.stdout
    assert "outside" not in status.stdout and "0u7s1d" not in status.stdout  # nothing read through the link
    assert status.returncode == (3 if name == protocol.HEARTBEAT else 0)
    push = hotload("push", *packages, "--to", staging, "--wait", "--timeout", "1", isolated=fifo)
    if name == protocol.LOCK:
        line = one_line_error(push, 5)
        assert "not a lock file" in line
    elif name == protocol.HEARTBEAT:
        line = one_line_error(push, 3)
        assert f"{name} in {staging} is a" in line
    else:  # the push went through; reading `status` to follow the batch is refused
        line = one_line_error(push, 5)
        assert f"{name} in {staging} is a" in line
    kinds = {"fifo": lambda p: p.is_fifo(), "folder": lambda p: p.is_dir() and not p.is_symlink(), "symlink": lambda p: p.is_symlink()}
    assert kinds[kind](staging / name)  # still there, still what it was
    assert outside.read_bytes() == outside_before and outside.stat().st_mtime == 0
    if kind == "folder":
        assert (staging / name / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("name", [protocol.HEARTBEAT, protocol.LOCK])
def test_a_fifo_over_sftp_does_not_hang(ssh_home, tmp_path, packages, name):
    """sftp-server would block for ever opening a FIFO; the client checks the kind first."""
    staging = tmp_path / "staging"
    staging.mkdir()
    os.mkfifo(staging / name)
    if name == protocol.LOCK:
        heartbeat(staging)  # a live loader: `push --wait` gets as far as the lock
    status = hotload("status", "--to", ssh_home.url(staging), env=ssh_home.env(), isolated=True)
    no_traceback(status)
    assert f"problem: {name}: {name} in " in status.stdout
    push = hotload("push", *packages, "--to", ssh_home.url(staging), "--wait", "--timeout", "1", env=ssh_home.env(), isolated=True)
    one_line_error(push, 5 if name == protocol.LOCK else 3)
    assert (staging / name).is_fifo()


def test_a_trigger_that_is_not_a_file_stops_the_push_at_once(tmp_path, packages):
    staging = tmp_path / "staging"
    staging.mkdir()
    outside = tmp_path / "outside-load"
    outside.write_text("")
    os.symlink(outside, staging / protocol.TRIGGER)
    line = one_line_error(hotload("push", *packages, "--to", staging, "--timeout", "30"), 5)
    assert "load" in line and "symbolic link" in line
    assert (staging / protocol.TRIGGER).is_symlink() and outside.read_text() == ""
    assert sorted(os.listdir(staging)) == [protocol.TRIGGER]


# -- exit codes ----------------------------------------------------------------------------------------


def test_a_pending_trigger_without_a_loader_exits_3(tmp_path, packages):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / protocol.TRIGGER).write_text("")
    line = one_line_error(hotload("push", *packages, "--to", staging, "--timeout", "1"), 3)
    assert "no loader is running" in line
    assert sorted(os.listdir(staging)) == [protocol.TRIGGER] and (staging / protocol.TRIGGER).read_text() == ""


def test_a_pending_trigger_a_live_loader_never_takes_exits_6(tmp_path, packages):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / protocol.TRIGGER).write_text("")
    with running(FakeLoader(staging, consume=False)):
        line = one_line_error(hotload("push", *packages, "--to", staging, "--timeout", "1"), 6)
    assert "was not taken by the loader" in line


def test_wait_timeout_with_a_live_loader_that_never_answers_exits_6(tmp_path, packages):
    staging = tmp_path / "staging"
    with running(FakeLoader(staging, consume=False)):
        result = hotload("push", *packages, "--to", staging, "--wait", "--timeout", "1")
    assert result.returncode == 6, result.stderr
    no_traceback(result)
    assert result.stderr.strip().splitlines()[-1].startswith("hotload: batch ")
    assert "within 1 s" in result.stderr


def test_a_network_failure_exits_5(tmp_path, packages, ssh_home):
    from sshd import free_port

    line = one_line_error(hotload("push", *packages, "--to", f"sftp://{ssh_home.user}@127.0.0.1:{free_port()}/tmp/x", env=ssh_home.env()), 5)
    assert "cannot connect" in line


@pytest.mark.parametrize("args", [
    ["push", "missing.mcz", "--to", "{staging}"],
    ["push", "{not_mcz}", "--to", "{staging}"],
    ["push", "{package}", "--to", "ftp://host/x"],
    ["push", "{package}", "--to", "sftp://host:99999/x"],
    ["push", "{package}", "--to", ""],
    ["status", "--to", "sftp:///x"],
])
def test_bad_input_exits_2(tmp_path, packages, args):
    not_mcz = tmp_path / "notes.mcz"
    not_mcz.write_text("not a zip")
    values = {"staging": tmp_path / "staging", "not_mcz": not_mcz, "package": packages[0]}
    result = hotload(*[a.format(**values) for a in args])
    assert result.returncode == 2, result.stdout + result.stderr
    no_traceback(result)
    assert result.stderr.startswith("hotload: ")
    assert not (tmp_path / "staging").exists()


@pytest.mark.parametrize("args", [
    ["push", "{package}"],  # no --to
    ["push", "{package}", "--to", "{staging}", "--timeout", "nan"],
    ["push", "{package}", "--to", "{staging}", "--lock-wait", "-1"],
    ["push", "{package}", "--to", "{staging}", "--timeout", "abc"],
    ["status"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(tmp_path, packages, args):
    values = {"staging": tmp_path / "staging", "package": packages[0]}
    result = hotload(*[a.format(**values) for a in args])
    assert result.returncode == 2, result.stdout + result.stderr  # was 70, "internal error", before the fix
    no_traceback(result)
    assert "Error:" in result.stderr
    assert not (tmp_path / "staging").exists()


@pytest.mark.parametrize("command", [[], ["push"], ["status"], ["plan"], ["pack"], ["install-loader"], ["watch"], ["demo"]])
def test_help_exits_0(command):
    result = hotload(*command, "--help")
    assert result.returncode == 0, result.stderr  # every subcommand's --help was exit 70 before the fix
    assert "Usage:" in result.stdout and not result.stderr


def test_busy_exits_4(tmp_path, packages):
    staging = tmp_path / "staging"
    write_lock(staging, "colleague@other-host", 4242)
    line = one_line_error(hotload("push", *packages, "--to", staging, "--lock-wait", "0.3"), 4)
    assert "holds the lock" in line


def test_a_protocol_1_heartbeat_exits_3_naming_both_versions(tmp_path, packages):
    staging = tmp_path / "staging"
    staging.mkdir()
    heartbeat(staging, version=1)
    for args in ([], ["--wait"]):
        line = one_line_error(hotload("push", *packages, "--to", staging, *args), 3)
        assert "protocol 1" in line and f"speaks {protocol.VERSION}" in line and "install-loader" in line
    assert sorted(os.listdir(staging)) == [protocol.HEARTBEAT]  # nothing written
    status = hotload("status", "--to", staging)
    no_traceback(status)
    assert status.returncode == 3
    assert "protocol 1" in status.stdout and f"speaks {protocol.VERSION}" in status.stdout


def test_a_fresh_conflict_exits_3_naming_both_images(tmp_path, packages):
    staging = tmp_path / "staging"
    with running(FakeLoader(staging)):
        now = time.time()
        (staging / protocol.CONFLICT).write_text(render_record("conflict", [
            ("time", int(now), protocol.iso(now)),
            ("loader", "9c0d1e2f3a4b", "/srv/other/app.im"),
            ("active", "fake0001", "fake.im"),
        ]))
        line = one_line_error(hotload("push", *packages, "--to", staging, "--wait", "--timeout", "5"), 3)
        status = hotload("status", "--to", staging)
    assert "/srv/other/app.im" in line and "fake.im" in line
    assert not [n for n in os.listdir(staging) if protocol.is_batch_id(n)]  # refused before uploading
    no_traceback(status)
    assert status.returncode == 3
    assert "conflict:" in status.stdout and "/srv/other/app.im" in status.stdout
