"""Reading Monticello `.mcz` packages.

    >>> package = read_mcz("Teapot-Core-AttilaMagyar.84.mcz")
    >>> package.name, package.version.name, len(package.snapshot.classes)
    ('Teapot-Core', 'Teapot-Core-AttilaMagyar.84', 33)

Reads the zip members `package`, `version`, `dependencies/*` and
`snapshot/source.st`; `snapshot.bin` is never read.
"""

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import sexpr
from .chunks import ChunkError, Snapshot, read_source
from .errors import PackageError

SOURCE_MEMBER = "snapshot/source.st"


@dataclass(frozen=True)
class VersionInfo:
    name: str
    id: str = ""
    message: str = ""
    author: str = ""
    date: str = ""
    time: str = ""
    ancestors: Tuple["VersionInfo", ...] = ()
    step_children: Tuple["VersionInfo", ...] = ()

    @property
    def package_name(self) -> str:
        """`Grease-Core-JohanBrichau.97` -> `Grease-Core`."""
        base = self.name.rsplit(".", 1)[0] if self.name.rsplit(".", 1)[-1].isdigit() else self.name
        return base.rsplit("-", 1)[0] if "-" in base else base

    @property
    def number(self) -> Optional[int]:
        tail = self.name.rsplit(".", 1)[-1]
        return int(tail) if tail.isdigit() and "." in self.name else None

    def ancestry(self):
        """Every ancestor, depth first, each once."""
        seen = set()
        stack = list(reversed(self.ancestors))
        while stack:
            info = stack.pop()
            if info.id and info.id in seen:
                continue
            seen.add(info.id)
            yield info
            stack.extend(reversed(info.ancestors))


def parse_version_info(text: str) -> VersionInfo:
    """Parse a `version` member, resolving `(id '...')` back-references."""
    known: Dict[str, VersionInfo] = {}
    return _version_from(sexpr.parse(text), known)


def _version_from(expression, known) -> VersionInfo:
    pairs = sexpr.as_pairs(expression)
    if set(pairs) == {"id"}:
        reference = pairs["id"]
        if reference not in known:
            raise sexpr.SexprError(f"back-reference to unknown version id {reference!r}")
        return known[reference]
    if "name" not in pairs:
        raise sexpr.SexprError("a version without a name")
    ancestors = tuple(_version_from(item, known) for item in pairs.get("ancestors") or [])
    children = tuple(_version_from(item, known) for item in pairs.get("stepChildren") or [])
    info = VersionInfo(
        name=_text(pairs, "name"),
        id=_text(pairs, "id"),
        message=_text(pairs, "message"),
        author=_text(pairs, "author"),
        date=_text(pairs, "date"),
        time=_text(pairs, "time"),
        ancestors=ancestors,
        step_children=children,
    )
    if info.id:
        known[info.id] = info
    return info


def _text(pairs, key) -> str:
    value = pairs.get(key, "")
    if isinstance(value, list):
        raise sexpr.SexprError(f"{key} should be a string")
    return str(value)


@dataclass
class McPackage:
    path: Path
    name: str
    version: VersionInfo
    snapshot: Snapshot
    dependencies: Tuple[VersionInfo, ...] = ()
    size: int = 0
    _extensions: Optional[dict] = field(default=None, repr=False)

    def extended_classes(self) -> Dict[str, int]:
        """Classes defined elsewhere that this package adds methods to, with method counts."""
        if self._extensions is None:
            defined = self.snapshot.classes
            counts = self.snapshot.method_class_counts()  # without building the method objects
            self._extensions = {name: count for name, count in counts.items() if name not in defined}
        return self._extensions


def read_mcz(path) -> McPackage:
    """Read one .mcz, raising PackageError with a one-line reason."""
    path = Path(path)
    if path.suffix != ".mcz":
        raise PackageError(path, "not a .mcz file (Monticello packages end in .mcz)")
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PackageError(path, "no such file") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise PackageError(path, f"not a zip archive ({error})") from None
    with archive:
        names = set(archive.namelist())
        for member in ("package", "version", SOURCE_MEMBER):
            if member not in names:
                raise PackageError(path, f"missing member {member!r}: not a complete Monticello package")
        try:
            package_name = _read_package_name(archive.read("package"))
        except (sexpr.SexprError, KeyError) as error:
            raise PackageError(path, f"unparsable 'package' member: {error}") from None
        try:
            version = parse_version_info(sexpr.decode(archive.read("version")))
        except sexpr.SexprError as error:
            raise PackageError(path, f"unparsable 'version' member: {error}") from None
        dependencies = []
        for member in sorted(n for n in names if n.startswith("dependencies/") and not n.endswith("/")):
            try:
                dependencies.append(parse_version_info(sexpr.decode(archive.read(member))))
            except sexpr.SexprError as error:
                raise PackageError(path, f"unparsable {member!r}: {error}") from None
        try:
            snapshot = read_source(sexpr.decode(archive.read(SOURCE_MEMBER)))
        except ChunkError as error:
            raise PackageError(path, f"{SOURCE_MEMBER}: {error}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise PackageError(path, f"corrupt zip member ({error})") from None
    return McPackage(
        path=path,
        name=package_name,
        version=version,
        snapshot=snapshot,
        dependencies=tuple(dependencies),
        size=path.stat().st_size,
    )


def _read_package_name(data: bytes) -> str:
    pairs = sexpr.as_pairs(sexpr.parse(sexpr.decode(data)))
    name = pairs["name"]
    if not isinstance(name, str) or not name:
        raise sexpr.SexprError("the package has no name")
    return str(name)
