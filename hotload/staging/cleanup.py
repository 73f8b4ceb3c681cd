"""Removing what interrupted pushes left in a staging directory (docs/protocol.md, "Pushing", 2).

Only what hotload wrote is removed: temporary entries, and batch folders whose own
manifest names them and lists their files. Anything else is left as it is and reported.
"""

from dataclasses import dataclass, field
from typing import Callable, List, Optional

from hotload.staging import protocol
from hotload.errors import HotloadError
from hotload.staging.protocol import Manifest
from hotload.staging.transports.base import FILE, FOLDER, Transport


@dataclass
class CleanupResult:
    removed: List[str] = field(default_factory=list)
    #: entries with hotload's names left because they hold something hotload did not write: "<name> (<why>)"
    kept: List[str] = field(default_factory=list)


class Cleanup:
    """Removes the leftovers of interrupted pushes, holding the lock.

        result = Cleanup(transport, on_step=print).run()
        result.removed   # ['.hotload-tmp-20261122T190000Z-aaaaaa']
        result.kept      # ['20261122T180000Z-bbbbbb (it has no hotload manifest naming it)']

        Cleanup(transport).remove_unfinished_push(batch, published=True)   # after an error or Ctrl-C

    `on_step` hears "left <name>: <why>" for each entry left as it is.
    """

    def __init__(self, transport: Transport, on_step: Optional[Callable[[str], None]] = None):
        self.transport = transport
        self.on_step = on_step or (lambda step: None)
        self._kept: List[str] = []

    def run(self, own: Optional[str] = None) -> CleanupResult:
        """Remove temporary entries and the batch folders the trigger does not name; those of the batch
        `own` (the push that cleans up: its temporary folder may be made already) are left."""
        self._kept = []
        self.transport.read_ahead(protocol.TRIGGER)  # a transport may send it behind the listing, never before
        names = self.transport.list_names()  # before reading the trigger (docs/protocol.md, Pushing, 2)
        if own is not None:
            names = [n for n in names if n != protocol.temp_folder(own) and not n.startswith(protocol.temp_name(own, ""))]
        triggered = self._triggered_batch()
        removed = []
        for name in names:
            if name.startswith(protocol.TEMP_PREFIX) or (protocol.is_batch_id(name) and name != triggered):
                if self._remove_hotload_entry(name):
                    removed.append(name)
        return CleanupResult(removed, list(self._kept))

    def remove_unfinished_push(self, batch: str, published: bool):
        """After an error or Ctrl-C: the push's temporary entries, and its batch folder when that push
        `published` it and no trigger names it. Gives up quietly (the next push cleans up)."""
        try:
            for name in self.transport.list_names():
                if name.startswith(protocol.temp_name(batch, "")) or name == protocol.temp_folder(batch):
                    self._remove_hotload_entry(name)
            if published and self._triggered_batch() != batch:
                self._remove_hotload_entry(batch)
        except (HotloadError, OSError):
            pass  # the connection may be gone; the next push cleans up

    def _triggered_batch(self) -> Optional[str]:
        try:
            data = self.transport.read(protocol.TRIGGER, limit=4096)
            return protocol.parse_trigger(data.decode("utf-8", "replace")) if data else None
        except HotloadError:
            return None  # unreadable or of another version: it names none of our folders

    def _remove_hotload_entry(self, name: str) -> bool:
        """Remove a file, or a folder holding only files hotload wrote; anything else is left as it is.

        In a `.hotload-tmp-<batch>/` folder hotload writes package files and `manifest`. A `<batch>/`
        folder is hotload's only when its `manifest` names that batch, and then only the files that
        manifest lists are hotload's: a folder of the user's that happens to have a batch id's name
        is never touched.
        """
        kind = self.transport.kind(name)
        if kind == FILE and name.startswith(protocol.TEMP_PREFIX):
            return self.transport.remove(name)
        if kind != FOLDER:
            if kind is not None:
                self._keep(name, f"it is a {kind}")
            return kind is None
        inner = self.transport.list_names(name)
        if name.startswith(protocol.TEMP_PREFIX):
            ours = {n for n in inner if n == protocol.MANIFEST or _is_package_name(n)}
        else:
            ours = self._batch_folder_files(name, inner)
            if ours is None:
                self._keep(name, "it has no hotload manifest naming it")
                return False
        others = [n for n in inner if n not in ours or self.transport.kind(f"{name}/{n}") != FILE]
        if others:
            self._keep(name, f"it holds entries hotload did not write ({', '.join(others[:3])})")
            return False
        for file in inner:
            self.transport.remove(f"{name}/{file}")
        if not self.transport.remove_folder(name):
            self._keep(name, "it is not empty")
            return False
        return True

    def _batch_folder_files(self, name: str, inner: List[str]) -> Optional[set]:
        """The names hotload wrote in the batch folder `name`, or None when it is not hotload's."""
        if protocol.MANIFEST not in inner:
            return None
        try:
            data = self.transport.read(f"{name}/{protocol.MANIFEST}", limit=1 << 20)
            manifest = Manifest.parse(data.decode("utf-8", "replace")) if data else None
        except HotloadError:
            return None
        if manifest is None or manifest.batch != name:
            return None
        return {protocol.MANIFEST} | {entry.file for entry in manifest.entries}

    def _keep(self, name: str, why: str):
        self._kept.append(f"{name} ({why})")
        self.on_step(f"left {name}: {why}")


def _is_package_name(name: str) -> bool:
    try:
        protocol.check_package_file_name(name)
        return True
    except HotloadError:
        return False
