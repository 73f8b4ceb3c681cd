"""`hotload watch` against a real watchdog observer and real files: exactly one push per change.

Every test ends with a barrier instead of a sleep: it edits a second watched source (the marker)
and waits for that push. Both sources live in one folder, so the observer delivers their events in
order: by the time the marker is pushed, every event the earlier steps caused (including the
watcher's own packing and the push's own writes) has been seen. A spurious push shows up either
before the marker's push or inside it.
"""

import os
import re
import threading
import time
import zipfile
from pathlib import Path

import pytest

from helpers import class_def, method
from hotload.errors import HotloadError
from hotload.formats.mcz import SOURCE_MEMBER
from hotload.cli.watch import Watcher

DEBOUNCE = 0.1
TIMEOUT = 10.0


def source(category, text):
    return class_def(category, category=category) + method(category, f"say\n\t^ '{text}'")


def wait_for(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pushed_content(mcz: Path):
    """(package, text) as the pushed package really holds it."""
    with zipfile.ZipFile(mcz) as archive:
        text = archive.read(SOURCE_MEMBER).decode("utf-8")
    package = re.search(r"category: '([^']*)'", text).group(1)
    return package, re.search(r"\^ '([^']*)'", text).group(1)


class Session:
    """One Watcher running in a thread; `pushes` holds one list of (package, text) per push."""

    def __init__(self, folder: Path, dist: Path):
        self.folder, self.dist = folder, dist
        self.greeting = folder / "Greeting.st"
        self.marker = folder / "Marker.st"
        self.greeting.write_text(source("Greeting", "v0"))
        self.marker.write_text(source("Marker", "m0"))
        self.markers = 0
        self.pushes = []
        self.lines = []
        self.fail_next = None
        self.error = None
        self.watcher = Watcher([self.greeting, self.marker], self.push, dist, author="tester",
                               debounce=DEBOUNCE, say=self.lines.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(lambda: any(line.startswith("watching") for line in self.lines), "the watcher to start")

    def _run(self):
        try:
            self.watcher.run(self.stop)
        except BaseException as error:  # reported by close()
            self.error = error

    def push(self, packages):
        """Read what would be pushed, then write where the watcher looks, as a real push may."""
        contents = sorted(pushed_content(p) for p in packages)
        for package in packages:
            package.write_bytes(package.read_bytes())  # rewrite the packed .mcz in dist
            os.utime(package)
        with open(self.folder / "push.log", "a") as log:  # a file beside the watched sources
            log.write(f"{contents}\n")
        self.greeting.read_bytes()  # and read a watched source again
        (self.dist / "staged.tmp").write_text("x")
        (self.dist / "staged.tmp").replace(self.dist / "staged")
        if self.fail_next:
            error, self.fail_next = self.fail_next, None
            self.pushes.append(("failed", contents))
            raise error
        self.pushes.append(contents)  # last: the push's own writes happened before the test sees it

    def wait_pushes(self, count):
        wait_for(lambda: len(self.pushes) >= count, f"{count} push(es); got {self.pushes}")

    def barrier(self):
        """Edit the marker and wait for its push; returns the pushes before it."""
        self.markers += 1
        before = len(self.pushes)
        self.marker.write_text(source("Marker", f"m{self.markers}"))
        wait_for(lambda: any(("Marker", f"m{self.markers}") in push for push in self.pushes[before:]),
                 f"the marker push m{self.markers}; got {self.pushes}")
        return self.pushes

    def close(self):
        self.stop.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "run(stop) did not return"
        if self.error:
            raise self.error


@pytest.fixture
def session(tmp_path):
    sessions = []

    def start(same_folder=False):
        folder = tmp_path / "src"
        folder.mkdir()
        dist = folder if same_folder else tmp_path / "dist"
        dist.mkdir(exist_ok=True)
        sessions.append(Session(folder, dist))
        return sessions[-1]

    yield start
    for started in sessions:
        started.close()


def greeting(text):
    return [("Greeting", text)]


def marker(number):
    return [("Marker", f"m{number}")]


def test_one_edit_one_push_although_the_push_writes_files(session):
    s = session()
    s.greeting.write_text(source("Greeting", "v1"))
    s.wait_pushes(1)
    assert s.barrier() == [greeting("v1"), marker(1)]
    assert s.barrier() == [greeting("v1"), marker(1), marker(2)]


def test_touch_does_not_push(session):
    s = session()
    s.greeting.touch()
    os.utime(s.greeting, (1, 1))
    s.greeting.write_text(source("Greeting", "v0"))  # written again with the same content
    assert s.barrier() == [marker(1)]


def test_atomic_save_pushes_once(session):
    s = session()
    temporary = s.folder / ".Greeting.st.swp"
    temporary.write_text(source("Greeting", "v1"))
    temporary.replace(s.greeting)
    s.wait_pushes(1)
    assert s.barrier() == [greeting("v1"), marker(1)]


def test_rapid_saves_push_the_final_content_once(session):
    s = session()
    for number in range(1, 6):
        s.greeting.write_text(source("Greeting", f"v{number}"))
    s.wait_pushes(1)
    assert s.barrier() == [greeting("v5"), marker(1)]


def test_two_edits_two_pushes(session):
    s = session()
    s.greeting.write_text(source("Greeting", "v1"))
    s.wait_pushes(1)
    s.greeting.write_text(source("Greeting", "v2"))
    s.wait_pushes(2)
    assert s.barrier() == [greeting("v1"), greeting("v2"), marker(1)]


@pytest.mark.parametrize("error", [HotloadError("no loader\nrun install-loader"), OSError(5, "I/O error")])
def test_failed_push_is_reported_and_watching_goes_on(session, error):
    s = session()
    s.fail_next = error
    s.greeting.write_text(source("Greeting", "v1"))
    s.wait_pushes(1)
    wait_for(lambda: any("not pushed" in line for line in s.lines), "the failure report")
    [report] = [line for line in s.lines if "not pushed" in line]
    assert "\n" not in report
    # not retried by itself: the failed source goes again with the next real change
    assert s.barrier() == [("failed", greeting("v1")), greeting("v1") + marker(1)]
    assert s.barrier()[2:] == [marker(2)]
    s.greeting.write_text(source("Greeting", "v2"))
    s.wait_pushes(4)
    assert s.barrier()[3:] == [greeting("v2"), marker(3)]


def test_unpackable_source_is_reported_and_not_retried(session):
    s = session()
    s.greeting.write_text("Object subclass: #Broken\n\tinstanceVariableNames: ''!\nBroken frobnicate!\n")
    wait_for(lambda: any("Greeting.st" in line and "not pushed" in line for line in s.lines), "the pack error")
    assert s.barrier() == [marker(1)]
    s.greeting.write_text(source("Greeting", "v1"))
    s.wait_pushes(2)
    assert s.barrier() == [marker(1), greeting("v1"), marker(2)]


def test_dist_is_the_source_folder(session):
    s = session(same_folder=True)
    s.greeting.write_text(source("Greeting", "v1"))
    s.wait_pushes(1)
    assert s.barrier() == [greeting("v1"), marker(1)]
    s.greeting.write_text(source("Greeting", "v2"))
    s.wait_pushes(3)
    assert s.barrier() == [greeting("v1"), marker(1), greeting("v2"), marker(2)]
    assert sorted(p.name for p in s.folder.glob("Greeting-*.mcz")) == ["Greeting-tester.1.mcz", "Greeting-tester.2.mcz"]


def test_watching_a_package_in_dist(tmp_path):
    """A watched .mcz that the watcher itself packs over is not a change of its own."""
    folder = tmp_path / "src"
    folder.mkdir()
    source_path = folder / "Greeting.st"
    source_path.write_text(source("Greeting", "v0"))
    from hotload.formats.pack import Packer

    Packer(author="tester").pack(source_path, folder)
    watched_mcz = folder / "Greeting-tester.2.mcz"  # the name the next pack writes
    watched_mcz.write_bytes((folder / "Greeting-tester.1.mcz").read_bytes())
    (folder / "Greeting-tester.1.mcz").unlink()
    pushes, lines = [], []
    watcher = Watcher([source_path, watched_mcz], lambda packages: pushes.append(sorted(p.name for p in packages)),
                      folder, author="tester", debounce=DEBOUNCE, say=lines.append)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: lines, "the watcher to start")
        source_path.write_text(source("Greeting", "v1"))
        wait_for(lambda: pushes, "the push")
        # the pack wrote over the watched .mcz: that is the watcher's own write, not a second change
        source_path.write_text(source("Greeting", "v2"))
        wait_for(lambda: ["Greeting-tester.3.mcz"] in pushes, f"the second push; got {pushes}")
        assert pushes == [["Greeting-tester.2.mcz"], ["Greeting-tester.3.mcz"]]
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_refuses_what_it_cannot_watch(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(HotloadError, match="chunk sources"):
        Watcher([tmp_path / "notes.txt"], lambda packages: None, tmp_path)
    with pytest.raises(HotloadError, match="no such file"):
        Watcher([tmp_path / "Missing.st"], lambda packages: None, tmp_path)


def test_a_folder_that_cannot_be_watched_is_one_clear_error(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "Greeting.st").write_text(source("Greeting", "v0"))
    other = tmp_path / "zz"  # sorts after src: src is watched before this one fails
    other.mkdir()
    (other / "Marker.st").write_text(source("Marker", "m0"))
    watcher = Watcher([folder / "Greeting.st", other / "Marker.st"], lambda packages: None, tmp_path / "dist")
    (other / "Marker.st").unlink()
    other.rmdir()
    threads = threading.active_count()
    with pytest.raises(HotloadError, match="cannot watch"):
        watcher.run(threading.Event())
    wait_for(lambda: threading.active_count() <= threads, "the watch threads to end")
