"""Pushing a planned batch into a staging directory (docs/protocol.md, "Pushing").

    >>> with open_transport(parse_target("app1:/srv/app/staging")) as staging:
    ...     result = Pusher(staging).push(plan)
    >>> result.batch, result.bytes_sent
    ('20261122T203700Z-3fa9c1', 48213)

The lock is taken before anything is written and released after the trigger
(or on any error, Ctrl-C included, after this push's temporary files are gone).
"""

import contextlib
import hashlib
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from . import protocol
from .chunks import ChunkError
from .errors import HotloadError, LockBusy, PackageError
from .plan import LoadPlan
from .protocol import LockRecord, Manifest, ManifestEntry
from .transports.base import Transport


@dataclass
class PushResult:
    batch: str
    target: str
    entries: List[ManifestEntry]
    bytes_sent: int
    seconds: float
    cleaned: List[str] = field(default_factory=list)
    created_directory: bool = False


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_methods(plan: LoadPlan):
    """Every method's selector reads, so no batch is pushed that the loader would reject for it."""
    for package_plan in plan.order:
        package = package_plan.package
        for method in package.snapshot.methods:
            try:
                method.selector
            except ChunkError as error:
                raise PackageError(package.path, f"{method.class_name}: {error}") from None


def manifest_entries(plan: LoadPlan) -> List[ManifestEntry]:
    """One entry per package in load order, with size and checksum measured now; checks the methods first."""
    check_methods(plan)
    entries, seen = [], {}
    for position, package_plan in enumerate(plan.order, start=1):
        path = package_plan.package.path
        if path.name in seen:
            raise PackageError(path, f"has the same file name as {seen[path.name]}; the staging directory holds one file per name")
        seen[path.name] = path
        entries.append(
            ManifestEntry(position, path.name, path.stat().st_size, sha256_of(path), package_plan.package.version.name)
        )
    return entries


class PendingBatch(HotloadError):
    exit_code = 4


