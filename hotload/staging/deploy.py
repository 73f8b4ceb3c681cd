"""Pushing one batch to its targets: check the loader, select, upload, wait (docs/protocol.md, "Pushing").

One target:

    >>> batch = PushBatch.read(["dist/Shop-Core-jd.4.mcz"], workdir)
    >>> result = Deploy(batch, "app1:/srv/app/staging", workdir, PushOptions(wait=True)).run()
    >>> result.result, result.exit_code, result.to_json()["batch"]
    ('ok', 0, '20261122T203700Z-3fa9c1')

Many targets, one after the other; a target that fails does not stop the others:

    >>> rollout = Rollout(batch, ["app1:/srv/app/staging", "app2:/srv/app/staging"], workdir, options).run()
    >>> [each.result for each in rollout.results], rollout.exit_code
    (['ok', 'error'], 5)

`Deploy.run` answers every outcome a push can have at a target as a `DeployResult`: dry-run,
refused (a downgrade), up-to-date, pushed, and, with `wait`, the loader's ok or failed. Any other
error is raised; `Rollout` records it as that target's result ("error") and goes on.
Nothing is printed here: what happens is told through the callbacks (`on_note`, `on_upload`,
`on_progress`, `on_pushed`, `on_wait`).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from hotload.errors import HotloadError, NoLoaderRunning, TargetError
from hotload.staging.protocol import HealthCheck
from hotload.staging.lock import StagingLock
from hotload.staging.push import PushBatch, PushResult, Pusher, Selection, Selector
from hotload.staging import protocol
from hotload.staging.status import BatchWaiter, Status, check_protocol, read_before_push, require_loader
from hotload.staging.targets import parse_target
from hotload.staging.transports import open_transport


def short_list(names, limit=8) -> str:
    """`a, b, c (+4 more)`."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def as_hotload_error(error: OSError) -> TargetError:
    """An OSError as the one-line TargetError (exit 5) the command line reports."""
    from hotload.staging.transports.base import describe_os_error

    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    return TargetError(f"{type(error).__name__}{where}: {describe_os_error(error)}")


class WaitInterrupted(KeyboardInterrupt):
    """Ctrl-C after the trigger: the batch is the loader's now, and it still takes it (exit 130)."""

    def __init__(self, batch: str):
        self.batch = batch
        super().__init__(
            f"interrupted while waiting; batch {batch} was pushed and triggered, "
            "so the loader still takes it: follow it with `hotload status`"
        )


@dataclass
class PushOptions:
    wait: bool = False
    timeout: float = 120.0  # seconds to wait for the loader
    break_lock: bool = False
    lock_wait: float = 30.0
    force: bool = False
    allow_downgrade: bool = False
    dry_run: bool = False
    poll: float = 0.2  # seconds between reads of `status` while waiting
    health: Optional[HealthCheck] = None  # checked by the loader after the install, before the save


DRY_RUN, REFUSED, UP_TO_DATE, PUSHED, ERROR = "dry-run", "refused", "up-to-date", "pushed", "error"


@dataclass
class DeployResult:
    """What a push did at one target. `result` is one of dry-run, refused, up-to-date, pushed, error,
    or with --wait the loader's (`ok`, `failed`)."""

    target: str
    result: str
    selection: Optional[Selection] = None
    diff: object = None  # diff.DiffReport of a dry run (None when it would send nothing)
    push: Optional[PushResult] = None
    status: Optional[Status] = None  # the loader's, with --wait
    error: Optional[HotloadError] = None  # refused or error

    @classmethod
    def failed(cls, target: str, error: HotloadError) -> "DeployResult":
        """A target the push could not finish at (nothing is known of how far it came)."""
        return cls(target, ERROR, error=error)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        if self.result == DRY_RUN:
            return 2 if self.selection.refused else 0
        if self.status is not None:
            return 0 if self.status.ok else 1
        return 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict:
        if self.selection is None:
            if self.error is None:  # not pushed, or interrupted before anything was known
                return {"target": self.target, "result": self.result}
            return {"target": self.target, "error": str(self.error), "result": self.result}
        report = self.selection.to_json()
        if self.result == DRY_RUN:
            report.update(result=DRY_RUN, diff=self.diff.to_json() if self.diff else None)
        elif self.result == REFUSED:
            report.update(target=self.target, result=REFUSED, error=str(self.error))
        elif self.result == UP_TO_DATE:
            report.update(result=UP_TO_DATE, packages=[], bytes=0)
        else:
            report.update(self.push.to_json())
            report["result"] = self.result
            if self.status is not None:
                status = self.status
                report.update(
                    loaded=status.loaded, failed_package=status.failed_package, error=status.error,
                    stack=status.stack, timings_ms=status.timings_ms, paused_ms=status.paused_ms,
                )
        return report


