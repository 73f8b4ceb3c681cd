"""Errors that the command line reports as one clear line each."""


class HotloadError(Exception):
    """Base class: the message says what went wrong and what to do."""

    exit_code = 1


class PackageError(HotloadError):
    """A .mcz file that cannot be read; names the file."""

    exit_code = 2

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class PlanError(HotloadError):
    """The batch as a whole cannot be planned (e.g. two versions of one package)."""

    exit_code = 2


class ProtocolError(HotloadError):
    """A staging file that does not follow docs/protocol.md."""

    exit_code = 2


class TargetError(HotloadError):
    """The target cannot be reached or used."""

    exit_code = 2


class LockBusy(HotloadError):
    """Another push holds the staging lock."""

    exit_code = 4


class NoLoaderRunning(HotloadError):
    """No fresh heartbeat in the staging directory."""

    exit_code = 3
