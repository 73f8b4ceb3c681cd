"""Running the Squeak VM headless on a Squeak-family image (Etoys 5.0 on Debian's squeak-vm 4.10.2).

    >>> squeak = Squeak()                                  # finds squeakvm and the Etoys image
    >>> image = squeak.prepare("/tmp/work")                # a scratch copy: image, changes, sources, secure/
    >>> squeak.run("HotloadOut nextPutAll: 3 printString", image)
    '3'
    >>> vm = squeak.start(image, log="/tmp/work/vm.log")   # no script: the image's own start-up (a baked loader)

The VM is started as `squeakvm -plugins <dir> -vm-display-null -vm-sound-null IMAGE [SCRIPT]`.
`-headless` still loads the X11 display module, which aborts without a display; `-vm-display-null`
does not. The script path must be absolute. `FileStream stdout` is nil when stdout is a pipe, so a
script's output goes to a file: `run` opens it as the global `HotloadOut` (lines end with LF).

Etoys treats a command-line script as untrusted: until its security checks are off the script may
not write files or save. `SQUEAK_SECUREDIR/Squeak.keys` is evaluated at start-up, before the script,
so every run points SQUEAK_SECUREDIR at `<image folder>/secure` holding the `Squeak.keys` below. An
unhandled error or warning opens a debugger nobody sees and the VM hangs: every run has a timeout,
and a timeout says what `<image folder>/My Squeak/SqueakDebug.log` ends with.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Optional

from hotload.errors import HotloadError

VM_NAME = "squeakvm"
ETOYS_IMAGE = Path("/usr/share/etoys/etoys.image")
SOURCES_NAME = "EtoysV5.stc"
STACKS_NAME = "hotload-stacks.log"  # written by the watchdog of `run` when a script hangs

#: Evaluated by Etoys at start-up (before any script): the sandbox off, no key generation.
SQUEAK_KEYS = (
    "Preferences disable: #securityChecksEnabled; disable: #automaticKeyGeneration.\n"
    "Array with: nil with: #()\n"
)

INSTALL_HINT = (
    "the Squeak VM is not installed (squeakvm from the Debian package squeak-vm; the Etoys 5.0 image "
    "from the package etoys in non-free): run `sudo bash .ci/install-system` from the hotload sources"
)
IMAGE_HINT = (
    "the Etoys image is not installed (expected /usr/share/etoys/etoys.image from the Debian package "
    "etoys in non-free): run `sudo bash .ci/install-system` from the hotload sources"
)


#: tries for a VM that aborts (SIGABRT) while it starts, before any output: Debian's squeak-vm 4.10 does so now
#: and then on a freshly saved Etoys image (a stale file stream finalized at start-up; docs/dialects.md)
STARTS = 3

class SqueakError(HotloadError):
    """The VM or image is missing, or a run failed."""

    exit_code = 2


class SqueakTimeout(SqueakError):
    """The VM did not finish in time (an unhandled error or warning hangs it)."""

    exit_code = 6


def find_vm(vm: Optional[str] = None) -> Path:
    """The real `squeakvm` binary (not Debian's `squeak` shell wrapper): `vm` when given, else PATH,
    else the file the squeak-vm package installs (`dpkg -L squeak-vm`)."""
    if vm:
        found = shutil.which(vm) or (vm if Path(vm).is_file() else None)
        if not found:
            raise SqueakError(f"the Squeak VM {vm} does not exist")
        return Path(found).resolve()
    found = shutil.which(VM_NAME)
    if found:
        return Path(found).resolve()
    try:
        listing = subprocess.run(["dpkg", "-L", "squeak-vm"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        path = Path(line.strip())
        if path.name == VM_NAME and path.is_file() and os.access(path, os.X_OK):
            return path
    for path in sorted(Path("/usr/lib/squeak").glob(f"*/{VM_NAME}")):
        if os.access(path, os.X_OK):
            return path
    raise SqueakError(INSTALL_HINT)


def find_image(image: Optional[str] = None) -> Path:
    path = Path(image) if image else ETOYS_IMAGE
    if not path.is_file():
        raise SqueakError(IMAGE_HINT if image is None else f"the image {path} does not exist")
    return path.resolve()


def debug_log_tail(image, lines: int = 15) -> str:
    """The end of `<image folder>/My Squeak/SqueakDebug.log` (where Squeak writes unhandled errors)."""
    log = Path(image).parent / "My Squeak" / "SqueakDebug.log"
    try:
        text = log.read_bytes().decode("utf-8", "replace").replace("\r", "\n")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _one_line(text: str, limit: int = 600) -> str:
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


class Squeak:
    def __init__(self, vm: Optional[str] = None, image: Optional[str] = None):
        self.vm = find_vm(vm)
        self.plugins = self.vm.parent  # Debian installs the plugins (so.*) beside squeakvm
        self.image = Path(image) if image else None  # the base image; found lazily (a baked image needs none)

    # -- images -------------------------------------------------------------------------

    def base_image(self) -> Path:
        return find_image(str(self.image) if self.image else None)

    def prepare(self, folder, image=None, name: Optional[str] = None) -> Path:
        """Copy `image` (default: the Etoys image) with its .changes into `folder`, link its sources
        file (`EtoysV5.stc` must sit beside the image) and write `secure/Squeak.keys`. Answer the copy."""
        source = find_image(str(image)) if image else self.base_image()
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (name or source.name)
        shutil.copy2(source, target)
        changes = source.with_suffix(".changes")
        if changes.is_file():
            shutil.copy2(changes, target.with_suffix(".changes"))
        self.link_sources(target, source.parent)
        self.secure_dir(target)
        return target

    @staticmethod
    def link_sources(image, *search) -> Optional[Path]:
        """Link the Etoys sources file beside `image` when the folder has no sources file (Squeak opens
        it at start-up and asks, headless, when it is missing). Answer the link made, or None."""
        folder = Path(image).parent
        if (folder / SOURCES_NAME).exists() or any(folder.glob("*.sources")) or any(folder.glob("*.stc")):
            return None
        for where in (*search, ETOYS_IMAGE.parent):
            candidate = Path(where) / SOURCES_NAME
            if candidate.is_file():
                link = folder / SOURCES_NAME
                link.symlink_to(candidate.resolve())
                return link
        return None

    @staticmethod
    def secure_dir(image) -> Path:
        """`<image folder>/secure` with Squeak.keys (the sandbox off), made when missing."""
        secure = Path(image).resolve().parent / "secure"
        secure.mkdir(exist_ok=True)
        keys = secure / "Squeak.keys"
        if not keys.is_file() or keys.read_text() != SQUEAK_KEYS:
            keys.write_text(SQUEAK_KEYS)
        return secure

    # -- running ------------------------------------------------------------------------

    def command(self, image, script=None) -> list:
        args = [str(self.vm), "-plugins", str(self.plugins), "-vm-display-null", "-vm-sound-null",
                str(Path(image).resolve())]
        return args + ([str(Path(script).resolve())] if script else [])

    def env(self, image, extra=None, keys: bool = True) -> dict:
        """The environment of a run: SQUEAK_SECUREDIR is `<image folder>/secure` unless `extra` names one,
        or unset with `keys=False` (a baked image needs none: its sandbox is off for good)."""
        env = dict(os.environ)
        env.update(extra or {})
        if not keys:
            env.pop("SQUEAK_SECUREDIR", None)
        elif "SQUEAK_SECUREDIR" not in (extra or {}):
            env["SQUEAK_SECUREDIR"] = str(self.secure_dir(image))
        return env

    def script_text(self, code: str, out, quit: bool = True, watchdog: Optional[float] = None) -> str:
        """A chunk-format script: open `out` as HotloadOut, run `code` guarded (an error or warning is
        written to `out` as 'hotload-error: ...' and the VM quits), then quit without saving. With
        `watchdog` seconds, a process above the others first writes every process's stack to
        `hotload-stacks.log` beside `out` after that time and quits (a hang becomes a readable stack)."""
        out_literal = _st_string(str(out))
        lines = [
            f"Smalltalk at: #HotloadOut put: (StandardFileStream forceNewFileNamed: {out_literal})!",
            *([self.watchdog_text(Path(out).with_name(STACKS_NAME), watchdog)] if watchdog else []),
            "[ " + code.rstrip().rstrip("!").rstrip().rstrip(".") + " ]\n"
            "\ton: Error, Warning do: [ :e | HotloadOut nextPutAll: 'hotload-error: ' , e class name , ': ' , "
            "(e messageText ifNil: [ '' ]) asString; nextPut: (Character value: 10); flush. "
            "HotloadOut close. Smalltalk snapshot: false andQuit: true ]!",
        ]
        if quit:
            lines.append("HotloadOut close. Smalltalk snapshot: false andQuit: true!")
        return "\n".join(lines) + "\n"

    @staticmethod
    def watchdog_text(stacks, seconds: float) -> str:
        """The watchdog process, held in the global HotloadWatchdog: terminate it before a save that
        must not carry it (`HotloadWatchdog terminate`). Saved anyway, it does nothing in an image
        started from that file: there the VM's millisecond clock started again from 0, and when the
        Delay wakes it is below the start clock of this run plus `seconds` (the Delay resumes with the
        time it had left, counted from the new VM's start-up, which comes before any script runs)."""
        ms = int(seconds * 1000)
        return (
            "Smalltalk at: #HotloadWatchdog put: ([ :start | (Delay forMilliseconds: " + str(ms) + ") wait.\n"
            "  Time millisecondClockValue >= (start + " + str(ms) + ") ifTrue: [ | f |\n"
            "  f := StandardFileStream forceNewFileNamed: " + _st_string(str(stacks)) + ".\n"
            "  (Process allInstances reject: [ :p | p isTerminated ]) do: [ :p |\n"
            "    f nextPutAll: '--- ' , p printString , ' priority ' , p priority printString; nextPut: (Character value: 10).\n"
            "    p == Processor activeProcess ifFalse: [\n"
            "      [ | c n | c := p suspendedContext. n := 0.\n"
            "        [ c notNil and: [ n < 40 ] ] whileTrue: [\n"
            "          f nextPutAll: '  ' , c printString; nextPut: (Character value: 10). c := c sender. n := n + 1 ] ]\n"
            "        on: Error do: [ :e | e return: nil ] ] ].\n"
            "  f close.\n"
            "  Smalltalk snapshot: false andQuit: true ] ] newProcessWith: (Array with: Time millisecondClockValue))!\n"
            "HotloadWatchdog priority: Processor timingPriority - 1; resume!"
        )

    def run(self, code: str, image, timeout: float = 120, quit: bool = True, env=None) -> str:
        """Run `code` (statements; write output to the stream `HotloadOut`) in `image` headless and
        answer what it wrote. `quit=False` when `code` quits by itself (e.g. after a save)."""
        image = Path(image).resolve()
        out = image.parent / "hotload-run.out"
        script = image.parent / "hotload-run.st"
        out.unlink(missing_ok=True)
        stacks = image.parent / STACKS_NAME
        stacks.unlink(missing_ok=True)
        script.write_text(self.script_text(code, out, quit=quit, watchdog=max(timeout - 5, timeout * 0.8)))
        try:
            self.run_script(script, image, timeout, env=env)
        finally:
            script.unlink(missing_ok=True)
        if stacks.is_file():
            raise SqueakTimeout(self._hung(image, f"did not finish within {timeout:.0f} s", stacks))
        text = out.read_text(errors="replace") if out.is_file() else ""
        out.unlink(missing_ok=True)
        for line in text.splitlines():
            if line.startswith("hotload-error: "):
                raise SqueakError(f"the script failed in {image.name}: {line[len('hotload-error: '):]}")
        return text

    def run_script(self, script, image, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
        """Run a script file as is under `timeout`; SqueakTimeout (with the debug log's tail) when
        the VM does not quit in time, SqueakError when it exits non-zero."""
        command = self.command(image, script)
        for attempt in range(1, STARTS + 1):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=self.env(image, env), start_new_session=True)
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(process)
                raise SqueakTimeout(self._hung(image, f"did not finish within {timeout:.0f} s")) from None
            if process.returncode != -signal.SIGABRT or output.strip():
                break  # not the start-up abort (docs/dialects.md): the run's own outcome
        text = output.decode("utf-8", "replace")
        if process.returncode != 0:
            raise SqueakError(f"the Squeak VM failed on {Path(image).name} (exit {process.returncode}): "
                              f"{_one_line(text) or 'no output'}")
        return subprocess.CompletedProcess(command, process.returncode, text, "")

    def start(self, image, log, script=None, env=None, keys: bool = True) -> subprocess.Popen:
        """Start the VM on `image` in the background (its own session), VM output to `log`. With
        `keys=False` the VM starts exactly as the docs say a baked image starts: no SQUEAK_SECUREDIR."""
        with open(log, "ab") as output:
            return subprocess.Popen(self.command(image, script), stdout=output, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env(image, env, keys), start_new_session=True)

    @staticmethod
    def kill(process: subprocess.Popen, sig=signal.SIGKILL) -> None:
        """Stop a VM this object started (its own process group)."""
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _hung(self, image, what: str, stacks=None) -> str:
        tail = debug_log_tail(image)
        where = Path(image).parent / "My Squeak" / "SqueakDebug.log"
        hint = f"; {where} ends: {_one_line(tail, 400)}" if tail else (
            "; an unhandled error or warning opens a debugger nobody sees (no SqueakDebug.log was written)")
        if stacks is not None:
            hint += f"; every process's stack is in {stacks}"
        return f"the Squeak VM on {Path(image).name} {what}{hint}"

    def wait_for(self, path, timeout: float, process: Optional[subprocess.Popen] = None, image=None) -> None:
        """Wait until `path` exists; SqueakTimeout otherwise (or SqueakError when `process` exits first)."""
        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            if process is not None and process.poll() is not None:
                raise SqueakError(f"the Squeak VM exited ({process.returncode}) before {Path(path).name} appeared")
            if time.monotonic() > deadline:
                raise SqueakTimeout(self._hung(image or Path(path), f"wrote no {Path(path).name} within {timeout:.0f} s"))
            time.sleep(0.1)


def _st_string(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def files_in(paths: Iterable) -> str:
    """Statements that file in `paths` (absolute) in order."""
    return ". ".join(f"(FileStream readOnlyFileNamed: {_st_string(str(Path(p).resolve()))}) fileIn" for p in paths)
