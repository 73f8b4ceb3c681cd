"""The loaded side of a target: its `loaded` record and the `.mcz` kept in `packages/` (docs/protocol.md).

    >>> versions = TargetPackages(transport)
    >>> versions.record.packages["Counter-App"].version
    'Counter-App-demo.1'
    >>> kept = versions.kept("Counter-App")       # KeptPackage: .package (an McPackage) or .problem
    >>> kept.package.version.name if kept.package else kept.problem
    'Counter-App-demo.1'
    >>> versions.diff(new_package).status         # a diff.PackageDiff
    'changed'

A kept file is trusted only when it is a regular file whose size and SHA-256 are those of the
record, and it reads as the package and version the record names. Anything else (no record, an
older loader, a missing, replaced, linked or damaged file) is a one-line `problem`, never an error:
only a failing connection or a file at the staging directory's path raises (TargetError, exit 5).
"""

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from hotload.staging import protocol
from hotload.staging.diff import UNCHANGED, PackageDiff
from hotload.errors import HotloadError, TargetError
from hotload.limits import how_to_raise, limits
from hotload.formats.mcz import McPackage, read_mcz
from hotload.staging.protocol import LoadedPackage, LoadedRecord
from hotload.staging.status import read_loaded
from hotload.staging.transports.base import FILE, FOLDER, Transport


@dataclass
class KeptPackage:
    """What the target keeps of one package: the record's line (None when not loaded) and the package read
    from `packages/<file>`, or a one-line problem saying why it cannot be used."""

    name: str
    loaded: Optional[LoadedPackage]
    package: Optional[McPackage] = None
    problem: str = ""
    data: bytes = field(default=b"", repr=False)  # the kept file's bytes, once trusted


class TargetPackages:
    """Reads `loaded` once, and each kept `.mcz` when first asked for."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self.record: Optional[LoadedRecord] = None
        self.problem = ""  # why the record cannot be used; then every package's diff is unavailable
        self._kept: Dict[str, KeptPackage] = {}
        self._read_record()

    def _read_record(self):
        where = self.transport.description
        if not self.transport.check_directory():
            self.problem = f"there is no staging directory at {where}; check the target"
            return
        state = read_loaded(self.transport)  # the one reader of `loaded` (status and push use it too)
        if state.missing:
            self.problem = (
                f"no loaded record at {where}: the loader there is older than this hotload (update it with "
                "`hotload install-loader`), or none has run yet"
            )
        elif state.problem:
            self.problem = f"the loaded record at {where} is unusable ({state.problem})"
        else:
            self.record = state.record

    def loaded(self, name: str) -> Optional[LoadedPackage]:
        return self.record.packages.get(name) if self.record else None

    def kept(self, name: str) -> KeptPackage:
        if name not in self._kept:
            self._kept[name] = self._read_kept(name)
        return self._kept[name]

    def _read_kept(self, name: str) -> KeptPackage:
        line = self.loaded(name)
        kept = KeptPackage(name, line)
        if line is None:
            return kept
        file = f"{protocol.PACKAGES}/{line.file}"

        def unavailable(why: str) -> KeptPackage:
            kept.problem = f"the loaded .mcz of {name} ({line.version}) is not kept on the server: {why}"
            return kept

        folder_kind = self.transport.kind(protocol.PACKAGES)
        if folder_kind != FOLDER:  # checked first: a link there would be followed by a look inside it
            return unavailable(
                f"{protocol.PACKAGES} is missing (an older loader?)" if folder_kind is None
                else f"{protocol.PACKAGES} is a {folder_kind}, not a folder"
            )
        kind = self.transport.kind(file)
        if kind is None:
            return unavailable(f"{file} is missing; it is kept again after the next push of {name}")
        if kind != FILE:
            return unavailable(f"{file} is a {kind}, not a file")
        limit = limits().max_mcz_bytes
        if line.size > limit:
            return unavailable(f"{file} is {line.size:,} bytes, over the limit of {limit:,} bytes (max_mcz_bytes); "
                               f"{how_to_raise('max_mcz_bytes')}")
        try:
            data = self.transport.read(file, limit=line.size)  # a larger file is not read whole
        except TargetError as error:
            if self.transport.lost:
                raise
            return unavailable(f"{file} does not match the loaded record ({error})")
        if data is None:
            return unavailable(f"{file} is missing; it is kept again after the next push of {name}")
        if len(data) != line.size or hashlib.sha256(data).hexdigest() != line.sha256:
            return unavailable(f"{file} does not match the size and SHA-256 of the loaded record")
        try:
            package = read_mcz_bytes(data, line.file)
        except HotloadError as error:
            return unavailable(f"{file} cannot be read ({getattr(error, 'problem', error)})")
        if package.name != name or package.version.name != line.version:
            return unavailable(f"{file} holds {package.version.name}, not {line.version}")
        kept.package, kept.data = package, data
        return kept

    def diff(self, new_package, source=None, author: Optional[str] = None) -> PackageDiff:
        """new_package (an McPackage) against what the image has loaded of it. With source (the
        sources.PackageSource new_package was packed from), the folder is packed again on top of the
        loaded version, as `push` packs it, so the new version is the one a push would send."""
        if self.record is None:
            return PackageDiff.unavailable(new_package, None, self.problem)
        kept = self.kept(new_package.name)
        if kept.loaded is None:
            return PackageDiff.of(new_package)
        if kept.package is None:
            return PackageDiff.unavailable(new_package, kept.loaded.version, kept.problem)
        if source is not None:
            repacked = self._packed_on_kept(source, kept, author)
            if repacked is not None:
                result = PackageDiff.of(repacked, kept.package, kept.loaded.version)
                if result.status == UNCHANGED:  # push sends nothing: the loaded version stays
                    result.new_version = kept.loaded.version
                return result
        return PackageDiff.of(new_package, kept.package, kept.loaded.version)

    @staticmethod
    def _packed_on_kept(source, kept: KeptPackage, author: Optional[str]) -> Optional[McPackage]:
        """The source packed with the kept .mcz as its ancestor; None when that cannot be done."""
        from hotload.formats.pack import Packer

        with tempfile.TemporaryDirectory(prefix="hotload-diff-") as folder:
            ancestor = Path(folder) / kept.loaded.file
            ancestor.write_bytes(kept.data)
            output = Path(folder) / "packed"
            output.mkdir()
            try:
                packed = Packer(author=author).pack_source(source, output, ancestor_path=ancestor)
                return read_mcz(packed.path)
            except HotloadError:
                return None  # e.g. the kept file is another package's: the folder as packed is compared


def read_mcz_bytes(data: bytes, file_name: str) -> McPackage:
    """An .mcz read from memory (through a private temporary file, removed at once)."""
    folder = tempfile.mkdtemp(prefix="hotload-kept-")
    path = os.path.join(folder, file_name if file_name.endswith(".mcz") else "kept.mcz")
    try:
        with open(path, "wb") as handle:
            handle.write(data)
        return read_mcz(path)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.rmdir(folder)
