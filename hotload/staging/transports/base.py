"""The interface every transport implements.

Names are paths inside the staging directory (`lock`, `<batch>/manifest`); a transport never
reaches outside it. Nothing follows a symbolic link: `kind` is read with lstat, `read` opens
regular files only, and `remove` deletes regular files only.

Every operating-system or connection error leaves a transport as a `TargetError` (exit 5)
that names the operation, the file and what to do.
"""

import errno
import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from hotload.errors import TargetError

Progress = Optional[Callable[[int], None]]

FILE, FOLDER, LINK, OTHER = "file", "folder", "symbolic link", "special file"


def copy_blocks(source, write: Callable[[bytes], object], size: int, progress: Progress = None) -> None:
    """Read `source` to its end in blocks of `size` bytes, handing each to `write` and its length to `progress`."""
    while True:
        block = source.read(size)
        if not block:
            return
        write(block)
        if progress:
            progress(len(block))

_ADVICE = {
    errno.ENOSPC: "the disk is full; free space on the server and push again",
    errno.EDQUOT: "the disk quota is exhausted; free space on the server and push again",
    errno.EACCES: "permission denied; check the owner and mode of the staging directory",
    errno.EPERM: "operation not permitted; check the owner and mode of the staging directory",
    errno.EROFS: "the file system is read-only; remount it or choose another staging directory",
    errno.ENOTDIR: "a file stands where a folder belongs; check the staging directory",
    errno.EISDIR: "a folder stands where a file belongs; check the staging directory",
}


def describe_os_error(error: BaseException) -> str:
    code = getattr(error, "errno", None)
    if code in _ADVICE:
        return _ADVICE[code]
    if isinstance(error, TimeoutError):
        return "the other side did not answer in time; check the network and push again"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    if text == "Failure":  # SFTP's status without a reason (OpenSSH sends it for ENOSPC, EROFS, EDQUOT, ...)
        return (
            "the server refused without saying why (over SFTP that is most often a full disk, a read-only "
            "file system or an exhausted quota); check the staging directory's disk, then push again"
        )
    return f"{text}; check the connection and the staging directory, then push again"


def translating_errors(method):
    """Turn OSError, EOFError and connection errors raised by `method` into one-line TargetErrors."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.lost:
            raise TargetError(self.lost)
        try:
            return method(self, *args, **kwargs)
        except (TargetError, FileNotFoundError):
            raise  # a missing file is an answer the callers handle
        except self.connection_errors as error:
            what = args[0] if args else ""
            operation = method.__name__.strip("_").replace("_", " ")
            detail = self._connection_lost(error) or describe_os_error(error)
            raise TargetError(f"{operation} {what} at {self.description} failed: {detail}".replace("  ", " ")) from None

    return wrapper


@dataclass
class Probed:
    """One file as `Transport.probe` found it: its kind (lstat), and for a regular file its contents or the
    error `Transport.read` would have raised."""

    kind: Optional[str]
    data: Optional[bytes] = None
    error: Optional[BaseException] = None

    def read(self) -> Optional[bytes]:
        """What `Transport.read` answers for this file (None when missing), or the error it raises."""
        if self.error is not None:
            raise self.error
        return self.data


@dataclass
class Probe:
    """The staging directory's kind and some files in it, read together (`Transport.probe`)."""

    root: Optional[str]
    files: Dict[str, Probed] = field(default_factory=dict)


