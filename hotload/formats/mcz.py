"""Reading Monticello `.mcz` packages.

    >>> package = read_mcz("Teapot-Core-AttilaMagyar.84.mcz")
    >>> package.name, package.version.name, len(package.snapshot.classes)
    ('Teapot-Core', 'Teapot-Core-AttilaMagyar.84', 33)

Reads the zip members `package`, `version`, `dependencies/*` and
`snapshot/source.st`; `snapshot.bin` is never read.
"""

import bisect
import io
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from hotload.formats import sexpr
from hotload.formats.chunks import ChunkError, Snapshot, read_source, source_plan_facts
from hotload.errors import PackageError
from hotload.limits import how_to_raise, limits

SOURCE_MEMBER = "snapshot/source.st"


@dataclass(frozen=True)
class VersionInfo:
    name: str
    id: str = ""
    message: str = ""
    author: str = ""
    date: str = ""
    time: str = ""
    # Histories are thousands of versions deep: equality, hashing and repr leave them out.
    ancestors: Tuple["VersionInfo", ...] = field(default=(), compare=False, repr=False)
    step_children: Tuple["VersionInfo", ...] = field(default=(), compare=False, repr=False)

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
    """Parse a `version` member, resolving `(id '...')` back-references.

    Monticello nests each ancestor inside its successor, one level per version, so a long
    history is thousands of levels deep: this walks the tree with an explicit stack.
    """
    return _version_from(sexpr.parse(text))


class _Pending:
    """A version whose ancestors and step children are being read."""

    __slots__ = ("pairs", "items", "ancestor_count", "done")

    def __init__(self, expression):
        self.pairs = sexpr.as_pairs(expression)
        if "name" not in self.pairs:
            raise sexpr.SexprError("a version without a name")
        ancestors, children = _list(self.pairs, "ancestors"), _list(self.pairs, "stepChildren")
        self.items = ancestors + children
        self.ancestor_count = len(ancestors)
        self.done = []

    def build(self) -> VersionInfo:
        return VersionInfo(
            name=_text(self.pairs, "name"),
            id=_text(self.pairs, "id"),
            message=_text(self.pairs, "message"),
            author=_text(self.pairs, "author"),
            date=_text(self.pairs, "date"),
            time=_text(self.pairs, "time"),
            ancestors=tuple(self.done[: self.ancestor_count]),
            step_children=tuple(self.done[self.ancestor_count :]),
        )


def _version_from(expression) -> VersionInfo:
    """Each version is built after its ancestors and step children, so a back-reference names one read before."""
    known: Dict[str, VersionInfo] = {}
    stack = [_Pending(expression)]
    while True:
        top = stack[-1]
        if len(top.done) < len(top.items):
            item = top.items[len(top.done)]
            reference = _back_reference(item)
            if reference is None:
                stack.append(_Pending(item))
            elif reference in known:
                top.done.append(known[reference])
            else:
                raise sexpr.SexprError(f"back-reference to unknown version id {reference!r}")
            continue
        info = stack.pop().build()
        if info.id:
            known[info.id] = info
        if not stack:
            return info
        stack[-1].done.append(info)


def _back_reference(expression) -> Optional[str]:
    """The id of an `(id '...')` back-reference, or None for a full version."""
    if not (isinstance(expression, list) and len(expression) == 2):
        return None
    key, value = expression
    if isinstance(key, sexpr.Symbol) and key == "id":
        if isinstance(value, list):
            raise sexpr.SexprError("id should be a string")
        return str(value)
    return None


def _list(pairs, key) -> list:
    value = pairs.get(key) or []
    if not isinstance(value, list):
        raise sexpr.SexprError(f"{key} should be a list")
    return value


def _text(pairs, key) -> str:
    value = pairs.get(key, "")
    if isinstance(value, list):
        raise sexpr.SexprError(f"{key} should be a string")
    return str(value)


