"""What would change in an image: the packages it has loaded against new versions of them.

API for other commands (e.g. `push --dry-run`): one call, with an open Transport and the packages
read as `McPackage` (e.g. `[p.package for p in load_plan.packages]`), and for packages packed from
folders their sources (`push.PushBatch.sources`), so they are packed on top of the loaded version:

    >>> report = compare_with_target(transport, packages, sources=batch.sources, author=batch.author)
    >>> report.to_json()["packages"][0]["status"]          # new | changed | unchanged | unavailable
    'changed'
    >>> for line in report.render():                       # rich Text lines: print with Console.print
    ...     out.print(line)                                 # source text is never read as markup

Two snapshots alone (no target):

    >>> diff = SnapshotDiff.between(old_snapshot, new_snapshot)
    >>> [m.label for m in diff.methods if m.change == "removed"]
    ['HLCounter>>legacyBanner']

Classes are compared on every part of their definition (superclass, kind, every variable kind,
pools, category, traits, comment); methods by class, side and selector, on their source and
protocol (their stamps are not compared). Everything is sorted, so the same snapshots always give
the same report. The loaded side is read by `hotload.staging.loaded.TargetPackages`.
"""

import difflib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from rich.text import Text

from hotload.formats.chunks import ChunkError, ClassDefinition, MethodDefinition, Snapshot

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
NEW, UNCHANGED, UNAVAILABLE = "new", "unchanged", "unavailable"

#: (field name, label) of the class definition parts compared, in the order shown
CLASS_FIELDS = (
    ("kind", "kind"),
    ("superclass", "superclass"),
    ("instance_variables", "instance variables"),
    ("class_variables", "class variables"),
    ("pool_dictionaries", "pools"),
    ("class_instance_variables", "class-instance variables"),
    ("traits_expression", "traits"),
    ("class_traits", "class-side traits"),
    ("category", "category"),
    ("comment", "comment"),
)


def _value(definition, name: str):
    value = getattr(definition, name, None)
    if name == "traits_expression" and not value:
        value = " + ".join(getattr(definition, "traits", ()) or ())  # a definition read without its expression
    if isinstance(value, tuple):
        return list(value)
    return value if value is not None else ("" if name != "superclass" else None)


def _shown(value) -> str:
    if isinstance(value, list):
        return repr(" ".join(value))
    return "nil" if value is None else repr(value)


def unified(old: str, new: str, old_label: str, new_label: str) -> List[str]:
    """The unified diff (3 lines of context) of two texts, as lines without line ends."""
    return list(difflib.unified_diff(old.split("\n"), new.split("\n"), old_label, new_label, lineterm=""))


# -- classes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    """One part of a class definition that differs, e.g. ("superclass", "Object", "WAComponent")."""

    name: str
    old: object
    new: object

    @property
    def label(self) -> str:
        return dict(CLASS_FIELDS).get(self.name, self.name)

    def added_and_removed(self) -> Tuple[List[str], List[str]]:
        """For variable lists: the names added and the names removed."""
        old, new = self.old or [], self.new or []
        return [n for n in new if n not in old], [n for n in old if n not in new]

    def to_json(self) -> dict:
        return {"field": self.name, "old": self.old, "new": self.new}


@dataclass
class ClassChange:
    """A class (or trait) added, removed, or changed in some parts of its definition."""

    name: str
    change: str  # added | removed | changed
    fields: List[FieldChange] = field(default_factory=list)  # changed: the parts that differ
    definition: Dict[str, object] = field(default_factory=dict)  # added or removed: the whole definition
    trait: bool = False

    @classmethod
    def compare(cls, old: Optional[ClassDefinition], new: Optional[ClassDefinition]) -> Optional["ClassChange"]:
        if old is None:
            return cls(new.name, ADDED, definition=_definition(new), trait=getattr(new, "kind", "") == "trait")
        if new is None:
            return cls(old.name, REMOVED, definition=_definition(old), trait=getattr(old, "kind", "") == "trait")
        fields = [
            FieldChange(name, _value(old, name), _value(new, name))
            for name, _ in CLASS_FIELDS
            if _value(old, name) != _value(new, name)
        ]
        return cls(new.name, CHANGED, fields, trait=getattr(new, "kind", "") == "trait") if fields else None

    def to_json(self) -> dict:
        data = {"class": self.name, "change": self.change}
        if self.change == CHANGED:
            data["fields"] = [change.to_json() for change in self.fields]
        else:
            data["definition"] = self.definition
        return data


def _definition(definition: ClassDefinition) -> Dict[str, object]:
    return {name: _value(definition, name) for name, _ in CLASS_FIELDS}


