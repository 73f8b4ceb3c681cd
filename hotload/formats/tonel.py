"""Reading Tonel packages (Pharo 7 and later, as Iceberg writes them).

    >>> package = read_tonel_package(Path("src/Neo-JSON-Core"))
    >>> package.name, len(package.snapshot.classes), package.snapshot.method_count()
    ('Neo-JSON-Core', 13, 226)

A package folder holds `package.st` (`Package { #name : 'X' }`) and one file per class, trait or
extended class: an optional comment `"..."`, then `Class {`, `Trait {` or `Extension {` with a STON
map, then the methods, each an optional STON map (`{ #category : 'accessing' }`), a header
`Foo >> at: i [`, `Foo class >> new [` or `TFoo classSide >> x [`, and a body to the matching `]`.
Tonel v1 writes symbols and a `#category` holding package and tag; v3 writes strings and adds
`#package` and `#tag`. Method sources are rebuilt as Monticello's Tonel reader does: the message
pattern, then the body with its last line end removed.
"""

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from hotload.formats.chunks import ClassDefinition, MethodDefinition, Snapshot
from hotload.formats.sources import CLASS_KINDS, PackageSource, SourceError, line_of, list_folder, pattern_selector, read_text

MAX_NESTING = 200  # STON maps and lists deeper than this are refused, not recursed into

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRAIT_NAME = re.compile(r"\b[A-Z][A-Za-z0-9_]*\b")  # not the `Trait` of `classTrait`


