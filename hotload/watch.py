"""`hotload watch`: push again whenever a source or package file changes.

    >>> Watcher(["src/MyApp-Core.st"], push=lambda paths: ..., dist=Path("dist")).run()

A changed `.st` file is packed (continuing its ancestry in `dist`) and the
resulting `.mcz` pushed; a changed `.mcz` is pushed as it is. Changes that
arrive together (an editor's save, a build) are debounced into one push.
"""

import threading
import time
from pathlib import Path
from typing import Callable, Iterable, List

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from .errors import HotloadError
from .pack import Packer


class _Changes(FileSystemEventHandler):
    def __init__(self, watched, on_change):
        self.watched = watched
        self.on_change = on_change

    def on_any_event(self, event):
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and Path(path).resolve() in self.watched:
                self.on_change(Path(path).resolve())


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
        self.dist = Path(dist)
        self.packer = Packer(author=author, message="hotload watch")
        self.debounce = debounce
        self.say = say
        self._pending = set()
        self._changed = threading.Event()
        self._lock = threading.Lock()

    def _note(self, path: Path):
        with self._lock:
            self._pending.add(path)
        self._changed.set()

    def packages_for(self, changed) -> List[Path]:
        packages = []
        for path in sorted(changed):
            packages.append(self.packer.pack(path, self.dist).path if path.suffix == ".st" else path)
        return packages

    def run(self, stop: threading.Event = None):
        stop = stop or threading.Event()
        observer = Observer()
        for folder in {path.parent for path in self.paths}:
            observer.schedule(_Changes(set(self.paths), self._note), str(folder))
        observer.start()
        self.say(f"watching {len(self.paths)} file(s); Ctrl-C stops")
        try:
            while not stop.is_set():
                if not self._changed.wait(0.2):
                    continue
                time.sleep(self.debounce)
                with self._lock:
                    changed, self._pending = self._pending, set()
                    self._changed.clear()
                try:
                    self.push(self.packages_for(changed))
                except HotloadError as error:
                    self.say(f"not pushed: {error}")
        finally:
            observer.stop()
            observer.join()
