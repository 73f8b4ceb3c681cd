"""The chunk ("bang") format of `snapshot/source.st` and of file-outs.

    >>> snapshot = read_source("Object subclass: #Foo instanceVariableNames: 'a' "
    ...     "classVariableNames: '' poolDictionaries: '' category: 'X'!\\n"
    ...     "!Foo methodsFor: 'acc'!\\na\\n\\t^ a! !\\n")
    >>> snapshot.classes['Foo'].instance_variables, snapshot.methods[0].selector
    (('a',), 'a')

Chunks end at a `!` that is not doubled; `!!` stands for one `!`. A chunk that
starts with `!` is a reader declaration (`methodsFor:`, `commentStamp:prior:`)
that consumes the chunks after it.
"""

import re
from collections import Counter
from dataclasses import dataclass
from itertools import compress, count
from typing import Dict, List, Optional, Tuple


class ChunkError(ValueError):
    pass


@dataclass
class ClassDefinition:
    name: str
    superclass: Optional[str]
    kind: str = "subclass"
    instance_variables: Tuple[str, ...] = ()
    class_variables: Tuple[str, ...] = ()
    pool_dictionaries: Tuple[str, ...] = ()
    category: str = ""
    traits: Tuple[str, ...] = ()
    class_instance_variables: Tuple[str, ...] = ()
    class_traits: Tuple[str, ...] = ()
    comment: Optional[str] = None
    comment_stamp: str = ""
    is_trait: bool = False
    traits_expression: str = ""


class MethodDefinition:
    """One method; its selector is read from the source when first asked for."""

    __slots__ = ("class_name", "meta", "protocol", "source", "stamp", "_selector")

    def __init__(self, class_name: str, meta: bool, protocol: str, source: str, stamp: str = ""):
        self.class_name = class_name
        self.meta = meta
        self.protocol = protocol
        self.source = source
        self.stamp = stamp
        self._selector = None

    @property
    def selector(self) -> str:
        if self._selector is None:
            self._selector = method_selector(self.source)
        return self._selector


    def __repr__(self):
        side = " class" if self.meta else ""
        return f"<MethodDefinition {self.class_name}{side}>>{self.selector}>"


class Snapshot:
    """What a source defines. `methods` is built on first use: the reader keeps runs of
    Monticello's one-method-per-header units as spans of the source text, and
    `method_class_counts()` answers from counts taken while reading, without building them."""

    __hash__ = None

    def __init__(self, categories=None, classes=None, methods=None, doits=None):
        self.categories: List[str] = [] if categories is None else categories
        self.classes: dict = {} if classes is None else classes  # name -> ClassDefinition, in source order
        self.doits: List[str] = [] if doits is None else doits
        self._methods: List[MethodDefinition] = [] if methods is None else methods
        self._text = ""
        self._pending = None  # methods read between the units of _text: {gap index: [MethodDefinition]}
        self._counts = None  # class name -> methods, in order of first method

    @property
    def methods(self) -> List[MethodDefinition]:
        if self._pending is not None:
            self._methods = _materialize(self._text, self._pending)
            self._text, self._pending, self._counts = "", None, None
        return self._methods

    @methods.setter
    def methods(self, methods: List[MethodDefinition]):
        self._methods = methods
        self._text, self._pending, self._counts = "", None, None

    def method_class_counts(self) -> Dict[str, int]:
        """Methods per class name (instance and class side together), in order of each class's first method."""
        if self._pending is not None:
            return dict(self._counts)
        counts: Dict[str, int] = {}
        for method in self._methods:
            counts[method.class_name] = counts.get(method.class_name, 0) + 1
        return counts

    def method_count(self) -> int:
        if self._pending is not None:
            return sum(self._counts.values())
        return len(self._methods)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.categories, self.classes, self.methods, self.doits) == (
            other.categories,
            other.classes,
            other.methods,
            other.doits,
        )

    def __repr__(self):
        return (
            f"Snapshot(categories={self.categories!r}, classes={self.classes!r}, "
            f"methods={self.methods!r}, doits={self.doits!r})"
        )


