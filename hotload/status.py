"""Reading what the loader wrote back: heartbeat, status, history, failed batches.

    >>> state = StagingState.read(staging)
    >>> state.loader_age, state.status.result
    (1.2, 'ok')
    >>> status = BatchWaiter(staging).wait("20261122T203700Z-3fa9c1", timeout=60)
"""

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from . import protocol
from .errors import HotloadError, NoLoaderRunning, ProtocolError
from .protocol import Heartbeat, LockRecord, Status
from .transports.base import Transport


@dataclass
class StagingState:
    target: str
    heartbeat: Optional[Heartbeat]
    loader_age: Optional[float]
    status: Optional[Status]
    pending: List[str] = field(default_factory=list)
    lock: Optional[LockRecord] = None
    history: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)

    @classmethod
    def read(cls, transport: Transport, history_lines: int = 10) -> "StagingState":
        heartbeat, age = read_heartbeat(transport)
        names = transport.list_names()
        status_text = transport.read(protocol.STATUS)
        lock_text = transport.read(protocol.LOCK)
        history = transport.read(protocol.HISTORY) or b""
        failed_names = transport.list_names(protocol.FAILED) if protocol.FAILED in names else []
        return cls(
            target=transport.description,
            heartbeat=heartbeat,
            loader_age=age,
            status=Status.parse(status_text.decode("utf-8", "replace")) if status_text else None,
            pending=[
                n for n in names
                if n in (protocol.MANIFEST, protocol.TRIGGER)
                or (n.endswith(".mcz") and not n.startswith(protocol.TEMP_PREFIX))
            ],
            lock=LockRecord.parse(lock_text.decode("utf-8", "replace")) if lock_text else None,
            history=history.decode("utf-8", "replace").splitlines()[-history_lines:],
            failed=failed_names,
        )

    @property
    def loader_running(self) -> bool:
        return self.heartbeat is not None and self.loader_age is not None and self.loader_age <= self.heartbeat.max_age()


def read_heartbeat(transport: Transport, server_now: Optional[Callable[[], float]] = None):
    """(Heartbeat, age in seconds on the server's clock), or (None, None) when there is none."""
    data = transport.read(protocol.HEARTBEAT)
    if data is None:
        return None, None
    try:
        heartbeat = Heartbeat.parse(data.decode("utf-8", "replace"))
    except ProtocolError:
        return None, None
    return heartbeat, max(0.0, (server_now or transport.now)() - heartbeat.time)


def require_loader(transport: Transport, server_now: Optional[Callable[[], float]] = None) -> Heartbeat:
    heartbeat, age = read_heartbeat(transport, server_now)
    if heartbeat is None:
        raise NoLoaderRunning(
            f"no loader is running at {transport.description} (no heartbeat); "
            "start it in the image (see `hotload install-loader`)"
        )
    if age > heartbeat.max_age():
        raise NoLoaderRunning(
            f"no loader is running at {transport.description} (heartbeat {age:.0f} s old); "
            "check that the image is up and its loader process is polling"
        )
    return heartbeat


class BatchWaiter:
    """Follows `status` until it names the batch, checking the heartbeat as it goes."""

    def __init__(self, transport: Transport, poll: float = 0.2, on_tick: Optional[Callable[[float], None]] = None):
        self.transport = transport
        self.poll = poll
        self.on_tick = on_tick or (lambda elapsed: None)

    def wait(self, batch: str, timeout: float) -> Status:
        started = time.monotonic()
        offset = self.transport.now() - time.time()  # the server's clock, read once

        def server_now():
            return time.time() + offset

        next_heartbeat_check = started
        while True:
            elapsed = time.monotonic() - started
            data = self.transport.read(protocol.STATUS)
            if data:
                try:
                    status = Status.parse(data.decode("utf-8", "replace"))
                except ProtocolError:
                    status = None  # being replaced right now; read again
                if status is not None and status.batch == batch:
                    return status
            if time.monotonic() >= next_heartbeat_check:
                require_loader(self.transport, server_now)
                next_heartbeat_check = time.monotonic() + 2.0
            if elapsed >= timeout:
                raise HotloadError(
                    f"batch {batch} was not finished by the loader at {self.transport.description} "
                    f"within {timeout:.0f} s; it may still be loading: check `hotload status`"
                )
            self.on_tick(elapsed)
            time.sleep(self.poll)