def _quiet(*args):
    pass


class Deploy:
    """Pushes one batch to one target: checks the loader, selects what to send (`push.Selector`), then
    answers a dry run, a refusal or up-to-date, or uploads (`push.Pusher`) and, with `wait`, follows
    the loader (`status.BatchWaiter`).

    `target` is as given on the command line (a path, host:path or sftp:// URL); `workdir()` is a
    folder for packing and the target's kept files.
    """

    def __init__(
        self, batch: PushBatch, target: str, workdir: Callable[[], Path], options: Optional[PushOptions] = None,
        on_note: Callable[[str], None] = _quiet,  # a line about this target, plain text
        on_upload: Callable[[int], None] = _quiet,  # the upload starts: total bytes
        on_progress: Callable[[str, int], None] = _quiet,  # bytes of one file sent
        on_pushed: Callable[[PushResult], None] = _quiet,  # uploaded and triggered
        on_wait: Callable[[str], None] = _quiet,  # waiting for the loader to take this batch
    ):
        self.batch = batch
        self.target = target
        self.workdir = workdir
        self.options = options or PushOptions()
        self.on_note = on_note
        self.on_upload = on_upload
        self.on_progress = on_progress
        self.on_pushed = on_pushed
        self.on_wait = on_wait
        self._reads = None  # run's read_before_push, for select
        self._heartbeat = None  # the live loader's, when run checked it

    def run(self) -> DeployResult:
        options = self.options
        target = parse_target(self.target)
        if self.batch is not None:
            for entry in self.batch.entries.values():
                protocol.check_package_file_name(entry.file)  # before the staging directory is made
        with open_transport(target) as transport:
            pushing = not options.dry_run
            batch = protocol.new_batch_id() if pushing else None
            checked = bool(options.wait or options.health) and pushing
            lock_record = StagingLock.record_for(batch) if pushing else None
            if pushing:
                # The lock's temporary record may be written along with these first reads (SFTP sends it behind
                # them); it is removed again when nothing is pushed. It is renamed to `lock` by the push only.
                transport.write_ahead(protocol.temp_name(batch, protocol.LOCK), lock_record)
            try:
                # One read of the staging directory, heartbeat and loaded record for all that follows; a push
                # without a loader check makes the staging directory with it (it would a moment later).
                reads = read_before_push(transport, make_root=pushing and not checked)
                if checked:
                    self._heartbeat = heartbeat = require_loader(transport, probed=reads.files[protocol.HEARTBEAT])
                    if options.health and "health" not in heartbeat.features:
                        raise NoLoaderRunning(
                            f"the loader at {transport.description} does not check health, so the batch would be "
                            "saved unchecked; update it with `hotload install-loader` (gst), or remove [health] from "
                            "the environment"
                        )
                else:
                    check_protocol(transport, probed=reads.files[protocol.HEARTBEAT])
                self._reads = reads
                selection = self.select(transport)
            except BaseException:
                self._discard(transport)
                raise
            where = selection.target
            if selection.note:
                self.on_note(f"{where}: {selection.note}")
            if options.dry_run:
                return self._dry_run(transport, selection)
            if selection.refused:
                self._discard(transport)
                return DeployResult(self.target, REFUSED, selection, error=selection.refusal())
            if selection.skipped:
                self.on_note(
                    f"{where}: skipped {len(selection.skipped)} package(s) already loaded: "
                    f"{short_list(d.version for d in selection.skipped)}"
                )
            if selection.up_to_date:
                self._discard(transport)
                return DeployResult(where, UP_TO_DATE, selection)
            self.on_upload(sum(entry.size for entry in selection.entries))
            pushed = Pusher(
                transport, lock_wait=options.lock_wait, break_lock=options.break_lock,
                pending_wait=min(options.timeout, 60.0), on_progress=self.on_progress,
                reconnect=lambda: open_transport(target, connect_timeout=5.0),
            ).push(selection.plan, batch=batch, entries=selection.entries, health=options.health,
                   unloads=selection.unloads, lock_record=lock_record)
            self.on_pushed(pushed)
            if not options.wait:
                return DeployResult(where, PUSHED, selection, push=pushed)
            self.on_wait(pushed.batch)
            try:
                status = BatchWaiter(transport, poll=options.poll).wait(pushed.batch, options.timeout)
            except KeyboardInterrupt:
                raise WaitInterrupted(pushed.batch) from None
            return DeployResult(where, status.result, selection, push=pushed, status=status)

    def select(self, transport) -> Selection:
        """What to send to this target (reads only), from the reads `run` made just before (when it did)."""
        reads, self._reads = self._reads, None
        return Selector(
            transport, self.workdir, force=self.options.force, allow_downgrade=self.options.allow_downgrade,
        ).select(self.batch, reads)

    @staticmethod
    def _discard(transport):
        """Nothing is pushed: the lock's temporary record opened ahead goes."""
        try:
            transport.discard_ahead(remove=True)
        except (HotloadError, OSError):
            pass  # the connection is gone; the next push cleans up

    def _dry_run(self, transport, selection: Selection) -> DeployResult:
        """The diff of each package a push would send; writes nothing."""
        from hotload.staging.diff import compare_with_target

        compared = [decision.package for decision in selection.decisions if decision.action != "skip"]
        diff = compare_with_target(transport, compared) if compared else None
        return DeployResult(selection.target, DRY_RUN, selection, diff=diff)


