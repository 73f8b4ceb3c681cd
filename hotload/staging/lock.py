"""The staging directory's lock: one push at a time (docs/protocol.md, "Pushing", 1 and 6).

The lock is taken by renaming a record written aside to `lock` with a rename that
fails when `lock` exists, so exactly one pusher wins.
"""

import time
from typing import Callable, Optional

from hotload.staging import protocol
from hotload.errors import HotloadError, LockBusy, TargetError
from hotload.staging.protocol import LockRecord
from hotload.staging.transports.base import FILE, Transport


class StagingLock:
    """The `lock` of one batch's push in a staging directory.

        lock = StagingLock(transport, batch, wait=30.0, break_lock=True, on_step=print)
        lock.acquire()
        try:
            ...              # upload, publish, trigger
        finally:
            lock.release()

    A dead lock (its holder's pid is gone on this host) or a stale one (older than `stale_after`)
    is reported, and broken only with `break_lock`. `checkpoint` is called between tries and may
    raise to stop waiting (Ctrl-C); `on_step` hears "break lock (<holder>)".
    """

    def __init__(
        self,
        transport: Transport,
        batch: str,
        wait: float = 30.0,
        stale_after: float = protocol.STALE_LOCK_SECONDS,
        break_lock: bool = False,
        on_step: Optional[Callable[[str], None]] = None,
        checkpoint: Optional[Callable[[], None]] = None,
        before_first_rename: Optional[Callable[[], None]] = None,
        record: Optional[bytes] = None,
    ):
        self.transport = transport
        self.batch = batch
        self.wait = wait
        self.stale_after = stale_after
        self.break_lock = break_lock
        self.on_step = on_step or (lambda step: None)
        self.checkpoint = checkpoint or (lambda: None)
        #: called right before the first try's rename (what a transport sends then goes out behind it)
        self.before_first_rename = before_first_rename or (lambda: None)
        #: the holder record (`record_for`), when made beforehand (e.g. to be written ahead)
        self.record = record

    def acquire(self) -> bool:
        """Take the lock, waiting up to `wait` seconds for a live holder; LockBusy (or TargetError) otherwise.
        Answers whether it was free at the first try."""
        record = self.record or self.record_for(self.batch)
        temporary = protocol.temp_name(self.batch, protocol.LOCK)
        deadline = time.monotonic() + self.wait
        first = True
        try:
            while True:
                # Written anew on each try: the holder's clean-up removes other pushes' temporaries.
                self.transport.write(temporary, record)
                if first:
                    self.before_first_rename()
                try:
                    if self.transport.rename_exclusive(temporary, protocol.LOCK):
                        return first
                    first = False
                except (FileNotFoundError, TargetError):
                    first = False
                    if self.transport.kind(temporary) is not None or time.monotonic() >= deadline:
                        raise
                    continue  # the holder's clean-up removed our record just now: write it again
                server_now = self.transport.mtime(temporary)  # just written: the server's clock
                self.transport.remove(temporary)
                holder = self._describe(server_now)
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
                        self._break(judged)
                        continue
                    raise LockBusy(
                        f"the staging directory {self.transport.description} has {what}: {description}. "
                        "If that push is dead, run the push again with --break-lock"
                    )
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"another push holds the lock on {self.transport.description}: {description}; "
                        f"waited {self.wait:.0f} s. Try again when it has finished"
                    )
                time.sleep(0.2)
                self.checkpoint()
        except BaseException:
            try:
                self.transport.remove(temporary)
            except (HotloadError, OSError):
                pass  # the connection is gone; the next push cleans up
            raise

    @staticmethod
    def record_for(batch: str) -> bytes:
        """The holder record a push of `batch` writes, as it goes into the temporary file."""
        return LockRecord.new(batch).render().encode()

    def release(self):
        """Remove `lock` when it names this batch; quietly nothing when it does not or cannot be read.
        (A transport may have read it ahead, with the last requests of the push: `read_ahead`.)"""
        try:
            data = self.transport.read(protocol.LOCK)
            if data is None:
                return
            owner = LockRecord.parse(data.decode("utf-8", "replace")).batch
            if owner == self.batch:
                self.transport.remove(protocol.LOCK)
        except (HotloadError, OSError):
            pass  # not ours, unreadable, or the connection is gone (the lock then goes stale)

    def _break(self, judged: bytes):
        """Remove the lock judged dead or stale, and only that one.

        Another push may have broken it and taken the lock since it was read: the lock is first renamed
        aside (atomic, so only one push gets the old one), then compared with what was judged. A live
        lock taken by mistake is put back.
        """
        aside = protocol.temp_name(self.batch, "broken-lock")
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

    def _describe(self, server_now: Optional[float]):
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
