"""`hotload watch`: push again whenever a source or package file changes.

    >>> Watcher(["src/MyApp-Core.st"], push=lambda paths: ..., dist=Path("dist")).run()

A changed `.st` file is packed (continuing its ancestry in `dist`) and the
resulting `.mcz` pushed; a changed `.mcz` is pushed as it is.

Exactly one push per change of a watched file's *content*:

- Only events that can bring new content to exactly a watched path count
  (created, modified, closed after writing, renamed into place: an editor's
  atomic save). Reads, directory events, other files in the folder (the
  packed `.mcz` in `dist`, whatever the push writes) are ignored, even when
  `dist` is the source folder.
- Debounce: a push waits until no event has come for `debounce` seconds (at
  most 10 windows), so a burst of saves is one push of the final content.
- Then each candidate is hashed (SHA-256) and pushed only if its content
  differs from the content last handled (at start, the content then). A
  `touch`, or a save of the same text, pushes nothing; the events that
  packing and pushing cause themselves find unchanged hashes.
- A `.mcz` the watcher writes itself over a watched `.mcz` is recorded as
  handled, not seen as a change.

When a push fails (any `HotloadError`, or an `OSError`) it is reported in one
line and watching goes on. The failed content counts as handled, so it is not
retried in a loop by itself: the failed files are pushed again together with
the next real change of any watched file (edit and save again to retry
at once). A source that cannot be packed is reported and skipped; it is tried
again when it changes, and the other changed files are still pushed.
"""

import errno
import hashlib
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Set

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from hotload.errors import HotloadError, InputError
from hotload.formats.pack import Packer

#: Event types that can mean new content at a path (not opened, read-closed, attrib, deleted).
_CONTENT_EVENTS = {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED, EVENT_TYPE_MOVED}
_POLL = 0.2
_MAX_WINDOWS = 10


def _digest(path: Path) -> Optional[str]:
    """SHA-256 of the file's content, or None if it cannot be read right now."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _one_line(error: BaseException) -> str:
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def _cannot_watch(folders, error: OSError) -> str:
    where = ", ".join(str(folder) for folder in folders)
    if error.errno in (errno.EMFILE, errno.ENOSPC):
        return (f"cannot watch {where}: {error.strerror or error}; raise the limit, e.g. "
                "sysctl fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288")
    return f"cannot watch {where}: {error.strerror or error}"


class _Changes(FileSystemEventHandler):
    def __init__(self, watched: Set[Path], on_change: Callable[[Path], None]):
        self.watched = watched
        self.on_change = on_change

    def on_any_event(self, event):
        if event.is_directory or event.event_type not in _CONTENT_EVENTS:
            return
        # a rename brings content only to its destination (an editor's save renames a temporary over the file)
        raw = event.dest_path if event.event_type == EVENT_TYPE_MOVED else event.src_path
        if not raw:
            return
        path = Path(raw if isinstance(raw, str) else raw.decode()).resolve()
        if path in self.watched:
            self.on_change(path)


class Watcher:
    def __init__(self, paths: Iterable, push: Callable[[List[Path]], None], dist: Path, author: str = "hotload",
                 debounce: float = 0.5, say: Callable[[str], None] = print):
        self.paths = [Path(p).resolve() for p in paths]
        for path in self.paths:
            if path.suffix not in (".st", ".mcz"):
                raise HotloadError(f"{path}: watch takes chunk sources (.st) or packages (.mcz)")
            if not path.is_file():
                raise HotloadError(f"{path}: no such file")
        self.push = push
        self.dist = Path(dist).resolve()
        self.packer = Packer(author=author, message="hotload watch")
        self.debounce = debounce
        self.say = say
        self._handled: Dict[Path, Optional[str]] = {}  # path -> hash of the content last pushed (or at start)
        self._retry: Set[Path] = set()  # paths whose last push failed: they go with the next real change
        self._pending: Set[Path] = set()
        self._changed = threading.Event()
        self._lock = threading.Lock()

    def _note(self, path: Path):
        with self._lock:
            self._pending.add(path)
            self._changed.set()

    def packages_for(self, changed) -> List[Path]:
        """Pack the sources, keep the packages; a source that cannot be packed is reported and left out."""
        packages = []
        for path in sorted(changed):
            if path.suffix != ".st":
                packages.append(path)
                continue
            try:
                packed = self.packer.pack(path, self.dist).path.resolve()
            except (HotloadError, OSError) as error:
                self.say(f"not pushed: {path.name}: {_one_line(error)}")
                continue
            if packed in self._handled:  # our own write over a watched .mcz is not a change of its own
                self._handled[packed] = _digest(packed)
            packages.append(packed)
        return packages

    def _settle(self, stop: threading.Event) -> bool:
        """Wait until no event came for one debounce window (at most a few); False if stopped."""
        deadline = time.monotonic() + _MAX_WINDOWS * self.debounce
        while True:
            with self._lock:
                self._changed.clear()
            if stop.wait(self.debounce):
                return False
            if not self._changed.is_set() or time.monotonic() >= deadline:
                return True

    def _changed_paths(self, candidates: Set[Path]) -> List[Path]:
        changed = []
        for path in sorted(candidates):
            digest = _digest(path)
            if digest is None:  # mid-save or removed: its next write or rename brings it back
                self.say(f"{path.name}: cannot be read now; pushed when it is written again")
                continue
            if digest != self._handled.get(path):
                self._handled[path] = digest
                changed.append(path)
        return changed

    def step(self, candidates: Set[Path]) -> bool:
        """Push the candidates whose content changed (with earlier failures); True if it pushed."""
        changed = self._changed_paths(candidates)
        if not changed:
            return False
        batch = sorted(set(changed) | self._retry)
        self._retry = set()
        self.say(f"changed: {', '.join(p.name for p in changed)}")
        try:
            packages = self.packages_for(batch)
            if not packages:
                return False
            self.push(packages)
        except (HotloadError, OSError) as error:
            self.say(f"not pushed: {_one_line(error)}; pushed again with the next change")
            self._retry = set(batch)
            return False
        return True

    def run(self, stop: threading.Event = None):
        """Watch until `stop` is set (or Ctrl-C)."""
        stop = stop or threading.Event()
        watched = set(self.paths)
        self._handled = {path: _digest(path) for path in self.paths}
        observer = Observer()
        folders = sorted({path.parent for path in self.paths})
        try:
            for folder in folders:
                observer.schedule(_Changes(watched, self._note), str(folder))
            try:
                observer.start()
            except OSError as error:
                raise InputError(_cannot_watch(folders, error)) from None
            for path in self.paths:  # changed while the observer was starting: no event came for it
                if _digest(path) != self._handled[path]:
                    self._note(path)
            self.say(f"watching {len(self.paths)} file(s); Ctrl-C stops")
            while not stop.is_set():
                if not self._changed.wait(_POLL):
                    continue
                if not self._settle(stop):
                    break
                with self._lock:
                    candidates, self._pending = self._pending, set()
                    self._changed.clear()
                self.step(candidates)
        finally:
            observer.stop()  # also stops the folders' watches when starting failed part way
            if observer.is_alive():
                observer.join()