@dataclass(frozen=True)
class PlanFacts:
    """What planning reads of a package: names, classes with what they need, and method counts."""

    name: str  # the package's name
    version: str  # the version's name (its history is not part of a plan)
    dependencies: Tuple[str, ...]  # version names of the `dependencies/*` members, in member order
    classes: Tuple[Tuple[str, Optional[str], Tuple[str, ...]], ...]  # (name, superclass, traits), source order
    methods: Tuple[Tuple[str, int], ...]  # (class name, methods), in order of each class's first method

    def method_count(self) -> int:
        return sum(count for _, count in self.methods)

    def extended_classes(self) -> Dict[str, int]:
        """Classes defined elsewhere that this package adds methods to, with method counts."""
        defined = {name for name, _, _ in self.classes}
        return {name: count for name, count in self.methods if name not in defined}


@dataclass
class McPackage:
    path: Path
    name: str
    version: VersionInfo
    snapshot: Snapshot
    dependencies: Tuple[VersionInfo, ...] = ()
    size: int = 0
    _extensions: Optional[dict] = field(default=None, repr=False)
    _facts: Optional[PlanFacts] = field(default=None, repr=False, compare=False)

    def extended_classes(self) -> Dict[str, int]:
        """Classes defined elsewhere that this package adds methods to, with method counts."""
        if self._extensions is None:
            defined = self.snapshot.classes
            counts = self.snapshot.method_class_counts()  # without building the method objects
            self._extensions = {name: count for name, count in counts.items() if name not in defined}
        return self._extensions

    @property
    def facts(self) -> PlanFacts:
        """What planning reads of this package (read_plan_facts reads the same, and only that, from a file)."""
        if self._facts is None:
            self._facts = PlanFacts(
                name=self.name,
                version=self.version.name,
                dependencies=tuple(dependency.name for dependency in self.dependencies),
                classes=tuple(
                    (name, definition.superclass, tuple(definition.traits) + tuple(definition.class_traits))
                    for name, definition in self.snapshot.classes.items()
                ),
                methods=tuple(self.snapshot.method_class_counts().items()),
            )
        return self._facts

    def full(self) -> "McPackage":
        return self


class PlannedPackage:
    """A package as planning reads it (path, size and PlanFacts); the whole package is read from the
    file the first time anything else is asked for (`version`, `snapshot`, `dependencies`, `full()`)."""

    def __init__(self, path: Path, size: int, facts: PlanFacts):
        self.path = path
        self.size = size
        self.facts = facts
        self._full: Optional[McPackage] = None

    @property
    def name(self) -> str:
        return self.facts.name

    def extended_classes(self) -> Dict[str, int]:
        return self.facts.extended_classes()

    def full(self) -> McPackage:
        if self._full is None:
            self._full = read_mcz(self.path)
        return self._full

    @property
    def version(self) -> VersionInfo:
        return self.full().version

    @property
    def snapshot(self) -> Snapshot:
        return self.full().snapshot

    @property
    def dependencies(self) -> Tuple[VersionInfo, ...]:
        return self.full().dependencies

    def __repr__(self):
        return f"PlannedPackage({str(self.path)!r}, {self.facts.version!r})"


def read_mcz(path) -> McPackage:
    """Read one .mcz, raising PackageError with a one-line reason: what is wrong; what to do."""
    path = Path(path)
    _check_suffix(path)
    limit = limits()
    return _read_mcz_data(path, _read_file(path, limit.max_mcz_bytes), limit.max_member_bytes)


def _check_suffix(path: Path):
    if path.suffix != ".mcz":
        raise PackageError(path, "not a .mcz file (Monticello packages end in .mcz)")


