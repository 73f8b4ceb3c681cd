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

Before any of that, `Selector` reads the target's `loaded` record and decides per package
(docs/protocol.md, "Pushing (client)", step 0):

    >>> batch = PushBatch.read(["dist/Shop-Core-jd.4.mcz", "src/"], workdir)
    >>> selection = Selector(staging, workdir).select(batch)
    >>> [(d.version, d.action) for d in selection.decisions]
    [('Shop-Core-jd.4', 'skip'), ('Shop-Web-jd.8', 'send')]
    >>> Pusher(staging).push(selection.plan, entries=selection.entries)

A package whose version name and SHA-256 are loaded is skipped (`force` sends it); a version
older than the loaded one, or of another branch, or other bytes under the loaded name, is
refused (`allow_downgrade` sends it). A folder is packed again for each target on top of the
`.mcz` the target keeps in `packages/`, so its ancestry continues from what the image runs; its
packed `snapshot/source.st` equal to the kept one's means unchanged, and it is skipped.
"""

import contextlib
import hashlib
import signal
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from hotload.staging import protocol
from hotload.formats.chunks import ChunkError
from hotload.staging.cleanup import Cleanup
from hotload.errors import HotloadError, InputError, PackageError, TargetError, WaitTimeout
from hotload.limits import limits
from hotload.staging.lock import StagingLock
from hotload.formats.mcz import SOURCE_MEMBER, read_mcz
from hotload.formats.plan import LoadPlan
from hotload.staging.protocol import HealthCheck, LoadedPackage, LoadedRecord, Manifest, ManifestEntry
from hotload.staging.cleanup import CleanupResult
from hotload.staging.transports.base import FILE, FOLDER, Probe, Transport


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

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "batch": self.batch,
            "packages": [entry.version for entry in self.entries],
            "bytes": self.bytes_sent,
            "upload_seconds": round(self.seconds, 3),
            "cleaned": self.cleaned,
            "kept": self.kept,
        }


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


# -- what to send: the batch as named, and per target what its image already runs ----------


class BatchUnreadable(InputError):
    """Some of the named files or folders cannot be read; `problems` has one error per file."""

    def __init__(self, problems: List[InputError]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass
class PushBatch:
    """The packages named on the command line, planned, checked and hashed once for every target.

    `sources` holds the packages read from Tonel or FileTree folders: a `Selector` packs those
    again for each target, on top of the version that target runs.
    """

    plan: LoadPlan
    entries: Dict[str, ManifestEntry]  # by the package's path
    sources: Dict[str, object] = field(default_factory=dict)  # package name -> sources.PackageSource
    author: Optional[str] = None

    @classmethod
    def read(cls, paths, workdir: Callable[[], Path], author: Optional[str] = None) -> "PushBatch":
        """.mcz files as they are; folders packed into `workdir()`. Every unreadable one is reported
        (BatchUnreadable, exit 2) before anything is planned."""
        from hotload.formats.pack import Packer
        from hotload.formats.sources import read_sources

        packages, problems, sources = [], [], {}
        for path in paths:
            try:
                if Path(path).is_dir():
                    packer = Packer(author=author)
                    for source in read_sources(path):
                        packed = packer.pack_source(source, workdir())
                        packages.append(read_mcz(packed.path))
                        sources[packed.package_name] = source
                else:
                    packages.append(read_mcz(path))
            except InputError as error:
                problems.append(error)
        if problems:
            raise BatchUnreadable(problems)
        return cls.of(LoadPlan.build(packages), sources, author)

    @classmethod
    def of(cls, plan: LoadPlan, sources=None, author: Optional[str] = None) -> "PushBatch":
        entries = manifest_entries(plan)
        by_path = {str(package_plan.package.path): entry for package_plan, entry in zip(plan.order, entries)}
        return cls(plan, by_path, sources or {}, author)


SEND, SKIP, REFUSE = "send", "skip", "refuse"


@dataclass
class Decision:
    """What happens to one package at one target, and why (one line)."""

    name: str  # the package's
    version: str
    action: str  # SEND, SKIP or REFUSE
    why: str
    loaded_version: Optional[str] = None
    path: Optional[Path] = None  # the .mcz to send
    package: object = field(default=None, repr=False, compare=False)  # the McPackage read from `path`

    def to_json(self) -> dict:
        return {
            "package": self.name, "version": self.version, "action": self.action, "why": self.why,
            "loaded_version": self.loaded_version,
        }


class DowngradeRefused(InputError):
    """A pushed version would replace the loaded one with an older, unrelated or different one (exit 2)."""


@dataclass
class Selection:
    """One target's decisions; `plan` and `entries` are what to push (None and [] when nothing is)."""

    target: str
    decisions: List[Decision]
    plan: Optional[LoadPlan] = None
    entries: List[ManifestEntry] = field(default_factory=list)
    #: why every package is sent without a check (no usable loaded record), else ""
    note: str = ""
    loaded: Optional[LoadedRecord] = None
    #: loaded packages the batch unloads first (a rollback's: added since the state it goes back to)
    unloads: List[LoadedPackage] = field(default_factory=list)

    def _with(self, action: str) -> List[Decision]:
        return [decision for decision in self.decisions if decision.action == action]

    @property
    def sent(self) -> List[Decision]:
        return self._with(SEND)

    @property
    def skipped(self) -> List[Decision]:
        return self._with(SKIP)

    @property
    def refused(self) -> List[Decision]:
        return self._with(REFUSE)

    @property
    def up_to_date(self) -> bool:
        return not self.sent and not self.refused and not self.unloads

    def refusal(self) -> DowngradeRefused:
        lines = [f"{self.target}: {decision.why}" for decision in self.refused]
        lines.append(
            "nothing was pushed; push a version that descends from the loaded one, "
            "or give --allow-downgrade to replace it anyway"
        )
        return DowngradeRefused("\n".join(lines))

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "decisions": [decision.to_json() for decision in self.decisions],
            "skipped": [decision.version for decision in self.skipped],
            "refused": [decision.version for decision in self.refused],
            "unloads": [package.version for package in self.unloads],
            "note": self.note or None,
        }


