"""Building Monticello `.mcz` packages from a chunk-format source file or Tonel and FileTree folders.

    >>> result = Packer(author="jd").pack("Counter-App.st", "dist/")
    >>> result.version.name, result.path.name
    ('Counter-App-jd.1', 'Counter-App-jd.1.mcz')
    >>> [r.path.name for r in Packer(author=None).pack_folder("src", "dist/")]   # author from git
    ['Neo-JSON-Core-JaneDoe.1.mcz', 'Neo-JSON-Tests-JaneDoe.1.mcz']

Packing again into the same folder continues the ancestry: the newest
`.mcz` of the package there becomes the ancestor and the number goes up
(a FileTree package's own `monticello.meta/version` when the folder has none).
The output holds `package`, `version` and `snapshot/source.st` (CR line ends,
as Monticello writes them); Monticello readers accept it without `snapshot.bin`.
A folder packs the same bytes each time for the same sources, ancestor and commit.
"""

import hashlib
import os
import re
import subprocess
import time
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from hotload.formats import sexpr
from hotload.formats.chunks import ChunkError, ClassDefinition, Snapshot, read_source
from hotload.errors import HotloadError, PackageError
from hotload.formats.mcz import SOURCE_MEMBER, McPackage, VersionInfo, read_mcz
from hotload.formats.sources import PackageSource, read_sources

_INITIALIZER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s+initialize\s*\.?$")
_COMMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s+comment:\s*'((?:[^']|'')*)'\s*\.?$", re.S)
_AUTHOR = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


class PackError(HotloadError):
    exit_code = 2


@dataclass
class PackResult:
    path: Path
    version: VersionInfo
    package_name: str
    classes: int
    methods: int
    ancestor: Optional[VersionInfo]


@dataclass
class GitCommit:
    """The last commit that touched a folder."""

    author: str
    message: str
    seconds: int  # commit time, seconds since the epoch


def git_commit(folder) -> Optional[GitCommit]:
    """`git log -1 -- folder`, or None outside a git work tree (or without git, or for an uncommitted folder)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "log", "-1", "--format=%an%x00%ct%x00%B", "--", "."],
            capture_output=True, timeout=30, env={**os.environ, "GIT_PAGER": "cat", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    fields = result.stdout.decode("utf-8", "replace").split("\0", 2)
    if result.returncode != 0 or len(fields) != 3 or not fields[1].strip().isdigit():
        return None
    return GitCommit(fields[0].strip(), fields[2].strip(), int(fields[1]))


def monticello_author(name: str) -> str:
    """A git author as Monticello's initials allow it: `Jane Doe` -> `JaneDoe`; '' when nothing is left."""
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    letters = re.sub(r"[^A-Za-z0-9]", "", ascii_only).lstrip("0123456789")
    return letters