class Pusher:
    """Takes the lock, cleans up, uploads, writes the manifest, creates the trigger, unlocks."""

    def __init__(
        self,
        transport: Transport,
        lock_wait: float = 30.0,
        pending_wait: float = 30.0,
        break_lock: bool = False,
        stale_after: float = protocol.STALE_LOCK_SECONDS,
        on_progress: Optional[Callable[[str, int], None]] = None,
        on_step: Optional[Callable[[str], None]] = None,
    ):
        self.transport = transport
        self.lock_wait = lock_wait
        self.pending_wait = pending_wait
        self.break_lock = break_lock
        self.stale_after = stale_after
        self.on_progress = on_progress or (lambda name, sent: None)
        self.on_step = on_step or (lambda step: None)

    def push(self, plan: LoadPlan, batch: Optional[str] = None, entries: Optional[List[ManifestEntry]] = None) -> PushResult:
        """Push `plan`; `entries` from `manifest_entries(plan)` may be given to hash once for many targets."""
        with self._interrupts_at_safe_points():
            return self._push(plan, batch, entries or manifest_entries(plan))

    @contextlib.contextmanager
    def _interrupts_at_safe_points(self):
        """Ctrl-C sets a flag that the push acts on between SFTP requests (a second Ctrl-C acts at once).

        Raising in the middle of a request would leave the connection unusable for the clean-up.
        """
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True

        previous = signal.signal(signal.SIGINT, note)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _checkpoint(self):
        if self._interrupted:
            raise KeyboardInterrupt

    def _push(self, plan: LoadPlan, batch: Optional[str], entries: List[ManifestEntry]) -> PushResult:
        started = time.monotonic()
        manifest = Manifest.new(entries, batch)
        manifest_text = manifest.render()
        paths = {package_plan.package.path.name: package_plan.package.path for package_plan in plan.order}  # unique
        created = self.transport.ensure_directory()
        self._lock(manifest.batch)
        sent = 0
        cleaned: List[str] = []
        try:
            cleaned = self._clean_up()
            for entry in entries:
                self.on_step(f"upload {entry.file}")
                temporary = protocol.temp_name(manifest.batch, entry.file)
                self.transport.upload(str(paths[entry.file]), temporary, lambda n, f=entry.file: self._progress(f, n))
                self.transport.rename_replacing(temporary, entry.file)
                sent += entry.size
            self.on_step("manifest")
            self._put_atomically(manifest.batch, protocol.MANIFEST, manifest_text.encode())
            self.on_step("trigger")
            self._put_trigger(manifest.batch)
        except BaseException:
            self._remove_temporaries(manifest.batch)
            raise
        finally:
            self._unlock(manifest.batch)
        return PushResult(
            manifest.batch, self.transport.description, entries, sent, time.monotonic() - started, cleaned, created
        )

    # -- steps -------------------------------------------------------------------------

    def _progress(self, name: str, sent: int):
        self.on_progress(name, sent)
        self._checkpoint()

    def _put_atomically(self, batch: str, name: str, data: bytes):
        self._checkpoint()
        temporary = protocol.temp_name(batch, name)
        self.transport.write(temporary, data)
        self.transport.rename_replacing(temporary, name)

    def _put_trigger(self, batch: str):
        """Create `load` last; never over a trigger the loader has not consumed (e.g. a save-only one)."""
        temporary = protocol.temp_name(batch, protocol.TRIGGER)
        self._checkpoint()
        self.transport.write(temporary, f"{batch}\n".encode())
        self._wait_while(lambda: not self.transport.rename_exclusive(temporary, protocol.TRIGGER), "its trigger")

    def _wait_while(self, condition, what: str):
        deadline = time.monotonic() + self.pending_wait
        while condition():
            if time.monotonic() >= deadline:
                raise PendingBatch(
                    f"{what} is still waiting for the loader at {self.transport.description} after "
                    f"{self.pending_wait:.0f} s; check the loader with `hotload status` before pushing again"
                )
            time.sleep(0.25)
            self._checkpoint()

    def _lock(self, batch: str):
        self.on_step("lock")
        record = LockRecord.new(batch).render().encode()
        temporary = protocol.temp_name(batch, protocol.LOCK)
        deadline = time.monotonic() + self.lock_wait
        try:
            while True:
                # Written anew on each try: the holder's clean-up removes other pushes' temporaries.
                self.transport.write(temporary, record)
                if self.transport.rename_exclusive(temporary, protocol.LOCK):
                    return
                server_now = self.transport.mtime(temporary)  # just written: the server's clock
                self.transport.remove(temporary)
                holder = self._describe_lock(server_now)
                if holder is None:
                    continue  # released between our rename and our read: try again at once
                age, description = holder
                if age >= self.stale_after:
                    if self.break_lock:
                        self.on_step(f"break stale lock ({description})")
                        self.transport.remove(protocol.LOCK)
                        continue
                    raise LockBusy(
                        f"the staging directory {self.transport.description} has a stale lock: {description}. "
                        "If that push is dead, run the push again with --break-lock"
                    )
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"another push holds the lock on {self.transport.description}: {description}; "
                        f"waited {self.lock_wait:.0f} s. Try again when it has finished"
                    )
                time.sleep(0.2)
                self._checkpoint()
        except BaseException:
            self.transport.remove(temporary)
            raise

    def _describe_lock(self, server_now: Optional[float]):
        data = self.transport.read(protocol.LOCK)
        changed = self.transport.mtime(protocol.LOCK)
        if data is None or changed is None:
            return None
        age = max(0.0, (server_now if server_now is not None else self.transport.now()) - changed)
        try:
            record = LockRecord.parse(data.decode("utf-8", "replace"))
            who = f"held by {record.holder} (pid {record.pid}, batch {record.batch})"
        except HotloadError as error:
            who = f"unreadable lock file ({error})"
        return age, f"{who}, {age:.0f} s old"

    def _unlock(self, batch: str):
        data = self.transport.read(protocol.LOCK)
        if data is None:
            return
        try:
            owner = LockRecord.parse(data.decode("utf-8", "replace")).batch
        except HotloadError:
            return
        if owner == batch:
            self.transport.remove(protocol.LOCK)

    def _clean_up(self) -> List[str]:
        """Wait until the loader has consumed any trigger, then remove what interrupted pushes left."""
        self.on_step("clean up")
        self._wait_while(lambda: protocol.TRIGGER in self.transport.list_names(), "a trigger (a batch or a save)")
        names = self.transport.list_names()
        removed = {name for name in names if name.startswith(protocol.TEMP_PREFIX) or name.endswith(".mcz")}
        if protocol.MANIFEST in names:
            removed.add(protocol.MANIFEST)  # no trigger: an interrupted push left it
        for name in removed:
            self.transport.remove(name)
        return sorted(removed)

    def _remove_temporaries(self, batch: str):
        prefix = protocol.temp_name(batch, "")
        try:
            for name in self.transport.list_names():
                if name.startswith(prefix):
                    self.transport.remove(name)
        except Exception:  # the connection may be gone; the next push cleans up
            pass