# -- chunks -----------------------------------------------------------------


def _unterminated(tail: str):
    raise ChunkError(f"the text ends inside a chunk with no closing '!' ({tail.strip()[:40]!r}...)")


# -- tokens of one chunk ------------------------------------------------------

_TOKENS = re.compile(
    r"""\s+|"[^"]*"|
    (?P<string>'(?:[^']|'')*')|
    (?P<keyword>[A-Za-z_][A-Za-z0-9_]*:(?!=))|
    (?P<symbol>\#(?:[A-Za-z_][A-Za-z0-9_:]*|'(?:[^']|'')*'|[-+*/\\<>=~@%|&?,]+))|
    (?P<identifier>[A-Za-z_][A-Za-z0-9_.]*)|
    (?P<other>\$.|[-+*/\\<>=~@%|&?,]+|[(){}\[\].;^#]|[0-9][0-9a-zA-Z.]*|:=?)""",
    re.X | re.S,
)


def _tokens(text: str):
    pos = 0
    out = []
    while pos < len(text):
        match = _TOKENS.match(text, pos)
        if not match:
            raise ChunkError(f"cannot read {text[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind:
            out.append((kind, match.group(kind)))
    return out


def _string_value(token) -> str:
    kind, value = token
    if kind == "string":
        return value[1:-1].replace("''", "'")
    if kind == "symbol":
        value = value[1:]
        return value[1:-1].replace("''", "'") if value.startswith("'") else value
    return value


@dataclass
class _Message:
    receiver: List[tuple]
    parts: List[Tuple[str, List[tuple]]]  # (keyword, argument tokens)

    @property
    def selector(self) -> str:
        return "".join(keyword for keyword, _ in self.parts)

    def arg(self, keyword: str):
        for name, tokens in self.parts:
            if name == keyword:
                return tokens
        return None

    def string_arg(self, keyword: str) -> Optional[str]:
        tokens = self.arg(keyword)
        if not tokens:
            return None
        return _string_value(tokens[0])


def _parse_keyword_message(text: str) -> Optional[_Message]:
    """Split `receiver kw1: arg kw2: arg` at keywords of nesting depth 0."""
    tokens = _tokens(text)
    depth = 0
    receiver, parts = [], []
    for token in tokens:
        kind, value = token
        if kind == "other" and value in "([{":
            depth += 1
        elif kind == "other" and value in ")]}":
            depth -= 1
        if kind == "keyword" and depth == 0:
            parts.append((value, []))
        elif parts:
            parts[-1][1].append(token)
        else:
            receiver.append(token)
    if not parts:
        return None
    return _Message(receiver, parts)


def _names(value: Optional[str]) -> Tuple[str, ...]:
    return tuple((value or "").split())


def _trait_names(tokens) -> Tuple[str, ...]:
    names = []
    depth = 0
    for kind, value in tokens or ():
        if kind == "other" and value == "{":
            depth += 1
        elif kind == "other" and value == "}":
            depth -= 1
        elif kind == "identifier" and depth == 0 and value[0].isupper():
            names.append(value)
    return tuple(names)


def _tokens_text(tokens) -> str:
    return " ".join(value for _, value in tokens or ())


_CLASS_KINDS = (
    "subclass:",
    "variableSubclass:",
    "variableByteSubclass:",
    "variableWordSubclass:",
    "weakSubclass:",
    "ephemeronSubclass:",
    "immediateSubclass:",
)

_SELECTOR = re.compile(
    r"""(?:\s|"[^"]*")*   # white space and comments before the message pattern
    (?:((?:[A-Za-z_][A-Za-z0-9_]*:\s*[A-Za-z_][A-Za-z0-9_]*\b\s*)+)
      |([-+*/\\<>=~@%|&?,!]+)\s*[A-Za-z_]
      |([A-Za-z_][A-Za-z0-9_]*))""",
    re.X,
)


def method_selector(source: str) -> str:
    match = _SELECTOR.match(source)
    if not match:
        raise ChunkError(f"cannot read the selector of a method starting {source[:40]!r}")
    keywords, binary, unary = match.groups()
    if keywords:
        return "".join(re.findall(r"[A-Za-z_][A-Za-z0-9_]*:", keywords))
    return binary or unary


# -- the reader ------------------------------------------------------------------


def _receiver_class(tokens) -> Tuple[Optional[str], bool]:
    """`Foo` -> ('Foo', False); `Foo class` -> ('Foo', True); `Foo classSide` and `TFoo classTrait` too."""
    names = [value for kind, value in tokens if kind == "identifier"]
    if len(names) == 1:
        return names[0], False
    if len(names) == 2 and names[1] in ("class", "classSide", "classTrait"):
        return names[0], True
    return None, False


# Fast paths for the forms Monticello writes. Each matches only text that the general
# tokenizing reader above would read to the same result; anything else (comments, traits,
# unusual spacing, quoted symbols) takes the general path.
_CLASS_DEFINITION = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s+"
    r"(subclass|variableSubclass|variableByteSubclass|variableWordSubclass|weakSubclass|ephemeronSubclass|immediateSubclass):"
    r"\s*\#([A-Za-z_][A-Za-z0-9_:]*)"
    r"\s+instanceVariableNames:\s*'([^']*(?:''[^']*)*)'"
    r"\s+classVariableNames:\s*'([^']*(?:''[^']*)*)'"
    r"(?:\s+poolDictionaries:\s*'([^']*(?:''[^']*)*)')?"
    r"\s+(?:category|package):\s*'([^']*(?:''[^']*)*)'\s*\Z"
)
_COMMENT_STAMP = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s+commentStamp:\s*'((?:[^']|'')*)'\s+prior:\s*[0-9]+\s*\Z")
_UNARY_DOIT = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_.]*(?:\s+[A-Za-z_][A-Za-z0-9_.]*)*\s*\Z")