# -- methods --------------------------------------------------------------------------------


@dataclass
class MethodChange:
    """A method added, removed, or changed in its source, its protocol, or both."""

    class_name: str
    meta: bool
    selector: str
    change: str  # added | removed | changed
    old_protocol: Optional[str] = None
    new_protocol: Optional[str] = None
    diff: List[str] = field(default_factory=list)  # changed source: unified diff lines, with ---/+++ headers
    source: str = ""  # added or removed: the whole source

    @property
    def key(self) -> Tuple[str, bool, str]:
        return (self.class_name, self.meta, self.selector)

    @property
    def label(self) -> str:
        return f"{self.class_name}{' class' if self.meta else ''}>>{self.selector}"

    @property
    def protocol_changed(self) -> bool:
        return self.change == CHANGED and self.old_protocol != self.new_protocol

    @classmethod
    def compare(cls, old: Optional[MethodDefinition], new: Optional[MethodDefinition], versions=("loaded", "new")):
        if old is None:
            return cls(*_method_key(new), ADDED, new_protocol=new.protocol, source=new.source)
        if new is None:
            return cls(*_method_key(old), REMOVED, old_protocol=old.protocol, source=old.source)
        if old.source == new.source and old.protocol == new.protocol:
            return None
        change = cls(*_method_key(new), CHANGED, old.protocol, new.protocol)
        if old.source != new.source:
            change.diff = unified(old.source, new.source, f"{change.label} ({versions[0]})", f"{change.label} ({versions[1]})")
        return change

    def to_json(self) -> dict:
        data = {
            "class": self.class_name, "side": "class" if self.meta else "instance", "selector": self.selector,
            "change": self.change,
        }
        if self.change != ADDED:
            data["old_protocol"] = self.old_protocol
        if self.change != REMOVED:
            data["new_protocol"] = self.new_protocol
        if self.change == CHANGED:
            data["source_diff"] = "\n".join(self.diff)
        else:
            data["source"] = self.source
        return data


def selector_of(method: MethodDefinition) -> str:
    """The method's selector; failing that, its first line."""
    try:
        return method.selector
    except ChunkError:
        return method.source.strip().split("\n", 1)[0][:60]


def _method_key(method: MethodDefinition) -> Tuple[str, bool, str]:
    return (method.class_name, method.meta, selector_of(method))


# -- snapshots ------------------------------------------------------------------------------


@dataclass
class SnapshotDiff:
    """The differences from one snapshot (the loaded one) to another (the new one), sorted by name."""

    classes: List[ClassChange] = field(default_factory=list)
    methods: List[MethodChange] = field(default_factory=list)
    categories_added: List[str] = field(default_factory=list)
    categories_removed: List[str] = field(default_factory=list)
    doits_added: List[str] = field(default_factory=list)  # e.g. `Foo initialize`, run after a load
    doits_removed: List[str] = field(default_factory=list)

    @classmethod
    def between(cls, old: Snapshot, new: Snapshot, versions: Tuple[str, str] = ("loaded", "new")) -> "SnapshotDiff":
        """versions label the two sides in the unified diffs' headers."""
        diff = cls()
        for name in sorted(set(old.classes) | set(new.classes)):
            change = ClassChange.compare(old.classes.get(name), new.classes.get(name))
            if change is not None:
                diff.classes.append(change)
        old_methods = {_method_key(m): m for m in old.methods}  # a key given twice: the last wins, as in a load
        new_methods = {_method_key(m): m for m in new.methods}
        for key in sorted(set(old_methods) | set(new_methods)):
            change = MethodChange.compare(old_methods.get(key), new_methods.get(key), versions)
            if change is not None:
                diff.methods.append(change)
        diff.categories_added = sorted(set(new.categories) - set(old.categories))
        diff.categories_removed = sorted(set(old.categories) - set(new.categories))
        diff.doits_added = sorted(set(new.doits) - set(old.doits))
        diff.doits_removed = sorted(set(old.doits) - set(new.doits))
        return diff

    def is_empty(self) -> bool:
        return not (
            self.classes or self.methods or self.categories_added or self.categories_removed
            or self.doits_added or self.doits_removed
        )

    def classes_with(self, change: str) -> List[ClassChange]:
        return [c for c in self.classes if c.change == change]

    def methods_with(self, change: str) -> List[MethodChange]:
        return [m for m in self.methods if m.change == change]

    def summary(self) -> Dict[str, int]:
        return {
            "classes_added": len(self.classes_with(ADDED)),
            "classes_removed": len(self.classes_with(REMOVED)),
            "classes_changed": len(self.classes_with(CHANGED)),
            "methods_added": len(self.methods_with(ADDED)),
            "methods_removed": len(self.methods_with(REMOVED)),
            "methods_changed": len(self.methods_with(CHANGED)),
        }

    def to_json(self) -> dict:
        return {
            "summary": self.summary(),
            "classes": [change.to_json() for change in self.classes],
            "methods": [change.to_json() for change in self.methods],
            "categories_added": self.categories_added,
            "categories_removed": self.categories_removed,
            "doits_added": self.doits_added,
            "doits_removed": self.doits_removed,
        }