def source_member(path) -> bytes:
    """The `snapshot/source.st` of a .mcz already read by read_mcz (so within the limits)."""
    with zipfile.ZipFile(path) as archive:
        return archive.read(SOURCE_MEMBER)


class Selector:
    """Reads a target's `loaded` record and kept `.mcz` files, and decides what to send.

    Reads only: nothing is written to the target, and no lock is taken.
    """

    def __init__(
        self, transport: Transport, workdir: Callable[[], Path], force: bool = False,
        allow_downgrade: bool = False, on_step: Optional[Callable[[str], None]] = None,
    ):
        self.transport = transport
        self.workdir = workdir
        self.force = force
        self.allow_downgrade = allow_downgrade
        self.on_step = on_step or (lambda step: None)
        self._folder: Optional[Path] = None

    def select(self, batch: PushBatch, reads: Optional[Probe] = None) -> Selection:
        """`reads`: a `status.read_before_push` of this target made just before (else it is made here)."""
        from hotload.staging.status import OLDER_LOADER, read_before_push, read_current_loaded

        self.on_step("read loaded")
        if reads is None:
            reads = read_before_push(self.transport)
        self.transport.check_directory(reads.root)  # a file at the staging path: that is the error to report
        loaded = read_current_loaded(self.transport, first=reads)
        note = ""
        if loaded.problem:
            if not self.allow_downgrade:
                raise TargetError(
                    f"cannot tell what {self.transport.description} runs ({loaded.problem}); remove "
                    f"{protocol.LOADED} there (the loader writes it again after its next batch or start), or push "
                    "with --allow-downgrade to send every package unchecked"
                )
            note = f"every package is sent unchecked (--allow-downgrade): {loaded.problem}"
        elif loaded.missing:  # (read at once, so `reads` is what it was read with)
            if reads.files[protocol.HEARTBEAT].kind is not None:
                note = f"every package is sent: {OLDER_LOADER}"
            else:
                note = "every package is sent: no loader has written a loaded record here yet"
        record = loaded.record
        decisions = [self._decide(package_plan.package, batch, record) for package_plan in batch.plan.order]
        selection = Selection(self.transport.description, decisions, note=note, loaded=record)
        to_send = [d for d in decisions if d.action == SEND]
        if to_send and not selection.refused:
            selection.plan = LoadPlan.build([decision.package for decision in to_send])
            selection.entries = entries_for(selection.plan, batch.entries)
        return selection

    # -- one package -------------------------------------------------------------------

    def _decide(self, package, batch: PushBatch, record: Optional[LoadedRecord]) -> Decision:
        entry = batch.entries[str(package.path)]
        loaded = record.packages.get(package.name) if record else None
        if loaded is None:
            why = "not loaded there" if record else "no loaded record to check it against"
            return Decision(package.name, package.version.name, SEND, why, None, package.path, package)
        if package.name in batch.sources:
            return self._decide_folder(package, batch, loaded)
        return self._decide_mcz(package, entry.sha256, loaded)

    def _decision(self, package, action: str, why: str, loaded: LoadedPackage) -> Decision:
        if action == REFUSE and self.allow_downgrade:
            action, why = SEND, f"{why} (sent: --allow-downgrade)"
        elif action == SKIP and self.force:
            action, why = SEND, f"{why} (sent: --force)"
        return Decision(package.name, package.version.name, action, why, loaded.version, package.path, package)

    def _decide_mcz(self, package, sha256: str, loaded: LoadedPackage, kept_problem: str = "") -> Decision:
        pushed = package.version.name
        if pushed == loaded.version:
            if sha256 == loaded.sha256:
                return self._decision(package, SKIP, f"{pushed} is loaded", loaded)
            return self._decision(package, REFUSE, (
                f"{pushed} is loaded with other content (SHA-256 {loaded.sha256[:12]}…, pushed {sha256[:12]}…): "
                "different content under the same version name"
            ), loaded)
        if loaded.version in {ancestor.name for ancestor in package.version.ancestry()}:
            return self._decision(package, SEND, f"{pushed} descends from the loaded {loaded.version}", loaded)
        kept, problem = self._kept(loaded) if not kept_problem else (None, kept_problem)
        if kept is None:
            return self._decision(package, REFUSE, (
                f"{pushed} does not descend from the loaded {loaded.version}, and whether it is older cannot be "
                f"told: {problem}"
            ), loaded)
        if pushed in {ancestor.name for ancestor in kept.version.ancestry()}:
            return self._decision(package, REFUSE, f"{pushed} is older than the loaded {loaded.version} (an ancestor of it)", loaded)
        return self._decision(package, REFUSE, (
            f"{pushed} and the loaded {loaded.version} are on different branches (neither descends from the other)"
        ), loaded)

    def _decide_folder(self, package, batch: PushBatch, loaded: LoadedPackage) -> Decision:
        """Pack the folder again on top of the kept .mcz of the loaded version."""
        from hotload.formats.pack import Packer

        kept, problem = self._kept(loaded)
        if kept is None:  # the ancestry cannot continue: judge the version packed without it
            return self._decide_mcz(package, batch.entries[str(package.path)].sha256, loaded, problem)
        output = Path(tempfile.mkdtemp(prefix="packed-", dir=self._scratch()))
        # the kept file was checked to be this package's loaded version: it becomes the ancestor
        packed = Packer(author=batch.author).pack_source(batch.sources[package.name], output, ancestor_path=kept.path)
        repacked = read_mcz(packed.path)
        if source_member(packed.path) != source_member(kept.path):
            return self._decision(repacked, SEND, f"{repacked.version.name} descends from the loaded {loaded.version}", loaded)
        unchanged = f"the sources of {package.name} are those of the loaded {loaded.version}"
        if self.force:
            return self._decision(repacked, SKIP, unchanged, loaded)  # sent as a new version of the same code
        return Decision(package.name, loaded.version, SKIP, unchanged, loaded.version, kept.path, kept)

    # -- the kept .mcz of a loaded version -----------------------------------------------

    def _scratch(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="target-", dir=self.workdir()))
        return self._folder

    def _kept(self, loaded: LoadedPackage):
        """(the kept .mcz of the loaded version, read, or None, why not)."""
        try:
            return read_kept(self.transport, loaded, self._scratch()), ""
        except HotloadError as error:
            if self.transport.lost:
                raise
            return None, str(error)


