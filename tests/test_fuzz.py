"""Property-based fuzzing of the readers: for any input only hotload's own errors may escape.

    HOTLOAD_FUZZ_EXAMPLES=10000 python3 -m pytest -q -m fuzz tests/test_fuzz.py   # as .ci/run does

By default each reader gets 200 examples (HOTLOAD_FUZZ_EXAMPLES sets the count).
"""

import functools
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import CORPUS
from helpers import class_def, make_package, method
from hotload.formats import sexpr
from hotload.formats.chunks import ChunkError, Snapshot, _read_chunks, read_source, source_plan_facts
from hotload.errors import HotloadError
from hotload.formats.mcz import PlanFacts, parse_version_info, read_mcz, read_planned
from hotload.formats.plan_cache import PlanReader

settings.register_profile(
    "hotload-fuzz",
    max_examples=int(os.environ.get("HOTLOAD_FUZZ_EXAMPLES", "200")),
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
fuzz_settings = settings.get_profile("hotload-fuzz")
pytestmark = pytest.mark.fuzz

OWN_ERRORS = (HotloadError, ChunkError, sexpr.SexprError)


def own_errors_only(call, label=""):
    """The call's result, or None when it raised one of hotload's errors; anything else fails the test."""
    try:
        result = call()
    except OWN_ERRORS as error:
        event(f"{label}{type(error).__name__}")
        return None
    event(f"{label}read")
    return result


# Each input is decoded from one drawn byte string (a "recipe"): one draw per example keeps
# hypothesis fast enough for 10,000 examples a reader, and it still shrinks a failure to a short recipe.


def pick(table, byte: int):
    return table[byte % len(table)]


def edit(text, recipe: bytes, table):
    """Edit text as recipe says, three bytes an edit: replace, insert, delete or repeat a stretch."""
    for index in range(0, len(recipe) - 2, 3):
        kind, where, what = recipe[index : index + 3]
        at = where * len(text) // 256
        if kind % 4 == 0:
            text = text[:at] + pick(table, what) + text[at + 1 :]
        elif kind % 4 == 1:
            text = text[:at] + pick(table, what) + text[at:]
        elif kind % 4 == 2:
            text = text[:at] + text[at + 1 + what % 16 :]
        else:
            text = text[:at] + text[at : at + 1 + what % 16] * (2 + kind // 64) + text[at:]
    return text


# -- s-expressions --------------------------------------------------------------------------------

KEYS = ["name", "id", "ancestors", "stepChildren", "message", "author", "date", "time", "x"]
SEXPR_TOKENS = ["(", ")", "(", ")", " ", "\t", "\r\n", "'", "''", "'a'", "'it''s'", "'\u00e9'", "!", "\x00", "#", "1", "(id 'a')", *KEYS]


def tree_from(recipe: bytes):
    """A tree of lists, words and strings: each byte opens a list, closes one or adds a leaf."""
    stack = [[]]
    for byte in recipe:
        if byte % 5 == 0:
            stack.append([])
        elif byte % 5 == 1 and len(stack) > 1:
            done = stack.pop()
            stack[-1].append(done)
        elif byte % 2:
            stack[-1].append(sexpr.Symbol(pick(KEYS, byte // 5)))
        else:
            stack[-1].append(pick(["", "a", "it's", "''", "(x)", "\u00e9 \n"], byte // 5))
    while len(stack) > 1:
        done = stack.pop()
        stack[-1].append(done)
    return stack[0]


def render(tree) -> str:
    if isinstance(tree, list):
        return "(" + " ".join(render(item) for item in tree) + ")"
    return str(tree) if isinstance(tree, sexpr.Symbol) else sexpr.quote(tree)


@fuzz_settings
@given(st.binary(min_size=1, max_size=160))
def test_fuzz_sexpr_parse(recipe):
    tree = tree_from(recipe)
    assert sexpr.parse(render(tree)) == tree
    own_errors_only(lambda: sexpr.parse(edit(render(tree), recipe[::-1][:12], SEXPR_TOKENS)), "edited tree: ")
    own_errors_only(lambda: sexpr.parse("".join(pick(SEXPR_TOKENS, byte) for byte in recipe)), "tokens: ")


# -- version members ----------------------------------------------------------------------------

VERSION_IDS = ["a", "b", "c", "zz"]


def version_text(recipe: bytes) -> str:
    """A version member as Monticello nests it: each byte wraps the history so far in newer versions
    (up to 620 at once), perhaps with a back-reference or another ancestor beside it, or changes
    the fields of the versions after it; the last bytes edit the text."""
    fields = ""

    def version(number: int, ancestors: str = "") -> str:
        return f"(name 'V-x.{number}' id '{pick(VERSION_IDS, number)}'{fields} ancestors ({ancestors}) stepChildren ())"

    history, edits = recipe[:-9] or recipe, recipe[-9:] if len(recipe) > 9 else b""
    text = version(0)
    for byte in history:
        operation, argument = byte % 8, byte // 8
        if operation < 4:
            text = version(argument, text)
        elif operation == 4:
            text = version(argument, f"{text} (id '{pick(VERSION_IDS, argument)}')")
        elif operation == 5:
            text = version(argument, f"{text} {version(argument + 1)}")
        elif operation == 6:
            fields = f"{fields} {pick(KEYS, argument)} {pick(['', 'x', '(x)', '()'], argument // 9)}" if argument > 3 else ""
        else:
            opening, closing = version(argument, "\0").split("\0")
            text = opening * (argument * 20) + text + closing * (argument * 20)
    return edit(text, edits, SEXPR_TOKENS)


@fuzz_settings
@given(st.binary(min_size=1, max_size=160))
def test_fuzz_parse_version_info(recipe):
    info = own_errors_only(lambda: parse_version_info(version_text(recipe)), "history: ")
    if info is not None:
        history = list(info.ancestry())
        assert all(isinstance(each.name, str) for each in history)
        repr(info), hash(info)
    own_errors_only(lambda: parse_version_info("".join(pick(SEXPR_TOKENS, byte) for byte in recipe)), "tokens: ")


# -- chunk sources --------------------------------------------------------------------------------

WHOLE_CHUNKS = [
    class_def("Foo", ivars="a b").replace("\n", "\r"),
    "Seaside.WAComponent subclass: #Bar instanceVariableNames: '' classVariableNames: '' package: 'X'!\n",
    "nil subclass: #N instanceVariableNames: '' classVariableNames: '' category: 'X'!\r",
    "Foo subclass: #Baz uses: TFoo + TBar - {#x} instanceVariableNames: '' classVariableNames: '' package: 'X'!\r",
    "Trait named: #TFoo uses: {} category: 'X'!\r",
    "Foo class instanceVariableNames: 'r'!\r",
    "Foo class uses: TFoo classTrait!\r",
    "Trait named: uses: {} category: 'X'!\r",
    "SystemOrganization addCategory: !\r",
    "SystemOrganization addCategory: #'X'!\r",
    "!Foo commentStamp: 'jd 1/1/2020' prior: 0!\r",
    "I am a comment!\r",
    "Foo initialize!\r",
    "!Foo reorganize!\r('acc' a)\r!\r",
    method("Foo", "a\r\t^ a"),
    method("Foo class", "at: i put: v\r\t^ v", protocol="x"),
    method("Seaside.WAComponent", "b\r\t^ 'it''s!!'"),
    "\r",
    " ",
]
PIECES = [
    "!Foo methodsFor: 'acc' stamp: 'jd 1/1/2020 10:00'!\r",
    "!Foo classSide methodsFor: 'x'!\n",
    "+ other\r\t^ self",
    "! !\r",
    "!",
    "!!",
    "\r",
    "\n",
    " ",
    "\t",
    "'",
    "''",
    '"',
    '"comment"',
    "#",
    "#sym:with:",
    "$!",
    ":=",
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    "Foo",
    "subclass:",
    "class",
    "methodsFor:",
    "\u00e9",
    "\x00",
    "1",
]


def chunk_text(recipe: bytes) -> str:
    """Mostly whole chunks, some pieces of them."""
    return "".join(pick(WHOLE_CHUNKS, byte) if byte < 208 else pick(PIECES, byte) for byte in recipe)


def touch(snapshot: Snapshot):
    """Everything callers read from a snapshot, the lazy parts included."""
    assert all(isinstance(name, str) and name == each.name for name, each in snapshot.classes.items())
    assert all(isinstance(category, str) for category in snapshot.categories)
    counts = snapshot.method_class_counts()
    assert snapshot.method_count() == sum(counts.values())
    methods = snapshot.methods
    assert len(methods) == sum(counts.values())
    for each in methods:
        own_errors_only(lambda: each.selector, "selector: ")
    assert snapshot.method_class_counts() == counts


def method_fields(snapshot: Snapshot):
    return [(m.class_name, m.meta, m.protocol, m.source, m.stamp) for m in snapshot.methods]


@fuzz_settings
@given(st.binary(min_size=1, max_size=120))
def test_fuzz_read_source(recipe):
    text = chunk_text(recipe)
    snapshot = own_errors_only(lambda: read_source(text))
    if snapshot is None:
        return
    touch(snapshot)
    plain = Snapshot()  # the fast path (splitting at method units) reads what reading chunk by chunk reads
    _read_chunks(text, plain, plain._methods, True)
    assert (snapshot.categories, snapshot.classes, snapshot.doits) == (plain.categories, plain.classes, plain.doits)
    assert method_fields(snapshot) == method_fields(plain)


def outcome(call):
    """("ok", result) or ("error", type name, message) for hotload's own errors."""
    try:
        return ("ok", call())
    except OWN_ERRORS as error:
        return ("error", type(error).__name__, str(error))


@fuzz_settings
@given(st.binary(min_size=1, max_size=120))
def test_fuzz_source_plan_facts(recipe):
    """What planning reads of a source is what read_source reads, and it fails with the same error."""
    text = chunk_text(recipe)
    whole = outcome(lambda: read_source(text))
    planned = outcome(lambda: source_plan_facts(text))
    event(f"plan facts: {planned[0]}")
    if whole[0] == "error":
        assert planned == whole
        return
    snapshot = whole[1]
    classes = tuple(
        (name, each.superclass, tuple(each.traits) + tuple(each.class_traits)) for name, each in snapshot.classes.items()
    )
    assert planned == ("ok", (classes, snapshot.method_class_counts()))


# -- .mcz files -----------------------------------------------------------------------------------


def rezipped(data: bytes, compression: int) -> bytes:
    """The zip rewritten with every member in one compression method, without snapshot.bin."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w", compression) as target:
        for name in source.namelist():
            if name != "snapshot.bin":
                target.writestr(name, source.read(name))
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def seeds():
    """Small real packages to mutate: one written by `hotload pack`, the smallest of the corpus, each also stored."""
    source = class_def("Shape", category="Demo") + method("Shape", "area\n\t^ 0") + method("Shape", "+ other\n\t^ self")
    with tempfile.TemporaryDirectory() as folder:
        found = [make_package(Path(folder), "Demo", source).read_bytes()]
    if CORPUS.is_dir():
        found += [path.read_bytes() for path in sorted(CORPUS.glob("*.mcz"), key=lambda path: path.stat().st_size)[:3]]
    return [variant for data in found for variant in (data, rezipped(data, zipfile.ZIP_STORED))]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "Fuzz-x.1.mcz"


def zip_landmarks(data: bytes):
    """Offsets of the zip's headers (local, central, end record): mutations there reach zipfile's parsing."""
    marks = [0, max(0, len(data) - 22)]
    for signature in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"):
        at = data.find(signature)
        while at != -1:
            marks.append(at)
            at = data.find(signature, at + 1)
    return marks


def mutated(data: bytes, recipe: bytes) -> bytes:
    """The bytes edited as recipe says, four bytes an edit: flip a bit, set a byte, truncate, insert,
    delete, or copy a stretch over another place; at an offset from a header or anywhere."""
    data = bytearray(data)
    landmarks = zip_landmarks(bytes(data))
    for index in range(0, len(recipe) - 3, 4):
        if not data:
            break
        kind, high, low, value = recipe[index : index + 4]
        if kind & 0x80:
            at = min(len(data) - 1, pick(landmarks, high) + low % 47)
        else:
            at = (high << 8 | low) % len(data)
        kind %= 6
        if kind == 0:
            data[at] ^= 1 << value % 8
        elif kind == 1:
            data[at] = pick([0x00, 0x01, 0x08, 0x0C, 0x63, 0x7F, 0x80, 0xFF, value], value)
        elif kind == 2:
            del data[at:]
        elif kind == 3:
            data[at:at] = bytes([value]) * (1 + value % 8)
        elif kind == 4:
            del data[at : at + 1 + value % 64]
        else:
            start = (value * len(data)) // 256
            data[at : at + 16] = data[start : start + 1 + value % 64]
    return bytes(data)


@functools.lru_cache(maxsize=None)
def seed_members(index: int):
    with zipfile.ZipFile(io.BytesIO(seeds()[index])) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def with_member_edited(index: int, recipe: bytes) -> bytes:
    """A well-formed zip (right CRCs and sizes) whose one member is edited: the readers behind the zip get it."""
    members = dict(seed_members(index))
    name = pick(sorted(members), recipe[0])
    members[name] = mutated(members[name], recipe[1:])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", pick([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], recipe[0] // 8)) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buffer.getvalue()


@fuzz_settings
@given(st.binary(min_size=6, max_size=22))
def test_fuzz_read_mcz(scratch, recipe):
    index = recipe[0] % len(seeds())
    if recipe[0] & 0x80:
        scratch.write_bytes(with_member_edited(index, recipe[1:]))
        label = "member edited: "
    else:
        scratch.write_bytes(mutated(seeds()[index], recipe[1:]))
        label = "zip edited: "
    package = own_errors_only(lambda: read_mcz(scratch), label)
    if package is not None:
        touch(package.snapshot)
        package.extended_classes()
        list(package.version.ancestry())


def lazily_read(problem: str) -> bool:
    """A version or dependency member that does not parse: planning reads only its name (see mcz.plan_facts_of)."""
    return "unparsable 'version'" in problem or "unparsable 'dependencies/" in problem


@fuzz_settings
@given(st.binary(min_size=6, max_size=22))
@example(recipe=b"\x00\x9cj\xb8\x00\x00")  # found by CI's 10,000 examples: a member past the central directory
def test_fuzz_read_planned(scratch, recipe):
    """read_planned reads what read_mcz reads, and fails with its error (but for the histories it does not read)."""
    index = recipe[0] % len(seeds())
    if recipe[0] & 0x80:
        scratch.write_bytes(with_member_edited(index, recipe[1:]))
    else:
        scratch.write_bytes(mutated(seeds()[index], recipe[1:]))
    whole = outcome(lambda: read_mcz(scratch))
    planned = outcome(lambda: read_planned(scratch))
    event(f"planned: {planned[0]}, whole: {whole[0]}")
    if whole[0] == "ok":
        assert planned[0] == "ok" and planned[1].facts == whole[1].facts
    elif planned[0] == "ok":
        assert lazily_read(whole[2]), whole
        event("planned: history not read")
    else:
        assert planned == whole


@functools.lru_cache(maxsize=None)
def cache_seed(folder: str) -> bytes:
    """A cache file written for the seed packages (kept in folder)."""
    paths = seed_paths(folder)
    reader = PlanReader(path=Path(folder) / "seed-cache.json", workers=1)
    reader.read_all(paths)
    reader.save()
    return (Path(folder) / "seed-cache.json").read_bytes()


@functools.lru_cache(maxsize=None)
def seed_paths(folder: str):
    paths = []
    for number, data in enumerate(seeds()):
        path = Path(folder) / f"Seed-x.{number}.mcz"
        path.write_bytes(data)
        paths.append(path)
    return paths


@fuzz_settings
@given(st.binary(min_size=5, max_size=40))
def test_fuzz_plan_cache_reader(tmp_path_factory, recipe):
    """Any cache file: the reader never fails, and a cache that is not intact changes nothing."""
    folder = str(tmp_path_factory.getbasetemp() / "fuzz-cache")
    os.makedirs(folder, exist_ok=True)
    truth = [read_mcz(path).facts for path in seed_paths(folder)]
    data = mutated(cache_seed(folder), recipe[1:])
    if recipe[0] & 1:  # a damaged body with a checksum that fits: entries are checked one by one
        header, _, body = data.partition(b"\n")
        try:
            fields = json.loads(header)
            fields["sha256"] = hashlib.sha256(body).hexdigest()
            data = json.dumps(fields).encode() + b"\n" + body
            event("cache: checksum fixed")
        except (ValueError, TypeError):
            event("cache: header unreadable")
    target = Path(folder) / "fuzzed-cache.json"
    target.write_bytes(data)
    reader = PlanReader(path=target, workers=1)
    found, problems = reader.read_all(seed_paths(folder))
    assert not problems and len(found) == len(truth)
    assert all(isinstance(package.facts, PlanFacts) for package in found)
    if not recipe[0] & 1:
        assert [package.facts for package in found] == truth
    event(f"cache: {reader.hits} hits")
    reader.save()


def test_seeds_read_unmutated(scratch):
    for data in seeds():
        scratch.write_bytes(data)
        assert read_mcz(scratch).snapshot.method_count() > 0
