"""Putting the loader into an image: baked at build time, live through gst-remote, or as a snippet.

    >>> installer = LoaderInstaller("gst", "/srv/app/staging", interval_ms=2000)
    >>> installer.bake("app.im").actions          # runs gst on the image and saves it
    >>> with open_transport(parse_target("/srv/app/staging")) as transport:   # gst-remote into a running
    ...     installer.live(12345, "/srv/app/staging/loader", transport=transport)  # image, then a fresh heartbeat
    >>> print(LoaderInstaller("pharo", "/srv/app/staging").snippet("/srv/app/staging/loader").snippet)

The loader sources go to `<staging>/loader/` for the live and snippet ways, so
the image reads them from its own machine.
"""

import secrets
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from hotload.staging import protocol
from hotload.errors import HotloadError, NoLoaderRunning, TargetError
from hotload.images.gst import Gst
from hotload.images.loader_sources import loader_files, st_string
from hotload.staging.protocol import VersionMismatch
from hotload.staging.status import fresh_conflict, read_heartbeat

LOADER_FOLDER = "loader"
GST_REMOTE_TIMEOUT = 120
SQUEAK_BAKE_TIMEOUT = 300  # seconds for the Squeak VM to file the loader in and save
# Preferences a headless server image needs (Etoys): no sandbox for scripts, no key generation, no Etoys
# start-up behaviour; guarded, for images without these preferences.
_SQUEAK_PREFERENCES = (
    "#(#securityChecksEnabled #automaticKeyGeneration #eToyFriendly) do: [ :each |\n"
    "\t[ Preferences disable: each ] on: Error do: [ :e | e return: nil ] ]"
)  # seconds for gst-remote to file the loader in and start it
HEARTBEAT_POLL = 0.25  # seconds between reads of `heartbeat` while confirming a live install
_MARK = "hotload-live-install"

_FILE_IN = {
    "gst": "FileStream fileIn: {path}",
    "pharo": "CodeImporter evaluateFileNamed: {path}",
    "squeak": "FileStream fileIn: {path}",
}
_SAVE = {
    "gst": "ObjectMemory snapshot",
    "pharo": "Smalltalk snapshot: true andQuit: false",
    "squeak": "Smalltalk snapshot: true andQuit: false",
}


class InstallError(HotloadError):
    exit_code = 2


@dataclass
class InstallResult:
    dialect: str
    way: str  # baked | live | snippet | command
    staging: str
    actions: List[str] = field(default_factory=list)
    snippet: str = ""