# -- packages and a target ----------------------------------------------------------------------


@dataclass
class PackageDiff:
    """One package given against what the image has loaded of it.

    status: `new` (not loaded: everything is added), `changed`, `unchanged`, or `unavailable`
    (the loaded version cannot be read: `reason` says why, in one line, and the line shown ends in
    "diff unavailable").
    """

    package: str
    new_version: str
    status: str
    loaded_version: Optional[str] = None
    diff: Optional[SnapshotDiff] = None
    reason: str = ""

    @classmethod
    def of(cls, new_package, loaded_package=None, loaded_version: Optional[str] = None) -> "PackageDiff":
        """new_package against loaded_package (an McPackage, or None when the image has not loaded it)."""
        new_version = new_package.version.name
        if loaded_package is None:
            diff = SnapshotDiff.between(Snapshot(), new_package.snapshot, ("not loaded", new_version))
            return cls(new_package.name, new_version, NEW, None, diff)
        old_version = loaded_version or loaded_package.version.name
        diff = SnapshotDiff.between(loaded_package.snapshot, new_package.snapshot, (old_version, new_version))
        return cls(new_package.name, new_version, UNCHANGED if diff.is_empty() else CHANGED, old_version, diff)

    @classmethod
    def unavailable(cls, new_package, loaded_version: Optional[str], reason: str) -> "PackageDiff":
        return cls(new_package.name, new_package.version.name, UNAVAILABLE, loaded_version, reason=reason)

    def to_json(self) -> dict:
        data = {
            "package": self.package, "status": self.status,
            "loaded_version": self.loaded_version, "new_version": self.new_version,
        }
        if self.reason:
            data["reason"] = self.reason
        if self.diff is not None:
            data.update(self.diff.to_json())
        return data


@dataclass
class DiffReport:
    """The packages given, in their order, each against the image at `target`."""

    target: str
    packages: List[PackageDiff] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"target": self.target, "packages": [package.to_json() for package in self.packages]}

    def render(self) -> List[Text]:
        """The report as lines for a rich Console; see `render_report`."""
        return render_report(self)

    def render_plain(self) -> str:
        return "\n".join(line.plain for line in self.render())


def compare_with_target(transport, packages: Sequence, sources: Optional[dict] = None,
                        author: Optional[str] = None) -> DiffReport:
    """Each package (an McPackage) against the version the image at transport has loaded.

    sources maps the name of a package packed from a folder to its sources.PackageSource (as
    push.PushBatch.sources does): such a package is packed again on top of the loaded version, with
    author (None: the folder's git author), so its new version is the one `push` would send.
    """
    from hotload.staging.loaded import TargetPackages

    loaded = TargetPackages(transport)
    report = DiffReport(transport.description)
    for package in packages:
        report.packages.append(loaded.diff(package, (sources or {}).get(package.name), author))
    return report


# -- rendering ------------------------------------------------------------------------------
# Lines are rich Text objects built from plain strings: nothing in a name or a source is ever
# read as markup, so `[`, `[/]`, `\` or `:smile:` in Smalltalk source prints as it is.

_STYLES = {ADDED: "green", REMOVED: "red", CHANGED: "yellow"}
_MARKS = {ADDED: "+", REMOVED: "-", CHANGED: "~"}
_INDENT = "  "


def _line(*parts) -> Text:
    """parts: strings, or (string, style) pairs."""
    return Text.assemble(*parts)


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 'es' if word.endswith('s') else 's'}"


def _summary_text(diff: SnapshotDiff) -> str:
    counts = diff.summary()
    parts = []
    for kind in ("classes", "methods"):
        for change in (ADDED, REMOVED, CHANGED):
            number = counts[f"{kind}_{change}"]
            if number:
                noun = _count(number, kind[:-2] if kind == "classes" else kind[:-1])
                parts.append(f"{noun} {change}")
    return ", ".join(parts) or "no differences"