class Transport(ABC):
    #: shown to the user, e.g. "sftp://deploy@app1/srv/app/staging"
    description: str = ""
    #: the staging directory's absolute path on its machine
    root = ""
    #: exceptions that mean the target failed (not a bug in hotload)
    connection_errors = (OSError, EOFError)
    #: once the connection is lost: the message every later operation fails with at once
    lost: Optional[str] = None

    #: the staging directory was made by `probe(make_root=True)`: the next `ensure_directory` answers True
    _made_by_probe = False

    def _connection_lost(self, error: BaseException) -> Optional[str]:
        """When `error` means the connection is gone: mark it lost and answer what to tell the user."""
        return None

    @abstractmethod
    def ensure_directory(self) -> bool:
        """Create the staging directory with mode 0700 when missing; answer whether it was created."""

    @abstractmethod
    def make_folder(self, name: str) -> None:
        """Create the folder `name` (mode 0700) if missing; TargetError if something else stands there."""

    @abstractmethod
    def root_kind(self) -> Optional[str]:
        """The kind of the staging directory itself (FOLDER when usable), or None when it is missing."""

    def check_directory(self, kind: Optional[str] = "unknown") -> bool:
        """Whether the staging directory exists; TargetError when something else stands at its path.
        `kind` is the directory's kind when already known (from a `probe`)."""
        if kind == "unknown":
            kind = self.root_kind()
        if kind not in (None, FOLDER):
            raise TargetError(f"{self.description} is a {kind}, not a folder; give a staging directory")
        return kind is not None

    def _take_made_by_probe(self) -> bool:
        made, self._made_by_probe = self._made_by_probe, False
        return made

    def probe(self, limits: Dict[str, int], make_root: bool = False) -> Probe:
        """The staging directory's kind and, for each name of `limits`, its kind and (a regular file) its
        contents up to its limit, as `kind` and `read` would answer them. A transport may send the requests
        together (SFTP: one round trip for every lstat, one for the opens, one for the reads).

        With `make_root`, the staging directory is made first when it is missing (mode 0700, as
        `ensure_directory`, which then answers True once): for a push, which makes it anyway."""
        root = self.root_kind()
        if make_root and root is None:
            self._made_by_probe = self.ensure_directory()
            root = FOLDER
        files = {}
        for name, limit in limits.items():
            kind = self.kind(name) if root in (FOLDER, LINK) else None
            probed = Probed(kind)
            if kind is not None:
                try:
                    probed.data = self.read(name, limit)
                    probed.kind = FILE if probed.data is not None else None
                except TargetError as error:
                    if self.lost:
                        raise
                    probed.error = error
            files[name] = probed
        return Probe(root, files)

    def write_ahead(self, name: str, data: Optional[bytes] = None) -> None:
        """`name` is written next by `write(name, data)`: a transport may start now (SFTP opens the file
        behind the next request it sends, and with `data` writes it too), so that `write` then waits less.
        Only for hotload's temporary names. Nothing here."""

    def list_ahead(self, folder: str = "") -> None:
        """`list_names(folder)` comes next: a transport may start the listing now, behind the next request it
        sends (SFTP: its opendir behind the rename that takes the lock). Nothing here."""

    def make_folder_ahead(self, name: str) -> None:
        """`make_folder(name)` comes next: a transport may send the mkdir now, behind the next request it sends
        (SFTP: behind the rename that takes the lock), so that `make_folder` then only waits for its answer.
        Only for hotload's temporary folders. Nothing here."""

    def read_ahead(self, name: str) -> None:
        """`name` is read next by `read(name)` (a small file): a transport may start now, one step (lstat,
        open, read) behind each request it sends meanwhile. Nothing here."""

    def discard_ahead(self, remove: bool = False) -> None:
        """Forget what `write_ahead` and `read_ahead` started; with `remove`, delete the files written
        ahead (when no clean-up follows). Nothing here."""

    @abstractmethod
    def kind(self, name: str) -> Optional[str]:
        """FILE, FOLDER, LINK or OTHER (FIFO, device, socket) by lstat, or None when missing."""

    @abstractmethod
    def list_names(self, folder: str = "") -> List[str]:
        """Names of the entries in the staging directory, or in `folder` inside it."""

    @abstractmethod
    def _read_file(self, name: str, limit: int, tail: bool = False) -> bytes:
        """The contents of the regular file `name`, at most limit + 1 bytes (with `tail`: its last `limit`
        bytes). A file larger than `limit` is not read whole."""

    def read(self, name: str, limit: int = 1 << 20, tail: bool = False) -> Optional[bytes]:
        """The contents of the regular file `name`, or None when missing; never opens a link or a FIFO.
        With `tail`, the last `limit` bytes of a larger file (e.g. a long history.log)."""
        kind = self.kind(name)
        if kind is None:
            return None
        if kind != FILE:
            raise TargetError(
                f"{name} in {self.description} is a {kind}, not a file; hotload did not write it, "
                "so it is left alone: remove it by hand"
            )
        try:
            data = self._read_file(name, limit, tail)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise self._too_large(name, limit)
        return data

    def _too_large(self, name: str, limit: int) -> TargetError:
        return TargetError(f"{name} in {self.description} is larger than {limit} bytes; hotload never writes such a file")

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Create or replace `name` with `data` (not atomic: write a temporary name, then rename)."""

    @abstractmethod
    def upload(self, local_path: str, name: str, progress: Progress = None) -> None:
        """Copy a local file to `name`, calling `progress(bytes_sent_since_last_call)`."""

    def upload_many(
        self, items, progress: Optional[Callable[[str, int], None]] = None,
        on_file: Optional[Callable[[str], None]] = None,
    ) -> None:
        """Write each `(local path or bytes, name)` of `items`, in order, calling `on_file(name)` before each
        and `progress(name, bytes_sent_since_last_call)`. Returns when every file is complete (written and
        closed without error); the first failure raises. A transport may overlap the files (SFTP pipelines
        them), so nothing may depend on one of them before this returns."""
        for source, name in items:
            if on_file:
                on_file(name)
            if isinstance(source, (bytes, bytearray)):
                self.write(name, bytes(source))
            else:
                self.upload(source, name, (lambda sent, name=name: progress(name, sent)) if progress else None)

    @abstractmethod
    def rename_replacing(self, source: str, target: str) -> None:
        """Rename atomically, replacing `target` if it exists."""

    @abstractmethod
    def rename_exclusive(self, source: str, target: str) -> bool:
        """Rename atomically unless `target` exists; answer False (and leave `source`) if it does."""

    @abstractmethod
    def _unlink(self, name: str) -> None:
        """Delete the file `name` (FileNotFoundError when missing)."""

    @abstractmethod
    def _rmdir(self, name: str) -> None:
        """Delete the empty folder `name`."""

    def remove(self, name: str) -> bool:
        """Delete `name` if it is a regular file; answer whether it is gone. Links, folders and
        special files are never removed."""
        kind = self.kind(name)
        if kind is None:
            return True
        if kind != FILE:
            return False
        try:
            self._unlink(name)
        except FileNotFoundError:
            pass
        return True

    def remove_folder(self, name: str) -> bool:
        """Delete `name` if it is an empty folder; answer whether it is gone."""
        kind = self.kind(name)
        if kind is None:
            return True
        if kind != FOLDER or self.list_names(name):
            return False
        try:
            self._rmdir(name)
        except FileNotFoundError:
            pass
        return True

    @abstractmethod
    def mtime(self, name: str) -> Optional[float]:
        """The modification time of `name` on the server's clock, or None when it does not exist."""

    @abstractmethod
    def now(self) -> float:
        """The server's clock: the modification time of a file just written there."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
