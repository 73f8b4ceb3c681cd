"""hotload schedule-save: one cron entry per server, installed over SSH (the loopback sshd, strict host keys)
or locally, found again by its marker; and the entry's command run with sh as cron runs it, against staging
directories: an empty `load` made by link(2), never over another trigger, nothing left behind.

The tests run as root, so they use root's real crontab: `crontab_saved` keeps what `crontab -l` says first
and puts it back afterwards, exactly (or removes the crontab when there was none)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_runner import run_in_process
from conftest import ROOT
from hotload.staging import schedule
from hotload.errors import TargetError

NO_CRONTAB = pytest.mark.skipif(
    not shutil.which("crontab"), reason="the crontab command is not installed (apt-get install cron; .ci/install-system does)")
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "root"}  # what cron gives a job
DOCS_LINE = schedule.cron_line("/srv/app/staging", 2, 0)

#: other lines of a crontab, byte for byte as they must stay: a comment, a variable, an escaped %, trailing
#: blanks, an empty line, text that is not UTF-8, and the entry of another staging directory
OTHER_LINES = (
    b"# the team's jobs\n"
    b"MAILTO=ops@example.com\n"
    b"*/5 * * * * /usr/local/bin/backup --label \\%d  \t \n"
    b"\n"
    b"30 4 * * * echo caf\xe9 # not a hotload schedule-save /srv/app/staging\n"
    b"0 1 * * * true # hotload schedule-save /srv/other/staging\n"
)


def crontab_l() -> bytes:
    done = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
    if done.returncode != 0:
        assert b"no crontab for" in done.stderr, done.stderr
        return b""
    return done.stdout


def crontab_install(data: bytes):
    subprocess.run(["crontab", "-"], input=data, check=True, capture_output=True, timeout=30)


@pytest.fixture
def crontab_saved():
    """Root's crontab as it was, put back exactly at the end; the test starts with OTHER_LINES in it."""
    if not shutil.which("crontab"):
        pytest.skip("the crontab command is not installed (apt-get install cron; .ci/install-system does)")
    done = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
    if done.returncode != 0 and b"no crontab for" not in done.stderr:
        pytest.skip(f"crontab -l does not work here: {done.stderr.decode(errors='replace').strip()}")
    saved = done.stdout if done.returncode == 0 else None
    try:
        crontab_install(OTHER_LINES)
        yield
    finally:
        if saved is None:
            subprocess.run(["crontab", "-r"], capture_output=True, timeout=30)
            after = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
            assert after.returncode != 0 and b"no crontab for" in after.stderr
        else:
            crontab_install(saved)
            assert crontab_l() == saved


def entries(staging) -> list:
    return [line for line in crontab_l().split(b"\n") if schedule.is_entry_for(line, str(staging))]


def cron_command(line: str) -> str:
    """The command cron gives `sh -c` for a crontab line: after the five time fields, `\\%` read as `%`
    (Vixie cron's rule; an unescaped `%` would end the command and feed the rest as input)."""
    command = line.split(None, 5)[5]
    text, escaped = [], False
    for char in command:
        if escaped:
            if char == "%":
                text[-1] = "%"
            else:
                text.append(char)
            escaped = False
            continue
        assert char != "%", f"an unescaped % in {line!r}: cron would cut the command there"
        text.append(char)
        escaped = char == "\\"
    return "".join(text)