def _read_mcz_data(path: Path, data: bytes, max_member_bytes: int) -> McPackage:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError as error:
        raise PackageError(path, f"a member name is not valid UTF-8 ({error.reason}); {_DAMAGED}") from None
    except _ZIP_ERRORS as error:
        raise PackageError(path, f"not a zip archive, or a truncated one ({_reason(error)}); {_DAMAGED}") from None
    with archive:
        reader = _MemberReader(path, archive, max_member_bytes)
        package_name = reader.parse("package", _read_package_name)
        version = reader.parse("version", parse_version_info)
        dependencies = tuple(reader.parse(name, parse_version_info) for name in reader.dependency_names)
        snapshot = reader.parse(SOURCE_MEMBER, read_source)
    return McPackage(
        path=path,
        name=package_name,
        version=version,
        snapshot=snapshot,
        dependencies=dependencies,
        size=len(data),
    )


# -- reading for a plan ---------------------------------------------------------------


def read_planned(path) -> PlannedPackage:
    """Read what planning needs of one .mcz: `read_mcz`'s checks and errors, without building what
    a plan does not use (methods, class variables, comments, the versions' history)."""
    path = Path(path)
    _check_suffix(path)
    limit = limits()
    data = _read_file(path, limit.max_mcz_bytes)
    return PlannedPackage(path, len(data), plan_facts_of(path, data, limit.max_member_bytes))


def plan_facts_of(path: Path, data: bytes, max_member_bytes: int) -> PlanFacts:
    """PlanFacts of a .mcz's bytes. An archive in the plain form Monticello and hotload write is read
    here; anything else, and any error, goes through read_mcz's reader, which raises its errors.

    The versions (`version`, `dependencies/*`) are read for their names only, when they begin the
    usual way, `(name '...'`: a damaged history further on is found by `read_mcz` (push, pack), not here.
    """
    members = _plain_members(data, max_member_bytes)
    if members is not None:
        try:
            source_classes, method_counts = source_plan_facts(sexpr.decode(members[SOURCE_MEMBER]))
            return PlanFacts(
                name=_read_package_name(sexpr.decode(members["package"])),
                version=_version_name(sexpr.decode(members["version"])),
                dependencies=tuple(
                    _version_name(sexpr.decode(members[name])) for name in sorted(members) if name.startswith("dependencies/")
                ),
                classes=source_classes,
                methods=tuple(method_counts.items()),
            )
        except (ChunkError, sexpr.SexprError):
            pass
    return _read_mcz_data(path, data, max_member_bytes).facts


_VERSION_NAME = re.compile(r"\s*\(\s*name\s+'((?:[^']|'')*)'[\s()]")


def _version_name(text: str) -> str:
    """The name of a `version` member: read from its beginning when it is the first key, as Monticello
    writes it; otherwise the whole member is parsed."""
    match = _VERSION_NAME.match(text)
    if match:
        return match.group(1).replace("''", "'")
    return parse_version_info(text).name


_END_RECORD = struct.Struct("<4s4H2LH")
_CENTRAL_ENTRY = struct.Struct("<4s6H3L5H2L")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_NEWEST_ZIP_VERSION = 63  # what zipfile extracts (6.3)
_FLAGS_READ_PLAINLY = 0x8 | 0x800  # a data descriptor, UTF-8 names; anything else (encryption, patches) is not plain