class _Fail:
    """Raises SourceError for one file, with the line of an offset."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text

    def __call__(self, offset: int, problem: str):
        raise SourceError(self.path, problem, line_of(self.text, min(offset, len(self.text))))


# -- STON, the subset Tonel writes -------------------------------------------------------------

_STON_SPACE = re.compile(r"\s*")
_STON_SYMBOL = re.compile(r"#([A-Za-z_][A-Za-z0-9_:.]*|[-+*/\\<>=~@%|&?,!]+)")
_STON_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?")
_STON_WORD = re.compile(r"(true|false|nil)\b")
_ESCAPES = {"'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", '"': '"'}


class _Ston:
    def __init__(self, text: str, fail: _Fail):
        self.text = text
        self.fail = fail

    def skip(self, pos: int) -> int:
        return _STON_SPACE.match(self.text, pos).end()

    def value(self, pos: int, depth: int = 0):
        """(value, position after it)."""
        if depth > MAX_NESTING:
            self.fail(pos, f"STON nested more than {MAX_NESTING} deep")
        pos = self.skip(pos)
        char = self.text[pos : pos + 1]
        if char == "{":
            return self.map(pos, depth)
        if char == "[":
            return self.list(pos, depth)
        if char == "'":
            return self.string(pos)
        if char == "#":
            if self.text.startswith("#'", pos):
                return self.string(pos + 1)
            match = _STON_SYMBOL.match(self.text, pos)
            if match:
                return match.group(1), match.end()
        if not char:
            self.fail(pos, "the file ends where a STON value should follow")
        match = _STON_NUMBER.match(self.text, pos) or _STON_WORD.match(self.text, pos)
        if match:
            word = match.group(0)
            return {"true": True, "false": False, "nil": None}.get(word, word), match.end()
        self.fail(pos, f"expected a STON value (a string, symbol, list or map), found {self.text[pos:pos + 20]!r}")

    def string(self, pos: int) -> Tuple[str, int]:
        out, start, pos = [], pos, pos + 1
        while True:
            end = min((i for i in (self.text.find("'", pos), self.text.find("\\", pos)) if i >= 0), default=-1)
            if end < 0:
                self.fail(start, "a STON string is never closed (no closing ')")
            out.append(self.text[pos:end])
            if self.text[end] == "'":
                return "".join(out), end + 1
            escape = self.text[end + 1 : end + 2]
            if escape == "u" and re.match(r"[0-9a-fA-F]{4}", self.text[end + 2 : end + 6]):
                out.append(chr(int(self.text[end + 2 : end + 6], 16)))
                pos = end + 6
            elif escape in _ESCAPES and escape:
                out.append(_ESCAPES[escape])
                pos = end + 2
            else:
                self.fail(end, f"unknown STON escape \\{escape} in a string")

    def after_item(self, pos: int, start: int, what: str, brackets: str, parts: str) -> Tuple[bool, int]:
        """After an item of the list or map opened at `start`: (True, past its closing bracket) at its end,
        else (False, past the ',' before the next one)."""
        pos = self.skip(pos)
        char = self.text[pos : pos + 1]
        if char == brackets[1]:
            return True, pos + 1
        if not char:
            self.fail(start, f"the STON {what} {brackets[0]} opened here is never closed")
        if char != ",":
            self.fail(pos, f"a STON {what} needs ',' between {parts} and '{brackets[1]}' at its end")
        return False, pos + 1

    def list(self, pos: int, depth: int) -> Tuple[list, int]:
        start, items, pos = pos, [], self.skip(pos + 1)
        if self.text.startswith("]", pos):
            return items, pos + 1
        while True:
            item, pos = self.value(pos, depth + 1)
            items.append(item)
            ended, pos = self.after_item(pos, start, "list", "[]", "items")
            if ended:
                return items, pos

    def map(self, pos: int, depth: int) -> Tuple[dict, int]:
        start, items, pos = pos, {}, self.skip(pos + 1)
        if self.text.startswith("}", pos):
            return items, pos + 1
        while True:
            key_at = self.skip(pos)
            key, pos = self.value(key_at, depth + 1)
            if not isinstance(key, str):
                self.fail(key_at, "a STON map key must be a symbol or a string")
            pos = self.skip(pos)
            if not self.text.startswith(":", pos):
                self.fail(pos, f"expected ':' after the key {key!r} in a STON map")
            items[key], pos = self.value(pos + 1, depth + 1)
            ended, pos = self.after_item(pos, start, "map", "{}", "entries")
            if ended:
                return items, pos


# -- method bodies ------------------------------------------------------------------------------

_PLAIN = re.compile(r"[^'\"$#\[\]]+")
_PLAIN_IN_ARRAY = re.compile(r"[^'\"$()]+")


def _past_quoted(text: str, start: int, quote: str, what: str, fail: _Fail) -> int:
    """The position after the string or comment opened at start ('' and "" stand for the quote itself)."""
    pos = start + 1
    while True:
        end = text.find(quote, pos)
        if end < 0:
            fail(start, f"the {what} opened here is never closed")
        if text.startswith(quote, end + 1):
            pos = end + 2
            continue
        return end + 1


def _past_literal_array(text: str, start: int, fail: _Fail) -> int:
    """The position after the literal array whose `(` is at start; brackets inside it do not count."""
    depth, pos = 0, start
    while pos < len(text):
        char = text[pos]
        if char == "(":
            depth, pos = depth + 1, pos + 1
        elif char == ")":
            depth, pos = depth - 1, pos + 1
            if depth == 0:
                return pos
        elif char == "'":
            pos = _past_quoted(text, pos, "'", "string", fail)
        elif char == '"':
            pos = _past_quoted(text, pos, '"', "comment", fail)
        elif char == "$":
            pos += 2
        else:
            pos = _PLAIN_IN_ARRAY.match(text, pos).end()
    fail(start, "the literal array #( opened here is never closed")


def body_end(text: str, start: int, fail: _Fail) -> int:
    """The position of the `]` that closes the method body opened at start.

    Skips strings, comments, character literals (`$]`, `$'`, `$"`) and literal arrays, and counts
    the brackets of blocks and byte arrays.
    """
    depth, pos = 0, start
    while pos < len(text):
        char = text[pos]
        if char == "[":
            depth, pos = depth + 1, pos + 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return pos
            pos += 1
        elif char == "'":
            pos = _past_quoted(text, pos, "'", "string", fail)
        elif char == '"':
            pos = _past_quoted(text, pos, '"', "comment", fail)
        elif char == "$":
            pos += 2
        elif char == "#":
            pos = _past_literal_array(text, pos + 1, fail) if text.startswith("(", pos + 1) else pos + 1
        else:
            pos = _PLAIN.match(text, pos).end()
    fail(start, f"the method body opened here has no closing ] ({depth} bracket(s) left open at the end of the file)")


def _trim_right(text: str) -> str:
    """Monticello's Tonel reader: drop trailing white space back to and including one line end."""
    end = len(text)
    while end > 0 and text[end - 1] in " \t\f\n\r":
        end -= 1
        if text[end] in "\n\r":
            break
    return text[:end]


