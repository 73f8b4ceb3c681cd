"""The interface every transport implements.

Names are plain file names inside the staging directory (or `failed/<id>/...`
for reading); a transport never reaches outside it.
"""

from abc import ABC, abstractmethod
from typing import Callable, List, Optional

Progress = Optional[Callable[[int], None]]


class Transport(ABC):
    #: shown to the user, e.g. "sftp://deploy@app1/srv/app/staging"
    description: str = ""
    #: the staging directory's absolute path on its machine
    root = ""

    @abstractmethod
    def ensure_directory(self) -> bool:
        """Create the staging directory with mode 0700 when missing; answer whether it was created."""

    @abstractmethod
    def make_folder(self, name: str) -> None:
        """Create the folder `name` inside the staging directory (mode 0700) if it is missing."""

    @abstractmethod
    def list_names(self, folder: str = "") -> List[str]:
        """Names of the entries in the staging directory, or in `folder` inside it."""

    @abstractmethod
    def read(self, name: str) -> Optional[bytes]:
        """The contents of `name`, or None when it does not exist."""

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Create or replace `name` with `data` (not atomic: write a temporary name, then rename)."""

    @abstractmethod
    def upload(self, local_path: str, name: str, progress: Progress = None) -> None:
        """Copy a local file to `name`, calling `progress(bytes_sent_since_last_call)`."""

    @abstractmethod
    def rename_replacing(self, source: str, target: str) -> None:
        """Rename atomically, replacing `target` if it exists."""

    @abstractmethod
    def rename_exclusive(self, source: str, target: str) -> bool:
        """Rename atomically unless `target` exists; answer False (and leave `source`) if it does."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Delete `name`; no error when it is already gone."""

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
