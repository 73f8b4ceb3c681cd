"""A staging directory on this machine (the demo, tests, or a shared mount).

    >>> with LocalTransport("/srv/app/staging") as staging:
    ...     staging.write(".hotload-tmp-x", b"data")
"""

import errno
import os
import stat
import time
from pathlib import Path
from typing import List, Optional

from hotload.errors import TargetError
from hotload.staging.transports.base import (
    FILE, FOLDER, LINK, OTHER, Progress, Transport, copy_blocks, describe_os_error, translating_errors,
)

CHUNK = 1 << 20


def kind_of_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return FOLDER
    if stat.S_ISLNK(mode):
        return LINK
    return OTHER


class LocalTransport(Transport):
    def __init__(self, path):
        self.root = Path(path).expanduser().absolute()
        self.description = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def ensure_directory(self) -> bool:
        if self._take_made_by_probe():
            return True
        try:
            mode = os.lstat(self.root).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as error:
            raise TargetError(f"cannot use staging directory {self.root}: {describe_os_error(error)}") from None
        if mode is not None:
            if not stat.S_ISDIR(mode):
                raise TargetError(f"{self.root} is a {kind_of_mode(mode)}, not a folder; give a staging directory")
            return False
        try:
            self.root.mkdir(mode=0o700, parents=True)
            os.chmod(self.root, 0o700)
        except OSError as error:
            raise TargetError(f"cannot create staging directory {self.root}: {describe_os_error(error)}") from None
        return True

    @translating_errors
    def make_folder(self, name: str) -> None:
        try:
            os.mkdir(self._path(name), 0o700)
        except FileExistsError:
            if self.kind(name) != FOLDER:
                raise TargetError(f"{name} in {self.description} is a {self.kind(name)}, not a folder; remove it by hand") from None

    @translating_errors
    def root_kind(self) -> Optional[str]:
        try:
            return kind_of_mode(os.lstat(self.root).st_mode)
        except FileNotFoundError:
            return None

    @translating_errors
    def kind(self, name: str) -> Optional[str]:
        try:
            return kind_of_mode(os.lstat(self._path(name)).st_mode)
        except FileNotFoundError:
            return None

    @translating_errors
    def list_names(self, folder: str = "") -> List[str]:
        try:
            return sorted(os.listdir(self._path(folder) if folder else self.root))
        except FileNotFoundError:
            return []

    @translating_errors
    def _read_file(self, name: str, limit: int, tail: bool = False) -> bytes:
        descriptor = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise TargetError(f"{name} in {self.description} is not a regular file; remove it by hand")
            if tail and status.st_size > limit:
                handle.seek(status.st_size - limit)
                return handle.read(limit)
            return handle.read(limit + 1)

    @translating_errors
    def write(self, name: str, data: bytes) -> None:
        descriptor = os.open(self._path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)

    @translating_errors
    def upload(self, local_path: str, name: str, progress: Progress = None) -> None:
        descriptor = os.open(self._path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(local_path, "rb") as source, os.fdopen(descriptor, "wb") as out:
            copy_blocks(source, out.write, CHUNK, progress)
            out.flush()
            os.fsync(out.fileno())

    @translating_errors
    def rename_replacing(self, source: str, target: str) -> None:
        os.replace(self._path(source), self._path(target))

    @translating_errors
    def rename_exclusive(self, source: str, target: str) -> bool:
        if self.kind(source) == FOLDER:
            if self.kind(target) is not None:
                return False
            os.rename(self._path(source), self._path(target))  # the staging directory is 0700: no race
            return True
        try:
            os.link(self._path(source), self._path(target))
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP):
                raise
            # No hard links here (some network file systems): fall back to O_EXCL.
            try:
                descriptor = os.open(self._path(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as out:
                out.write(self._path(source).read_bytes())
        os.unlink(self._path(source))
        return True

    @translating_errors
    def _unlink(self, name: str) -> None:
        os.unlink(self._path(name))

    @translating_errors
    def _rmdir(self, name: str) -> None:
        os.rmdir(self._path(name))

    @translating_errors
    def mtime(self, name: str) -> Optional[float]:
        try:
            return os.lstat(self._path(name)).st_mtime
        except FileNotFoundError:
            return None

    def now(self) -> float:
        return time.time()
