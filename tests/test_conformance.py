"""Client and loader agree on the shared examples in tests/conformance/ (see its README).

Every example is checked twice: `test_client[...]` renders it with hotload.staging.protocol / hotload.formats.chunks,
`test_loader[...]` takes the rendering printed by one gst process that files in the loader and
tests/conformance/Conformance.st. Both must equal the example's `.expected` rendering, so a failure
names the example and the side that disagrees.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

from hotload.staging import protocol

from hotload.formats import sexpr
from hotload.formats.chunks import ChunkError, read_source
from hotload.errors import InputError, ProtocolError
from hotload.images.loader_sources import loader_files, st_string

HERE = Path(__file__).resolve().parent / "conformance"

# -- the examples ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    id: str
    kind: str  # names | manifests | triggers | chunks
    expected: List[str]
    value: str = ""  # names: the unescaped value
    name_kind: str = ""  # names: batch | package
    path: Path = None

    def __str__(self):
        return self.id


def unescape(value: str) -> str:
    """names.tsv values: `-` is empty; \\\\ \\t \\n \\r \\- and \\xHH."""
    if value == "-":
        return ""
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            code = value[i + 1]
            if code == "x":
                out.append(chr(int(value[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append({"t": "\t", "n": "\n", "r": "\r"}.get(code, code))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def escape(value: str) -> str:
    """A rendered field: `-` when empty, `\\-` for a lone dash; \\\\ \\t \\n \\r; other bytes of the
    UTF-8 text below 32 or from 127 as \\xHH (the loader sees the bytes)."""
    if value == "":
        return "-"
    if value == "-":
        return "\\-"
    out = []
    for byte in value.encode("utf-8"):
        ch = chr(byte)
        if ch in "\\\t\n\r":
            out.append({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif byte < 32 or byte >= 127:
            out.append(f"\\x{byte:02x}")
        else:
            out.append(ch)
    return "".join(out)


def row(*fields) -> str:
    return "\t".join(escape(str(field)) for field in fields)


def expected_lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _examples() -> List[Example]:
    examples = []
    for number, line in enumerate((HERE / "names.tsv").read_text(encoding="utf-8").split("\n"), 1):
        if not line or line.startswith("#"):
            continue
        kind, value, verdict = line.split("\t")
        examples.append(Example(f"names:{number}", "names", [verdict], unescape(value), kind))
    for folder, suffix in (("manifests", ".txt"), ("triggers", ".txt"), ("chunks", ".st")):
        for path in sorted((HERE / folder).glob("*" + suffix)):
            stem = path.name[: -len(suffix)]
            examples.append(Example(f"{folder}/{stem}", folder, expected_lines(path.with_suffix(".expected")), path=path))
    return examples


EXAMPLES = _examples()


def _id(example: Example) -> str:
    if example.kind == "names":
        return f"{example.id}:{example.name_kind}:{escape(example.value)[:40]}"
    return example.id


# -- the client's renderings ---------------------------------------------------------------

_SEPARATORS = " \t\n\r\f"  # Smalltalk's isSeparator


def client_name(kind: str, value: str) -> List[str]:
    if kind == "batch":
        return ["valid" if protocol.is_batch_id(value) else "invalid"]
    assert kind == "package", kind
    try:
        protocol.check_package_file_name(value)
    except InputError:
        return ["invalid"]
    return ["valid"]


def client_manifest(data: bytes) -> List[str]:
    try:
        manifest = protocol.Manifest.parse(data.decode("utf-8"))
    except ProtocolError:
        return ["invalid"]
    health = [row(*manifest.health.row())] if manifest.health else []
    return [row("batch", manifest.batch)] + [
        row("package", e.position, e.file, e.size, e.sha256, e.version) for e in manifest.entries
    ] + [row("unload", package, version) for package, version in manifest.unloads] + health


def client_trigger(data: bytes) -> List[str]:
    try:
        batch = protocol.parse_trigger(data.decode("utf-8", "replace"))  # as push reads it
    except ProtocolError:
        return ["invalid"]
    return ["save-only"] if batch is None else [row("batch", batch)]


def client_chunks(data: bytes) -> List[str]:
    try:
        snapshot = read_source(sexpr.decode(data))  # as mcz and pack read it
        methods = [(method, method.selector) for method in snapshot.methods]
    except ChunkError:
        return ["error"]
    heads, sides = [], []
    for d in snapshot.classes.values():
        if d.is_trait:
            heads.append(row("trait", d.name, d.category, " ".join(d.traits)))
        else:
            heads.append(
                row(
                    "class", d.name, "nil" if d.superclass is None else d.superclass, d.kind,
                    " ".join(d.instance_variables), " ".join(d.class_variables), " ".join(d.pool_dictionaries),
                    d.category, " ".join(d.traits),
                )
            )
        if d.class_instance_variables:
            sides.append(row("classside", d.name, " ".join(d.class_instance_variables)))
        if d.class_traits:
            sides.append(row("classtraits", d.name, " ".join(d.class_traits)))
        if d.comment is not None:
            sides.append(row("comment", d.name, d.comment.strip(_SEPARATORS)))
    lines = heads + sorted(sides)
    for method, selector in methods:
        side = "class" if method.meta else "instance"
        lines.append(row("method", method.class_name, side, method.protocol, selector, method.source.strip(_SEPARATORS)))
    lines += [row("doit", doit.strip(_SEPARATORS)) for doit in snapshot.doits]
    return lines or ["none"]


def client_rendering(example: Example) -> List[str]:
    if example.kind == "names":
        return client_name(example.name_kind, example.value)
    data = example.path.read_bytes()  # bytes: no newline translation
    return {"manifests": client_manifest, "triggers": client_trigger, "chunks": client_chunks}[example.kind](data)


# -- the tests ----------------------------------------------------------------------------------


def test_every_example_has_a_well_formed_expectation():
    assert len(EXAMPLES) > 200
    for example in EXAMPLES:
        assert example.expected, example.id
        if example.kind == "names":
            assert example.name_kind in ("batch", "package") and example.expected[0] in ("valid", "invalid"), example.id
        if example.kind == "manifests":
            stem = example.id.split("/", 1)[1]
            valid = example.expected != ["invalid"]
            assert stem.startswith("valid-" if valid else "invalid-"), f"{example.id}: name and verdict differ"
        if example.kind == "triggers":
            assert example.expected[0].split("\t")[0] in ("save-only", "batch", "legacy", "invalid"), example.id
    ids = [example.id for example in EXAMPLES]
    assert len(ids) == len(set(ids))
    for folder, suffix in (("manifests", ".txt"), ("triggers", ".txt"), ("chunks", ".st")):
        for path in (HERE / folder).glob("*.expected"):
            assert path.with_suffix(suffix).exists(), f"{path.name} has no example beside it"


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_client(example):
    expected = example.expected
    if expected[0].startswith("legacy\t"):
        expected = ["invalid"]  # a protocol-1 trigger: the client rejects it; only the loader tells it apart
    assert client_rendering(example) == expected


@pytest.fixture(scope="module")
def loader_renderings():
    if not shutil.which("gst"):
        pytest.skip("GNU Smalltalk is not installed (run .ci/install-system as root)")
    from hotload.images.gst import Gst

    output = Gst().run(
        f"HLConformance printAllIn: {st_string(HERE)}!\n",
        files=[*loader_files("gst"), HERE / "Conformance.st"],
    )
    renderings = {}
    done = False
    for line in output.splitlines():
        if line.startswith("CONF\t"):
            _, example_id, *rest = line.split("\t", 2)
            if example_id == "done" and not rest:
                done = True
            else:
                renderings.setdefault(example_id, []).append(rest[0] if rest else "")
    assert done, f"Conformance.st did not finish:\n{output[-3000:]}"
    return renderings


def test_loader_renders_every_example(loader_renderings):
    assert sorted(loader_renderings) == sorted(example.id for example in EXAMPLES)



@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_loader(example, loader_renderings):
    assert loader_renderings.get(example.id) == example.expected
