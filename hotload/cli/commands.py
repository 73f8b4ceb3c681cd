"""The `hotload` command line."""

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import click
from rich.console import Console
from rich.markup import escape

from hotload import __version__
from hotload.errors import HotloadError, InputError, TargetError, exit_code_table
from hotload.formats.mcz import read_mcz
from hotload.formats.plan import LoadPlan

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(error: HotloadError):
    for line in str(error).splitlines():
        err.print(f"[bold red]hotload:[/] {escape(line)}", soft_wrap=True)
    sys.exit(error.exit_code)


def _source_author():
    return os.environ.get("HOTLOAD_AUTHOR") or None  # None: the folder's git author, else hotload


def read_batch(paths: List[str], for_plan: bool = False) -> LoadPlan:
    """Read every file, reporting every broken one (exit 2), then plan.

    A Tonel or FileTree folder is packed first, into a temporary folder removed when the command ends.
    With for_plan, packages are read only for what a plan shows (hotload.formats.plan_cache, with its cache).
    """
    files, problems, workdir = [], [], None
    for path in paths:
        try:
            if Path(path).is_dir():
                from hotload.formats.pack import Packer

                if workdir is None:
                    workdir = click.get_current_context().with_resource(tempfile.TemporaryDirectory(prefix="hotload-pack-"))
                for packed in Packer(author=_source_author()).pack_folder(path, workdir):
                    files.append(packed.path)
            else:
                files.append(path)
        except InputError as error:
            problems.append(error)
    if for_plan:
        from hotload.formats.plan_cache import PlanReader

        reader = PlanReader()
        packages, unreadable = reader.read_all(files)
        reader.save()
        problems.extend(unreadable)
    else:
        packages = []
        for file in files:
            try:
                packages.append(read_mcz(file))
            except InputError as error:
                problems.append(error)
    if problems:
        for problem in problems:
            err.print(f"[bold red]hotload:[/] {escape(str(problem))}", soft_wrap=True)
        err.print("nothing was planned or pushed; fix or remove the files above")
        sys.exit(2)
    return LoadPlan.build(packages)


def _workdir() -> Path:
    """A temporary folder for packing, removed when the command ends."""
    context = click.get_current_context()
    if "hotload_workdir" not in context.meta:
        folder = context.with_resource(tempfile.TemporaryDirectory(prefix="hotload-pack-"))
        context.meta["hotload_workdir"] = Path(folder)
    return context.meta["hotload_workdir"]


def read_push_batch(paths: List[str]):
    """Read every file, reporting every broken one (exit 2), then plan, check and hash (a push.PushBatch).

    A Tonel or FileTree folder is packed first, into a temporary folder removed when the command ends.
    """
    from hotload.staging.push import BatchUnreadable, PushBatch

    try:
        return PushBatch.read(paths, _workdir, _source_author())
    except BatchUnreadable as unreadable:
        for problem in unreadable.problems:
            err.print(f"[bold red]hotload:[/] {escape(str(problem))}", soft_wrap=True)
        err.print("nothing was planned or pushed; fix or remove the files above")
        sys.exit(2)


class HotloadGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors (exit 2), --help (exit 0)
        except HotloadError as error:
            fail(error)
        except KeyboardInterrupt as error:
            from hotload.staging.deploy import WaitInterrupted

            if isinstance(error, WaitInterrupted):  # after the trigger: the loader still takes the batch
                err.print(f"[bold red]hotload:[/] {escape(str(error))}", soft_wrap=True)
            else:
                err.print("[bold red]hotload:[/] interrupted; no trigger was written for an unfinished batch")
            sys.exit(130)
        except (OSError, EOFError) as error:
            from hotload.staging.deploy import as_hotload_error

            fail(as_hotload_error(error))
        except Exception as error:  # noqa: BLE001 - the last line of defence against a traceback
            if type(error).__module__.startswith("paramiko"):
                fail(TargetError(f"the SSH connection failed ({error}); check the network and push again"))
            err.print(
                f"[bold red]hotload:[/] internal error {type(error).__name__}: {error}; "
                "this is a bug in hotload: please report it with the command you ran", soft_wrap=True,
            )
            sys.exit(70)


@click.group(cls=HotloadGroup, epilog="\b\nExit codes (every command):\n" + exit_code_table())
@click.version_option(__version__, prog_name="hotload")
def main():
    """Hot code upgrades for live Smalltalk web applications."""


# -- plan ------------------------------------------------------------------------------