def _diff_lines(lines: List[str], indent: str) -> List[Text]:
    out = []
    for line in lines:
        if line.startswith(("---", "+++")):
            continue  # the method's name is already on the line above
        style = "cyan" if line.startswith("@@") else "green" if line[:1] == "+" else "red" if line[:1] == "-" else ""
        out.append(_line((indent + line[:1] + line[1:].expandtabs(4), style)))  # tabs as in an editor, not the terminal's
    return out


def _class_lines(change: ClassChange, folded: Dict[Tuple[str, str], int]) -> List[Text]:
    mark, style = _MARKS[change.change], _STYLES[change.change]
    kind = "trait" if change.trait else "class"
    if change.change != CHANGED:  # the whole definition, in short
        parts = [f"superclass {_shown(change.definition.get('superclass'))}"] if kind == "class" else []
        if change.definition.get("category"):
            parts.append(f"category {_shown(change.definition['category'])}")
        methods = folded.get((change.name, change.change), 0)
        if methods:
            parts.append(_count(methods, "method"))
        return [_line((f"{_INDENT}{mark} {kind} {change.name}", style), f"  ({', '.join(parts)})" if parts else "")]
    lines = [_line((f"{_INDENT}{mark} {'trait' if change.trait else 'class'} {change.name}", style))]
    for item in change.fields:
        if item.name == "comment":
            lines.append(_line(f"{_INDENT * 3}comment:"))
            comment_diff = unified(item.old or "", item.new or "", "", "")
            lines.extend(_diff_lines(comment_diff, _INDENT * 4))
            continue
        text = f"{_INDENT * 3}{item.label}: {_shown(item.old)} -> {_shown(item.new)}"
        if isinstance(item.old, list) or isinstance(item.new, list):
            added, removed = item.added_and_removed()
            notes = ([f"+{' '.join(added)}"] if added else []) + ([f"-{' '.join(removed)}"] if removed else [])
            text += f"  ({', '.join(notes)})" if notes else "  (reordered)"
        lines.append(_line(text))
    return lines


def _method_lines(change: MethodChange) -> List[Text]:
    mark, style = _MARKS[change.change], _STYLES[change.change]
    head = (f"{_INDENT}{mark} {change.label}", style)
    if change.change == ADDED:
        return [_line(head, f"  ({change.new_protocol})")]
    if change.change == REMOVED:
        return [_line(head, f"  ({change.old_protocol})")]
    protocol = (
        f"  protocol {change.old_protocol!r} -> {change.new_protocol!r}" if change.protocol_changed
        else f"  ({change.new_protocol})"
    )
    return [_line(head, protocol)] + _diff_lines(change.diff, _INDENT * 3)


def render_package(package: PackageDiff) -> List[Text]:
    name = (package.package, "bold")
    if package.status == UNAVAILABLE:
        return [_line(name, f" {package.new_version}: {package.reason}; ", ("diff unavailable", "bold yellow"))]
    diff = package.diff
    if package.status == NEW:
        head = [_line(name, f" {package.new_version}: ", ("not loaded", "bold green"), f"; {_summary_text(diff)}")]
    elif package.status == UNCHANGED:
        return [_line(name, f" {package.new_version}: ", ("same as loaded", "bold"), f" ({package.loaded_version})")]
    else:
        same_name = " (same name, other contents)" if package.loaded_version == package.new_version else ""
        head = [_line(name, f" {package.loaded_version} (loaded) -> {package.new_version}{same_name}: {_summary_text(diff)}")]
    # Methods of an added or removed class are counted on the class's line, not listed.
    whole = {(c.name, c.change) for c in diff.classes if c.change != CHANGED}
    folded: Dict[Tuple[str, str], int] = {}
    methods = []
    for change in diff.methods:
        if (change.class_name, change.change) in whole:
            folded[(change.class_name, change.change)] = folded.get((change.class_name, change.change), 0) + 1
        else:
            methods.append(change)
    lines = list(head)
    for category in diff.categories_added:
        lines.append(_line((f"{_INDENT}+ category {category}", "green")))
    for category in diff.categories_removed:
        lines.append(_line((f"{_INDENT}- category {category}", "red")))
    for change in diff.classes:
        lines.extend(_class_lines(change, folded))
    for change in methods:
        lines.extend(_method_lines(change))
    for doit in diff.doits_added:
        lines.append(_line((f"{_INDENT}+ do-it: {doit}", "green")))
    for doit in diff.doits_removed:
        lines.append(_line((f"{_INDENT}- do-it: {doit}", "red")))
    return lines


def render_report(report: DiffReport) -> List[Text]:
    """Each package's lines, a blank line between packages, for `Console.print` (or `.plain` text)."""
    lines: List[Text] = []
    for index, package in enumerate(report.packages):
        if index:
            lines.append(Text(""))
        lines.extend(render_package(package))
    return lines
