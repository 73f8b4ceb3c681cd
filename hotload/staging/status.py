"""Reading what the loader wrote back: heartbeat, conflict, status, history, failed batches,
and the loaded record (what the image runs).

    >>> state = StagingState.read(staging)
    >>> state.loader_age, state.status.result, sorted(state.loaded.packages)
    (1.2, 'ok', ['Counter-App'])
    >>> ManyStatus.read(["app1:/srv/staging", "app2:/srv/staging"]).differences()
    {'Counter-App': {'app1:/srv/staging': 'Counter-App-jd.3', 'app2:/srv/staging': 'Counter-App-jd.2'}}
    >>> status = BatchWaiter(staging).wait("20261122T203700Z-3fa9c1", timeout=60)

A file the loader writes that cannot be read (wrong kind, another version, truncated)
is reported in `StagingState.problems`, never as a crash.
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from hotload.staging import protocol
from hotload.errors import HotloadError, NoLoaderRunning, ProtocolError, WaitTimeout
from hotload.staging.protocol import Conflict, Heartbeat, HistoryEntry, LoadedRecord, LockRecord, Status, VersionMismatch
from hotload.staging.transports.base import FILE, FOLDER, Probe, Probed, Transport

#: a loaded record names one package per line: 4 MiB is thousands of packages
LOADED_LIMIT = 4 << 20
HEARTBEAT_LIMIT = 1 << 20
OLDER_LOADER = "the loader keeps no loaded record; update it with hotload install-loader"


@dataclass
class LoadedState:
    """The `loaded` record as read: the record, or why there is none (`missing`, `problem`)."""

    record: Optional[LoadedRecord]
    missing: bool = False
    problem: str = ""


def read_before_push(transport: Transport, make_root: bool = False) -> Probe:
    """The staging directory's kind, `heartbeat` and `loaded`, read together: what a push reads before it
    decides (the loader's protocol, what the image runs). With `make_root`, the staging directory is made
    when missing (a push that goes on makes it anyway)."""
    return transport.probe({protocol.HEARTBEAT: HEARTBEAT_LIMIT, protocol.LOADED: LOADED_LIMIT}, make_root=make_root)


def read_current_loaded(transport: Transport, wait: float = 12.0, pause: float = 0.25,
                        first: Optional[Probe] = None) -> LoadedState:
    """read_loaded, but a record written by an earlier start of the image (its id is not the heartbeat's) is
    waited for, up to `wait` seconds: a loader writes its record at its first poll, before its first
    heartbeat. Still not current then: a `problem`. `first` is a `read_before_push` already made."""
    deadline = time.monotonic() + wait
    reads = first
    while True:
        if reads is None:
            reads = transport.probe({protocol.LOADED: LOADED_LIMIT, protocol.HEARTBEAT: HEARTBEAT_LIMIT})
        loaded = read_loaded(transport, reads.files[protocol.LOADED])
        beating = _heartbeat_id(transport, reads.files[protocol.HEARTBEAT])
        reads = None
        if loaded.record is None or not loaded.record.loader_id or not beating or loaded.record.loader_id == beating:
            return loaded
        if time.monotonic() >= deadline:
            return LoadedState(None, problem=(
                f"{protocol.LOADED} was written by loader {loaded.record.loader_id}, an earlier start of the image "
                f"(the heartbeat's loader is {beating}), and was not written again in {wait:.0f} s"))
        time.sleep(pause)


def _heartbeat_id(transport: Transport, probed: Optional[Probed] = None) -> str:
    try:
        if probed is not None:
            data = probed.data if probed.kind == FILE and probed.error is None else None
            if data is not None and len(data) > 1 << 16:
                return ""
        else:
            data = transport.read(protocol.HEARTBEAT, 1 << 16) if transport.kind(protocol.HEARTBEAT) == FILE else None
        return Heartbeat.parse(data.decode("utf-8", "replace")).id if data else ""
    except (HotloadError, ValueError):
        return ""


def read_loaded(transport: Transport, probed: Optional[Probed] = None) -> LoadedState:
    """Read `loaded` (or take it from a `probe`); a missing one is `missing`, one that cannot be read (a link,
    a FIFO, garbage, another version) is a `problem` line; never raises for what the file holds."""
    kind = probed.kind if probed is not None else transport.kind(protocol.LOADED)
    if kind not in (None, FILE):
        return LoadedState(None, problem=f"{protocol.LOADED} is a {kind}, not a file; hotload never follows or opens it")
    try:
        data = probed.read() if probed is not None else transport.read(protocol.LOADED, LOADED_LIMIT)
        if data is None:
            return LoadedState(None, missing=True)
        return LoadedState(LoadedRecord.parse(data.decode("utf-8", "replace")))
    except ProtocolError as error:
        return LoadedState(None, problem=f"{protocol.LOADED}: {error}")
    except HotloadError as error:
        if transport.lost:
            raise  # the connection is gone: that is the error, not the record
        return LoadedState(None, problem=f"{protocol.LOADED}: {error}")


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
    conflict: Optional[Conflict] = None
    problems: List[str] = field(default_factory=list)
    #: what the image runs; None when there is no usable record (see `notes` and `problems`)
    loaded: Optional[LoadedRecord] = None
    notes: List[str] = field(default_factory=list)

    @classmethod
    def read(cls, transport: Transport, history_lines: int = 10) -> "StagingState":
        problems: List[str] = []
        transport.check_directory()  # a file at the staging path: one clear line, not a listing error

        def record(name, parse, limit=1 << 20):
            try:
                data = transport.read(name, limit)
                return parse(data.decode("utf-8", "replace")) if data else None
            except HotloadError as error:
                problems.append(f"{name}: {error}")
                return None

        try:
            heartbeat, age = read_heartbeat(transport, problems=problems)
        except VersionMismatch as error:
            heartbeat, age = None, None
            problems.append(f"{protocol.HEARTBEAT}: {_other_version(transport, error)}")
        names = transport.list_names()
        history = []
        try:
            data = transport.read(protocol.HISTORY, limit=256 << 10, tail=True)  # the end of a long history
            history = data.decode("utf-8", "replace").splitlines()[-history_lines:] if data else []
        except HotloadError as error:
            problems.append(f"{protocol.HISTORY}: {error}")
        failed: List[str] = []
        if protocol.FAILED in names:
            kind = transport.kind(protocol.FAILED)
            if kind == FOLDER:
                failed = transport.list_names(protocol.FAILED)
            elif kind is not None:
                problems.append(
                    f"{protocol.FAILED} is a {kind}, not a folder; the loader cannot keep failed batches "
                    "until it is removed"
                )
        conflict = fresh_conflict(transport, problems)
        state = cls(
            target=transport.description,
            heartbeat=heartbeat,
            loader_age=age,
            status=record(protocol.STATUS, Status.parse),
            pending=[n for n in names if n == protocol.TRIGGER or (protocol.is_batch_id(n) and transport.kind(n) == FOLDER)],
            lock=record(protocol.LOCK, LockRecord.parse),
            history=history,
            failed=failed,
            conflict=conflict,
        )
        state.problems = problems + (heartbeat.problems if heartbeat else [])
        loaded = read_loaded(transport)
        state.loaded = loaded.record
        if loaded.problem:
            state.problems.append(loaded.problem)
        elif loaded.missing and state.loader_running:
            state.notes.append(OLDER_LOADER)  # a loader writes `loaded` at its first poll
        return state

    @property
    def history_entries(self) -> List[HistoryEntry]:
        return [entry for entry in map(HistoryEntry.parse, self.history) if entry is not None]

    @property
    def loader_running(self) -> bool:
        return self.heartbeat is not None and self.loader_age is not None and self.loader_age <= self.heartbeat.max_age()

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "loader_running": self.loader_running,
            "heartbeat_age": self.loader_age,
            "dialect": self.heartbeat.dialect if self.heartbeat else None,
            "loader_id": self.heartbeat.id if self.heartbeat else None,
            "image": self.heartbeat.image if self.heartbeat else None,
            "last_batch": self.status.batch if self.status else None,
            "last_result": self.status.result if self.status else None,
            "pending": self.pending,
            "lock": self.lock.holder if self.lock else None,
            "failed": self.failed,
            "conflict": self.conflict.describe() if self.conflict else None,
            "problems": self.problems,
            "notes": self.notes,
            "loaded": self.loaded.to_json()["packages"] if self.loaded else None,
            "history": self.history,
            "history_entries": [entry.to_json() for entry in self.history_entries],
        }

    @property
    def exit_code(self) -> int:
        """0 when a loader runs here with no conflict, else 3 (no usable loader)."""
        return 0 if self.loader_running and not self.conflict else NoLoaderRunning.exit_code


@dataclass
class ManyStatus:
    """`status` of many images: one state per target read, one error per target that could not be."""

    targets: List[str]
    states: Dict[str, StagingState] = field(default_factory=dict)
    errors: Dict[str, HotloadError] = field(default_factory=dict)

    @classmethod
    def read(cls, targets: List[str], history_lines: int = 10) -> "ManyStatus":
        from hotload.staging.targets import parse_target
        from hotload.staging.transports import open_transport

        many = cls(list(targets))
        for target in targets:
            try:
                with open_transport(parse_target(target)) as transport:
                    many.states[target] = StagingState.read(transport, history_lines)
            except HotloadError as error:
                many.errors[target] = error
        return many

    def versions(self) -> Dict[str, Dict[str, Optional[str]]]:
        """package -> target -> loaded version (None: not loaded there), over the targets with a record."""
        read = [target for target in self.targets if target in self.states and self.states[target].loaded]
        names = sorted({name for target in read for name in self.states[target].loaded.packages})
        table = {}
        for name in names:
            row = {}
            for target in read:
                package = self.states[target].loaded.packages.get(name)
                row[target] = package.version if package else None
            table[name] = row
        return table

    def differences(self) -> Dict[str, Dict[str, Optional[str]]]:
        """The rows of `versions` whose images do not all run the same version."""
        return {name: row for name, row in self.versions().items() if len(set(row.values())) > 1}

    @property
    def exit_code(self) -> int:
        codes = [state.exit_code for state in self.states.values()] + [e.exit_code for e in self.errors.values()]
        return max(codes or [0])

    def to_json(self) -> dict:
        return {
            "targets": [
                self.states[target].to_json() if target in self.states
                else {"target": target, "error": str(self.errors[target]), "exit_code": self.errors[target].exit_code}
                for target in self.targets
            ],
            "versions": self.versions(),
            "differences": sorted(self.differences()),
        }


def read_heartbeat(transport: Transport, server_now: Optional[Callable[[], float]] = None, problems=None,
                   probed: Optional[Probed] = None):
    """(Heartbeat, age in seconds on the server's clock), or (None, None) when there is none usable.
    `probed`: the heartbeat as a `probe` read it just before."""
    try:
        data = probed.read() if probed is not None else transport.read(protocol.HEARTBEAT, HEARTBEAT_LIMIT)
        heartbeat = Heartbeat.parse(data.decode("utf-8", "replace")) if data else None
    except VersionMismatch:
        raise
    except HotloadError as error:
        if problems is not None:
            problems.append(f"{protocol.HEARTBEAT}: {error}")
        return None, None
    if heartbeat is None:
        return None, None
    return heartbeat, max(0.0, (server_now or transport.now)() - heartbeat.time)


def fresh_conflict(transport: Transport, problems=None, server_now: Optional[Callable[[], float]] = None) -> Optional[Conflict]:
    """The conflict record when a standing-by loader rewrote it recently."""
    try:
        data = transport.read(protocol.CONFLICT)
        conflict = Conflict.parse(data.decode("utf-8", "replace")) if data else None
    except HotloadError as error:
        if problems is not None:
            problems.append(f"{protocol.CONFLICT}: {error}")
        return None
    if conflict is None:
        return None
    age = (server_now or transport.now)() - conflict.time
    return conflict if age <= protocol.CONFLICT_FRESH_SECONDS else None


def _other_version(transport: Transport, error: VersionMismatch) -> str:
    return (
        f"the loader at {transport.description} speaks protocol {error.found}, this hotload speaks "
        f"{protocol.VERSION}; update the loader with `hotload install-loader` (or use a matching hotload)"
    )


def require_loader(transport: Transport, server_now: Optional[Callable[[], float]] = None,
                   probed: Optional[Probed] = None) -> Heartbeat:
    """The heartbeat of the one live loader of protocol 2; NoLoaderRunning (exit 3) otherwise."""
    problems: List[str] = []
    try:
        heartbeat, age = read_heartbeat(transport, server_now, problems=problems, probed=probed)
    except VersionMismatch as error:
        raise NoLoaderRunning(_other_version(transport, error)) from None
    if heartbeat is None:
        why = f"({problems[0]})" if problems else "(no heartbeat)"
        raise NoLoaderRunning(
            f"no loader is running at {transport.description} {why}; "
            "start it in the image (see `hotload install-loader`)"
        )
    if age > heartbeat.max_age():
        raise NoLoaderRunning(
            f"no loader is running at {transport.description} (heartbeat {age:.0f} s old); "
            "check that the image is up and its loader process is polling"
        )
    conflict = fresh_conflict(transport, server_now=server_now)
    if conflict is not None:
        raise NoLoaderRunning(f"{transport.description}: {conflict.describe()}")
    return heartbeat


def check_protocol(transport: Transport, probed: Optional[Probed] = None) -> None:
    """Refuse to push to a loader that speaks another protocol version (when one has written a heartbeat)."""
    try:
        read_heartbeat(transport, server_now=lambda: 0.0, problems=[], probed=probed)
    except VersionMismatch as error:
        raise NoLoaderRunning(_other_version(transport, error)) from None


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
            try:
                data = self.transport.read(protocol.STATUS)
                status = Status.parse(data.decode("utf-8", "replace")) if data else None
            except VersionMismatch:
                raise
            except ProtocolError:
                status = None  # being replaced right now; read again
            if status is not None and status.batch == batch:
                return status
            if time.monotonic() >= next_heartbeat_check:
                require_loader(self.transport, server_now)
                next_heartbeat_check = time.monotonic() + 2.0
            if elapsed >= timeout:
                raise WaitTimeout(
                    f"batch {batch} was not finished by the loader at {self.transport.description} "
                    f"within {timeout:.0f} s; it may still be loading: check `hotload status`"
                )
            self.on_tick(elapsed)
            time.sleep(self.poll)


@dataclass
class HealthVerdict:
    """`status --check`: one Nagios-style line and its exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, as
    `hotload status --help` lists them), from `ManyStatus`.

        >>> verdict = HealthVerdict.of(ManyStatus.read(["app1:/srv/app/staging"]))
        >>> verdict.code, verdict.line()
        (0, 'HOTLOAD OK - 1 image: loaders running, last batches ok')
    """

    code: int
    reasons: List[str]
    images: int

    @classmethod
    def of(cls, many: "ManyStatus") -> "HealthVerdict":
        reasons: List[Tuple[int, str]] = []
        for target in many.targets:
            if target in many.errors:
                reasons.append((3, f"{target}: {many.errors[target]}"))
                continue
            state = many.states[target]
            if not state.loader_running:
                reasons.append((2, f"{target}: no loader running"))
            if state.conflict:
                reasons.append((2, f"{target}: two images poll it"))
            if state.status is not None and not state.status.ok:
                reasons.append((1, f"{target}: batch {state.status.batch} failed"))
            reasons.extend((1, f"{target}: {problem}") for problem in state.problems)
        differing = many.differences()
        if differing:
            reasons.append((1, f"versions differ: {', '.join(sorted(differing))}"))
        code = max([code for code, _ in reasons] or [0])
        return cls(code, [text for _, text in sorted(reasons, key=lambda r: -r[0])], len(many.targets))

    def line(self) -> str:
        word = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[self.code]
        if not self.reasons:
            return f"HOTLOAD {word} - {self.images} image(s): loaders running, last batches ok"
        return f"HOTLOAD {word} - " + "; ".join(" ".join(reason.split()) for reason in self.reasons)

    def to_json(self) -> dict:
        return {"code": self.code, "line": self.line(), "reasons": self.reasons}