NOT_PUSHED, INTERRUPTED = "not pushed", "interrupted"


@dataclass
class RolloutResult:
    """One `DeployResult` per target, in the order of the targets (those a stopped rollout never reached
    are "not pushed"); the exit code is the worst one; `seconds` of each target's push and wait."""

    results: List[DeployResult] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # target -> seconds

    @property
    def exit_code(self) -> int:
        return max((result.exit_code for result in self.results), default=0)

    @property
    def not_reached(self) -> List[str]:
        """Targets where the push ended in an error (refused, or could not be finished)."""
        return [result.target for result in self.results if result.error is not None]

    @property
    def not_pushed(self) -> List[str]:
        return [result.target for result in self.results if result.result in (NOT_PUSHED, INTERRUPTED)]

    def rows(self) -> List[tuple]:
        """(target, result, versions pushed, seconds) per target: the summary table."""
        rows = []
        for result in self.results:
            sent = []
            if result.selection is not None and result.push:
                sent = [d.version for d in result.selection.sent] + [f"-{p.version}" for p in result.selection.unloads]
            seconds = self.seconds.get(result.target)
            rows.append((result.target, result.result, " ".join(sent) or "-", "-" if seconds is None else f"{seconds:.1f}"))
        return rows

    def to_json(self) -> list:
        reports = []
        for result in self.results:
            report = result.to_json()
            if result.target in self.seconds:
                report["seconds"] = round(self.seconds[result.target], 3)
            reports.append(report)
        return reports