def read_kept(transport: Transport, loaded: LoadedPackage, scratch: Path):
    """The kept .mcz of `loaded` (`packages/<file>`), checked against the record, written into a new folder
    in `scratch` and read; a TargetError says why it cannot be had."""
    data = fetch_kept(transport, loaded)
    path = Path(tempfile.mkdtemp(prefix="kept-", dir=scratch)) / loaded.file
    path.write_bytes(data)
    try:
        kept = read_mcz(path)
    except PackageError as error:
        raise TargetError(f"{protocol.PACKAGES}/{loaded.file} cannot be read ({error.problem})") from None
    if kept.name != loaded.package or kept.version.name != loaded.version:
        raise TargetError(f"{protocol.PACKAGES}/{loaded.file} holds {kept.version.name}, not {loaded.version}")
    return kept


def fetch_kept(transport: Transport, loaded: LoadedPackage) -> bytes:
    """The bytes of `packages/<file>`, checked against the record's size and SHA-256; a TargetError
    says why they cannot be had (missing, wrong kind, another file)."""
    kind = transport.kind(protocol.PACKAGES)
    if kind != FOLDER:
        what = "missing" if kind is None else f"a {kind}, not a folder"
        raise TargetError(f"{protocol.PACKAGES}/ is {what}")
    name = f"{protocol.PACKAGES}/{loaded.file}"
    data = transport.read(name, limits().max_mcz_bytes)
    if data is None:
        raise TargetError(f"{name} is missing")
    if len(data) != loaded.size or hashlib.sha256(data).hexdigest() != loaded.sha256:
        raise TargetError(f"{name} is not the loaded file (its size or SHA-256 differs from the record)")
    return data


