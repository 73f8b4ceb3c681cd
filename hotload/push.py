"""Pushing a planned batch into a staging directory (docs/protocol.md, "Pushing").

    >>> with open_transport(parse_target("app1:/srv/app/staging")) as staging:
    ...     result = Pusher(staging).push(plan)
    >>> result.batch, result.bytes_sent
    ('20261122T203700Z-3fa9c1', 48213)

The lock (`lock.StagingLock`) is taken before anything is written and released after
the trigger (or on any error, Ctrl-C included, after this push's temporary entries are
gone); holding it, `cleanup.Cleanup` removes what interrupted pushes left.
The batch is uploaded into `.hotload-tmp-<batch>/` and published by renaming that
folder to `<batch>/`; only the trigger, written last, makes the loader act on it.
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
from .cleanup import Cleanup
from .errors import HotloadError, PackageError, TargetError, WaitTimeout
from .lock import StagingLock
from .plan import LoadPlan
from .protocol import Manifest, ManifestEntry
from .transports.base import FILE, Transport


@dataclass
class PushResult:
    batch: str
    target: str
    entries: List[ManifestEntry]
    bytes_sent: int
    seconds: float
    cleaned: List[str] = field(default_factory=list)
    created_directory: bool = False
    #: entries with hotload's names that were left because they hold something hotload did not write
    kept: List[str] = field(default_factory=list)


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


class Pusher:
    """Takes the lock, cleans up, uploads the batch folder, publishes it, triggers it, unlocks."""

    def __init__(
        self,
        transport: Transport,
        lock_wait: float = 30.0,
        pending_wait: float = 30.0,
        break_lock: bool = False,
        stale_after: float = protocol.STALE_LOCK_SECONDS,
        on_progress: Optional[Callable[[str, int], None]] = None,
        on_step: Optional[Callable[[str], None]] = None,
        reconnect: Optional[Callable[[], Transport]] = None,
    ):
        self.transport = transport
        self.lock_wait = lock_wait
        self.pending_wait = pending_wait
        self.break_lock = break_lock
        self.stale_after = stale_after
        self.on_progress = on_progress or (lambda name, sent: None)
        self.on_step = on_step or (lambda step: None)
        #: opens a new connection to the same staging directory, to release the lock when this one is lost
        self.reconnect = reconnect

    def push(self, plan: LoadPlan, batch: Optional[str] = None, entries: Optional[List[ManifestEntry]] = None) -> PushResult:
        """Push `plan`; `entries` from `manifest_entries(plan)` may be given to hash once for many targets."""
        with self._interrupts_at_safe_points():
            return self._push(plan, batch, entries or manifest_entries(plan))

    @contextlib.contextmanager
    def _interrupts_at_safe_points(self):
        """Ctrl-C (or SIGTERM, e.g. a cancelled CI job) sets a flag that the push acts on between SFTP
        requests, removing its entries and its lock; a second signal acts at once.

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

        previous = {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _checkpoint(self):
        if self._interrupted:
            raise KeyboardInterrupt

    def _push(self, plan: LoadPlan, batch: Optional[str], entries: List[ManifestEntry]) -> PushResult:
        started = time.monotonic()
        manifest = Manifest.new(entries, batch)
        manifest_text = manifest.render()
        paths = {package_plan.package.path.name: package_plan.package.path for package_plan in plan.order}  # unique
        created = self.transport.ensure_directory()
        self._publishing = False
        sent = 0
        folder = protocol.temp_folder(manifest.batch)
        lock = StagingLock(
            self.transport, manifest.batch, wait=self.lock_wait, stale_after=self.stale_after,
            break_lock=self.break_lock, on_step=self.on_step, checkpoint=self._checkpoint,
        )
        try:
            self.on_step("lock")
            lock.acquire()
            self.on_step("clean up")
            cleaned = Cleanup(self.transport, self.on_step).run()
            self._checkpoint()
            self.transport.make_folder(folder)
            for entry in entries:
                self.on_step(f"upload {entry.file}")
                self._checkpoint()
                self.transport.upload(
                    str(paths[entry.file]), f"{folder}/{entry.file}", lambda n, f=entry.file: self._progress(f, n)
                )
                sent += entry.size
            self.on_step("manifest")
            self._checkpoint()
            self.transport.write(f"{folder}/{protocol.MANIFEST}", manifest_text.encode())
            self.on_step("publish")
            self._checkpoint()
            self._publishing = True  # from here `<batch>/` may be this push's (when the rename's answer is lost)
            if not self.transport.rename_exclusive(folder, manifest.batch):
                self._publishing = False
                raise TargetError(
                    f"{manifest.batch} already exists in {self.transport.description} (hotload did not write it); "
                    "push again, which picks another batch id"
                )
            self.on_step("trigger")
            self._put_trigger(manifest.batch)
        except BaseException:
            if self.transport.lost and self.reconnect:
                self._release_over_a_new_connection(manifest.batch)
            else:
                self._remove_unfinished_push(self.transport, manifest.batch)
            raise
        lock.release()
        return PushResult(
            manifest.batch, self.transport.description, entries, sent, time.monotonic() - started, cleaned.removed,
            created, cleaned.kept,
        )

    # -- steps -------------------------------------------------------------------------

    def _progress(self, name: str, sent: int):
        self.on_progress(name, sent)
        self._checkpoint()

    def _put_trigger(self, batch: str):
        """Create `load` last; never over a trigger the loader has not consumed (e.g. a save-only one)."""
        temporary = protocol.temp_name(batch, protocol.TRIGGER)
        self._checkpoint()
        self.transport.write(temporary, protocol.render_trigger(batch).encode())
        if self.transport.rename_exclusive(temporary, protocol.TRIGGER):
            return
        self.on_step("trigger-wait")

        def taken() -> bool:
            kind = self.transport.kind(protocol.TRIGGER)
            if kind not in (None, FILE):
                raise TargetError(
                    f"{protocol.TRIGGER} in {self.transport.description} is a {kind}, not a trigger file; "
                    "hotload did not make it and will not remove it: remove it by hand and push again"
                )
            return self.transport.rename_exclusive(temporary, protocol.TRIGGER)

        self._wait_while(lambda: not taken(), "another trigger (a batch or a save-only one)")

    def _wait_while(self, condition, what: str):
        deadline = time.monotonic() + self.pending_wait
        while condition():
            if time.monotonic() >= deadline:
                from .status import require_loader

                require_loader(self.transport)  # NoLoaderRunning (exit 3) says more than a timeout
                raise WaitTimeout(
                    f"{what} in {self.transport.description} was not taken by the loader within "
                    f"{self.pending_wait:.0f} s, although it is running; check it with `hotload status` and push again"
                )
            time.sleep(0.25)
            self._checkpoint()

    def _release_over_a_new_connection(self, batch: str):
        """The connection was lost: connect once more to remove this push's entries and its lock, so the
        next push needs no --break-lock. Gives up quietly (the next push cleans up)."""
        try:
            fresh = self.reconnect()
        except (HotloadError, OSError):
            return
        try:
            self._remove_unfinished_push(fresh, batch)
        finally:
            try:
                fresh.close()
            except Exception:  # noqa: BLE001 - closing is best effort here
                pass

    def _remove_unfinished_push(self, transport: Transport, batch: str):
        """After an error or Ctrl-C: this push's entries (its batch folder when it published it), then its lock."""
        Cleanup(transport, self.on_step).remove_unfinished_push(batch, self._publishing)
        StagingLock(transport, batch).release()