def run_entry(line: str, tmp_path: Path, env=None) -> subprocess.CompletedProcess:
    """Runs the entry's command as cron would: sh -c, in another folder, cron's environment."""
    done = subprocess.run(["/bin/sh", "-c", cron_command(line)], cwd=tmp_path, env=env or CRON_ENV,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stdout and not done.stderr, (done.returncode, done.stdout, done.stderr)
    return done


# -- the line -------------------------------------------------------------------------------------------


def test_the_docs_show_what_print_prints():
    printed = run_in_process("schedule-save", "--to", "/srv/app/staging", "--at", "02:00", "--print")
    assert printed.returncode == 0 and printed.stdout == DOCS_LINE + "\n", printed.stdout + printed.stderr
    for page in ("protocol.md", "operations.md"):
        text = (ROOT / "docs" / page).read_text()
        blocks = re.findall(r"```crontab\n(.*?)```", text, re.S)
        assert blocks == [DOCS_LINE + "\n"], f"docs/{page} shows {blocks}, not what --print prints"
    assert "touch /srv/app/staging/load" not in (ROOT / "docs" / "protocol.md").read_text()


def test_print_connects_nowhere():
    printed = run_in_process("schedule-save", "--to", "sftp://deploy@unreachable.invalid:1/srv/app/staging",
                             "--to", "app2:/srv/app/staging", "--at", "23:59", "--print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [schedule.cron_line("/srv/app/staging", 23, 59)] * 2


def test_print_json():
    printed = run_in_process("schedule-save", "--to", "/srv/app/staging", "--at", "2:05", "--print", "--json")
    assert printed.returncode == 0
    report = json.loads(printed.stdout)
    assert report["action"] == "printed" and report["line"].startswith("5 2 * * * cd /srv/app/staging && ")


@pytest.mark.parametrize("args, says", [
    (["--at", "24:00"], "--at '24:00' is not a time of day"),
    (["--at", "02:60"], "is not a time of day"),
    (["--at", "2"], "is not a time of day"),
    (["--at", "02:00:00"], "is not a time of day"),
    (["--at", " 02:00"], "is not a time of day"),
    (["--at", "02:00\n"], "is not a time of day"),
    (["--at", "０2:00"], "is not a time of day"),
    (["--at", ""], "is not a time of day"),
    ([], "give the time of the save with --at HH:MM"),
    (["--at", "02:00", "--remove"], "--remove takes the scheduled save out"),
])
def test_bad_time_is_exit_2_with_one_line(args, says):
    done = run_in_process("schedule-save", "--to", "/srv/app/staging", *args, "--print")
    assert done.returncode == 2 and not done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr


@pytest.mark.parametrize("path, says", [
    ("/srv/app/sta\nging", "holds a control character"),
    ("/srv/app/sta\tging", "holds a control character"),
    ("/srv/app/\udcffstaging", "is not UTF-8 text"),
    ("/srv/" + "a" * 1000, "too long for a crontab line"),
])
def test_bad_path_is_exit_2_with_one_line(path, says):
    for extra in (["--print"], []):  # the same before any connection or crontab
        done = run_in_process("schedule-save", "--to", path, "--at", "02:00", *extra)
        assert done.returncode == 2 and not done.stdout
        assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr


def test_print_refuses_a_path_relative_to_the_login_directory():
    done = run_in_process("schedule-save", "--to", "app1:staging", "--at", "02:00", "--print")
    assert done.returncode == 2 and "give the absolute path" in done.stderr


@pytest.mark.parametrize("path", ["/srv/app/staging", "/srv/my app/it's \"100%\" $HOME `id` \\%x %", "/a%%b\\"])
def test_the_path_reaches_sh_unchanged_through_cron(path):
    line = schedule.cron_line(path, 2, 0)
    command = cron_command(line)
    words = subprocess.run(["/bin/sh", "-c", command.replace("cd ", "printf '%s\\n' ", 1).split(" && ")[0]],
                           capture_output=True, text=True, check=True).stdout
    assert words == path + "\n"
    assert line.endswith(schedule.marker(path)) and schedule.is_entry_for(line.encode(), path)
    assert not schedule.is_entry_for(line.encode(), path[:-1]) and not schedule.is_entry_for(line.encode(), "/x" + path)


def test_edit_keeps_every_other_line_and_its_place():
    staging = "/srv/app/staging"
    old, new = schedule.cron_line(staging, 3, 0), schedule.cron_line(staging, 2, 0)
    crontab = b"# top\n" + old.encode() + b"\n5 5 * * * true\n" + old.encode() + b"\n# last, no newline"
    edited, action, previous = schedule.edit(crontab, staging, new)
    assert action == "replaced" and previous == old
    assert edited == b"# top\n" + new.encode() + b"\n5 5 * * * true\n# last, no newline"
    assert schedule.edit(edited, staging, new) == (edited, "unchanged", new)
    removed, action, previous = schedule.edit(edited, staging, None)
    assert action == "removed" and removed == b"# top\n5 5 * * * true\n# last, no newline"
    assert schedule.edit(removed, staging, None) == (removed, "absent", None)
    added, action, _ = schedule.edit(removed, staging, new)
    assert action == "installed" and added == removed + b"\n" + new.encode() + b"\n"  # cron needs the last newline
    assert schedule.edit(b"", staging, new)[0] == new.encode() + b"\n"


# -- the entry's command, run as cron runs it --------------------------------------------------------------


@pytest.fixture
def staging(tmp_path) -> Path:
    folder = tmp_path / "my app's \"100%\" staging"
    folder.mkdir(mode=0o700)
    return folder


def test_the_entry_makes_an_empty_load_by_link_and_leaves_no_temporary_file(staging, tmp_path):
    # an `rm` that notes its arguments first: the temporary file's name is the protocol's
    spy = tmp_path / "bin"
    spy.mkdir()
    (spy / "rm").write_text(f"#!/bin/sh\necho \"$@\" >> '{tmp_path}/rm.log'\nexec /bin/rm \"$@\"\n")
    (spy / "rm").chmod(0o755)
    run_entry(schedule.cron_line(str(staging), 2, 0), tmp_path, dict(CRON_ENV, PATH=f"{spy}:/usr/bin:/bin"))
    assert sorted(os.listdir(staging)) == ["load"]
    trigger = staging / "load"
    assert trigger.read_bytes() == b"" and os.lstat(trigger).st_nlink == 1
    removed = (tmp_path / "rm.log").read_text().split()
    assert removed[0] == "-f" and re.fullmatch(r"\.hotload-tmp-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}-save", removed[1]), removed


@pytest.mark.parametrize("trigger", [
    b"hotload-trigger\t2\nbatch\t20261122T203700Z-3fa9c1\nend\n",  # a batch's
    b"",  # a save still to come
])
def test_the_entry_never_replaces_a_trigger(staging, tmp_path, trigger):
    (staging / "load").write_bytes(trigger)
    os.utime(staging / "load", ns=(1_000_000_000, 1_000_000_000))
    before = os.lstat(staging / "load")
    run_entry(schedule.cron_line(str(staging), 2, 0), tmp_path)
    after = os.lstat(staging / "load")
    assert (staging / "load").read_bytes() == trigger
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == (before.st_ino, before.st_mtime_ns, 1)
    assert sorted(os.listdir(staging)) == ["load"]


def test_the_entry_follows_no_link_and_writes_in_no_folder_at_load(staging, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    line = schedule.cron_line(str(staging), 2, 0)
    for target in (outside / "missing", outside):  # a dangling link, a link to a folder
        (staging / "load").symlink_to(target)
        run_entry(line, tmp_path)
        assert os.readlink(staging / "load") == str(target) and os.listdir(outside) == []
        assert sorted(os.listdir(staging)) == ["load"]
        (staging / "load").unlink()
    (staging / "load").mkdir()
    run_entry(line, tmp_path)
    assert os.listdir(staging / "load") == [] and sorted(os.listdir(staging)) == ["load"]


# -- installing, over SSH and locally ----------------------------------------------------------------------


@NO_CRONTAB
def test_install_over_ssh_again_change_and_remove(ssh_home, crontab_saved, staging, tmp_path):
    target = f"hotload-test:{staging}"
    installed = run_in_process("schedule-save", "--to", target, "--at", "02:00")
    line = schedule.cron_line(str(staging), 2, 0)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.splitlines() == [
        f"{target}: installed in the crontab of {ssh_home.user} on hotload-test:", f"  {line}"]
    assert crontab_l() == OTHER_LINES + line.encode() + b"\n"

    again = run_in_process("schedule-save", "--to", target, "--at", "02:00")
    assert again.returncode == 0 and "already in the crontab" in again.stdout
    assert crontab_l() == OTHER_LINES + line.encode() + b"\n"

    moved = run_in_process("schedule-save", "--to", target, "--at", "03:30", "--json")
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    new_line = schedule.cron_line(str(staging), 3, 30)
    assert report == {"target": target, "action": "replaced", "staging": str(staging), "line": new_line,
                      "host": "hotload-test", "user": ssh_home.user, "previous": line, "note": ""}
    assert crontab_l() == OTHER_LINES + new_line.encode() + b"\n"

    # the installed entry, run as cron runs it, asks for a save
    [entry] = entries(staging)
    run_entry(entry.decode(), tmp_path)
    assert (staging / "load").read_bytes() == b"" and sorted(os.listdir(staging)) == ["load"]

    removed = run_in_process("schedule-save", "--to", target, "--remove")
    assert removed.returncode == 0 and removed.stdout.startswith(f"{target}: removed from the crontab of {ssh_home.user}")
    assert crontab_l() == OTHER_LINES
    none = run_in_process("schedule-save", "--to", target, "--remove")
    assert none.returncode == 0 and "nothing removed" in none.stdout and crontab_l() == OTHER_LINES


@NO_CRONTAB
def test_an_environment_gets_one_entry_per_staging_directory(ssh_home, crontab_saved, tmp_path, monkeypatch):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (tmp_path / "hotload.toml").write_text(f'[env.prod]\ntargets = ["{ssh_home.url(first)}", "{second}"]\n')
    monkeypatch.chdir(tmp_path)
    installed = run_in_process("schedule-save", "--env", "prod", "--at", "01:15")
    assert installed.returncode == 0, installed.stderr
    assert f"{ssh_home.url(first)}: installed in the crontab of {ssh_home.user} on 127.0.0.1:" in installed.stdout
    assert f"{second}: installed in the crontab of {ssh_home.user} on this machine:" in installed.stdout
    assert crontab_l() == OTHER_LINES + "".join(
        schedule.cron_line(str(folder), 1, 15) + "\n" for folder in (first, second)).encode()
    removed = run_in_process("schedule-save", "--env", "prod", "--remove")
    assert removed.returncode == 0 and removed.stdout.count("removed from the crontab") == 2
    assert crontab_l() == OTHER_LINES


@NO_CRONTAB
def test_a_local_path_uses_the_local_crontab(crontab_saved, tmp_path):
    missing = tmp_path / "not yet"
    done = run_in_process("schedule-save", "--to", missing, "--at", "00:00")
    assert done.returncode == 0 and "installed in the crontab of root on this machine" in done.stdout
    assert "does not exist yet" in done.stderr
    assert crontab_l() == OTHER_LINES + schedule.cron_line(str(missing), 0, 0).encode() + b"\n"
    assert run_in_process("schedule-save", "--to", missing, "--remove").returncode == 0
    assert crontab_l() == OTHER_LINES


# -- errors: one line, an exit code, no traceback ----------------------------------------------------------


def test_no_crontab_command_here_is_exit_5(tmp_path, monkeypatch):
    (tmp_path / "staging").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    done = run_in_process("schedule-save", "--to", tmp_path / "staging", "--at", "02:00")
    assert done.returncode == 5 and "there is no crontab command on this machine" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_crontab_that_refuses_is_exit_5(tmp_path, monkeypatch):
    (tmp_path / "staging").mkdir()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "crontab").write_text(
        "#!/bin/sh\n[ \"$1\" = -l ] && { echo 'no crontab for root' >&2; exit 1; }\n"
        "echo 'You (root) are not allowed to use this program (crontab)' >&2\nexit 1\n")
    (fake / "crontab").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    done = run_in_process("schedule-save", "--to", tmp_path / "staging", "--at", "02:00")
    assert done.returncode == 5 and len(done.stderr.strip().splitlines()) == 1
    assert "refused the new crontab (You (root) are not allowed to use this program (crontab))" in done.stderr


def test_no_crontab_on_the_server_is_exit_5(ssh_home, tmp_path, monkeypatch):
    def run(self, command, data=None):  # what a server without cron answers (bash)
        return 127, b"hotload-crontab-follows\n", b"bash: line 1: crontab: command not found\n"

    monkeypatch.setattr(schedule._SshCrontab, "_run", run)
    done = run_in_process("schedule-save", "--to", f"hotload-test:{tmp_path}", "--at", "02:00")
    assert done.returncode == 5 and len(done.stderr.strip().splitlines()) == 1
    assert "there is no crontab command on hotload-test; install cron there" in done.stderr


def test_an_sftp_only_account_is_exit_5(ssh_home, tmp_path, monkeypatch):
    monkeypatch.setattr(schedule._SshCrontab, "_run", lambda self, command, data=None: (0, b"", b""))
    done = run_in_process("schedule-save", "--to", f"hotload-test:{tmp_path}", "--remove")
    assert done.returncode == 5 and "runs no commands for" in done.stderr


def test_crontab_answers_are_read_as_one_line_errors():
    assert schedule._crontab_text(1, b"", b"no crontab for app\n", "on app1") == b""
    for code, err, says in [
        (127, b"sh: 1: crontab: not found\n", "no crontab command"),
        (1, b"crontab: Command not found.\n", "no crontab command"),
        (1, b"You (app) are not allowed to use this program (crontab)\nSee crontab(1) for more information\n",
         "crontab -l on app1 failed (You (app) are not allowed"),
    ]:
        with pytest.raises(TargetError, match=re.escape(says)) as raised:
            schedule._crontab_text(code, b"", err, "on app1")
        assert raised.value.exit_code == 5 and "\n" not in str(raised.value)
