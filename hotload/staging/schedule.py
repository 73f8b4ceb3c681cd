"""Scheduling a save: one cron entry per server that writes a save-only trigger the protocol's way.

    >>> schedule = SaveSchedule("deploy@app1:/srv/app/staging", at="02:00")
    >>> schedule.print_line().line     # what --print shows; no connection for an absolute path
    '0 2 * * * cd /srv/app/staging && t=.hotload-tmp-... # hotload schedule-save /srv/app/staging'
    >>> result = schedule.install()    # in the crontab of deploy on app1, over SSH
    >>> result.action, result.user, result.host
    ('installed', 'deploy', 'app1')

The entry is the user's own crontab's (`crontab -l`, then `crontab -` with the whole new text), run over
the SSH connection the transport opened (the same host-key checking), or locally for a local path. It is
recognised by its marker comment, `# hotload schedule-save <staging directory>`: installing again leaves
one entry (replaced when the time changed), `remove` takes it out, and every other line of the crontab is
written back byte for byte.

The command never writes `load` itself (docs/protocol.md, "Save-only trigger"): it creates an empty
`.hotload-tmp-<batch>-save` in the staging directory and hard-links it to `load`, which link(2) refuses
when `load` exists, then removes the temporary name. So it never replaces or touches a batch's trigger
and never follows a link at `load`. Only POSIX sh and coreutils run on the server.
"""

import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Tuple

from hotload.staging import protocol
from hotload.errors import InputError, TargetError
from hotload.staging.targets import Target, parse_target

#: how the entry names itself at the end of its line, before the staging directory (quoted as in the line)
MARKER = "# hotload schedule-save "
#: the longest command Vixie cron (Debian's) installs, in bytes; `crontab` refuses a longer one
MAX_COMMAND_BYTES = 998
_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")  # fullmatch: `$` would let a final newline through
#: printed first by the remote `crontab -l`, so that whatever a login script prints before it is not taken
#: for the crontab (and a server that runs no commands for the user, an SFTP-only account, is recognised)
_SENTINEL = b"hotload-crontab-follows"
COMMAND_TIMEOUT = 60.0

INSTALLED, REPLACED, UNCHANGED, REMOVED, ABSENT, PRINTED = "installed", "replaced", "unchanged", "removed", "absent", "printed"


def parse_time(text: Optional[str]) -> Tuple[int, int]:
    """(hour, minute) of an `HH:MM` from 00:00 to 23:59; InputError (exit 2) otherwise."""
    match = _TIME.fullmatch(text or "")
    if not match:
        raise InputError(f"--at {text!r} is not a time of day; give HH:MM from 00:00 to 23:59, e.g. --at 02:00")
    return int(match.group(1)), int(match.group(2))