def _unquote(value: Optional[str]) -> str:
    return value.replace("''", "'") if value and "''" in value else (value or "")


def _fast_class_definition(match) -> ClassDefinition:
    superclass, kind, name, ivars, cvars, pools, category = match.groups()
    return ClassDefinition(
        name=name,
        superclass=None if superclass == "nil" else superclass,
        kind=kind,
        instance_variables=tuple(_unquote(ivars).split()),
        class_variables=tuple(_unquote(cvars).split()),
        pool_dictionaries=tuple(_unquote(pools).split()),
        category=_unquote(category),
    )


_METHODS_FOR = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_.]*)(?:\s+(class|classSide|classTrait))?\s+methodsFor:\s*"
    r"'((?:[^']|'')*)'(?:\s+stamp:\s*'((?:[^']|'')*)')?\s*$"
)


# One unit of Monticello's own layout: a `methodsFor:` header without `!` as _METHODS_FOR reads it (class
# name, side, protocol, stamp), one non-blank method without `!`, the blank chunk that ends
# the group, and the white space of the blank chunk before the next `!`. read_source splits
# the raw text at these units and reads only the text between them chunk by chunk. A unit is
# taken only where it stands for exactly what the chunk reader would read there; read_source
# checks that (see _read_split) and otherwise reads the whole text chunk by chunk.
_UNIT_PATTERN = r"""!
    \s*(?P<class>[A-Za-z_][A-Za-z0-9_.]*)(?:\s+(?P<side>class|classSide|classTrait))?\s+methodsFor:\s*
    '(?P<protocol>[^'!]*(?:''[^'!]*)*)'(?:\s+stamp:\s*'(?P<stamp>[^'!]*(?:''[^'!]*)*)')?\s*!
    (?P<source>\s*[^\s!][^!]*)!
    \s+!(?!!)(?:\s+(?=!(?!!)))?"""
