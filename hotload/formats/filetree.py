"""Reading FileTree packages (Monticello's git layout, also Cypress's).

    >>> package = read_filetree_package(Path("repository/Grease-Core.package"))
    >>> package.name, len(package.snapshot.classes), package.snapshot.method_count()
    ('Grease-Core', 36, 450)

A `Name.package` folder holds one `Foo.class/` (or `TFoo.trait/`) folder per class with
`properties.json` (the definition), `README.md` (the comment) and `instance/*.st` and `class/*.st`,
one method per file: the first line is the method's category, the rest its source. `Foo.extension/`
folders hold the methods added to classes of other packages. `monticello.meta/package` names the
package; `monticello.meta/version`, when present, is the version the folder was written from.
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from hotload.formats import sexpr
from hotload.formats.chunks import ClassDefinition, MethodDefinition, Snapshot
from hotload.formats.mcz import VersionInfo, parse_version_info
from hotload.formats.sources import CLASS_KINDS, PackageSource, SourceError, list_folder, pattern_selector, read_text

_SIDES = (("instance", False), ("class", True))


def read_json(path: Path) -> dict:
    """A JSON object from a metadata file; any other content is a SourceError with its line."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError(path, f"is not valid JSON ({error.msg})", error.lineno) from None
    except RecursionError:
        raise SourceError(path, "is not valid JSON (nested too deep)", 1) from None
    if not isinstance(value, dict):
        raise SourceError(path, f"must hold a JSON object {{...}}, not {type(value).__name__}", 1)
    return value


class _Properties:
    """The fields of one properties.json, each checked for its type."""

    def __init__(self, path: Path, fields: dict):
        self.path = path
        self.fields = fields

    def text(self, key: str, default: str = "") -> str:
        value = self.fields.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise SourceError(self.path, f'"{key}" must be a string, not {json.dumps(value)[:40]}', 1)
        return value

    def names(self, key: str) -> Tuple[str, ...]:
        value = self.fields.get(key) or []
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise SourceError(self.path, f'"{key}" must be a list of names, not {json.dumps(value)[:40]}', 1)
        return tuple(name for names in value for name in names.split())


def _composition(expression: str) -> str:
    """FileTree writes an empty trait composition as `{}`."""
    expression = expression.strip()
    return "" if expression.replace(" ", "") == "{}" else expression


def _trait_names(expression: str) -> Tuple[str, ...]:
    from hotload.formats.tonel import _trait_names as names

    return names(expression)


def _category_of(properties: _Properties, package: str, name: str) -> str:
    category = properties.text("category")
    lower = category.lower()
    if category and not (lower == package.lower() or lower.startswith(package.lower() + "-")):
        raise SourceError(
            properties.path,
            f"{name} is in category {category!r}, which is not package {package!r}; move it to its package",
            1,
        )
    return category or package


def _definition(folder: Path, package: str) -> Tuple[ClassDefinition, str]:
    """A class or trait definition and its class-side trait composition."""
    properties = _Properties(folder / "properties.json", read_json(folder / "properties.json"))
    name = properties.text("name") or folder.name.rsplit(".", 1)[0]
    comment: Optional[str] = None
    if (folder / "README.md").is_file():
        comment = read_text(folder / "README.md")
    elif "comment" in properties.fields:
        comment = properties.text("comment")
    traits = _composition(properties.text("traitcomposition"))
    class_traits = _composition(properties.text("classtraitcomposition"))
    category = _category_of(properties, package, name)
    if folder.name.endswith(".trait"):
        definition = ClassDefinition(
            name=name, superclass=None, kind="trait", instance_variables=properties.names("instvars"),
            category=category, traits=_trait_names(traits), traits_expression=traits, comment=comment,
            comment_stamp=properties.text("commentStamp"), is_trait=True,
        )
        return definition, ""
    superclass = properties.text("super", "nil") or "nil"
    kind = properties.text("type", "normal")
    if kind not in CLASS_KINDS:
        raise SourceError(properties.path, f'"type" {kind!r} of {name} is not one of {", ".join(CLASS_KINDS)}', 1)
    definition = ClassDefinition(
        name=name,
        superclass=None if superclass == "nil" else superclass,
        kind=CLASS_KINDS[kind],
        instance_variables=properties.names("instvars"),
        class_variables=properties.names("classvars"),
        pool_dictionaries=properties.names("pools"),
        category=category,
        traits=_trait_names(traits),
        traits_expression=traits,
        class_instance_variables=properties.names("classinstvars"),
        class_traits=_trait_names(class_traits),
        comment=comment,
        comment_stamp=properties.text("commentStamp"),
    )
    return definition, class_traits