def check_path(path: str) -> str:
    """The staging directory's path as a crontab line can hold it: UTF-8 text without control characters."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the staging directory {path!r} is not UTF-8 text; a crontab line cannot name it") from None
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise InputError(
            f"the staging directory {path!r} holds a control character (a newline, a tab, ...); "
            "a crontab line cannot name it: rename the folder")
    return path


def cron_quote(text: str) -> str:
    """`text` as one shell word that cron passes on unchanged.

    cron turns an unescaped `%` of the command into a newline and `\\%` into `%`; sh's own quoting
    cannot protect it. So each piece between the `%`s is quoted for sh and the `%`s are written `\\%`
    between the quoted pieces, where no backslash of the path can precede them."""
    return "\\%".join(shlex.quote(piece) if piece else "" for piece in text.split("%")) or "''"


def save_command(staging: str) -> str:
    """The POSIX sh command (cron-escaped) that asks the loader at `staging` (absolute) for a save."""
    stamp = "$(date -u +" + "\\%Y\\%m\\%dT\\%H\\%M\\%SZ" + ")"
    random = "$(od -An -N3 -tx1 /dev/urandom | tr -d ' \\n')"
    temporary = protocol.temp_name(f"{stamp}-{random}", "save")  # .hotload-tmp-<batch>-save
    return (
        f"cd {cron_quote(staging)} && t={temporary} && : >\"$t\" && "
        f"{{ [ -e {protocol.TRIGGER} ] || [ -h {protocol.TRIGGER} ] || ln \"$t\" {protocol.TRIGGER} 2>/dev/null; rm -f \"$t\"; }}"
    )


def marker(staging: str) -> str:
    return MARKER + cron_quote(staging)


def cron_line(staging: str, hour: int, minute: int) -> str:
    """The crontab line (without its newline) that saves the image at `staging` every day at hour:minute."""
    command = save_command(staging)
    if len(command.encode("utf-8")) > MAX_COMMAND_BYTES:
        raise InputError(
            f"the staging directory {staging!r} is too long for a crontab line (cron takes commands of at most "
            f"{MAX_COMMAND_BYTES} bytes); use a shorter path, e.g. through a symbolic link to its parent")
    return f"{minute} {hour} * * * {command} {marker(staging)}"


def is_entry_for(line: bytes, staging: str) -> bool:
    """Whether the crontab line (without its newline) is the entry of `staging`."""
    text = line.rstrip(b"\r").rstrip()
    tag = marker(staging).encode("utf-8")
    return text.endswith(tag) and (len(text) == len(tag) or text[-len(tag) - 1:-len(tag)] in (b" ", b"\t"))


def edit(crontab: bytes, staging: str, line: Optional[str]) -> Tuple[bytes, str, Optional[str]]:
    """The crontab with the entry of `staging` set to `line` (None: removed), the action and the entry that was
    there before (None if none). Every other line stays as it was, byte for byte, in its place; a second entry
    of the same staging directory (written by hand) goes too."""
    lines = re.findall(rb"[^\n]*\n|[^\n]+$", crontab)
    found = [index for index, each in enumerate(lines) if is_entry_for(each.rstrip(b"\n"), staging)]
    previous = lines[found[0]].rstrip(b"\n").decode("utf-8", "replace") if found else None
    if line is None:
        if not found:
            return crontab, ABSENT, None
        return b"".join(each for index, each in enumerate(lines) if index not in found), REMOVED, previous
    new = line.encode("utf-8") + b"\n"
    if found:
        if len(found) == 1 and lines[found[0]] == new:
            return crontab, UNCHANGED, previous
        lines[found[0]] = new
        return b"".join(each for index, each in enumerate(lines) if index not in found[1:]), REPLACED, previous
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"  # cron refuses a crontab whose last line has no newline
    return b"".join(lines) + new, INSTALLED, None


@dataclass
class ScheduleResult:
    target: str
    action: str  # installed, replaced, unchanged, removed, absent, printed
    staging: str  # the staging directory's absolute path, as the line names it
    line: Optional[str]  # the entry installed, kept, removed or printed (None: nothing to remove)
    host: Optional[str] = None  # None: this machine
    user: Optional[str] = None  # whose crontab
    previous: Optional[str] = None  # the entry replaced
    note: str = ""

    exit_code = 0

    def to_json(self) -> dict:
        return {
            "target": self.target, "action": self.action, "staging": self.staging, "line": self.line,
            "host": self.host, "user": self.user, "previous": self.previous, "note": self.note,
        }


class _LocalCrontab:
    """The crontab of the user running hotload, through the `crontab` command here."""

    host = None

    def __init__(self):
        import os
        import pwd

        try:
            self.user = pwd.getpwuid(os.getuid()).pw_name  # whose crontab `crontab` edits
        except KeyError:
            self.user = str(os.getuid())

    def _run(self, args: List[str], data: Optional[bytes] = None):
        try:
            done = subprocess.run(["crontab", *args], input=data, capture_output=True, timeout=COMMAND_TIMEOUT)
        except FileNotFoundError:
            raise TargetError("there is no crontab command on this machine; install cron (Debian: apt-get install cron), "
                              "or add the line of --print to the scheduler by hand") from None
        except subprocess.TimeoutExpired:
            raise TargetError(f"crontab did not finish within {COMMAND_TIMEOUT:.0f} s; check cron on this machine") from None
        return done.returncode, done.stdout, done.stderr

    def read(self) -> bytes:
        return _crontab_text(*self._run(["-l"]), where="on this machine")

    def write(self, data: bytes):
        _check_written(*self._run(["-"], data), where="on this machine")


class _SshCrontab:
    """The login user's crontab on the server, through `crontab` run over the transport's SSH connection."""

    def __init__(self, transport, host: str):
        self.client = transport.client
        self.host = host
        self.where = f"on {host}"
        self.user = self.client.get_transport().get_username()

    def _run(self, command: str, data: Optional[bytes] = None):
        import paramiko

        try:
            channel = self.client.get_transport().open_session(timeout=COMMAND_TIMEOUT)
            channel.settimeout(COMMAND_TIMEOUT)
            channel.exec_command(command)
            if data:
                channel.sendall(data)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                out += chunk
            while True:
                chunk = channel.recv_stderr(65536)
                if not chunk:
                    break
                err += chunk
            code = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError, EOFError) as error:
            detail = str(error).strip() or type(error).__name__
            raise TargetError(f"running crontab {self.where} failed: the SSH connection failed ({detail}); "
                              "check the network and run schedule-save again") from None
        return code, bytes(out), bytes(err)

    def read(self) -> bytes:
        code, out, err = self._run(f"echo {_SENTINEL.decode()}; crontab -l")
        head, found, rest = out.partition(_SENTINEL + b"\n")
        if not found:
            raise TargetError(
                f"the SSH server {self.where} runs no commands for {self.user} (an SFTP-only account?); "
                "schedule-save needs a shell login to run crontab: use another account, or add the line of "
                "--print to the server's crontab by hand")
        return _crontab_text(code, rest, err, where=self.where)

    def write(self, data: bytes):
        _check_written(*self._run("crontab -", data), where=self.where)


def _first_line(err: bytes) -> str:
    lines = [each.strip() for each in err.decode("utf-8", "replace").splitlines() if each.strip()]
    return "; ".join(lines[:2]) or "no message"


def _missing_command(code: int, err: bytes) -> bool:
    """What a shell answers for a command it cannot find (sh and bash: 127; csh: "crontab: Command not found.")."""
    return code == 127 or re.search(rb"crontab: (command )?not found", err, re.IGNORECASE) is not None


def _crontab_text(code: int, out: bytes, err: bytes, where: str) -> bytes:
    """What `crontab -l` answered: the crontab, b"" when the user has none."""
    if code == 0:
        return out
    if b"no crontab for" in err.lower():
        return b""
    if _missing_command(code, err):
        raise TargetError(f"there is no crontab command {where}; install cron there (Debian: apt-get install cron), "
                          "or add the line of --print to the server's scheduler by hand")
    raise TargetError(f"crontab -l {where} failed ({_first_line(err)}); check that this user may use cron "
                      "(cron.allow, cron.deny)")


def _check_written(code: int, out: bytes, err: bytes, where: str):
    if code == 0:
        return
    if _missing_command(code, err):
        raise TargetError(f"there is no crontab command {where}; install cron there (Debian: apt-get install cron)")
    raise TargetError(f"crontab {where} refused the new crontab ({_first_line(err)}); nothing was changed: "
                      "check that this user may use cron (cron.allow, cron.deny)")


class SaveSchedule:
    """The scheduled save of one target (a staging directory): print, install or remove its cron entry."""

    def __init__(self, target: str, at: Optional[str] = None):
        self.text = target
        self.target: Target = parse_target(target)
        check_path(self.target.path)
        self.time = parse_time(at) if at is not None else None

    def _line(self, staging: str) -> str:
        self._require_time()
        return cron_line(check_path(staging), *self.time)

    def _require_time(self):
        if self.time is None:
            raise InputError("give the time of the save with --at HH:MM, e.g. --at 02:00")

    def print_line(self) -> ScheduleResult:
        """The line, without connecting (an SSH target's path must be absolute then)."""
        if self.target.is_local:
            from hotload.staging.transports.local import LocalTransport

            staging = str(LocalTransport(self.target.path).root)
        elif self.target.path.startswith("/"):
            staging = self.target.path
        else:
            raise InputError(
                f"{self.text}: the path {self.target.path!r} is relative to the login directory, which --print "
                "cannot know without connecting; give the absolute path")
        return ScheduleResult(self.text, PRINTED, staging, self._line(staging), self.target.host, self.target.user)

    def install(self) -> ScheduleResult:
        return self._edit(remove=False)

    def remove(self) -> ScheduleResult:
        return self._edit(remove=True)

    def _edit(self, remove: bool) -> ScheduleResult:
        from hotload.staging.transports import open_transport

        if not remove:
            self._require_time()  # bad input is found before connecting
            if self.target.path.startswith("/"):
                self._line(self.target.path)
        with open_transport(self.target) as transport:
            staging = check_path(str(transport.root))
            line = None if remove else self._line(staging)
            exists = transport.check_directory()
            crontab = _LocalCrontab() if self.target.is_local else _SshCrontab(transport, self.target.host)
            text, action, previous = edit(crontab.read(), staging, line)
            if action not in (UNCHANGED, ABSENT):
                crontab.write(text)
        note = ""
        if not remove and not exists:
            note = (f"the staging directory {staging} does not exist yet: until it does, cron reports that the entry "
                    "cannot change to it (hotload install-loader or the first push creates it)")
        if action == REMOVED:
            line = previous
        return ScheduleResult(self.text, action, staging, line, crontab.host, crontab.user,
                              previous if action == REPLACED else None, note)