class Packer:
    """Writes .mcz files from a chunk file, a Tonel or FileTree folder, or a package already read.

        >>> Packer(author="jd", message="fix").pack_folder("src/Shop-Core", "dist/")[0].version.name
        'Shop-Core-jd.1'
        >>> Packer(author=None).pack_source(read_package(Path("src/Shop-Core")), tmp).version.author
        'JaneDoe'

    With author None a folder's version takes author and message from its last git commit
    (an explicit author or message wins); a chunk file's author is then `hotload`.
    """

    def __init__(self, author: Optional[str], message: str = "", package_name: str = ""):
        if author is not None and not _AUTHOR.match(author):
            raise PackError(
                f"author {author!r} is not valid in a Monticello version name: use letters and digits only, "
                "starting with a letter (e.g. --author jdoe)"
            )
        self.author = author
        self.message = message
        self.package_name = package_name

    def pack(self, source_path, output, ancestor_path=None) -> PackResult:
        source_path = Path(source_path)
        try:
            text = source_path.read_bytes()
        except OSError as error:
            raise PackError(f"{source_path}: cannot read ({error.strerror})") from None
        try:
            snapshot = read_source(sexpr.decode(text))
        except ChunkError as error:
            raise PackError(f"{source_path}: {error}") from None
        initializers = self._initializers(snapshot, source_path)
        name = self.package_name or self._package_name_from(snapshot, source_path)
        output = Path(output)
        folder = output if output.is_dir() or not output.suffix else output.parent
        ancestor = self._ancestor(name, folder, ancestor_path)
        source = monticello_source(name, snapshot, initializers)
        version = self._version(
            name, self.author or "hotload", self.message or f"packed from {source_path.name}", ancestor,
            str(uuid.uuid4()), time.time(),
        )
        target = self._write(name, version, source, output, folder, time.localtime())
        return PackResult(target, version, name, len(snapshot.classes), len(snapshot.methods), ancestor)

    def pack_folder(self, folder, output, ancestor_path=None, ancestor_folder=None) -> List[PackResult]:
        """One .mcz per Tonel or FileTree package in folder (a package folder or a repository folder)."""
        packages = read_sources(folder)
        if len(packages) > 1:
            names = ", ".join(p.name for p in packages)
            if Path(output).suffix == ".mcz":
                raise PackError(f"{folder}: holds {len(packages)} packages ({names}); give a folder as the output")
            if ancestor_path or self.package_name:
                raise PackError(f"{folder}: holds {len(packages)} packages ({names}); --ancestor and --name need one")
        return [self.pack_source(package, output, ancestor_path, ancestor_folder) for package in packages]

    def pack_source(self, package: PackageSource, output, ancestor_path=None, ancestor_folder=None) -> PackResult:
        """Write one package read from a source folder; ancestors come from ancestor_folder (default: the output's)."""
        name = self.package_name or package.name
        output = Path(output)
        folder = output if output.is_dir() or not output.suffix else output.parent
        ancestor = self._ancestor(name, Path(ancestor_folder) if ancestor_folder else folder, ancestor_path)
        if ancestor is None and package.version is not None and package.version.package_name == name:
            ancestor = package.version
        commit = git_commit(package.path) if self.author is None or not self.message else None
        author = self.author or monticello_author(commit.author if commit else "") or "hotload"
        message = self.message or (commit.message if commit else "") or f"packed from {package.path.name}"
        seconds = commit.seconds if commit else _newest_change(package.path)
        source = monticello_source(name, package.snapshot, package.initializers(), package.class_traits)
        digest = hashlib.sha256("\0".join((name, author, message, str(seconds), ancestor.id if ancestor else "", source)).encode())
        identity = str(uuid.UUID(bytes=digest.digest()[:16], version=4))
        version = self._version(name, author, message, ancestor, identity, seconds)
        target = self._write(name, version, source, output, folder, time.localtime(seconds))
        snapshot = package.snapshot
        return PackResult(target, version, name, len(snapshot.classes), len(snapshot.methods), ancestor)

    @staticmethod
    def _version(name, author, message, ancestor, identity, seconds) -> VersionInfo:
        number = (ancestor.number or 0) + 1 if ancestor else 1
        moment = time.localtime(seconds)
        return VersionInfo(
            name=f"{name}-{author}.{number}",
            id=identity,
            message=message,
            author=author,
            date=time.strftime("%-d %B %Y", moment),
            time=time.strftime("%-I:%M:%S %p", moment).lower(),
            ancestors=(ancestor,) if ancestor else (),
        )

    @staticmethod
    def _write(name: str, version: VersionInfo, source: str, output: Path, folder: Path, moment) -> Path:
        target = output if output.suffix == ".mcz" else folder / f"{version.name}.mcz"
        if target.suffix != ".mcz":
            raise PackError(f"{target}: the output must end in .mcz or be a folder")
        folder.mkdir(parents=True, exist_ok=True)
        stamp = tuple(moment[:6]) if moment.tm_year >= 1980 else (1980, 1, 1, 0, 0, 0)
        temporary = target.with_name(f".{target.name}.tmp")
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in (
                ("package", f"(name {sexpr.quote(name)})".encode("utf-8")),
                ("version", version_sexpr(version).encode("utf-8")),
                (SOURCE_MEMBER, source.encode("utf-8")),
            ):
                info = zipfile.ZipInfo(member, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        temporary.replace(target)
        return target

    @staticmethod
    def _initializers(snapshot: Snapshot, source_path: Path) -> List[str]:
        """The `Foo initialize` statements; `Foo comment: '...'` becomes the class comment."""
        names = []
        for doit in snapshot.doits:
            comment = _COMMENT.match(doit)
            if comment and comment.group(1) in snapshot.classes:
                snapshot.classes[comment.group(1)].comment = comment.group(2).replace("''", "'")
                continue
            match = _INITIALIZER.match(doit)
            if not match:
                raise PackError(
                    f"{source_path}: the statement {doit[:60]!r} cannot be stored in a Monticello package; "
                    "put it in a class-side #initialize method"
                )
            names.append(match.group(1))
        return names

    @staticmethod
    def _package_name_from(snapshot: Snapshot, source_path: Path) -> str:
        categories = {definition.category for definition in snapshot.classes.values()}
        categories |= set(snapshot.categories)
        if len(categories) == 1 and "" not in categories:
            return categories.pop()
        found = ", ".join(sorted(c for c in categories if c)) or "none"
        raise PackError(
            f"{source_path}: cannot tell the package name from the class categories ({found}); "
            "give it with --name"
        )

    @staticmethod
    def _ancestor(name: str, folder: Path, ancestor_path) -> Optional[VersionInfo]:
        if ancestor_path:
            package = read_mcz(ancestor_path)
            if package.name != name:
                raise PackError(f"{ancestor_path}: is package {package.name}, not {name}")
            return package.version
        newest: Optional[McPackage] = None
        for candidate in folder.glob(f"{name}-*.mcz") if folder.is_dir() else ():
            try:
                package = read_mcz(candidate)
            except PackageError:
                continue
            if package.name == name and (newest is None or (package.version.number or 0) > (
                newest.version.number or 0
            )):
                newest = package
        return newest.version if newest else None


def _newest_change(folder: Path) -> int:
    """The newest modification time of the files in a package folder (its version date outside git)."""
    newest = 0
    for root, _, files in os.walk(folder):
        for file in files:
            try:
                newest = max(newest, int(os.stat(os.path.join(root, file)).st_mtime))
            except OSError:
                continue
    return newest or int(time.time())


def version_sexpr(info: VersionInfo) -> str:
    """Monticello's `version` s-expression, written with an explicit stack: histories run thousands deep."""
    out: List[str] = []
    stack: list = [info]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        fields = [
            ("name", item.name),
            ("message", item.message),
            ("id", item.id),
            ("date", item.date),
            ("time", item.time),
            ("author", item.author),
        ]
        body = " ".join(f"{key} {sexpr.quote(value)}" for key, value in fields)
        parts = [f"({body} ancestors (", *_spaced(item.ancestors), ") stepChildren (", *_spaced(item.step_children), "))"]
        stack.extend(reversed(parts))
    return "".join(out)


def _spaced(versions) -> list:
    parts: list = []
    for index, version in enumerate(versions):
        if index:
            parts.append(" ")
        parts.append(version)
    return parts


def _bang(text: str) -> str:
    return text.replace("!", "!!")


def _class_chunk(definition: ClassDefinition) -> str:
    if definition.is_trait:
        uses = definition.traits_expression or "{}"
        names = " ".join(definition.instance_variables)
        variables = f"\tinstanceVariableNames: {sexpr.quote(names)}\r" if names else ""  # a stateful trait
        return (
            f"Trait named: #{definition.name}\r\tuses: {uses}\r{variables}"
            f"\tcategory: {sexpr.quote(definition.category)}!\r\r"
        )
    uses = f"\r\tuses: {definition.traits_expression}" if definition.traits_expression else ""
    return (
        f"{definition.superclass or 'nil'} {definition.kind}: #{definition.name}{uses}\r"
        f"\tinstanceVariableNames: {sexpr.quote(' '.join(definition.instance_variables))}\r"
        f"\tclassVariableNames: {sexpr.quote(' '.join(definition.class_variables))}\r"
        f"\tpoolDictionaries: {sexpr.quote(' '.join(definition.pool_dictionaries))}\r"
        f"\tcategory: {sexpr.quote(definition.category)}!\r\r"
    )


def _superclass_first(snapshot: Snapshot) -> List[ClassDefinition]:
    ordered, placed = [], set()

    def place(definition):
        if definition.name in placed:
            return
        placed.add(definition.name)
        parent = snapshot.classes.get(definition.superclass or "")
        if parent is not None:
            place(parent)
        for trait in definition.traits:
            if trait in snapshot.classes:
                place(snapshot.classes[trait])
        ordered.append(definition)

    for definition in snapshot.classes.values():
        place(definition)
    return ordered


def monticello_source(
    package_name: str, snapshot: Snapshot, initializers: List[str], class_traits: Optional[Dict[str, str]] = None
) -> str:
    """The `snapshot/source.st` text Monticello would write for this snapshot.

    One `addCategory:` for the package and each further category in snapshot.categories;
    class_traits maps a class name to its class-side trait composition (`TFoo classTrait`).
    """
    categories = [package_name] + [c for c in snapshot.categories if c and c != package_name]
    out = [f"SystemOrganization addCategory: #{sexpr.quote(category)}!\r" for category in dict.fromkeys(categories)]
    out.append("\r")
    class_traits = class_traits or {}
    for definition in _superclass_first(snapshot):
        out.append(_class_chunk(definition))
        uses = class_traits.get(definition.name, "")
        if definition.class_instance_variables or uses:
            names = " ".join(definition.class_instance_variables)
            uses = f"\r\tuses: {uses}" if uses else ""
            out.append(f"{definition.name} class{uses}\r\tinstanceVariableNames: {sexpr.quote(names)}!\r\r")
        if definition.comment is not None:
            stamp = sexpr.quote(definition.comment_stamp)
            out.append(f"!{definition.name} commentStamp: {stamp} prior: 0!\r{_bang(definition.comment.replace(chr(10), chr(13)))}!\r\r")
    for method in snapshot.methods:
        side = " class" if method.meta else ""
        stamp = f" stamp: {sexpr.quote(method.stamp)}" if method.stamp else ""
        source = _bang(method.source.replace("\r\n", "\r").replace("\n", "\r"))
        out.append(
            f"!{method.class_name}{side} methodsFor: {sexpr.quote(method.protocol)}{stamp}!\r{source}! !\r\r"
        )
    for name in initializers:
        out.append(f"{name} initialize!\r")
    return "".join(out)