def _short_list(names, limit=8):
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def print_plan(plan: LoadPlan):
    """The plan as one text, printed at once; styled (through rich) only on a terminal."""
    lines = ["Packages"]
    add = lines.append
    styled = {0: ("bold", len(lines[0]))}  # line index -> (style, length of the styled start)
    for package_plan in plan.packages:
        facts = package_plan.package.facts
        add(f"  {facts.name}  {facts.version}  ({len(facts.classes)} classes, {facts.method_count()} methods)")
        from_batch = sorted({f"{req.name} from {provider}" for req, provider in package_plan.requirements if provider})
        if from_batch:
            add(f"    needs from this batch: {_short_list(from_batch)}")
        expected = sorted({req.name for req in package_plan.expected_in_image})
        if expected:
            add(f"    expected in the image: {_short_list(expected)}")
    add("")
    add("Load order")
    styled[len(lines) - 1] = ("bold", len(lines[-1]))
    edges_into = {}
    for edge in plan.edges:
        edges_into.setdefault(edge.after, []).append(edge)
    for position, package_plan in enumerate(plan.order, start=1):
        add(f"  {position:>3}. {package_plan.name} ({package_plan.package.facts.version})")
        for edge in edges_into.get(package_plan.name, ()):
            more = f" (+{len(edge.reasons) - 2} more)" if len(edge.reasons) > 2 else ""
            add(f"         after {edge.before}: {'; '.join(edge.reasons[:2])}{more}")
    for cycle in plan.cycles:
        add(f"cycle: {' <-> '.join(cycle)} depend on each other; they load in the order shown")
        styled[len(lines) - 1] = ("bold yellow", len("cycle:"))
    if not out.is_terminal:
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()
        return
    out.print(
        "\n".join(
            f"[{styled[i][0]}]{escape(line[: styled[i][1]])}[/]{escape(line[styled[i][1]:])}" if i in styled else escape(line)
            for i, line in enumerate(lines)
        ),
        soft_wrap=True,
    )


@main.command()
@click.argument("packages", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(packages, as_json):
    """Show packages, their requirements and the load order.

    PACKAGES are .mcz files, or Tonel and FileTree folders (packed on the fly).
    """
    load_plan = read_batch(packages, for_plan=True)
    if as_json:
        click.echo(json.dumps(load_plan.to_json(), indent=2))
    else:
        print_plan(load_plan)


# -- targets: --to or --env ------------------------------------------------------------------


TO_HELP = "Staging directory: path, sftp://[user@]host[:port]/path or host:path. Repeat for many images."
ENV_HELP = "The targets of this environment of hotload.toml (instead of --to)."


def _project():
    """The hotload.toml found here or in a parent folder (config.ProjectConfig); ConfigError (exit 2) if none."""
    from hotload.cli.config import FILE_NAME, ConfigError, ProjectConfig

    project = ProjectConfig.find()
    if project is None:
        raise ConfigError(f"no {FILE_NAME} in this folder or any parent; create one with an [env.NAME] table and its targets")
    return project


def resolve_targets(targets, env_name):
    """(the targets to use, the environment or None): the --to given, or the targets of --env."""
    if env_name and targets:
        raise InputError("give either --env or --to, not both")
    if env_name:
        environment = _project().environment(env_name)
        return environment.targets, environment
    if not targets:
        raise click.UsageError("Missing option '--to' (or '--env' for the targets of an environment of hotload.toml).")
    return list(targets), None


def _health(environment):
    """The environment's health check as the manifest carries it, or None."""
    from hotload.staging.protocol import HealthCheck

    check = environment.health if environment is not None else None
    if check is None:
        return None
    return HealthCheck(check["url"], check["status"], int(check["timeout"] * 1000), check["body"]).check()


def _timeout(given, environment) -> float:
    """--timeout when given, else the environment's poll_timeout, else 120 s."""
    if given is not None:
        return given
    return float(environment.value("poll_timeout")) if environment is not None else 120.0


# -- diff ---------------------------------------------------------------------------------


@main.command("diff")
@click.argument("packages", nargs=-1, required=True, type=click.Path())
@click.option("--to", "targets", multiple=True, help="Staging directory of the image to compare with. Repeat for many images.")
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON (a list with many images).")
def diff_command(packages, targets, env_name, as_json):
    """Show what would change in the image: classes and methods added, removed and changed,
    against the version of each package it has loaded (read from the server).

    PACKAGES are .mcz files, or Tonel and FileTree folders (packed on the fly on top of the loaded
    version, as push packs them). Exits 0 whether or not anything differs, also when a package's loaded
    version cannot be read (its line then ends in "diff unavailable").
    """
    from hotload.staging.diff import compare_with_target
    from hotload.staging.targets import parse_target
    from hotload.staging.transports import open_transport

    targets, _ = resolve_targets(targets, env_name)
    batch = read_push_batch(packages)
    reports = []
    for target in targets:
        with open_transport(parse_target(target)) as transport:
            packages = [package_plan.package for package_plan in batch.plan.packages]
            reports.append(compare_with_target(transport, packages, sources=batch.sources, author=batch.author))
    if as_json:
        data = [report.to_json() for report in reports]
        click.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2))
        return
    for number, report in enumerate(reports):
        if len(reports) > 1:
            out.print(("\n" if number else "") + f"[bold]{escape(report.target)}[/]")
        for line in report.render():
            out.print(line)


