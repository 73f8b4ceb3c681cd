"""Errors that the command line reports as one clear line each, and the one table of exit codes.

    >>> raise TargetError("cannot connect to app1:22: ...; check the host")   # exits 5
"""

#: The exit codes of every hotload command (README and `hotload --help` print this table).
EXIT_CODES = (
    (0, "success"),
    (1, "the loader failed the batch; the image was not saved"),
    (2, "bad input: arguments, packages or sources"),
    (3, "no usable loader: none running, another protocol version, or two images share the directory"),
    (4, "busy: another push holds the staging lock"),
    (5, "target or network error: cannot connect, permission, disk full, connection lost"),
    (6, "timed out waiting for the loader"),
    (70, "internal error: a bug in hotload; please report it with the command you ran"),
    (130, "interrupted (Ctrl-C)"),
)


def exit_code_table() -> str:
    return "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)


class HotloadError(Exception):
    """Base class: the message says what went wrong and what to do."""

    exit_code = 1


class BatchFailed(HotloadError):
    """The loader rejected or failed the batch."""

    exit_code = 1


class InputError(HotloadError):
    """Bad arguments, files or sources."""

    exit_code = 2


class PackageError(InputError):
    """A .mcz file that cannot be read; names the file."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class PlanError(InputError):
    """The batch as a whole cannot be planned (e.g. two versions of one package)."""


class ProtocolError(HotloadError):
    """A staging file that does not follow docs/protocol.md (written by the other side)."""

    exit_code = 5


class NoLoaderRunning(HotloadError):
    """No fresh heartbeat, a loader of another protocol version, or two loaders on one directory."""

    exit_code = 3


class LockBusy(HotloadError):
    """Another push holds the staging lock."""

    exit_code = 4


class TargetError(HotloadError):
    """The target cannot be reached or used: network, permissions, disk full, wrong kinds of entries."""

    exit_code = 5


class WaitTimeout(HotloadError):
    """The loader did not finish (or take a pending trigger) within the time allowed."""

    exit_code = 6
