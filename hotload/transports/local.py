"""A staging directory on this machine (the demo, tests, or a shared mount).

    >>> with LocalTransport("/srv/app/staging") as staging:
    ...     staging.write(".hotload-tmp-x", b"data")
"""

import errno
import os
import shutil
import time
from pathlib import Path
from typing import List, Optional

from ..errors import TargetError
from .base import Progress, Transport

CHUNK = 1 << 20


class LocalTransport(Transport):
    def __init__(self, path):
        self.root = Path(path).expanduser().absolute()
        self.description = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def ensure_directory(self) -> bool:
        if self.root.is_dir():
            return False
        try:
            self.root.mkdir(mode=0o700, parents=True)
        except OSError as error:
            raise TargetError(f"cannot create staging directory {self.root}: {error.strerror}") from None
        os.chmod(self.root, 0o700)
        return True

    def make_folder(self, name: str) -> None:
        self._path(name).mkdir(mode=0o700, exist_ok=True)

    def list_names(self, folder: str = "") -> List[str]:
        try:
            return sorted(os.listdir(self._path(folder) if folder else self.root))
        except FileNotFoundError:
            return []

    def read(self, name: str) -> Optional[bytes]:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        with open(self._path(name), "wb") as out:
            out.write(data)

    def upload(self, local_path: str, name: str, progress: Progress = None) -> None:
        with open(local_path, "rb") as source, open(self._path(name), "wb") as out:
            while True:
                block = source.read(CHUNK)
                if not block:
                    break
                out.write(block)
                if progress:
                    progress(len(block))
            out.flush()
            os.fsync(out.fileno())

    def rename_replacing(self, source: str, target: str) -> None:
        os.replace(self._path(source), self._path(target))

    def rename_exclusive(self, source: str, target: str) -> bool:
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

    def remove(self, name: str) -> None:
        path = self._path(name)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass

    def mtime(self, name: str) -> Optional[float]:
        try:
            return self._path(name).stat().st_mtime
        except FileNotFoundError:
            return None

    def now(self) -> float:
        return time.time()
