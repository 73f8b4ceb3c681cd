"""Runs the `hotload` command line in this process (click's CliRunner): the same code as
`python -m hotload`, without a new interpreter each time. Use `conftest.run_hotload` (a child
process) for anything that could hang, that gets signals, or whose SSH connection is cut.

HOME (for ~/.ssh/config) comes from the environment of this process: use the `ssh_home` fixture.
"""

import subprocess

from click.testing import CliRunner

from hotload.cli import main


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1 (the last for Python 3.9) mixes stderr in by default
    except TypeError:
        return CliRunner()  # click 8.2 and later: stderr is always apart, and mix_stderr is gone


def run_in_process(*args) -> subprocess.CompletedProcess:
    result = _runner().invoke(main, [str(a) for a in args], prog_name="hotload")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"hotload {args} raised {result.exception!r}") from result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