def entries_for(plan: LoadPlan, known: Dict[str, ManifestEntry]) -> List[ManifestEntry]:
    """Manifest entries for `plan`, numbered from 1, reusing the hashes already taken (`known`, by path)."""
    entries = []
    for position, package_plan in enumerate(plan.order, start=1):
        path = package_plan.package.path
        entry = known.get(str(path))
        if entry is None:
            entry = ManifestEntry(position, path.name, path.stat().st_size, sha256_of(path), package_plan.package.version.name)
        entries.append(ManifestEntry(position, entry.file, entry.size, entry.sha256, entry.version))
    return entries


# -- pushing -------------------------------------------------------------------------------


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

    def push(self, plan: Optional[LoadPlan], batch: Optional[str] = None, entries: Optional[List[ManifestEntry]] = None,
             health: Optional[HealthCheck] = None, unloads: Optional[List[LoadedPackage]] = None,
             lock_record: Optional[bytes] = None) -> PushResult:
        """Push `plan`; `entries` from `manifest_entries(plan)` may be given to hash once for many targets;
        `health` goes into the manifest, for the loader to check before it saves; `unloads` are loaded
        packages for the loader to unload first (`plan` may then be None: nothing to install);
        `lock_record`: `StagingLock.record_for(batch)` made beforehand (written ahead by the caller)."""
        with self._interrupts_at_safe_points():
            if entries is None:
                entries = manifest_entries(plan) if plan is not None else []
            return self._push(plan, batch, entries, health, unloads or [], lock_record)

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

    def _push(self, plan: Optional[LoadPlan], batch: Optional[str], entries: List[ManifestEntry], health,
              unloads: List[LoadedPackage], lock_record: Optional[bytes] = None) -> PushResult:
        started = time.monotonic()
        manifest = Manifest.new(entries, batch, health=health, unloads=[(p.package, p.version) for p in unloads])
        manifest_text = manifest.render()
        order = plan.order if plan is not None else []
        paths = {package_plan.package.path.name: package_plan.package.path for package_plan in order}  # unique
        created = self.transport.ensure_directory()
        trigger = protocol.render_trigger(manifest.batch).encode()
        self._publishing = False
        sent = 0
        folder = protocol.temp_folder(manifest.batch)
        lock = StagingLock(
            self.transport, manifest.batch, wait=self.lock_wait, stale_after=self.stale_after,
            break_lock=self.break_lock, on_step=self.on_step, checkpoint=self._checkpoint,
            # The temporary folder may be made right behind the rename that takes the lock (SFTP sends both
            # together): when the lock was taken, that is the protocol's order; when it was not, the empty
            # folder waits with the push (or goes with it), as its temporary lock record does.
            before_first_rename=lambda: self._ahead_of_the_lock(folder, created), record=lock_record,
        )
        try:
            self.on_step("lock")
            free = lock.acquire()
            if not free:
                self.transport.discard_ahead()  # make_folder below makes it again if another push's clean-up took it
            self.on_step("clean up")
            if created and free:
                # This push made the staging directory and found the lock free: no push can have left
                # anything in it (one killed holding the lock leaves the lock), so there is nothing to list.
                cleaned = CleanupResult()
            else:
                cleaned = Cleanup(self.transport, self.on_step).run(own=manifest.batch)
            self._checkpoint()
            # The trigger's record, in its temporary file, may be written along with the batch (SFTP sends it
            # behind the folder's mkdir); it is renamed to `load` only after the batch is published.
            self.transport.write_ahead(protocol.temp_name(manifest.batch, protocol.TRIGGER), trigger)
            self.transport.make_folder(folder)
            # The packages, then the manifest, each in the temporary folder; a transport may overlap them
            # (SFTP pipelines them), and upload_many returns only when every one is complete.
            steps = {f"{folder}/{entry.file}": f"upload {entry.file}" for entry in entries}
            steps[f"{folder}/{protocol.MANIFEST}"] = "manifest"
            items = [(str(paths[entry.file]), f"{folder}/{entry.file}") for entry in entries]
            items.append((manifest_text.encode(), f"{folder}/{protocol.MANIFEST}"))

            def starting(name: str):
                self.on_step(steps[name])
                self._checkpoint()
                if steps[name] == "manifest":
                    # The last file: the lock may be read back (to release it) with the last requests from here.
                    self.transport.read_ahead(protocol.LOCK)

            self.transport.upload_many(items, lambda name, n: self._progress(name.rsplit("/", 1)[-1], n), starting)
            sent = sum(entry.size for entry in entries)
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
            self._put_trigger(manifest.batch, trigger)
        except BaseException:
            self.transport.discard_ahead()
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

    def _ahead_of_the_lock(self, folder: str, created: bool):
        """What follows the lock when it is free, sent right behind the rename that takes it: the temporary
        folder's mkdir and (unless this push made the staging directory) the clean-up's listing."""
        self.transport.make_folder_ahead(folder)
        if not created:
            self.transport.list_ahead()

    def _progress(self, name: str, sent: int):
        self.on_progress(name, sent)
        self._checkpoint()

    def _put_trigger(self, batch: str, record: bytes):
        """Create `load` last; never over a trigger the loader has not consumed (e.g. a save-only one)."""
        temporary = protocol.temp_name(batch, protocol.TRIGGER)
        self._checkpoint()
        self.transport.write(temporary, record)  # complete (every answer OK) before it is renamed
        if self.transport.rename_exclusive(temporary, protocol.TRIGGER):
            return
        self.transport.discard_ahead()  # the lock is read back when the push ends, not now
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
                from hotload.staging.status import require_loader

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