# -- pack ---------------------------------------------------------------------------------


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .mcz to write, or a folder.")
@click.option("--name", default="", help="Package name (default: the classes' category, or package.st's name).")
@click.option("--author", default=_source_author, show_default="$HOTLOAD_AUTHOR, else the folder's git author, else hotload")
@click.option("--message", default="", help="Commit message of the version (default for folders: the git commit's).")
@click.option("--ancestor", type=click.Path(), default=None, help="The previous .mcz (default: newest in the output folder).")
def pack(sources, output, name, author, message, ancestor):
    """Build Monticello .mcz files from chunk-format source files, Tonel or FileTree package folders,
    or repository folders holding many packages (one .mcz per package)."""
    from hotload.formats.pack import PackError, Packer

    if len(sources) > 1 and (Path(output).suffix == ".mcz" or name or ancestor):
        raise PackError("with several sources give a folder as --output, and neither --name nor --ancestor")
    packer = Packer(author=author, message=message, package_name=name)
    for source in sources:
        if Path(source).is_dir():
            results = packer.pack_folder(source, output, ancestor)
        else:
            results = [packer.pack(source, output, ancestor)]
        for result in results:
            parent = f", ancestor {result.ancestor.name}" if result.ancestor else ""
            out.print(
                f"wrote {result.path} ({result.version.name}: {result.classes} classes, {result.methods} methods{parent})",
                markup=False,
            )


# -- push --------------------------------------------------------------------------------


class PushPrinter:
    """Prints what a push does at each target (the callbacks of deploy.Deploy and deploy.Rollout).

    With `quiet` (--json) only the errors are printed; `errors` is "lines" (each line of an error,
    after the target), "one line" (watch), or None (the command reports the error itself).
    """

    def __init__(self, quiet: bool = False, errors: Optional[str] = "lines", live: bool = True):
        self.quiet = quiet
        self.errors = errors
        self.live = live  # progress bar and spinner: not when targets are pushed in parallel
        self._progress = None
        self._task = None
        self._spinner = None

    def callbacks(self, target: str) -> dict:
        """The callbacks of a deploy.Deploy to `target` that tell this printer."""
        return dict(on_note=self.note, on_progress=self.progress, on_upload=lambda total: self.upload(target, total),
                    on_pushed=self.pushed, on_wait=self.wait)

    def note(self, line: str):
        if not self.quiet:
            out.print(line, markup=False, soft_wrap=True)

    def upload(self, target: str, total: int):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        if not self.live:
            return
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            console=err, transient=True, disable=self.quiet or not err.is_terminal,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"push to {target}", total=total)

    def progress(self, name: str, sent: int):
        if self._progress is not None:
            self._progress.advance(self._task, sent)

    def pushed(self, result):
        self.stop()
        if self.quiet:
            return
        out.print(
            f"pushed batch [bold]{result.batch}[/] to {result.target}: {len(result.entries)} package(s), "
            f"{result.bytes_sent} bytes in {result.seconds:.2f} s"
        )
        if result.cleaned:
            out.print(f"  cleaned up after an interrupted push: {_short_list(result.cleaned)}")
        for kept in result.kept:
            out.print(f"  left as it is: {kept}", soft_wrap=True)

    def wait(self, batch: str):
        if not self.live:
            return
        self._spinner = err.status(f"waiting for the loader to take batch {batch}", spinner="dots")
        self._spinner.start()

    def stop(self):
        """Takes the progress bar or the spinner off the screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    def result(self, result):
        """One target's outcome, as soon as it is known."""
        self.stop()
        if result.error is not None:
            if self.errors == "lines":
                for line in str(result.error).splitlines():
                    err.print(f"[bold red]hotload:[/] {escape(result.target)}: {escape(line)}", soft_wrap=True)
            elif self.errors == "one line":
                err.print(f"[bold red]hotload:[/] {escape(result.target)}: " + escape("; ".join(str(result.error).splitlines())))
            return
        if self.quiet:
            return
        if result.result == "dry-run":
            print_dry_run(result)
        elif result.result == "up-to-date":
            out.print(f"{result.target}: [bold green]up to date[/]; nothing was pushed")
        elif result.status is not None:
            print_status(result.status)


def print_dry_run(result):
    """What a push would do at one target, with the diff of each package it would send."""
    selection, where = result.selection, result.target
    if selection.skipped:
        out.print(
            f"{where}: would skip {len(selection.skipped)} package(s) already loaded: "
            f"{_short_list(d.version for d in selection.skipped)}", markup=False, soft_wrap=True,
        )
    for decision in selection.sent:
        out.print(f"{where}: would send {decision.version} ({decision.why})", markup=False, soft_wrap=True)
    for decision in selection.refused:
        out.print(f"{where}: would refuse {decision.version}: {decision.why}", markup=False, soft_wrap=True)
    if selection.up_to_date:
        out.print(f"{where}: [bold green]up to date[/]; a push would send nothing")
    if result.diff:
        for line in result.diff.render():
            out.print(line)
    out.print("dry run: nothing was uploaded or written")


def _seconds(ctx, param, value):
    if value is not None and (value != value or value < 0):  # NaN would never time out
        raise click.BadParameter(f"{value} is not a number of seconds (0 or more)")
    return value


