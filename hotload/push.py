"""Pushing a planned batch into a staging directory (docs/protocol.md, "Pushing").

    >>> with open_transport(parse_target("app1:/srv/app/staging")) as staging:
    ...     result = Pusher(staging).push(plan)
    >>> result.batch, result.bytes_sent
    ('20261122T203700Z-3fa9c1', 48213)

The lock is taken before anything is written and released after the trigger
(or on any error, Ctrl-C included, after this push's temporary entries are gone).
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
from .errors import HotloadError, LockBusy, PackageError, TargetError, WaitTimeout
from .plan import LoadPlan
from .protocol import LockRecord, Manifest, ManifestEntry
from .transports.base import FILE, FOLDER, Transport


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
        self._kept: List[str] = []
        self._publishing = False
        sent = 0
        cleaned: List[str] = []
        folder = protocol.temp_folder(manifest.batch)
        try:
            self._lock(manifest.batch)
            cleaned = self._clean_up()
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
                self._remove_unfinished(manifest.batch)
                self._unlock(manifest.batch)
            raise
        self._unlock(manifest.batch)
        return PushResult(
            manifest.batch, self.transport.description, entries, sent, time.monotonic() - started, cleaned, created,
            list(self._kept),
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

    def _lock(self, batch: str):
        self.on_step("lock")
        record = LockRecord.new(batch).render().encode()
        temporary = protocol.temp_name(batch, protocol.LOCK)
        deadline = time.monotonic() + self.lock_wait
        try:
            while True:
                # Written anew on each try: the holder's clean-up removes other pushes' temporaries.
                self.transport.write(temporary, record)
                try:
                    if self.transport.rename_exclusive(temporary, protocol.LOCK):
                        return
                except (FileNotFoundError, TargetError):
                    if self.transport.kind(temporary) is not None or time.monotonic() >= deadline:
                        raise
                    continue  # the holder's clean-up removed our record just now: write it again
                server_now = self.transport.mtime(temporary)  # just written: the server's clock
                self.transport.remove(temporary)
                holder = self._describe_lock(server_now)
                if holder is None:
                    continue  # released between our rename and our read: try again at once
                age, dead, description, judged = holder
                if dead or age >= self.stale_after:
                    if dead:
                        what = "a dead lock (its holder is no longer running on this host)"
                    else:
                        what = f"a stale lock (older than {self.stale_after:.0f} s)"
                    if self.break_lock:
                        self.on_step(f"break lock ({description})")
                        self._break_lock(batch, judged)
                        continue
                    raise LockBusy(
                        f"the staging directory {self.transport.description} has {what}: {description}. "
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
            try:
                self.transport.remove(temporary)
            except (HotloadError, OSError):
                pass  # the connection is gone; the next push cleans up
            raise

    def _break_lock(self, batch: str, judged: bytes):
        """Remove the lock judged dead or stale, and only that one.

        Another push may have broken it and taken the lock since it was read: the lock is first renamed
        aside (atomic, so only one push gets the old one), then compared with what was judged. A live
        lock taken by mistake is put back.
        """
        aside = protocol.temp_name(batch, "broken-lock")
        try:
            self.transport.rename_replacing(protocol.LOCK, aside)
        except FileNotFoundError:
            return  # broken by another push already
        try:
            data = self.transport.read(aside)
        except HotloadError:
            data = None
        if data == judged or not self.transport.rename_exclusive(aside, protocol.LOCK):
            self.transport.remove(aside)

    def _describe_lock(self, server_now: Optional[float]):
        """(age, holder is dead, description, the lock's bytes), or None when the lock is gone."""
        kind = self.transport.kind(protocol.LOCK)
        if kind is None:
            return None
        if kind != FILE:
            # Not another push (waiting cannot help, --break-lock does not apply): a wrong kind of entry, exit 5.
            raise TargetError(
                f"{protocol.LOCK} in {self.transport.description} is a {kind}, not a lock file: hotload did not "
                "make it and will not remove it; remove it by hand and push again"
            )
        data = self.transport.read(protocol.LOCK)
        changed = self.transport.mtime(protocol.LOCK)
        if data is None or changed is None:
            return None
        age = max(0.0, (server_now if server_now is not None else self.transport.now()) - changed)
        dead = False
        try:
            record = LockRecord.parse(data.decode("utf-8", "replace"))
            dead = record.holder_is_dead()
            state = ", no longer running" if dead else ""
            who = f"held by {record.holder} (pid {record.pid}{state}, batch {record.batch})"
        except HotloadError as error:
            who = f"unreadable lock file ({error})"
        return age, dead, f"{who}, {age:.0f} s old", data

    def _unlock(self, batch: str):
        try:
            data = self.transport.read(protocol.LOCK)
            if data is None:
                return
            owner = LockRecord.parse(data.decode("utf-8", "replace")).batch
            if owner == batch:
                self.transport.remove(protocol.LOCK)
        except (HotloadError, OSError):
            pass  # not ours, unreadable, or the connection is gone (the lock then goes stale)

    # -- clean-up: only what hotload wrote ----------------------------------------------

    def _clean_up(self) -> List[str]:
        """Remove what interrupted pushes left: temporary entries and batch folders no trigger names."""
        self.on_step("clean up")
        names = self.transport.list_names()  # before reading the trigger (docs/protocol.md, Pushing, 2)
        triggered = self._triggered_batch()
        removed = []
        for name in names:
            if name.startswith(protocol.TEMP_PREFIX) or (protocol.is_batch_id(name) and name != triggered):
                if self._remove_hotload_entry(name):
                    removed.append(name)
        return removed

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

    def _release_over_a_new_connection(self, batch: str):
        """The connection was lost: connect once more to remove this push's entries and its lock, so the
        next push needs no --break-lock. Gives up quietly (the next push cleans up)."""
        lost = self.transport
        try:
            fresh = self.reconnect()
        except (HotloadError, OSError):
            return
        try:
            self.transport = fresh
            self._remove_unfinished(batch)
            self._unlock(batch)
        finally:
            self.transport = lost
            try:
                fresh.close()
            except Exception:  # noqa: BLE001 - closing is best effort here
                pass

    def _remove_unfinished(self, batch: str):
        """After an error or Ctrl-C: this push's temporary entries, and its batch folder when this push
        published it and no trigger names it."""
        try:
            for name in self.transport.list_names():
                if name.startswith(protocol.temp_name(batch, "")) or name == protocol.temp_folder(batch):
                    self._remove_hotload_entry(name)
            if self._publishing and self._triggered_batch() != batch:
                self._remove_hotload_entry(batch)
        except (HotloadError, OSError):
            pass  # the connection may be gone; the next push cleans up


def _is_package_name(name: str) -> bool:
    try:
        protocol.check_package_file_name(name)
        return True
    except HotloadError:
        return False