_UNIT_WITH_GROUPS = re.compile(_UNIT_PATTERN, re.X)
_UNIT = re.compile(re.sub(r"\(\?P<(?!class)\w+>", "(?:", _UNIT_PATTERN), re.X)  # class name only: cheaper
_CHUNK_END = re.compile(r"[^!]*(?:!![^!]*)*!(?!!)")  # through the next single `!`


def _clean(raw: str) -> str:
    """A chunk as the reader sees it: LF line ends, `!!` unescaped."""
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if "!!" in raw:
        raw = raw.replace("!!", "!")
    return raw


def read_source(text: str) -> Snapshot:
    """Read a whole chunk-format source into a Snapshot."""
    _check_terminated(text)
    parts = _UNIT.split(text)  # [text, class name, text, class name, ..., text]
    if len(parts) > 1:
        snapshot = _read_split(text, parts)
        if snapshot is not None:
            return snapshot
    snapshot = Snapshot()
    _read_chunks(text, snapshot, snapshot._methods, True)
    return snapshot


def _check_terminated(text: str):
    tail = text[text.rfind("!") + 1 :]
    if tail.strip():
        _unterminated(tail.replace("\r\n", "\n").replace("\r", "\n"))
    stripped = text.rstrip()
    if (len(stripped) - len(stripped.rstrip("!"))) % 2 == 0 and stripped:
        _unterminated(stripped[-40:].replace("!!", "!"))  # it ends in `!!`, an escaped `!`


class _PlanClass:
    """A class as planning reads it from Monticello's usual definition: its superclass only. The reader
    may still set what a full ClassDefinition holds (a comment, class-side variables) on it."""

    traits = ()
    class_traits = ()

    def __init__(self, superclass: Optional[str]):
        self.superclass = superclass


# For planning, in _read_chunks at the start of a top-level chunk: one class definition chunk in the
# form _CLASS_DEFINITION reads, or a `commentStamp:prior:` declaration (the blank chunk, the header
# _COMMENT_STAMP reads and the comment), each with its terminating `!`, read as the chunk reader
# reads them (no `!` inside the definition or the header, so the raw text is the clean chunk but for
# line ends, which are white space either way).
_PLAN_STRING = r"'[^'!]*(?:''[^'!]*)*'"
_PLAN_ELEMENT = re.compile(
    r"\s*(?:([A-Za-z_][A-Za-z0-9_.]*)\s+"
    r"(?:subclass|variableSubclass|variableByteSubclass|variableWordSubclass|weakSubclass|ephemeronSubclass|immediateSubclass):"
    r"\s*\#([A-Za-z_][A-Za-z0-9_:]*)"
    rf"\s+instanceVariableNames:\s*{_PLAN_STRING}"
    rf"\s+classVariableNames:\s*{_PLAN_STRING}"
    rf"(?:\s+poolDictionaries:\s*{_PLAN_STRING})?"
    rf"\s+(?:category|package):\s*{_PLAN_STRING}\s*!(?!!)"
    rf"|!(?!!)\s*[A-Za-z_][A-Za-z0-9_.]*\s+commentStamp:\s*{_PLAN_STRING}\s+prior:\s*[0-9]+\s*!(?!!)"
    r"[^!]*(?:!![^!]*)*!(?!!)"
    # Chunks that add nothing to a plan and read without an error: `SystemOrganization addCategory:` with
    # a string or symbol the tokenizer reads (a category, which a plan does not use), and doits of
    # names only, such as `Foo initialize` (_UNARY_DOIT: a doit).
    rf"|SystemOrganization\s+addCategory:\s*(?:\#?{_PLAN_STRING}|\#[A-Za-z_][A-Za-z0-9_:]*(?:-[A-Za-z0-9_]+)*)\s*!(?!!)"
    r"|[A-Za-z_][A-Za-z0-9_.]*(?:\s+[A-Za-z_][A-Za-z0-9_.]*)*\s*!(?!!))"
)