def print_status(status):
    colour = "green" if status.ok else "red"
    out.print(f"batch {status.batch}: [bold {colour}]{status.result}[/]")
    for version in status.loaded:
        out.print(f"  {'loaded' if status.ok else 'installed, then undone:'} {version}")
    if status.ok:
        for note in status.notes:
            out.print(f"  note: {note}", soft_wrap=True)
    if not status.ok:
        out.print(f"  failed package: {status.failed_package or '-'}")
        out.print(f"  error: {status.error}", soft_wrap=True)
        for line in status.stack[:8]:
            out.print(f"    {line}", soft_wrap=True)
        for note in status.notes:
            out.print(f"  note: {note}", soft_wrap=True)
        out.print("  the image was not saved: on disk it is still the last good one")
        what = f"fix {status.failed_package}" if status.failed_package else "fix what the error names"
        out.print(f"  {what} and push again; the rejected files are kept in failed/{status.batch}/ on the server")
    if status.paused_ms is not None:
        ahead = status.timings_ms.get("compile-ahead")
        out.print(f"  requests paused {status.paused_ms} ms" + (f" (compiled ahead in {ahead} ms while they ran)" if ahead is not None else ""))
    if status.timings_ms:
        out.print("  " + ", ".join(f"{k} {v} ms" for k, v in status.timings_ms.items()))