class LoaderInstaller:
    def __init__(self, dialect: str, staging: str, interval_ms: int = 2000, priority: Optional[int] = None):
        if dialect not in _FILE_IN:
            raise InstallError(f"unknown dialect {dialect!r}: use gst, pharo or squeak")
        if interval_ms < 100:
            raise InstallError(f"poll interval {interval_ms} ms is too short: use at least 100 ms")
        self.dialect = dialect
        self.staging = staging
        self.interval_ms = interval_ms
        self.priority = priority

    def start_statement(self) -> str:
        priority = "nil" if self.priority is None else str(int(self.priority))
        return f"HLLoader startOn: {st_string(self.staging)} interval: {self.interval_ms} priority: {priority}"

    def file_in_statements(self, folder) -> List[str]:
        return [
            _FILE_IN[self.dialect].format(path=st_string(f"{str(folder).rstrip('/')}/{source.name}"))
            for source in loader_files(self.dialect)
        ]

    # -- the three ways -----------------------------------------------------------------

    def bake(self, image, vm: Optional[str] = None) -> InstallResult:
        """Load the loader into `image` at build time and save it; the previous file is kept as .bak."""
        image = Path(image)
        if not image.is_file():
            raise InstallError(f"image {image} does not exist")
        if self.dialect == "gst":
            return self._bake_gst(image)
        return self._bake_with_vm(image, vm)

    def _bake_gst(self, image: Path) -> InstallResult:
        backup = image.with_name(image.name + ".bak")
        shutil.copy2(image, backup)
        output = Gst().run(
            f"{self.start_statement()}!\nObjectMemory snapshot: {st_string(image)}!\n",
            image=image, files=loader_files("gst"),
        )
        priority = next((line for line in output.splitlines() if "polling" in line), "").strip()
        return InstallResult("gst", "baked", self.staging, [
            f"kept the previous image as {backup}",
            f"filed in {', '.join(p.name for p in loader_files('gst'))} and started the loader: {priority}",
            f"saved {image}; the loader polls again whenever the image starts",
        ])

    def _bake_with_vm(self, image: Path, vm: Optional[str]) -> InstallResult:
        if self.dialect == "squeak":
            return self._bake_squeak(image, vm)
        script = image.with_name("hotload-install.st")
        statements = self.file_in_statements(loader_files(self.dialect)[0].parent) + [
            self.start_statement(),
            "Smalltalk snapshot: true andQuit: true",
        ]
        script.write_text(".\n".join(statements) + ".\n")
        if self.dialect == "pharo":
            command = [vm or "pharo", "--headless", str(image), "st", "--quit", str(script)]
        else:
            command = [vm or "squeak", "-headless", str(image), str(script)]
        shown = " ".join(command)
        if vm is None:
            return InstallResult(self.dialect, "command", self.staging, [
                f"wrote {script}",
                f"run this where the {self.dialect} VM is installed (or pass --vm PATH): {shown}",
            ])
        shutil.copy2(image, image.with_name(image.name + ".bak"))
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise InstallError(f"{shown} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        return InstallResult(self.dialect, "baked", self.staging, [f"ran {shown}", f"saved {image}"])

    def squeak_bake_code(self) -> str:
        """The statements that bake the loader into a Squeak-family image (run by squeak.Squeak's script,
        which writes HotloadOut to a file): the sandbox off for good, author initials, the three sources
        filed in, the loader started, saved and quit. Globals are reached through `Smalltalk at:`: a name
        the doit's compiler does not know yet would open a dialog."""
        files = ".\n".join(
            f"(FileStream readOnlyFileNamed: {st_string(str(path))}) fileIn" for path in loader_files("squeak")
        )
        priority = "nil" if self.priority is None else str(int(self.priority))
        return f"""| loader watchdog |
{_SQUEAK_PREFERENCES}.
Utilities setAuthorInitials: 'hotload'.
{files}.
loader := (Smalltalk at: #HLLoader) startOn: {st_string(self.staging)} interval: {self.interval_ms} priority: {priority}.
HotloadOut nextPutAll: 'hotload-baked polling ' , loader directory , ' every ' , loader interval printString , ' ms at priority ' , ((Smalltalk at: #HLPlatform) current describePriority: loader priority); nextPut: (Character value: 10); close.
watchdog := Smalltalk at: #HotloadWatchdog ifAbsent: [ nil ].
watchdog isNil ifFalse: [ watchdog terminate ].
#(#HotloadOut #HotloadWatchdog) do: [ :each | Smalltalk removeKey: each ifAbsent: [ nil ] ].
(Smalltalk at: #SmalltalkImage) current snapshot: true andQuit: true"""

    def _bake_squeak(self, image: Path, vm: Optional[str]) -> InstallResult:
        """Squeak family (Etoys 5.0 on squeak-vm 4.10.2 in the tests): write the script and the secure
        folder beside the image, then run the VM headless on them (or print the command without --vm)."""
        from hotload.images.squeak import SQUEAK_KEYS, Squeak, SqueakError, find_vm

        image = image.resolve()
        script = image.with_name("hotload-install.st")
        out = image.with_name("hotload-install.out")
        secure = image.with_name("hotload-secure")
        secure.mkdir(exist_ok=True)
        (secure / "Squeak.keys").write_text(SQUEAK_KEYS)
        linked = Squeak.link_sources(image)
        runner = Squeak.__new__(Squeak)  # only for the script text: the VM may be elsewhere
        script.write_text(runner.script_text(self.squeak_bake_code(), out, quit=False,
                                             watchdog=SQUEAK_BAKE_TIMEOUT - 10))
        if vm is None:
            try:
                found = find_vm()
                shown_vm = f"{shlex.quote(str(found))} -plugins {shlex.quote(str(found.parent))}"
            except SqueakError:
                shown_vm = "squeakvm -plugins <the folder of squeakvm and its so.* plugins>"
            return InstallResult(self.dialect, "command", self.staging, [
                f"wrote {script} and {secure}/Squeak.keys" + (f"; linked {linked} beside the image" if linked else ""),
                "run this where the Squeak VM is installed (or pass --vm PATH); it saves the image and quits: "
                f"SQUEAK_SECUREDIR={shlex.quote(str(secure))} {shown_vm} -vm-display-null -vm-sound-null "
                f"{shlex.quote(str(image))} {shlex.quote(str(script))}",
                f"then check {out}: it says 'hotload-baked' and the loader's priority",
            ])
        squeak = Squeak(vm)
        backup = image.with_name(image.name + ".bak")
        shutil.copy2(image, backup)
        changes = image.with_suffix(".changes")
        if changes.is_file():
            shutil.copy2(changes, changes.with_name(changes.name + ".bak"))
        out.unlink(missing_ok=True)
        try:
            squeak.run_script(script, image, timeout=SQUEAK_BAKE_TIMEOUT, env={"SQUEAK_SECUREDIR": str(secure)})
            written = out.read_text(errors="replace") if out.is_file() else ""
            if "hotload-baked" not in written:
                stacks = image.with_name("hotload-stacks.log")
                why = written.replace("hotload-error: ", "").strip() or (
                    f"the VM quit without saying (every process's stack is in {stacks})" if stacks.is_file()
                    else "the VM quit without saying")
                raise InstallError(f"baking the loader into {image} failed: {why}; the image is unchanged "
                                   f"(its copy is {backup})")
        except SqueakError as error:
            shutil.copy2(backup, image)
            raise InstallError(f"baking the loader into {image} failed: {error}; the image is unchanged") from None
        finally:
            script.unlink(missing_ok=True)
            shutil.rmtree(secure, ignore_errors=True)
        polling = written.strip().splitlines()[-1].replace("hotload-baked ", "")
        out.unlink(missing_ok=True)
        command = " ".join(squeak.command(image))
        return InstallResult("squeak", "baked", self.staging, [
            f"kept the previous image as {backup}" + (f"; linked {linked} beside the image" if linked else ""),
            "turned the sandbox off for good (Preferences securityChecksEnabled, automaticKeyGeneration, "
            "eToyFriendly) and set the author initials to hotload",
            f"filed in {', '.join(p.name for p in loader_files('squeak'))} and started the loader: {polling}",
            f"saved {image}; start it headless with: {command}",
        ])

    def live(self, port: int, loader_folder: str, host: Optional[str] = None, *, transport,
             wait: Optional[float] = None) -> InstallResult:
        """Load and start the loader in a running gst image served by `gst-remote --server`.

        Succeeds only when the new loader runs: after gst-remote returns, a heartbeat written after
        the install started must appear in the staging directory (read through `transport`) within
        `wait` seconds (default: `confirm_wait`), and its loader id must differ from the one there
        before. gst-remote that cannot reach the image is a TargetError (exit 5); a loader
        that does not start or write a fresh heartbeat is NoLoaderRunning (exit 3).
        """
        if self.dialect != "gst":
            raise InstallError("live installation uses gst-remote and works for GNU Smalltalk only; "
                               "for Pharo or Squeak use the printed snippet")
        remote = shutil.which("gst-remote")
        if not remote:
            raise InstallError("gst-remote is not installed (it comes with GNU Smalltalk)")
        where = f"port {port}" + (f" of {host}" if host else "")
        before = self._heartbeat(transport)[0]
        started = transport.now()
        nonce = secrets.token_hex(6)
        output = self._run_gst_remote(remote, port, host, self._live_code(loader_folder, nonce), where)
        connected, started_ok, failure = self._outcome(output, nonce)
        if not connected:
            raise TargetError(
                f"gst-remote could not reach a gst image on {where}: {_first_line(output) or 'no answer'}; "
                f"is the image running under `gst-remote --server --port={port}`?"
            )
        if not started_ok:
            raise NoLoaderRunning(
                f"gst-remote reached the image on {where} but the loader did not start: "
                f"{failure or _first_line(output) or 'no reason given'}; see the image's Transcript"
            )
        returned = transport.now()
        seconds = self.confirm_wait(before, started) if wait is None else wait
        beat = self._wait_for_fresh_heartbeat(transport, before, started, returned, seconds, where)
        return InstallResult("gst", "live", self.staging, [
            f"filed the loader in from {loader_folder} through gst-remote on {where}",
            f"started it: {self.start_statement()}",
            f"it runs: fresh heartbeat from loader {beat.id or '(no id)'} ({beat.dialect}, interval {beat.interval_ms} ms, "
            f"priority {beat.priority or '?'}, image {beat.image or '?'})",
            "the image on disk does not have the loader until it is saved (a save-only trigger does that)",
        ])

    def confirm_wait(self, before=None, started: float = 0.0) -> float:
        """How long `live` waits for the new loader's first fresh heartbeat: max(3 x interval, 10 s),
        longer when a loader's heartbeat was fresh at the start: the new loader may stand by (protocol 2)
        until that heartbeat is stale by its own clock, then take the directory over."""
        seconds = max(3 * self.interval_ms / 1000.0, 10.0)
        if before is not None and started - before.time <= before.max_age():
            seconds += max(before.max_age(), seconds) + 1.0
        return seconds

    def _live_code(self, loader_folder: str, nonce: str) -> str:
        """One gst-remote evaluation: a marker proving the image runs it, then the install, guarded so
        that its outcome is printed whatever fails (each statement of an evaluation runs on its own)."""
        priority = "nil" if self.priority is None else str(int(self.priority))
        steps = self.file_in_statements(loader_folder) + [
            f"(Smalltalk at: #HLLoader) startOn: {st_string(self.staging)} interval: {self.interval_ms} priority: {priority}",
            f"{st_string(_MARK + ' started ' + nonce)} displayNl",
        ]
        return (
            f"{st_string(_MARK + ' connected ' + nonce)} displayNl.\n"
            f"[ {'. '.join(steps)} ]\n"
            f"    on: Error do: [ :e | ({st_string(_MARK + ' failed ' + nonce + ' ')} , e class name , ': ' , "
            f"e messageText displayString) displayNl. e return: nil ]"
        )

    @staticmethod
    def _outcome(output: str, nonce: str):
        """(connected, started, failure text) from gst-remote's output."""
        connected = started = False
        failure = ""
        for line in output.splitlines():
            line = line.strip()
            if line == f"{_MARK} connected {nonce}":
                connected = True
            elif line == f"{_MARK} started {nonce}":
                started = True
            elif line.startswith(f"{_MARK} failed {nonce} "):
                failure = line[len(f"{_MARK} failed {nonce} "):]
        return connected, started and not failure, failure

    @staticmethod
    def _run_gst_remote(remote: str, port: int, host: Optional[str], code: str, where: str) -> str:
        # gst-remote exits 1 when it cannot connect ("gst-remote: Connection refused") or the host is
        # invalid, but 0 when it reaches nothing through ssh (user@host), when the peer is not a
        # gst-remote server or closes the connection: the markers in the output decide, not the status.
        command = [remote, f"--port={port}", "--eval", code] + ([host] if host else [])
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=GST_REMOTE_TIMEOUT,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TargetError(
                f"gst-remote on {where} did not answer within {GST_REMOTE_TIMEOUT} s; "
                f"is the process listening there a gst image started with `gst-remote --server --port={port}`?"
            ) from None
        return result.stdout + "\n" + result.stderr

    @staticmethod
    def _heartbeat(transport, server_now=None):
        """(Heartbeat or None, the VersionMismatch met instead or None)."""
        try:
            return read_heartbeat(transport, server_now)[0], None
        except VersionMismatch as error:
            return None, error

    def _wait_for_fresh_heartbeat(self, transport, before, started: float, returned: float, seconds: float,
                                  where: str):
        before_id = getattr(before, "id", "") or ""
        deadline = time.monotonic() + seconds
        mismatch = None
        while True:
            beat, mismatch = self._heartbeat(transport, server_now=lambda: returned)
            if beat is not None and _is_new(beat, before_id, started, returned):
                return beat
            if time.monotonic() >= deadline:
                break
            time.sleep(HEARTBEAT_POLL)
        problem = f"no heartbeat from the new loader appeared in {transport.description} in {seconds:.0f} s"
        if mismatch is not None:
            problem += (f" (the heartbeat there is protocol {mismatch.found}; this hotload speaks "
                        f"{protocol.VERSION}: install the loader sources of this hotload)")
        conflict = fresh_conflict(transport, server_now=lambda: returned)
        if conflict is not None and conflict.time > started:
            problem += f"; the new loader stands by: {conflict.describe()}"
        raise NoLoaderRunning(
            f"gst-remote ran but {problem}: is the image at {where} the one that serves this staging "
            f"directory ({self.staging})? See its Transcript"
        )

    def snippet(self, loader_folder: str) -> InstallResult:
        """The exact code to evaluate in a Playground (Pharo), Workspace (Squeak) or gst REPL."""
        statements = self.file_in_statements(loader_folder) + [self.start_statement(), _SAVE[self.dialect]]
        code = ".\n".join(statements) + "."
        return InstallResult(self.dialect, "snippet", self.staging, [
            f"the loader sources are in {loader_folder}",
            "evaluate the snippet below in the running image (select all, Do it)",
        ], code)


def _is_new(beat, before_id: str, started: float, returned: float) -> bool:
    """Written by the loader just started: after the install began and, when loaders carry an id, by
    another loader than the one there before; without ids, after gst-remote returned (by then
    `startOn:` has stopped any previous loader of this image)."""
    if beat.time <= started:
        return False
    beat_id = getattr(beat, "id", "") or ""
    if beat_id:
        return beat_id != before_id
    return beat.time > returned


def _first_line(output: str) -> str:
    """What gst-remote (or ssh, or whatever answered on the port) said first, markers aside."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.strip().startswith(_MARK)]
    return lines[0][:300] if lines else ""