# The units of _UNIT_PATTERN exactly as Monticello writes them (single spaces in the header, `! !`
# after the method), class name only: a quarter cheaper to match. Any other unit stays in the text
# between units, which is read chunk by chunk.
_PLAN_UNIT = re.compile(
    r"!([A-Za-z_][A-Za-z0-9_.]*)(?: class| classSide| classTrait)? methodsFor: "
    rf"{_PLAN_STRING}(?: stamp: {_PLAN_STRING})?!\s*[^\s!][^!]*! !(?!!)(?:\s+(?=!(?!!)))?"
)


def _plan_doit(chunk: str, snapshot: "Snapshot"):
    """_read_doit for planning: the usual class definition becomes a _PlanClass; all else as _read_doit."""
    match = _CLASS_DEFINITION.match(chunk)
    if match:
        superclass, name = match.group(1, 3)
        snapshot.classes[name] = _PlanClass(None if superclass == "nil" else superclass)
        return
    _read_doit(chunk, snapshot)


def source_plan_facts(text: str) -> Tuple[Tuple[Tuple[str, Optional[str], Tuple[str, ...]], ...], Dict[str, int]]:
    """What planning reads of a source, exactly as read_source reads it, with the same errors:
    the classes as (name, superclass, traits and class-side traits) in source order, and the
    methods per class name in order of each class's first method. Builds no method objects and
    none of the classes' variables."""
    _check_terminated(text)
    found = _plan_run_split(text)
    if found is not None:
        return found
    parts = _PLAN_UNIT.split(text)
    snapshot = None
    if len(parts) > 1:
        snapshot = _read_split(text, parts, _plan_doit)
    if snapshot is None:
        snapshot = Snapshot()
        _read_chunks(text, snapshot, snapshot._methods, True, _plan_doit)
    return _plan_classes(snapshot), snapshot.method_class_counts()


def _plan_classes(snapshot: Snapshot) -> Tuple[Tuple[str, Optional[str], Tuple[str, ...]], ...]:
    return tuple(  # traits and class_traits are tuples, as the reader sets them
        [
            (name, definition.superclass, definition.traits + definition.class_traits)
            for name, definition in snapshot.classes.items()
        ]
    )


# The header of a unit of _PLAN_UNIT up to its protocol's opening quote, with the `!` before it.
_PLAN_PREFIX = re.compile(r"!([A-Za-z_][A-Za-z0-9_.]*)(?: class| classSide| classTrait)? methodsFor: ")
_STAMP_KEY = " stamp: "