def _stamps(folder: Path) -> Dict[Tuple[bool, str], str]:
    """methodProperties.json (FileTree with method metadata): selector -> Monticello time stamp."""
    path = folder / "methodProperties.json"
    if not path.is_file():
        return {}
    stamps = {}
    for side, meta in _SIDES:
        entries = read_json(path).get(side) or {}
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise SourceError(path, f'"{side}" must map selectors to time stamps', 1)
        stamps.update({(meta, selector): stamp for selector, stamp in entries.items()})
    return stamps


def _methods(folder: Path, class_name: str) -> List[MethodDefinition]:
    stamps = _stamps(folder)
    methods, seen = [], {}
    for side, meta in _SIDES:
        if not (folder / side).is_dir():
            continue
        for path in (p for p in list_folder(folder / side) if p.suffix == ".st"):
            text = read_text(path)
            category, newline, source = text.partition("\n")
            selector = pattern_selector(source)
            if not newline or not source.strip() or selector is None:
                raise SourceError(path, "expected the method category on line 1 and the method source from line 2", 2 if newline else 1)
            if (meta, selector) in seen:
                raise SourceError(path, f"defines {selector} again (as does {seen[meta, selector]})", 2)
            seen[meta, selector] = path.name
            methods.append(MethodDefinition(class_name, meta, category, source, stamps.get((meta, selector), "")))
    return methods


def read_package_name(folder: Path) -> str:
    path = folder / "monticello.meta" / "package"
    if not path.is_file():
        return folder.name[: -len(".package")]
    try:
        name = sexpr.as_pairs(sexpr.parse(read_text(path))).get("name")
    except sexpr.SexprError as error:
        raise SourceError(path, f"cannot be read ({error}); it should be (name 'Package-Name')", 1) from None
    if not isinstance(name, str) or not name:
        raise SourceError(path, "names no package; it should be (name 'Package-Name')", 1)
    return str(name)


def read_version(folder: Path) -> Optional[VersionInfo]:
    path = folder / "monticello.meta" / "version"
    if not path.is_file():
        return None
    try:
        return parse_version_info(read_text(path))
    except sexpr.SexprError as error:
        raise SourceError(path, f"is not a Monticello version ({error})", 1) from None


def read_filetree_package(folder: Path) -> PackageSource:
    """Every class, trait and extension folder of a FileTree package."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(folder, "is not a folder")
    name = read_package_name(folder)
    snapshot = Snapshot()
    class_traits: Dict[str, str] = {}
    for child in list_folder(folder):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if child.suffix in (".class", ".trait"):
            if not (child / "properties.json").is_file():
                raise SourceError(child, "has no properties.json, so its class cannot be defined")
            definition, class_side = _definition(child, name)
            if definition.name in snapshot.classes:
                raise SourceError(child / "properties.json", f"defines {definition.name} a second time", 1)
            snapshot.classes[definition.name] = definition
            if class_side:
                class_traits[definition.name] = class_side
            snapshot.methods.extend(_methods(child, definition.name))
        elif child.suffix == ".extension":
            extended = child.name[: -len(".extension")]
            if (child / "properties.json").is_file():
                extended = _Properties(child / "properties.json", read_json(child / "properties.json")).text("name") or extended
            snapshot.methods.extend(_methods(child, extended))
    snapshot.categories = sorted({definition.category for definition in snapshot.classes.values()} - {name})
    return PackageSource(
        name=name, path=folder, kind="filetree", snapshot=snapshot, class_traits=class_traits,
        version=read_version(folder),
    )