def _trim_comment(text: str) -> str:
    """A class comment loses white space through one line end at each side."""
    start = 0
    while start < len(text) and text[start] in " \t\f\n\r":
        start += 1
        if text[start - 1] in "\n\r":
            break
    return _trim_right(text[start:])


# -- files ----------------------------------------------------------------------------------------

_DEFINITION = re.compile(r"(Class|Trait|Extension|Package)\s*(?=\{)")
_HEADER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:[ \t]+(class|classSide))?[ \t]*>>")
_MESSAGE_PATTERN = re.compile(
    r"\s*(?:(?:[A-Za-z_][A-Za-z0-9_]*:\s*[A-Za-z_][A-Za-z0-9_]*\b\s*)+|[-+*/\\<>=~@%|&?,!]+\s*[A-Za-z_][A-Za-z0-9_]*\s*"
    r"|[A-Za-z_][A-Za-z0-9_]*\s*)\Z"
)


class TonelFile:
    """One `.st` file of a Tonel package: its definition and methods.

        >>> tonel = TonelFile.read(Path("src/Foo/Foo.class.st"))
        >>> tonel.kind, tonel.definition["name"], [m.source[:3] for m in tonel.methods]
        ('Class', 'Foo', ['bar'])
    """

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.fail = _Fail(path, text)
        self.comment: Optional[str] = None
        self.kind = ""
        self.definition: Dict[str, object] = {}
        self.definition_line = 1
        self.methods: List[MethodDefinition] = []
        self.method_lines: List[int] = []

    @classmethod
    def read(cls, path: Path) -> "TonelFile":
        return cls.parse(path, read_text(path))

    @classmethod
    def parse(cls, path: Path, text: str) -> "TonelFile":
        tonel = cls(path, text)
        tonel._parse()
        return tonel

    def fail_definition(self, problem: str):
        raise SourceError(self.path, problem, self.definition_line)

    @property
    def name(self) -> str:
        return self.definition["name"]

    def _parse(self):
        text, fail, ston = self.text, self.fail, _Ston(self.text, self.fail)
        pos = ston.skip(0)
        if text.startswith('"', pos):
            end = _past_quoted(text, pos, '"', "class comment", fail)
            self.comment = _trim_comment(text[pos + 1 : end - 1].replace('""', '"'))
            pos = ston.skip(end)
        match = _DEFINITION.match(text, pos)
        if not match:
            fail(pos, f"expected `Class {{`, `Trait {{`, `Extension {{` or `Package {{`, found {text[pos:pos + 20]!r}")
        self.kind, self.definition_line = match.group(1), line_of(text, pos)
        self.definition, pos = ston.map(match.end(), 0)
        name = self.definition.get("name")
        if not isinstance(name, str) or not (_IDENTIFIER.match(name) or self.kind == "Package" and name):
            fail(match.start(), f"the {self.kind} definition needs a #name, e.g. #name : 'Foo' (found {name!r})")
        while True:
            pos = ston.skip(pos)
            if pos >= len(text):
                return
            if self.kind == "Package":
                fail(pos, "package.st holds only `Package { ... }`")
            pos = self._method(pos, ston)

    def _method(self, pos: int, ston: _Ston) -> int:
        text, fail = self.text, self.fail
        metadata = {}
        if text.startswith("{", pos):
            metadata, pos = ston.map(pos, 0)
            pos = ston.skip(pos)
        header = _HEADER.match(text, pos)
        if not header:
            fail(pos, f"expected a method such as `{self.name} >> selector [`, found {text[pos:pos + 30]!r}")
        class_name, side = header.groups()
        if class_name != self.name:
            what = {"Class": "defines class", "Trait": "defines trait", "Extension": "extends"}[self.kind]
            fail(pos, f"a method for {class_name}, but this file {what} {self.name}; move it to {class_name}'s file")
        opening = text.find("[", header.end())
        if opening < 0:
            fail(pos, f"the method {text[pos:header.end()]!r} has no body: `[` not found")
        pattern = text[header.end() : opening]
        if not _MESSAGE_PATTERN.match(pattern):
            fail(pos, f"cannot read the message pattern {pattern.strip()[:40]!r} of a method of {self.name}")
        closing = body_end(text, opening, fail)
        pattern = pattern[:-1] if pattern.endswith(" ") else pattern
        source = pattern.lstrip() + _trim_right(text[opening + 1 : closing])
        category = metadata.get("category", "")
        if not isinstance(category, str):
            fail(pos, f"the method's #category must be a string or symbol, not {category!r}")
        self.methods.append(MethodDefinition(class_name, side is not None, category, source))
        self.method_lines.append(line_of(text, pos))
        return closing + 1