def _plain_members(data: bytes, max_member_bytes: int) -> Optional[Dict[str, bytes]]:
    """The members planning reads (`package`, `version`, `snapshot/source.st`, `dependencies/*`),
    inflated and CRC-checked, when the archive is plain: no comment, no zip64, no extra fields in the
    central directory, ASCII names each once, stored or deflated data that inflates to exactly its
    size, no member's data running into the next. None otherwise: read_mcz's reader then decides.
    """
    end = len(data) - _END_RECORD.size
    if end < 0 or data[end : end + 4] != b"PK\x05\x06" or data[end - 20 : end - 16] == b"PK\x06\x07":
        return None
    _, disk, directory_disk, disk_entries, entries, directory_size, directory_offset, comment = _END_RECORD.unpack_from(data, end)
    if disk or directory_disk or disk_entries != entries or comment or directory_offset + directory_size != end:
        return None
    found = {}
    offsets = []
    position = directory_offset
    for _ in range(entries):
        if position + _CENTRAL_ENTRY.size > end:
            return None
        (signature, _, needed, flags, method, _, _, crc, compressed, size, name_length, extra_length, comment_length,
         _, _, _, offset) = _CENTRAL_ENTRY.unpack_from(data, position)
        name = data[position + 46 : position + 46 + name_length]
        position += 46 + name_length + extra_length + comment_length
        if (
            signature != b"PK\x01\x02"
            or needed & 0xFF > _NEWEST_ZIP_VERSION
            or extra_length
            or flags & ~_FLAGS_READ_PLAINLY
            or not name.isascii()
        ):
            return None
        text = name.decode("ascii")
        if text in found:
            return None
        found[text] = (method, crc, compressed, size, offset, name)
        offsets.append(offset)
    if position != end:
        return None
    offsets.append(directory_offset)
    offsets.sort()
    wanted = [name for name in found if name in _USED_NAMES or (name.startswith("dependencies/") and not name.endswith("/"))]
    if len([name for name in wanted if name in _USED_NAMES]) != len(_USED_NAMES):
        return None
    members = {}
    for text in wanted:
        method, crc, compressed, size, offset, name = found[text]
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or size > max_member_bytes:
            return None
        if offset + _LOCAL_HEADER.size > end:
            return None
        signature, _, local_flags, _, _, _, _, _, _, name_length, extra_length = _LOCAL_HEADER.unpack_from(data, offset)
        start = offset + _LOCAL_HEADER.size + name_length + extra_length
        later = bisect.bisect_right(offsets, offset)
        if later == len(offsets):
            return None  # a member said to start past the central directory: read_mcz judges it
        following = offsets[later]  # the next entry or the central directory
        if (
            signature != b"PK\x03\x04"
            or local_flags & ~_FLAGS_READ_PLAINLY
            or data[offset + _LOCAL_HEADER.size : offset + _LOCAL_HEADER.size + name_length] != name
            or offset + _LOCAL_HEADER.size + compressed > following
            or start + compressed > following
        ):
            return None
        raw = data[start : start + compressed]
        if method == zipfile.ZIP_STORED:
            content = raw
        else:
            inflater = zlib.decompressobj(-15)
            try:
                content = inflater.decompress(raw, size + 1)
            except zlib.error:
                return None
            if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
                return None
        if len(content) != size or zlib.crc32(content) != crc:
            return None
        members[text] = content
    return members