class RolloutInterrupted(KeyboardInterrupt):
    """Ctrl-C during a rollout: `result` holds what each target came to (interrupted, not pushed)."""

    def __init__(self, result: RolloutResult, waiting: str = ""):
        super().__init__(waiting or "interrupted")
        self.result = result
        self.waiting = waiting  # a WaitInterrupted's message: the batch is triggered and still the loader's


class Rollout:
    """Pushes one batch to many targets. The first `canary` targets go first, and only when each of them
    succeeds (with `wait`: the loader's result, health check included) do the others follow, at most
    `parallel` at a time. The first failure stops the rollout: the targets not started yet are left
    untouched and answered "not pushed". With `stop_at_failure=False` (watch) every target is tried.
    `on_result` is told of each target's result as soon as it is known; `deploy` makes the `Deploy` of a
    target (to give it callbacks).

        >>> Rollout(batch, targets, workdir, PushOptions(wait=True), canary=1, parallel=2).run().rows()
        [('app1:/srv/app/staging', 'ok', 'Shop-Core-jd.4', '2.1'), ('app2:/srv/app/staging', 'failed', ...),
         ('app3:/srv/app/staging', 'not pushed', '-', '-')]
    """

    def __init__(
        self, batch: PushBatch, targets: List[str], workdir: Callable[[], Path], options: Optional[PushOptions] = None,
        deploy: Optional[Callable[[str], Deploy]] = None,
        on_result: Callable[[DeployResult], None] = _quiet,
        canary: int = 1, parallel: int = 1, stop_at_failure: bool = True,
    ):
        self.batch = batch
        self.targets = list(targets)
        self.workdir = workdir
        self.options = options or PushOptions()
        self.deploy = deploy or (lambda target: Deploy(self.batch, target, self.workdir, self.options))
        self.on_result = on_result
        self.canary = max(1, canary)
        self.parallel = max(1, parallel)
        self.stop_at_failure = stop_at_failure

    def run(self) -> RolloutResult:
        rollout = RolloutResult()
        done = {}
        stopped = False
        try:
            waves = [self.targets[:self.canary], self.targets[self.canary:]] if self.stop_at_failure else [self.targets]
            for wave in waves:
                if stopped or not wave:
                    continue
                stopped = self._wave(wave, min(self.parallel, len(wave)), done, rollout)
        except KeyboardInterrupt as interrupt:
            for target in self.targets:
                if target not in done:
                    done[target] = DeployResult(target, INTERRUPTED if target in rollout.seconds else NOT_PUSHED)
            rollout.results = [done[target] for target in self.targets]
            raise RolloutInterrupted(rollout, str(interrupt) if isinstance(interrupt, WaitInterrupted) else "") from None
        rollout.results = [done.get(target) or DeployResult(target, NOT_PUSHED) for target in self.targets]
        return rollout

    def _wave(self, targets: List[str], width: int, done: dict, rollout: RolloutResult) -> bool:
        """Push to `targets`, `width` at a time; answer whether a failure stops the rollout."""
        if width == 1:
            for target in targets:
                self._one(target, done, rollout)
                if self.stop_at_failure and not done[target].ok:
                    return True
            return False
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        pending, running, failed = list(targets), set(), False
        with ThreadPoolExecutor(max_workers=width) as pool:
            while (pending and not failed) or running:
                while pending and not failed and len(running) < width:
                    target = pending.pop(0)
                    running.add(pool.submit(self._one, target, done, rollout))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    target = future.result()
                    failed = failed or (self.stop_at_failure and not done[target].ok)
        return failed

    def _one(self, target: str, done: dict, rollout: RolloutResult) -> str:
        started = time.monotonic()
        rollout.seconds[target] = 0.0  # started: interrupted, not "not pushed", if Ctrl-C comes now
        try:
            result = self.deploy(target).run()
        except HotloadError as error:
            result = DeployResult.failed(target, error)
        except OSError as error:  # not turned into a HotloadError by the transport
            result = DeployResult.failed(target, as_hotload_error(error))
        rollout.seconds[target] = time.monotonic() - started
        done[target] = result
        self.on_result(result)
        return target