def _plan_run_split(text: str):
    """source_plan_facts' answer for a source whose units (_PLAN_UNIT) form one unbroken run, as
    Monticello writes them: the text before the first unit, then units only, each
    `!Class[ class] methodsFor: 'protocol' stamp: 'stamp'!`, a method with no `!`, `! !` and the
    white space up to the next unit's `!`, then the text after the last unit. Checked with a few
    operations over all the units at once instead of a regular expression over every character.
    None when the source is not in that form (or its text between units does not read as
    _read_split reads it): the caller then splits it with _PLAN_UNIT.

    Why this is _PLAN_UNIT.split: the first unit is found by _PLAN_UNIT.search itself. Split at
    every `!`, a unit starting at the `!` before piece i is pieces i to i + 3: the header (no `!`
    inside), a method with something other than white space, a single space (`! !`), then the
    white space the unit takes when a `!` not followed by `!` comes next (a non-empty piece after
    it). Where every unit but the last takes that white space, each unit ends at the `!` that
    begins the next, so the units follow one another with nothing between them, and the search
    after the last goes on at that unit's end, in the text after it, which _PLAN_UNIT.split reads.
    """
    first = _PLAN_UNIT.search(text)
    if first is None:
        return None
    start = first.start()
    pieces = text[start:].split("!")  # pieces[0] == "": the text starts with the first unit's `!`
    total = len(pieces)
    last_space = total - 1
    while last_space > 0 and pieces[last_space] != " ":  # the last unit's `! !`, near the end
        last_space -= 1
    if last_space % 4 != 3:
        return None
    units = (last_space + 1) // 4  # unit k: pieces 4k+1 (header), 4k+2 (method), 4k+3 (" "), 4k+4 (white space)
    if pieces[3:last_space + 1:4].count(" ") != units:
        return None
    methods = pieces[2:last_space:4]
    if "" in methods or any(map(str.isspace, methods)):
        return None
    if not all(map(str.isspace, pieces[4:last_space - 2:4])):  # each unit but the last takes its white space
        return None
    # The last unit: `! !` not followed by `!`; it takes the white space after it when a lone `!` follows.
    after = last_space + 1
    if after >= total or (not pieces[after] and after != total - 1):
        return None
    taken = 0
    if pieces[after] and pieces[after].isspace() and after + 1 < total and (pieces[after + 1] or after + 1 == total - 1):
        taken = len(pieces[after])
    # The headers, each `Class[ side] methodsFor: 'protocol' stamp: 'stamp'` with no quote in either string:
    # split at quotes, the `!`-joined headers give exactly four parts per header, and every fourth is
    # `!Class[ side] methodsFor: ` (its `!` is the only one in it). There are as many `!` as headers, so
    # no other part holds one: each header is its own prefix, protocol, ` stamp: ` and stamp.
    quoted = ("!" + "!".join(pieces[1:last_space:4])).split("'")
    if len(quoted) != 4 * units + 1 or quoted[-1] or quoted[2::4].count(_STAMP_KEY) != units:
        return None
    run_counts: Dict[str, int] = {}
    for prefix, number in Counter(quoted[0:-1:4]).items():  # in order of first appearance
        match = _PLAN_PREFIX.fullmatch(prefix)
        if match is None:
            return None
        name = match.group(1)
        run_counts[name] = run_counts.get(name, 0) + number
    tail_length = sum(map(len, pieces[after:])) + (total - 1 - after)  # the text after the last `! !`
    end = len(text) - tail_length + taken
    tail_parts = _PLAN_UNIT.split(text[end:])
    gaps = [text[:start], *tail_parts[0::2]]
    names = [run_counts, *tail_parts[1::2]]
    snapshot = Snapshot()
    gap_methods = _read_gaps(gaps, snapshot, _plan_doit)
    if gap_methods is None:
        return None
    if not gap_methods and len(names) == 1:  # Monticello's layout: no method outside the run
        return _plan_classes(snapshot), run_counts
    counts: Dict[str, int] = {}
    for index in range(len(gaps)):
        for method in gap_methods.get(index, ()):
            counts[method.class_name] = counts.get(method.class_name, 0) + 1
        if index < len(names):
            name = names[index]
            if name.__class__ is str:
                counts[name] = counts.get(name, 0) + 1
            else:
                for name, number in name.items():
                    counts[name] = counts.get(name, 0) + number
    return _plan_classes(snapshot), counts


def _read_gaps(gaps: List[str], snapshot: Snapshot, read_doit=None) -> Optional[dict]:
    """The methods read chunk by chunk from each non-empty gap, {gap index: [MethodDefinition]}, when
    each gap but the last ends where the reader expects a new chunk (see _read_split); None otherwise,
    and for any error."""
    last = len(gaps) - 1
    gap_methods = {}
    try:
        for index in compress(count(), gaps):  # the non-empty ones
            methods = []
            if not _read_chunks(gaps[index], snapshot, methods, index == last, read_doit):
                return None
            if methods:
                gap_methods[index] = methods
    except Exception:
        return None
    return gap_methods