# Everything zipfile and zlib raise for damaged input: BadZipFile (CRC, headers), zlib.error
# (deflate), EOFError (truncated stream), NotImplementedError (compression method),
# RuntimeError (encryption), struct.error, UnicodeDecodeError (names) and the rest.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    OSError,
    ValueError,
    struct.error,
    OverflowError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
)
_DAMAGED = "the file is damaged or not a Monticello package: copy or export it again"
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _read_file(path: Path, max_bytes: int) -> bytes:
    """The whole file, when it is a regular file within the limit; never opens anything else."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise PackageError(path, "no such file; check the path") from None
    except (OSError, ValueError) as error:
        raise PackageError(path, f"cannot be read ({_os_reason(error)}); check the path and its permissions") from None
    _check_kind(path, status, max_bytes)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError) as error:
        raise PackageError(path, f"cannot be read ({_os_reason(error)}); check its permissions") from None
    try:
        try:
            status = os.fstat(descriptor)
            _check_kind(path, status, max_bytes)  # it may have been replaced since the stat
            data = _read_to_end(descriptor, status.st_size, max_bytes + 1)
        except OSError as error:
            raise PackageError(path, f"cannot be read ({_os_reason(error)}); check the disk and copy it again") from None
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:
        raise PackageError(path, _over_limit("is", max_bytes, "max_mcz_bytes"))
    return data


def _read_to_end(descriptor: int, size: int, limit: int) -> bytes:
    """Up to limit bytes, to the end of the file: its size and one byte more asked for first (a buffered
    read of the limit would allocate the whole limit for every file), then 64 KiB at a time."""
    parts = []
    total = 0
    want = min(size + 1, limit)
    while total < limit:
        part = os.read(descriptor, min(want, limit - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
        want = 1 << 16
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _check_kind(path: Path, status: os.stat_result, max_bytes: int):
    for test, kind in _KINDS:
        if test(status.st_mode):
            raise PackageError(path, f"is {kind}, not a .mcz file; name a Monticello package file")
    if not stat.S_ISREG(status.st_mode):
        raise PackageError(path, "is not a regular file, not a .mcz file; name a Monticello package file")
    if status.st_size > max_bytes:
        raise PackageError(path, _over_limit(f"is {status.st_size:,} bytes,", max_bytes, "max_mcz_bytes"))


def _os_reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return _reason(error)


def _over_limit(what: str, max_bytes: int, field_name: str) -> str:
    return f"{what} over the limit of {max_bytes:,} bytes ({field_name}); {how_to_raise(field_name)}"


class _MemberReader:
    """Reads the members hotload uses, each checked before it is inflated and inflated with a cap."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, max_bytes: int):
        self.path = path
        self.archive = archive
        self.max_bytes = max_bytes
        self.members: Dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            if info.filename in self.members and info.filename in _USED_NAMES:
                self._fail(info.filename, "appears twice", "the package is ambiguous: export it again")
            self.members[info.filename] = info
        for name in _USED_NAMES:
            if name not in self.members:
                raise PackageError(path, f"missing member {name!r}: not a complete Monticello package; export it again")
        self.dependency_names = sorted(
            name for name in self.members if name.startswith("dependencies/") and not name.endswith("/")
        )
        self._check_layout([self.members[name] for name in (*_USED_NAMES, *self.dependency_names)])

    def _fail(self, name: str, problem: str, remedy: str = _DAMAGED):
        raise PackageError(self.path, f"member {name!r} {problem}; {remedy}" if remedy else f"member {name!r} {problem}")

    def _check_layout(self, infos: List[zipfile.ZipInfo]):
        """Members hotload reads may not share or overlap their data (a known zip bomb)."""
        infos = sorted(infos, key=lambda info: info.header_offset)
        for info, following in zip(infos, infos[1:]):
            if info.header_offset + 30 + info.compress_size > following.header_offset:
                self._fail(following.filename, f"overlaps member {info.filename!r}")

    def read(self, name: str) -> bytes:
        info = self.members[name]
        if info.flag_bits & 0x1:
            self._fail(name, "is encrypted", "Monticello packages are never encrypted: export it again")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            self._fail(
                name,
                f"uses compression method {info.compress_type}",
                "Monticello packages are stored or deflated: export it again with Monticello or `hotload pack`",
            )
        if info.file_size > self.max_bytes:
            self._fail(name, _over_limit(f"inflates to {info.file_size:,} bytes,", self.max_bytes, "max_member_bytes"), "")
        try:
            with self.archive.open(info) as stream:
                data = stream.read(self.max_bytes + 1)  # a lying header cannot make it read more
        except _ZIP_ERRORS as error:
            self._fail(name, f"is damaged ({_reason(error)})")
        if len(data) > self.max_bytes:
            self._fail(name, _over_limit("inflates to more than its header says,", self.max_bytes, "max_member_bytes"), "")
        return data

    def parse(self, name: str, parser):
        text = sexpr.decode(self.read(name))
        try:
            return parser(text)
        except ChunkError as error:
            raise PackageError(self.path, f"{name}: {error}; fix the source and pack or export it again") from None
        except sexpr.SexprError as error:
            raise PackageError(self.path, f"unparsable {name!r} member: {error}; {_DAMAGED}") from None


_USED_NAMES = ("package", "version", SOURCE_MEMBER)


def _read_package_name(text: str) -> str:
    name = sexpr.as_pairs(sexpr.parse(text)).get("name")
    if not isinstance(name, str) or not name:
        raise sexpr.SexprError("the package has no name")
    return str(name)
