"""Building a Monticello `.mcz` from a chunk-format source file.

    >>> result = Packer(author="jd").pack("Counter-App.st", "dist/")
    >>> result.version.name, result.path.name
    ('Counter-App-jd.1', 'Counter-App-jd.1.mcz')

Packing again into the same folder continues the ancestry: the newest
`.mcz` of the package there becomes the ancestor and the number goes up.
The output holds `package`, `version` and `snapshot/source.st` (CR line ends,
as Monticello writes them); Monticello readers accept it without `snapshot.bin`.
"""

import re
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from . import sexpr
from .chunks import ChunkError, ClassDefinition, Snapshot, read_source
from .errors import HotloadError, PackageError
from .mcz import SOURCE_MEMBER, McPackage, VersionInfo, read_mcz

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


class Packer:
    def __init__(self, author: str, message: str = "", package_name: str = ""):
        if not _AUTHOR.match(author or ""):
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
        number = (ancestor.number or 0) + 1 if ancestor else 1
        version = VersionInfo(
            name=f"{name}-{self.author}.{number}",
            id=str(uuid.uuid4()),
            message=self.message or f"packed from {source_path.name}",
            author=self.author,
            date=time.strftime("%-d %B %Y"),
            time=time.strftime("%-I:%M:%S %p").lower(),
            ancestors=(ancestor,) if ancestor else (),
        )
        target = output if output.suffix == ".mcz" else folder / f"{version.name}.mcz"
        if target.suffix != ".mcz":
            raise PackError(f"{target}: the output must end in .mcz or be a folder")
        folder.mkdir(parents=True, exist_ok=True)
        source = monticello_source(name, snapshot, initializers)
        temporary = target.with_name(f".{target.name}.tmp")
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("package", f"(name {sexpr.quote(name)})")
            archive.writestr("version", version_sexpr(version))
            archive.writestr(SOURCE_MEMBER, source.encode("utf-8"))
        temporary.replace(target)
        return PackResult(target, version, name, len(snapshot.classes), len(snapshot.methods), ancestor)

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
        return (
            f"Trait named: #{definition.name}\r\tuses: {uses}\r"
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


def monticello_source(package_name: str, snapshot: Snapshot, initializers: List[str]) -> str:
    """The `snapshot/source.st` text Monticello would write for this snapshot."""
    out = [f"SystemOrganization addCategory: #{sexpr.quote(package_name)}!\r\r"]
    for definition in _superclass_first(snapshot):
        out.append(_class_chunk(definition))
        if definition.class_instance_variables:
            names = " ".join(definition.class_instance_variables)
            out.append(f"{definition.name} class\r\tinstanceVariableNames: {sexpr.quote(names)}!\r\r")
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