# -- packages ------------------------------------------------------------------------------------


def _names(tonel: TonelFile, key: str) -> Tuple[str, ...]:
    value = tonel.definition.get(key, [])
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) and _IDENTIFIER.match(v) for v in value):
        tonel.fail_definition(f"#{key} of {tonel.name} must be a list of names, not {value!r}")
    return tuple(value)


def _slot_names(tonel: TonelFile) -> Tuple[str, ...]:
    """Plain `#slots : [ '#a', '#b' ]`; a slot with a class (`#a => Slot`) has no Monticello form."""
    names = []
    for slot in tonel.definition.get("slots", []) or []:
        match = re.fullmatch(r"\s*#?([A-Za-z_][A-Za-z0-9_]*)\s*", slot) if isinstance(slot, str) else None
        if not match:
            tonel.fail_definition(f"the slot {slot!r} of {tonel.name} cannot be written as an instance variable of a .mcz")
        names.append(match.group(1))
    return tuple(names)


def _text_value(tonel: TonelFile, key: str, default: str = "") -> str:
    value = tonel.definition.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        tonel.fail_definition(f"#{key} of {tonel.name} must be a string or symbol, not {value!r}")
    return value


def _belongs(tonel: TonelFile, package: str) -> str:
    """The class category; refuses a class of another package."""
    category = _text_value(tonel, "category")
    owner = _text_value(tonel, "package")
    tag = _text_value(tonel, "tag")
    where = tonel.path.name
    if owner:
        if owner != package:
            raise SourceError(
                tonel.path,
                f"{tonel.name} is in package {owner!r} (#package), but package.st names {package!r}; "
                f"move {where} to its package",
                tonel.definition_line,
            )
        return category or (f"{owner}-{tag}" if tag else owner)
    lower = category.lower()
    if category and not (lower == package.lower() or lower.startswith(package.lower() + "-")):
        raise SourceError(
            tonel.path,
            f"{tonel.name} is in category {category!r}, which is not package {package!r} (see package.st); "
            f"move {where} to its package",
            tonel.definition_line,
        )
    return category or package


def _trait_names(expression: str) -> Tuple[str, ...]:
    """`TFoo + TBar - {#x}` -> (TFoo, TBar): the names outside braces."""
    return tuple(_TRAIT_NAME.findall(re.sub(r"\{[^}]*\}", "", expression)))


