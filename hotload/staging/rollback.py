"""Back to the state after an earlier batch (docs/protocol.md, "kept/" and "Rolling back (client)").

The loader keeps the last batches it loaded and saved in `kept/<batch>/`: the batch's manifest and the
`loaded` record as it was after that batch (its state). Their `.mcz` files stay in `packages/`.

    >>> KeptHistory.read(transport).rows(current)            # what `hotload history` lists
    >>> Rollback("app1:/srv/app/staging", workdir, PushOptions(wait=True)).run().result
    'ok'

A rollback is a batch like any other: the versions of the chosen state that the image does not run are
sent again (read from `packages/` on the server, checked against their SHA-256), and the packages loaded
since are unloaded first (`unload` lines). The loader verifies, installs, checks health and saves it as a
push, and keeps it too, so a second rollback goes forward again.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from hotload.staging import protocol
from hotload.staging.deploy import Deploy, PushOptions
from hotload.errors import HotloadError, InputError, LockBusy, NoLoaderRunning, ProtocolError, TargetError
from hotload.formats.plan import LoadPlan
from hotload.staging.protocol import LoadedPackage, LoadedRecord, Manifest, iso
from hotload.staging.push import SEND, SKIP, Decision, Selection, entries_for, read_kept
from hotload.staging.status import read_current_loaded, require_loader
from hotload.staging.transports.base import FILE, FOLDER, Transport

KEPT_RECORD_LIMIT = 4 << 20


def state_of(record: LoadedRecord) -> Dict[str, Tuple[str, str]]:
    """package -> (version, sha256): what two records must agree on to be the same state."""
    return {name: (package.version, package.sha256) for name, package in record.packages.items()}


@dataclass
class KeptBatch:
    """One `kept/<batch>/`: when it was kept, the state after it, and what its manifest sent and unloaded."""

    batch: str
    kept_at: float
    state: LoadedRecord
    sent: List[str] = field(default_factory=list)
    unloaded: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "batch": self.batch, "kept_at": iso(self.kept_at), "sent": self.sent, "unloaded": self.unloaded,
            "state": [self.state.packages[name].version for name in sorted(self.state.packages)],
        }


@dataclass
class KeptHistory:
    """Every readable `kept/<batch>/` of a staging directory, newest first; `problems` names the others."""

    batches: List[KeptBatch]
    problems: List[str] = field(default_factory=list)

    @classmethod
    def read(cls, transport: Transport) -> "KeptHistory":
        kind = transport.kind(protocol.KEPT)
        if kind is None:
            return cls([])
        if kind != FOLDER:
            return cls([], [f"{protocol.KEPT} is a {kind}, not a folder; the loader keeps no batch until it is removed"])
        batches, problems = [], []
        for name in sorted(transport.list_names(protocol.KEPT)):
            if not protocol.is_batch_id(name):
                continue
            try:
                batches.append(cls._one(transport, name))
            except TargetError as error:
                if transport.lost:
                    raise
                problems.append(str(error))
        batches.sort(key=lambda kept: (kept.kept_at, kept.batch), reverse=True)
        return cls(batches, problems)

    @staticmethod
    def _one(transport: Transport, batch: str) -> KeptBatch:
        folder = f"{protocol.KEPT}/{batch}"
        kind = transport.kind(folder)
        if kind is None:
            raise TargetError(f"{folder} went away while it was read (the loader keeps the newest only)")
        if kind != FOLDER:
            raise TargetError(f"{folder} is a {kind}, not a folder; hotload never follows it")
        data = transport.read(f"{folder}/{protocol.LOADED}", KEPT_RECORD_LIMIT)
        if data is None:
            raise TargetError(f"{folder} has no {protocol.LOADED} record")
        try:
            state = LoadedRecord.parse(data.decode("utf-8", "replace"))
        except ProtocolError as error:
            raise TargetError(f"{folder}/{protocol.LOADED}: {error}") from None
        sent, unloaded = [], []
        if transport.kind(f"{folder}/{protocol.MANIFEST}") == FILE:  # informative only: a bad one is left out
            try:
                text = transport.read(f"{folder}/{protocol.MANIFEST}", KEPT_RECORD_LIMIT)
                if text is not None:  # the loader forgot it meanwhile
                    manifest = Manifest.parse(text.decode("utf-8", "replace"))
                    sent = [entry.version for entry in manifest.entries]
                    unloaded = [version for _, version in manifest.unloads]
            except (ProtocolError, TargetError):
                if transport.lost:
                    raise
        return KeptBatch(batch, state.kept_at, state, sent, unloaded)

    def find(self, batch: str) -> KeptBatch:
        for kept in self.batches:
            if kept.batch == batch:
                return kept
        listed = ", ".join(kept.batch for kept in self.batches) or "none"
        raise InputError(f"batch {batch} is not kept there (kept: {listed}); run `hotload history` to see them")

    def previous(self, current: LoadedRecord) -> KeptBatch:
        """The newest kept state that is not what the image runs: the one before the last batch."""
        now = state_of(current)
        for kept in self.batches:
            if state_of(kept.state) != now:
                return kept
        if not self.batches:
            raise InputError(
                "the loader has kept no batch to go back to (it keeps them from its first batch after "
                "`hotload install-loader`); push the older versions instead"
            )
        raise InputError("every kept batch left the image as it runs now; there is nothing to roll back to")

    def rows(self, current: Optional[LoadedRecord]) -> List[tuple]:
        """(batch, kept at, sent, unloaded, mark) per kept batch: mark is `current` for the state the image
        runs and `rollback` for the one `hotload rollback` would go back to."""
        target = None
        if current is not None:
            try:
                target = self.previous(current).batch
            except InputError:
                pass
        now = state_of(current) if current is not None else None
        rows = []
        for kept in self.batches:
            mark = "current" if now is not None and state_of(kept.state) == now else ("rollback" if kept.batch == target else "")
            rows.append((kept.batch, iso(kept.kept_at), " ".join(kept.sent) or "-",
                         " ".join(kept.unloaded) or "-", mark))
        return rows

    def to_json(self, current: Optional[LoadedRecord] = None) -> dict:
        marks = {row[0]: row[4] for row in self.rows(current)}
        return {
            "kept": [dict(kept.to_json(), mark=marks[kept.batch] or None) for kept in self.batches],
            "problems": self.problems,
        }


@dataclass
class RollbackPlan:
    """What a rollback to `kept` sends (versions of that state the image does not run) and unloads
    (packages the image runs that the state does not have)."""

    kept: KeptBatch
    send: List[LoadedPackage]
    unload: List[LoadedPackage]
    same: List[LoadedPackage]

    @classmethod
    def of(cls, kept: KeptBatch, current: LoadedRecord) -> "RollbackPlan":
        send, same = [], []
        for name in sorted(kept.state.packages):
            wanted = kept.state.packages[name]
            running = current.packages.get(name)
            if running is not None and (running.version, running.sha256) == (wanted.version, wanted.sha256):
                same.append(wanted)
            else:
                send.append(wanted)
        unload = [current.packages[name] for name in sorted(current.packages) if name not in kept.state.packages]
        for package in unload:
            if package.origin != "added":
                why = ("the image had code of it before hotload first loaded it" if package.origin == "replaced"
                       else "its loader did not record whether the image had code of it before")
                raise InputError(
                    f"the state after batch {kept.batch} does not have {package.package}, and a rollback unloads only "
                    f"packages hotload added: {why}, which no kept file holds; push the version of "
                    f"{package.package} to go back to by hand, or pick a state that has it (--to-batch)"
                )
        return cls(kept, send, unload, same)


class Rollback(Deploy):
    """Rolls one target back to a kept state: the newest one that is not what the image runs, or
    `to_batch`. Pushes (and with `wait` follows) it as `Deploy` does; needs no local copy of the old
    packages, and a loader that says `features rollback`."""

    def __init__(self, target: str, workdir: Callable[[], Path], options: Optional[PushOptions] = None,
                 to_batch: Optional[str] = None, **callbacks):
        options = options or PushOptions()
        super().__init__(None, target, workdir, options, **callbacks)
        self.to_batch = to_batch

    def select(self, transport) -> Selection:
        reads, self._reads = self._reads, None  # what `run` read just before, heartbeat and loaded record
        heartbeat = self._heartbeat or require_loader(transport, probed=reads.files[protocol.HEARTBEAT] if reads else None)
        if "rollback" not in heartbeat.features:
            raise NoLoaderRunning(
                f"the loader at {transport.description} keeps no batches and cannot unload; "
                "update it with `hotload install-loader`, then push the versions to go back to"
            )
        if transport.kind(protocol.TRIGGER) is not None:
            raise LockBusy(
                f"a batch or save is still waiting for the loader at {transport.description} (`{protocol.TRIGGER}` "
                "is there); roll back once it is done (`hotload status`), against what the image then runs"
            )
        loaded = read_current_loaded(transport, first=reads)
        if loaded.record is None:
            why = loaded.problem or f"no {protocol.LOADED} record"
            raise TargetError(f"cannot tell what {transport.description} runs ({why}); roll back after its next start")
        history = KeptHistory.read(transport)
        kept = history.find(self.to_batch) if self.to_batch else history.previous(loaded.record)
        plan = RollbackPlan.of(kept, loaded.record)
        why = f"back to the state after batch {kept.batch}"
        decisions = [Decision(p.package, p.version, SKIP, f"runs it already ({why})", p.version) for p in plan.same]
        packages = []
        for wanted in plan.send:
            running = loaded.record.packages.get(wanted.package)
            package = self._fetch(transport, wanted, kept.batch)
            packages.append(package)
            decisions.append(Decision(wanted.package, wanted.version, SEND, why, running.version if running else None,
                                      package.path, package))
        selection = Selection(transport.description, decisions, loaded=loaded.record, unloads=plan.unload)
        if packages:
            selection.plan = LoadPlan.build(packages)
            selection.entries = entries_for(selection.plan, {})
        return selection

    def _fetch(self, transport, wanted: LoadedPackage, batch: str):
        """The kept .mcz of `wanted`, checked against the record and read, in the scratch folder."""
        try:
            return read_kept(transport, wanted, self.workdir())
        except HotloadError as error:
            if transport.lost:
                raise
            raise TargetError(f"cannot roll back to batch {batch}: {error}; push {wanted.version} by hand instead") from None


@dataclass
class TargetHistory:
    """`hotload history` at one target: its kept batches and what the image runs now."""

    target: str
    history: KeptHistory
    current: Optional[LoadedRecord]
    problem: str = ""  # why the current state is not known

    @classmethod
    def read(cls, target: str) -> "TargetHistory":
        from hotload.staging.status import check_protocol, read_loaded
        from hotload.staging.targets import parse_target
        from hotload.staging.transports import open_transport

        with open_transport(parse_target(target)) as transport:
            check_protocol(transport)
            loaded = read_loaded(transport)
            return cls(transport.description, KeptHistory.read(transport), loaded.record, loaded.problem)

    def rows(self) -> List[tuple]:
        return self.history.rows(self.current)

    def to_json(self) -> dict:
        return dict(self.history.to_json(self.current), target=self.target, problem=self.problem or None)