def _read_split(text: str, parts: List[str], read_doit=None) -> Optional[Snapshot]:
    """The snapshot, when the units found by splitting are those the chunk reader reads.

    They are when each text between two units reads chunk by chunk to its very end, leaving
    the reader expecting a new chunk after a single `!` followed by white space (every unit
    holds exactly four `!`, none inside its header: _UNIT_PATTERN allows no other). Answers
    None otherwise, and for any error, which the chunk-by-chunk reading then raises (or not)
    itself.
    """
    gaps = parts[0::2]
    names = parts[1::2]
    snapshot = Snapshot()
    gap_methods = _read_gaps(gaps, snapshot, read_doit)
    if gap_methods is None:
        return None
    counts = Counter()
    done = 0
    for index, methods in gap_methods.items():
        counts.update(names[done:index])
        for method in methods:
            counts[method.class_name] += 1
        done = index
    counts.update(names[done:])
    snapshot._text, snapshot._pending, snapshot._counts = text, gap_methods, counts
    return snapshot


def _materialize(text: str, gap_methods: dict) -> List[MethodDefinition]:
    """The methods of a text read by _read_split, in source order."""
    methods = []
    append = methods.append
    parts = _UNIT_WITH_GROUPS.split(text)
    for index in range(0, len(parts) // 6 + 1):
        if index in gap_methods:
            methods.extend(gap_methods[index])
        if index * 6 + 1 < len(parts):
            class_name, side, protocol, stamp, source = parts[index * 6 + 1 : index * 6 + 6]
            protocol = _clean(protocol)
            protocol = protocol.replace("''", "'") if "''" in protocol else protocol
            stamp = _clean(stamp).replace("''", "'") if stamp else ""
            append(MethodDefinition(class_name, side is not None, protocol, _clean(source).strip("\n"), stamp))
    return methods


def _read_chunks(text: str, snapshot: Snapshot, methods: list, at_end: bool, read_doit=None) -> bool:
    """Read text chunk by chunk (a chunk ends at a `!` that is not doubled) into snapshot and methods.

    With at_end false, text is followed by a unit: answers False unless it ends where the
    reader expects a new top-level chunk, with white space left (the blank chunk before the
    unit's `!`), or is empty.
    """
    chunk_end = _CHUNK_END.match
    methods_for = _METHODS_FOR.match
    read_doit = read_doit or _read_doit
    plan_element = _PLAN_ELEMENT.match if read_doit is _plan_doit else None
    classes = snapshot.classes
    pos = 0
    while True:
        if plan_element is not None:
            element = plan_element(text, pos)
            while element is not None:
                superclass, name = element.groups()
                if name is not None:
                    classes[name] = _PlanClass(None if superclass == "nil" else superclass)
                pos = element.end()
                element = plan_element(text, pos)
        found = chunk_end(text, pos)
        if found is None:
            return at_end or text[pos:].isspace() or not text
        chunk = text[pos : found.end() - 1]
        pos = found.end()
        if chunk and not chunk.isspace():  # i.e. chunk.strip(), without the copy
            read_doit(_clean(chunk), snapshot)
            continue
        found = chunk_end(text, pos)
        if found is None:
            return at_end
        header = _clean(text[pos : found.end() - 1])
        pos = found.end()
        match = methods_for(header)
        if match:
            class_name, side, protocol, stamp = match.groups()
            meta = side is not None
            protocol = protocol.replace("''", "'")
            stamp = stamp.replace("''", "'") if stamp else ""
            while True:
                found = chunk_end(text, pos)
                if found is None:
                    return at_end
                source = text[pos : found.end() - 1]
                pos = found.end()
                if not source or source.isspace():
                    break
                methods.append(MethodDefinition(class_name, meta, protocol, _clean(source).strip("\n"), stamp))
            continue
        found = chunk_end(text, pos)
        following = None
        if found is not None:
            following = _clean(text[pos : found.end() - 1])
            pos = found.end()
        elif not at_end:
            return False
        match = _COMMENT_STAMP.match(header)
        if match and following is not None:
            definition = snapshot.classes.get(match.group(1))
            if definition is not None:
                definition.comment = following.lstrip("\n")
                definition.comment_stamp = _unquote(match.group(2))
            continue
        _read_declaration(header, following, snapshot)


def _read_declaration(header: str, following: Optional[str], snapshot: Snapshot):
    """Reads a non-method declaration and the chunk after it (None at the end of the text)."""
    message = _parse_keyword_message(header)
    class_name, _ = _receiver_class(message.receiver) if message else (None, False)
    selector = message.selector if message else ""
    if class_name and selector in ("commentStamp:prior:", "commentStamp:") and following is not None:
        definition = snapshot.classes.get(class_name)
        if definition is not None:
            definition.comment = following.lstrip("\n")
            definition.comment_stamp = message.string_arg("commentStamp:") or ""
        return
    if message is None:  # `Foo reorganize` / `Foo class reorganize`: the chunk after it is skipped
        tokens = _tokens(header)
        if tokens and tokens[-1] == ("identifier", "reorganize") and _receiver_class(tokens[:-1])[0]:
            return
    raise ChunkError(f"unknown reader declaration !{header.strip()[:60]}!")


def _read_doit(chunk: str, snapshot: Snapshot):
    match = _CLASS_DEFINITION.match(chunk)
    if match:
        definition = _fast_class_definition(match)
        snapshot.classes[definition.name] = definition
        return
    if _UNARY_DOIT.match(chunk):  # no keyword: not a definition (e.g. `Foo initialize`)
        snapshot.doits.append(chunk.strip())
        return
    message = _parse_keyword_message(chunk)
    if message is not None:
        first = message.parts[0][0]
        if first in _CLASS_KINDS:
            snapshot_class = _class_definition(message, first)
            snapshot.classes[snapshot_class.name] = snapshot_class
            return
        if first == "named:" and _tokens_text(message.receiver) == "Trait":
            name = message.string_arg("named:")
            if not name:
                raise ChunkError("a trait definition without a trait name")
            snapshot.classes[name] = ClassDefinition(
                name=name,
                superclass=None,
                kind="trait",
                category=message.string_arg("category:") or message.string_arg("package:") or "",
                traits=_trait_names(message.arg("uses:")),
                traits_expression=_tokens_text(message.arg("uses:")),
                is_trait=True,
            )
            return
        if first == "addCategory:" and _tokens_text(message.receiver) == "SystemOrganization":
            category = message.string_arg("addCategory:")
            if category is None:
                raise ChunkError("addCategory: without a category")
            snapshot.categories.append(category)
            return
        class_name, meta = _receiver_class(message.receiver)
        if meta and first in ("instanceVariableNames:", "uses:"):
            definition = snapshot.classes.get(class_name)
            if definition is None:
                raise ChunkError(f"class-side definition of {class_name} before its class")
            if message.arg("instanceVariableNames:") is not None:
                definition.class_instance_variables = _names(message.string_arg("instanceVariableNames:"))
            if message.arg("uses:") is not None:
                definition.class_traits = _trait_names(message.arg("uses:"))
            return
    snapshot.doits.append(chunk.strip())


def _class_definition(message: _Message, kind_keyword: str) -> ClassDefinition:
    superclass_tokens = message.receiver
    superclass = _tokens_text(superclass_tokens)
    name = message.string_arg(kind_keyword)
    if not name:
        raise ChunkError("a class definition without a class name")
    return ClassDefinition(
        name=name,
        superclass=None if superclass in ("nil", "ProtoObject nil") else superclass,
        kind=kind_keyword[:-1],
        instance_variables=_names(
            message.string_arg("instanceVariableNames:")
            or message.string_arg("instanceVariablesNames:")
            or " ".join(_string_value(t) for t in message.arg("slots:") or () if t[0] == "symbol")  # slots: {#a. #b}
        ),
        class_variables=_names(message.string_arg("classVariableNames:")),
        pool_dictionaries=_names(message.string_arg("poolDictionaries:")),
        category=message.string_arg("category:") or message.string_arg("package:") or "",
        traits=_trait_names(message.arg("uses:")),
        traits_expression=_tokens_text(message.arg("uses:")),
    )