def _class_definition(tonel: TonelFile, package: str) -> ClassDefinition:
    category = _belongs(tonel, package)
    traits = _text_value(tonel, "traits").strip()
    if tonel.kind == "Trait":
        return ClassDefinition(
            name=tonel.name,
            superclass=None,
            kind="trait",
            instance_variables=_names(tonel, "instVars") + _slot_names(tonel),
            category=category,
            traits=_trait_names(traits),
            traits_expression=traits,
            comment=tonel.comment,
            is_trait=True,
        )
    superclass = _text_value(tonel, "superclass", "nil")
    if not (superclass == "nil" or _IDENTIFIER.match(superclass)):
        tonel.fail_definition(f"#superclass of {tonel.name} must be a class name, not {superclass!r}")
    kind = _text_value(tonel, "type", "normal")
    if kind not in CLASS_KINDS:
        tonel.fail_definition(f"#type {kind!r} of {tonel.name} is not one of {', '.join(CLASS_KINDS)}")
    return ClassDefinition(
        name=tonel.name,
        superclass=None if superclass == "nil" else superclass,
        kind=CLASS_KINDS[kind],
        instance_variables=_names(tonel, "instVars") + _slot_names(tonel),
        class_variables=_names(tonel, "classVars"),
        pool_dictionaries=_names(tonel, "pools"),
        category=category,
        traits=_trait_names(traits),
        traits_expression=traits,
        class_instance_variables=_names(tonel, "classInstVars"),
        class_traits=_trait_names(_text_value(tonel, "classTraits")),
        comment=tonel.comment,
    )


def read_package_name(folder: Path) -> str:
    path = folder / "package.st"
    if not path.is_file():
        raise SourceError(folder, "has no package.st, so it is not a Tonel package")
    tonel = TonelFile.read(path)
    if tonel.kind != "Package":
        raise SourceError(path, f"must hold `Package {{ #name : '...' }}`, not a {tonel.kind} definition", tonel.definition_line)
    return tonel.name


def read_tonel_package(folder: Path) -> PackageSource:
    """Every class, trait and extension file of a Tonel package folder, checked against package.st."""
    folder = Path(folder)
    name = read_package_name(folder)
    snapshot = Snapshot()
    class_traits: Dict[str, str] = {}
    where: Dict[Tuple[str, bool, str], str] = {}
    files = [path for path in list_folder(folder) if path.suffix == ".st" and path.name != "package.st"]
    for path in files:
        tonel = TonelFile.read(path)
        if tonel.kind == "Package":
            raise SourceError(path, "a second Package definition; only package.st holds one", tonel.definition_line)
        if tonel.kind in ("Class", "Trait"):
            if tonel.name in snapshot.classes:
                raise SourceError(path, f"defines {tonel.name} again (also defined in {where[(tonel.name, False, '')]})", tonel.definition_line)
            snapshot.classes[tonel.name] = _class_definition(tonel, name)
            where[(tonel.name, False, "")] = path.name
            expression = _text_value(tonel, "classTraits").strip()
            if expression and tonel.kind == "Class":  # a trait's class side follows its composition
                class_traits[tonel.name] = expression
        for method, line in zip(tonel.methods, tonel.method_lines):
            selector = pattern_selector(method.source)
            key = (method.class_name, method.meta, selector)
            if key in where:
                side = " class" if method.meta else ""
                raise SourceError(path, f"{method.class_name}{side} >> {selector} is defined twice (also in {where[key]})", line)
            where[key] = f"{path.name}:{line}"
            snapshot.methods.append(method)
    snapshot.categories = sorted({definition.category for definition in snapshot.classes.values()} - {name})
    return PackageSource(name=name, path=folder, kind="tonel", snapshot=snapshot, class_traits=class_traits)
