"""Package sources kept in git: Tonel and FileTree folders, read into package snapshots.

    >>> packages = read_sources("src")                  # a repository folder, or one package folder
    >>> [(p.name, p.kind, len(p.snapshot.classes)) for p in packages]
    [('Neo-JSON-Core', 'tonel', 13), ('Neo-JSON-Tests', 'tonel', 17)]

A folder holding `package.st` is a Tonel package; a folder named `Name.package` is a FileTree
package; any other folder is a repository whose packages are found inside it (directly, through
the `srcDirectory` of its `.project` file, or one level down, e.g. `src/` or `repository/`).
Every problem is a SourceError naming the file and line.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from hotload.formats.chunks import ChunkError, Snapshot, method_selector
from hotload.errors import InputError
from hotload.formats.mcz import VersionInfo


class SourceError(InputError):
    """A Tonel or FileTree source that cannot be read: `file:line: what is wrong`."""

    def __init__(self, path, problem: str, line: Optional[int] = None):
        self.path = _one_line(str(path))
        self.line = line
        self.problem = _one_line(problem)
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {self.problem}")


_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    """Line breaks quoted from a source are shown escaped: an error is one line."""
    return _LINE_BREAKS.sub(lambda match: repr(match.group())[1:-1], text)


@dataclass
class PackageSource:
    """One package read from a source folder, ready for `Packer.pack_source`.

        >>> package = read_package(Path("src/Shop-Core"))
        >>> package.kind, sorted(package.snapshot.classes), package.initializers()
        ('tonel', ['Cart', 'Order'], ['Cart'])
    """

    name: str
    path: Path
    kind: str  # "tonel" or "filetree"
    snapshot: Snapshot
    class_traits: Dict[str, str] = field(default_factory=dict)  # class name -> class-side trait composition
    version: Optional[VersionInfo] = None  # FileTree's monticello.meta/version, when written

    def initializers(self) -> List[str]:
        """Classes with a class-side #initialize, which Monticello runs after loading."""
        return [m.class_name for m in self.snapshot.methods if m.meta and pattern_selector(m.source) == "initialize"]




#: Tonel's and FileTree's class types -> the class definition message Monticello writes
CLASS_KINDS = {
    "normal": "subclass",
    "variable": "variableSubclass",
    "bytes": "variableByteSubclass",
    "words": "variableWordSubclass",
    "weak": "weakSubclass",
    "ephemeron": "ephemeronSubclass",
    "immediate": "immediateSubclass",
    "compiledMethod": "variableByteSubclass",
}

def pattern_selector(source: str) -> Optional[str]:
    """The selector of a method source (`at: i put: x ...` -> `at:put:`), or None when it has no message pattern."""
    try:
        return method_selector(source)
    except ChunkError:
        return None


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def read_text(path: Path) -> str:
    """A source file as text with LF line ends; a file that is not UTF-8 is a SourceError."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(path, f"cannot be read ({error.strerror or error}); check the path") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SourceError(path, f"is not UTF-8 text (byte {data[error.start]:#04x}); save it as UTF-8", line) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def folder_kind(folder: Path) -> Optional[str]:
    """"tonel" or "filetree" for a package folder, None for any other folder."""
    if folder.name.endswith(".package"):
        return "filetree"
    if (folder / "package.st").is_file():
        return "tonel"
    return None


def package_folders(folder: Path) -> List[Path]:
    """The package folders in a package or repository folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(folder, "is not a folder; name a Tonel or FileTree package folder, or a repository folder")
    if folder_kind(folder):
        return [folder]
    found = _packages_in(folder)
    if not found:
        source_directory = _project_source_directory(folder)
        if source_directory is not None and source_directory.is_dir():
            found = _packages_in(source_directory)
    if not found:
        for child in list_folder(folder):
            if child.is_dir() and not child.name.startswith("."):
                found.extend(_packages_in(child))
    if not found:
        raise SourceError(
            folder,
            "holds no Tonel package (a folder with package.st) and no FileTree package (a Name.package folder)",
        )
    return found


def list_folder(folder: Path) -> List[Path]:
    """The entries of a folder, sorted; an unreadable folder is a SourceError."""
    try:
        return sorted(folder.iterdir())
    except OSError as error:
        raise SourceError(folder, f"cannot be listed ({error.strerror or error}); check its permissions") from None


def _packages_in(folder: Path) -> List[Path]:
    return [child for child in list_folder(folder) if child.is_dir() and folder_kind(child)]


def _project_source_directory(folder: Path) -> Optional[Path]:
    """The `srcDirectory` named by Iceberg's `.project` file (`{ 'srcDirectory' : 'src' }`)."""
    project = folder / ".project"
    if not project.is_file():
        return None
    match = re.search(r"""['#]srcDirectory'?\s*:\s*'((?:[^'\\]|\\.)*)'""", project.read_text("utf-8", "replace"))
    if not match or not match.group(1):
        return None
    return folder / match.group(1)


def read_package(folder: Path) -> PackageSource:
    """One Tonel or FileTree package folder."""
    kind = folder_kind(folder)
    if kind == "tonel":
        from hotload.formats.tonel import read_tonel_package

        return read_tonel_package(folder)
    if kind == "filetree":
        from hotload.formats.filetree import read_filetree_package

        return read_filetree_package(folder)
    raise SourceError(folder, "is neither a Tonel package (no package.st) nor a FileTree package (not Name.package)")


def read_sources(folder) -> List[PackageSource]:
    """Every package in a package or repository folder; two packages of one name are refused."""
    packages, seen = [], {}
    for package_folder in package_folders(Path(folder)):
        package = read_package(package_folder)
        if package.name in seen:
            raise SourceError(package_folder, f"is package {package.name}, as is {seen[package.name]}; keep one of them")
        seen[package.name] = package_folder
        packages.append(package)
    return packages