@main.command()
@click.argument("packages", nargs=-1, required=True, type=click.Path())
@click.option("--to", "targets", multiple=True, help=TO_HELP)
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--wait", is_flag=True, help="Follow the loader until the batch is loaded or failed.")
@click.option("--timeout", default=None, type=float, callback=_seconds, show_default="the environment's poll_timeout, else 120", help="Seconds to wait for the loader.")
@click.option("--break-lock", is_flag=True, help="Remove a stale lock, or one whose holder is no longer running on this host.")
@click.option("--lock-wait", default=30.0, show_default=True, callback=_seconds, help="Seconds to wait for another push's lock.")
@click.option("--force", is_flag=True, help="Send every package, also those the image has loaded already.")
@click.option("--allow-downgrade", is_flag=True, help="Send versions older than the loaded ones, of another branch, or other content under a loaded name.")
@click.option("--dry-run", is_flag=True, help="Show what would be skipped and sent, with each package's diff; upload nothing.")
@click.option("--canary", type=click.IntRange(1), default=None, show_default="the environment's canary, else 1", help="With many targets: how many go first; the others follow only when these succeed.")
@click.option("--parallel", type=click.IntRange(1, 64), default=None, show_default="the environment's parallel, else 1", help="With many targets: how many after the canary are pushed at a time.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def push(packages, targets, env_name, wait, timeout, break_lock, lock_wait, force, allow_downgrade, dry_run, canary, parallel, as_json):
    """Upload packages to staging directories and trigger the loader.

    PACKAGES are .mcz files, or Tonel and FileTree folders (packed on the fly into a temporary folder,
    continuing the version the image has loaded).

    Each image's loaded record is read first: packages it has loaded (same version and SHA-256) are
    skipped, and a version older than the loaded one or of another branch is refused.

    With many --to (or an environment of many targets) the push rolls out: the canary targets first,
    then the others, --parallel at a time, each waited for; the first failure stops it, and the targets
    not reached are left untouched ("not pushed"). A table of every target ends it, also on Ctrl-C.
    The exit status is the highest of the targets' (see `hotload --help`).
    """
    from hotload.staging.deploy import Deploy, PushOptions

    targets, environment = resolve_targets(targets, env_name)
    batch = read_push_batch(packages)  # checked and hashed once for every target
    many = len(targets) > 1
    options = PushOptions(
        wait=wait or (many and not dry_run), timeout=_timeout(timeout, environment), break_lock=break_lock,
        lock_wait=lock_wait, force=force, allow_downgrade=allow_downgrade, dry_run=dry_run, health=_health(environment),
    )
    _roll_out(targets, environment, canary, parallel, as_json,
              lambda target, workdir, callbacks: Deploy(batch, target, workdir, options, **callbacks))


def _roll_out(targets, environment, canary, parallel, as_json, make):
    """Run `make(target, workdir, callbacks)` (a deploy.Deploy) over the targets as a rollout, print, and exit."""
    from hotload.staging.deploy import Rollout, RolloutInterrupted

    folder = _workdir()  # here: parallel targets run in threads, which have no click context

    many = len(targets) > 1
    canary = canary or (environment.value("canary") if environment is not None else 1)
    parallel = parallel or (environment.value("parallel") if environment is not None else 1)
    alone = not many and not as_json  # its error is reported as the command's own
    printer = PushPrinter(quiet=as_json, errors=None if alone else "lines", live=parallel == 1)
    try:
        rollout = Rollout(None, targets, lambda: folder, deploy=lambda target: make(target, lambda: folder, printer.callbacks(target)),
                          on_result=printer.result, canary=canary, parallel=parallel).run()
    except RolloutInterrupted as interrupted:
        printer.stop()
        if many or as_json:
            _print_rollout(interrupted.result, as_json)
        err.print("[bold red]hotload:[/] " + escape(interrupted.waiting or (
            "interrupted; the targets marked 'not pushed' were not touched, and a batch already triggered is "
            "still the loader's: follow it with `hotload status`")), soft_wrap=True)
        sys.exit(130)
    finally:
        printer.stop()
    if alone and rollout.results[0].error is not None:
        fail(rollout.results[0].error)
    if as_json or many:
        _print_rollout(rollout, as_json)
    sys.exit(rollout.exit_code)


def _print_rollout(rollout, as_json):
    """The end of a push to many targets: one row per target, or the JSON of every target."""
    if as_json:
        reports = rollout.to_json()
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        return
    out.print("[bold]rollout[/]")
    print_table(("target", "result", "pushed", "seconds"), rollout.rows())


# -- rollback and history ------------------------------------------------------------------


@main.command()
@click.option("--to", "targets", multiple=True, help=TO_HELP)
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--to-batch", help="Go back to the state after this kept batch (see `hotload history`).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the loader until the rollback is loaded or failed.")
@click.option("--timeout", default=None, type=float, callback=_seconds, show_default="the environment's poll_timeout, else 120", help="Seconds to wait for the loader.")
@click.option("--break-lock", is_flag=True, help="Remove a stale lock, or one whose holder is no longer running on this host.")
@click.option("--lock-wait", default=30.0, show_default=True, callback=_seconds, help="Seconds to wait for another push's lock.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent and unloaded, with each package's diff; upload nothing.")
@click.option("--canary", type=click.IntRange(1), default=None, show_default="the environment's canary, else 1", help="With many targets: how many go first; the others follow only when these succeed.")
@click.option("--parallel", type=click.IntRange(1, 64), default=None, show_default="the environment's parallel, else 1", help="With many targets: how many after the canary are rolled back at a time.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def rollback(targets, env_name, to_batch, wait, timeout, break_lock, lock_wait, dry_run, canary, parallel, as_json):
    """Bring each image back to the state after the batch before its last one (or --to-batch).

    The versions of that state are loaded again from the packages the loader kept on the server, and
    the packages loaded since are unloaded, as one batch: verified, installed, health-checked and saved
    like a push (a second rollback goes forward again). Many targets roll back as a push rolls out.
    """
    from hotload.staging.deploy import PushOptions
    from hotload.staging.protocol import check_batch_id
    from hotload.staging.rollback import Rollback

    if to_batch is not None:
        try:
            check_batch_id(to_batch)
        except HotloadError as error:
            raise click.BadParameter(str(error), param_hint="--to-batch") from None
    targets, environment = resolve_targets(targets, env_name)
    if to_batch is not None and len(targets) > 1:
        raise click.BadParameter("a batch id is one image's: give one --to with it", param_hint="--to-batch")
    options = PushOptions(
        wait=wait and not dry_run, timeout=_timeout(timeout, environment), break_lock=break_lock,
        lock_wait=lock_wait, dry_run=dry_run, health=_health(environment),
    )
    _roll_out(targets, environment, canary, parallel, as_json,
              lambda target, workdir, callbacks: Rollback(target, workdir, options, to_batch, **callbacks))


@main.command()
@click.option("--to", "targets", multiple=True, help=TO_HELP)
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the kept batches as JSON (a list with many images).")
def history(targets, env_name, as_json):
    """List the batches each image keeps, newest first: `current` is the state it runs, `rollback` the
    one `hotload rollback` goes back to."""
    from hotload.staging.rollback import TargetHistory

    targets, _ = resolve_targets(targets, env_name)
    histories = [TargetHistory.read(target) for target in targets]
    if as_json:
        reports = [each.to_json() for each in histories]
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        return
    for each in histories:
        out.print(f"[bold]{escape(each.target)}[/]")
        if each.problem:
            out.print(f"  what the image runs is not known: {each.problem}", markup=False, soft_wrap=True)
        for problem in each.history.problems:
            out.print(f"  {problem}", markup=False, soft_wrap=True)
        if each.history.batches:
            print_table(("batch", "kept at", "sent", "unloaded", ""), each.rows())
        else:
            out.print("  no kept batches yet: the loader keeps each batch it loads and saves")


# -- watch ---------------------------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--to", "targets", multiple=True, help="Staging directory (repeat for many images).")
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--dist", default="dist", show_default=True, type=click.Path(), help="Where packed .mcz files go.")
@click.option("--author", default=lambda: os.environ.get("HOTLOAD_AUTHOR", "hotload"), show_default="$HOTLOAD_AUTHOR or hotload")
@click.option("--timeout", default=None, type=float, callback=_seconds, show_default="the environment's poll_timeout, else 120", help="Seconds to wait for the loader each time.")
def watch(paths, targets, env_name, dist, author, timeout):
    """Pack and push (with --wait) whenever a .st source or .mcz package changes."""
    from hotload.staging.deploy import Deploy, PushOptions, Rollout
    from hotload.staging.push import PushBatch
    from hotload.cli.watch import Watcher

    targets, environment = resolve_targets(targets, env_name)
    options = PushOptions(wait=True, timeout=_timeout(timeout, environment))
    printer = PushPrinter(errors="one line")

    def push_now(packages):
        batch = PushBatch.of(LoadPlan.build([read_mcz(p) for p in packages]))
        try:
            rollout = Rollout(batch, targets, _workdir, options, on_result=printer.result, stop_at_failure=False,
                              deploy=lambda target: Deploy(batch, target, _workdir, options, **printer.callbacks(target))).run()
        finally:
            printer.stop()
        if rollout.not_reached:  # the watcher pushes these packages again with the next change
            raise HotloadError(f"{len(rollout.not_reached)} of {len(targets)} target(s) not reached: {', '.join(rollout.not_reached)}")

    Watcher(paths, push_now, Path(dist), author=author, say=lambda line: out.print(line, markup=False)).run()


# -- install-loader ------------------------------------------------------------------------


def _upload_loader_sources(transport, dialect) -> str:
    from hotload.images.install import LOADER_FOLDER
    from hotload.images.loader_sources import loader_files

    transport.ensure_directory()
    transport.make_folder(LOADER_FOLDER)
    for source in loader_files(dialect):
        transport.write(f"{LOADER_FOLDER}/{source.name}", source.read_bytes())
    return f"{str(transport.root).rstrip('/')}/{LOADER_FOLDER}"


@main.command("install-loader")
@click.option("--to", "targets", multiple=True, help="The staging directory the loader will poll.")
@click.option("--env", "env_name", help="Each target of this environment of hotload.toml in turn (instead of --to).")
@click.option("--dialect", type=click.Choice(["gst", "pharo", "squeak"]), required=True)
@click.option("--image", type=click.Path(), help="Bake the loader into this image file (build time).")
@click.option("--vm", help="Pharo or Squeak VM to run for --image (else the command is printed).")
@click.option("--live-port", type=int, help="Install into a running gst image served by gst-remote on this port.")
@click.option("--interval", default=2000, show_default=True, help="Poll interval in milliseconds.")
@click.option("--priority", type=int, default=None, help="Poll process priority (default: the dialect's, above the web server).")
def install_loader(targets, env_name, dialect, image, vm, live_port, interval, priority):
    """Put the loader into an image: bake it, load it live, or print the snippet to evaluate."""
    from hotload.images.install import InstallError, LoaderInstaller
    from hotload.staging.targets import parse_target
    from hotload.staging.transports import open_transport

    targets, _ = resolve_targets(targets, env_name)
    if len(targets) > 1 and (image or env_name is None):
        raise InstallError("give one --to (--image bakes one image); --env installs into each target of an environment in turn")
    if live_port and dialect != "gst" and not image:
        raise InstallError("--live-port works for GNU Smalltalk only; without it the snippet is printed")
    for target_text in targets:
        target = parse_target(target_text)
        if image:
            if not target.path.startswith("/"):
                raise InstallError(f"give the staging directory as an absolute path for --image (not {target.path!r})")
            result = LoaderInstaller(dialect, target.path, interval, priority).bake(image, vm)
        else:
            with open_transport(target) as transport:
                folder = _upload_loader_sources(transport, dialect)
                installer = LoaderInstaller(dialect, str(transport.root), interval, priority)
                if live_port:
                    host = None if target.is_local else (f"{target.user}@{target.host}" if target.user else target.host)
                    result = installer.live(live_port, folder, host, transport=transport)
                else:
                    result = installer.snippet(folder)
        out.print(f"[bold]loader for {result.dialect}[/] ({result.way}), staging directory {result.staging}")
        for action in result.actions:
            out.print(f"  - {action}")
        if result.snippet:
            click.echo("")
            click.echo(result.snippet)


# -- demo ------------------------------------------------------------------------------------


@main.command()
@click.option("--keep", is_flag=True, help="Leave the app running afterwards.")
@click.option("--port", type=int, default=None, help="HTTP port (default: a free one).")
@click.option("--workdir", type=click.Path(), default=None, help="Where to build (default: a new temporary folder).")
def demo(keep, port, workdir):
    """Run the example Seaside app in GNU Smalltalk and upgrade it live, v1 then v2 (no server needed)."""
    from hotload.images.demo import Demo

    Demo(workdir, say=lambda line: out.print(line), port=port).run(keep=keep)


# -- status ------------------------------------------------------------------------------


def print_state(state):
    """One image's status in full."""
    if state.heartbeat is None:
        out.print(f"{state.target}: [bold red]no loader heartbeat[/]")
    else:
        running = "[green]running[/]" if state.loader_running else "[red]not running[/]"
        out.print(
            f"{state.target}: loader {running} ({state.heartbeat.dialect}, heartbeat {state.loader_age:.0f} s old, "
            f"priority {state.heartbeat.priority}, every {state.heartbeat.interval_ms} ms, image {state.heartbeat.image})"
        )
    if state.conflict:
        out.print(f"[bold red]conflict:[/] {state.conflict.describe()}", soft_wrap=True)
    for problem in state.problems:
        out.print(f"[bold yellow]problem:[/] {escape(problem)}", soft_wrap=True)
    for note in state.notes:
        out.print(f"note: {note}", markup=False, soft_wrap=True)
    if state.status:
        print_status(state.status)
    if state.lock:
        out.print(f"locked by {state.lock.holder} (batch {state.lock.batch})")
    if state.pending:
        out.print(f"waiting in staging: {_short_list(state.pending)}")
    if state.failed:
        out.print(f"failed batches kept in failed/: {_short_list(state.failed)}")
    if state.loaded is not None:
        print_loaded(state.loaded)
    for line in state.history:
        out.print(f"  {line}", markup=False)


def print_table(header, rows, marks=None):
    """Columns padded to their widest cell, never wrapped (targets are long); `marks` prefixes rows."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lead = "  " if marks is None else "    "
    out.print(lead + "  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)).rstrip(), markup=False)
    for number, row in enumerate(rows):
        mark = f"  {marks[number]:<2}" if marks is not None else lead
        out.print(mark + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip(), markup=False)


def print_loaded(record):
    from hotload.staging.protocol import iso

    if not record.packages:
        out.print("loaded: no package loaded by hotload yet")
        return
    out.print("[bold]loaded[/]")
    rows = [(name, p.version, p.batch, iso(p.loaded_at)) for name, p in sorted(record.packages.items())]
    print_table(("package", "version", "batch", "loaded at"), rows)


def print_many(many):
    """One row per image, then the packages whose versions differ between them (marked `!`)."""
    rows = []
    for target in many.targets:
        if target in many.errors:
            rows.append((target, "unreachable", "-", "-"))
            continue
        state = many.states[target]
        loader = "running" if state.loader_running else ("not running" if state.heartbeat else "no heartbeat")
        if state.conflict:
            loader = "conflict"
        packages = str(len(state.loaded.packages)) if state.loaded is not None else "-"
        last = f"{state.status.result} ({state.status.batch})" if state.status else "-"
        rows.append((target, loader, packages, last))
    print_table(("target", "loader", "packages", "last result"), rows)
    for target in many.targets:
        state = many.states.get(target)
        lines = [str(many.errors[target])] if target in many.errors else state.problems + state.notes
        for line in lines:
            out.print(f"{target}: {line}", markup=False, soft_wrap=True)
    versions, differing = many.versions(), many.differences()
    if not versions:
        return
    readable = [t for t in many.targets if t in many.states and many.states[t].loaded is not None]
    out.print("[bold]loaded versions[/] (! differs)")
    print_table(
        ("package", *readable),
        [(name, *[row[t] or "-" for t in readable]) for name, row in versions.items()],
        marks=["!" if name in differing else "" for name in versions],
    )
    if differing:
        out.print(f"[bold yellow]{len(differing)} package(s) differ between the images:[/] {escape(_short_list(differing))}")
    else:
        out.print("every image runs the same versions")


@main.command()
@click.option("--to", "targets", multiple=True, help="The staging directory to inspect. Repeat for many images.")
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--check", is_flag=True, help="One line and a Nagios exit code, for monit's `check program` and Nagios.")
@click.option("--json", "as_json", is_flag=True)
def status(targets, env_name, check, as_json):
    """Show the loader's heartbeat, the last batch, the lock, the loaded packages and recent history.

    With many --to (or an environment of many targets): one row per image, and the packages whose
    versions differ between them; the exit status is the highest of the images'.

    \b
    With --check, one line (`HOTLOAD OK - ...`) and the Nagios plugin exit codes instead:
      0  OK: every loader runs, the last batch of each image was loaded and saved
      1  WARNING: a last batch failed, a problem in the staging directory, or images run different versions
      2  CRITICAL: no loader runs, or two images share a staging directory
      3  UNKNOWN: a target could not be reached or read
    """
    from hotload.staging.status import HealthVerdict, ManyStatus, StagingState
    from hotload.staging.targets import parse_target
    from hotload.staging.transports import open_transport

    targets, _ = resolve_targets(targets, env_name)
    if check:
        verdict = HealthVerdict.of(ManyStatus.read(list(targets)))
        click.echo(json.dumps(verdict.to_json(), indent=2) if as_json else verdict.line())
        sys.exit(verdict.code)
    if len(targets) == 1:
        with open_transport(parse_target(targets[0])) as transport:
            state = StagingState.read(transport)
        if as_json:
            click.echo(json.dumps(state.to_json(), indent=2))
        else:
            print_state(state)
        sys.exit(state.exit_code)
    many = ManyStatus.read(list(targets))
    if as_json:
        click.echo(json.dumps(many.to_json(), indent=2))
    else:
        print_many(many)
    sys.exit(many.exit_code)




# -- save ---------------------------------------------------------------------------------


@main.command()
@click.option("--to", "targets", multiple=True, help=TO_HELP)
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--wait", is_flag=True, help="Wait for the save; exit 1 if it failed (for cron and monit).")
@click.option("--timeout", default=None, type=float, callback=_seconds, show_default="the environment's poll_timeout, else 120", help="Seconds to wait for the save.")
@click.option("--json", "as_json", is_flag=True)
def save(targets, env_name, wait, timeout, as_json):
    """Save the image now (a save-only trigger): Seaside's expired sessions go and garbage is collected first."""
    from hotload.staging.save import ImageSave
    from hotload.staging.targets import parse_target
    from hotload.staging.transports import open_transport

    targets, environment = resolve_targets(targets, env_name)
    results, worst = [], 0
    for target in targets:
        try:
            with open_transport(parse_target(target)) as transport:
                result = ImageSave(transport).run(wait=wait, timeout=_timeout(timeout, environment))
            report, code = result.to_json(), result.exit_code
            if not as_json:
                sizes = (f": {result.size_before} -> {result.size_after} bytes" if result.size_before is not None else "")
                line = {"requested": "save requested", "saved": "image saved" + sizes}.get(result.result, f"image NOT saved: {result.detail}")
                out.print(f"{result.target}: {line}", markup=False, soft_wrap=True)
        except HotloadError as error:
            if len(targets) == 1 and not as_json:
                raise
            err.print(f"[bold red]hotload:[/] {escape(target)}: {escape(str(error))}", soft_wrap=True)
            report, code = {"target": target, "result": "error", "error": str(error)}, error.exit_code
        results.append(report)
        worst = max(worst, code)
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    sys.exit(worst)

# -- schedule-save ------------------------------------------------------------------------

_SCHEDULED = {
    "installed": "installed in the crontab of {user} on {host}:",
    "replaced": "replaced the scheduled save in the crontab of {user} on {host} with:",
    "unchanged": "already in the crontab of {user} on {host}, unchanged:",
    "removed": "removed from the crontab of {user} on {host}:",
    "absent": "no scheduled save for {staging} in the crontab of {user} on {host}; nothing removed",
}


@main.command("schedule-save")
@click.option("--to", "targets", multiple=True, help=TO_HELP)
@click.option("--env", "env_name", help=ENV_HELP)
@click.option("--at", "at", metavar="HH:MM", help="When to save, every day (the server's local time, as cron reads it).")
@click.option("--remove", is_flag=True, help="Take the scheduled save out of the crontab.")
@click.option("--print", "print_only", is_flag=True, help="Print the crontab line instead of installing it (no connection).")
@click.option("--json", "as_json", is_flag=True)
def schedule_save(targets, env_name, at, remove, print_only, as_json):
    """Save the image every day at --at: one entry in the user's crontab on each server (over SSH; the
    local crontab for a local path), found again by its marker comment, so running it again replaces it.
    The entry writes a save-only trigger as the protocol says: never over a batch's trigger."""
    from hotload.staging.schedule import SaveSchedule

    if remove and (at is not None or print_only):
        raise InputError("--remove takes the scheduled save out; give it without --at and --print")
    targets, _ = resolve_targets(targets, env_name)
    schedules = [SaveSchedule(target, at) for target in targets]  # bad input: exit 2 before any connection
    results, worst = [], 0
    for schedule in schedules:
        try:
            result = schedule.print_line() if print_only else schedule.remove() if remove else schedule.install()
            report = result.to_json()
            if print_only and not as_json:
                click.echo(result.line)
            elif not as_json:
                what = _SCHEDULED[result.action].format(user=result.user, host=result.host or "this machine", staging=result.staging)
                out.print(f"{result.target}: {what}", markup=False, soft_wrap=True)
                if result.action != "absent":
                    out.print(f"  {result.line}", markup=False, soft_wrap=True)
                if result.note:
                    err.print(f"[yellow]note:[/] {escape(result.note)}", soft_wrap=True)
            code = 0
        except HotloadError as error:
            if len(schedules) == 1 and not as_json:
                raise
            err.print(f"[bold red]hotload:[/] {escape(schedule.text)}: {escape(str(error))}", soft_wrap=True)
            report, code = {"target": schedule.text, "action": "error", "error": str(error)}, error.exit_code
        results.append(report)
        worst = max(worst, code)
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    sys.exit(worst)

# -- config -------------------------------------------------------------------------------


@main.command()
@click.option("--env", "env_name", help="Show this environment only.")
@click.option("--json", "as_json", is_flag=True)
def config(env_name, as_json):
    """Show the environments of hotload.toml (found here or in a parent folder) and where each setting comes from."""
    project = _project()
    environments = [project.environment(env_name)] if env_name else [project.environments[n] for n in sorted(project.environments)]
    if as_json:
        click.echo(json.dumps({"file": str(project.path), "environments": [e.to_json() for e in environments]}, indent=2))
        return
    out.print(f"{project.path}", markup=False)
    for environment in environments:
        out.print(f"[bold]env {environment.name}[/]")
        rows = [(key, json.dumps(setting.value), setting.origin) for key, setting in sorted(environment.settings.items())]
        print_table(("setting", "value", "from"), rows)


if __name__ == "__main__":
    main()
