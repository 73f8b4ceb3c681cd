"""The real-world Tonel and FileTree packages beside the project (../shared/corpus, provenance in its READMEs).

For every package: the classes and methods pack counts match a count made here by a simpler, different
scan, and a round trip (folder -> .mcz -> hotload's .mcz reader) keeps every method source, protocol and
class definition. The scans here rely on the layout the tools write (a Tonel method ends at a line
holding only `]`; a FileTree method is one file), which the readers under test do not.
"""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from hotload.formats.mcz import read_mcz
from hotload.formats.pack import Packer
from hotload.formats.sources import read_package

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_folder(kind: str) -> Path:
    folder = CORPUS / kind
    if not folder.is_dir():
        pytest.skip(f"the real-world {kind} corpus is not beside the project (expected ../shared/corpus/{kind})")
    return folder


def tonel_packages():
    folder = CORPUS / "tonel"
    return sorted(p.name for p in folder.iterdir() if (p / "package.st").is_file()) if folder.is_dir() else ["(absent)"]


def filetree_packages():
    folder = CORPUS / "filetree"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".package")) if folder.is_dir() else ["(absent)"]


def readme_counts(kind: str) -> dict:
    """The corpus README's counts table: package -> {column: cell}."""
    lines = [line for line in (CORPUS / kind / "README.md").read_text().splitlines() if line.startswith("| ")]
    header = next(line for line in lines if "all methods" in line)
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = {}
    for line in lines[lines.index(header) + 1 :]:
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        if len(cells) == len(columns):
            rows[cells[0].strip("`")] = dict(zip(columns, cells))
    return rows


def packed(folder: Path, tmp_path: Path):
    package = read_package(folder)
    result = Packer(author="corpus").pack_source(package, tmp_path)
    return package, result, read_mcz(result.path)


# -- Tonel ------------------------------------------------------------------------------------------

HEADER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)( class| classSide)? >> ([^\[]*?) \[(.*)$")
STRINGS = re.compile(r"'((?:[^'\\]|\\.)*)'|#'([^']*)'|#([A-Za-z_][A-Za-z0-9_:]*)")


def ston_words(value: str):
    return [(a or b or c).replace("\\'", "'") for a, b, c in STRINGS.findall(value)]


def scan_tonel_file(path: Path):
    """(definition keyword, fields, comment, methods) by lines: methods are (class, meta, protocol, source)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    start = next(i for i, line in enumerate(lines) if re.match(r"^(Class|Trait|Extension) \{", line))
    comment = None
    if start:
        text = "\n".join(lines[:start])
        assert text.startswith('"') and text.endswith('"'), path
        comment = text[1:-1].replace('""', '"')
        comment = comment[1:] if comment.startswith("\n") else comment
        comment = comment[:-1] if comment.endswith("\n") else comment
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith("}"))
    block = " ".join(lines[start : end + 1])
    fields = {key: ston_words(value) for key, value in re.findall(r"#(\w+) : (\[[^\]]*\]|'(?:[^'\\]|\\.)*'|#'[^']*'|#[\w:]+)", block)}
    methods = []
    index = end + 1
    while index < len(lines):
        match = HEADER.match(lines[index])
        if not match:
            index += 1
            continue
        protocol_line = lines[index - 1]
        protocol = ston_words(protocol_line)[1] if protocol_line.startswith("{ #category") else ""
        close = lines.index("]", index + 1)
        # what lies between `[` and `]`, less trailing blanks back through one line end, follows the pattern
        inside = "\n".join([match.group(4)] + lines[index + 1 : close]) + "\n"
        source = match.group(3) + re.sub(r"\n?[ \t\f]*\Z", "", inside)
        methods.append((match.group(1), bool(match.group(2)), protocol, source))
        index = close + 1
    return lines[start].split()[0], fields, comment, methods


@pytest.mark.parametrize("name", tonel_packages())
def test_tonel_package_counts_and_round_trip(name, tmp_path):
    folder = corpus_folder("tonel") / name
    scans = {path.name: scan_tonel_file(path) for path in sorted(folder.glob("*.st")) if path.name != "package.st"}
    defined = {fields["name"][0]: (kind, fields, comment) for kind, fields, comment, _ in scans.values() if kind != "Extension"}
    expected_methods = [method for *_, methods in scans.values() for method in methods]
    grep_count = sum(
        1 for path in folder.glob("*.st") for line in path.read_text().split("\n") if HEADER.match(line)
    )
    package, result, mcz = packed(folder, tmp_path)
    assert (result.classes, result.methods) == (len(defined), len(expected_methods)) == (len(defined), grep_count)
    readme = readme_counts("tonel")[name]
    assert result.classes == int(readme["classes"]) + int(readme["traits"])
    assert result.methods == int(readme["all methods"])

    # the reader rebuilds each source exactly; the .mcz keeps it (hotload's chunk reader drops final line ends)
    key = lambda m: (m.class_name, m.meta, m.protocol, m.source)  # noqa: E731
    assert Counter(map(key, package.snapshot.methods)) == Counter(expected_methods)
    kept = Counter((c, meta, protocol, source.rstrip("\n")) for c, meta, protocol, source in expected_methods)
    assert Counter(map(key, mcz.snapshot.methods)) == kept

    assert set(mcz.snapshot.classes) == set(defined)
    for class_name, (kind, fields, comment) in defined.items():
        definition = mcz.snapshot.classes[class_name]
        assert definition.is_trait == (kind == "Trait")
        assert definition.comment == comment, class_name
        category = fields.get("category") or ["-".join(fields["package"] + fields.get("tag", []))]
        assert definition.category == category[0]
        if kind == "Class":
            assert definition.superclass == fields["superclass"][0]
            assert definition.instance_variables == tuple(fields.get("instVars", []))
            assert definition.class_variables == tuple(fields.get("classVars", []))
            assert definition.pool_dictionaries == tuple(fields.get("pools", []))
            assert definition.class_instance_variables == tuple(fields.get("classInstVars", []))
            kinds = {"bytes": "variableByteSubclass", "words": "variableWordSubclass", "variable": "variableSubclass",
                     "weak": "weakSubclass"}
            assert definition.kind == kinds.get((fields.get("type") or ["normal"])[0], "subclass")
            assert definition.traits == tuple(re.findall(r"\b[A-Z]\w*", re.sub(r"\{[^}]*\}", "", " ".join(fields.get("traits", [])))))
    assert mcz.name == package.name == name


# -- FileTree -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", filetree_packages())
def test_filetree_package_counts_and_round_trip(name, tmp_path):
    folder = corpus_folder("filetree") / name
    method_files = sorted(
        path for path in folder.glob("*/*/*.st") if path.parent.name in ("instance", "class")
        and path.parent.parent.suffix in (".class", ".trait", ".extension")
    )
    class_folders = sorted(path for path in folder.iterdir() if path.suffix in (".class", ".trait"))
    package, result, mcz = packed(folder, tmp_path)
    assert (result.classes, result.methods) == (len(class_folders), len(method_files))
    readme = readme_counts("filetree")[name.replace(".package", "")]
    assert result.classes == int(readme["classes"]) + int(readme["traits"])
    assert result.methods == int(readme["all methods"])

    expected = Counter()
    for path in method_files:
        protocol, _, source = path.read_text(encoding="utf-8").partition("\n")
        owner = path.parent.parent
        properties = json.loads((owner / "properties.json").read_text())
        expected[(properties["name"], path.parent.name == "class", protocol, source)] += 1
    key = lambda m: (m.class_name, m.meta, m.protocol, m.source)  # noqa: E731
    assert Counter(map(key, package.snapshot.methods)) == expected
    kept = Counter({(c, meta, protocol, source.rstrip("\n")): n for (c, meta, protocol, source), n in expected.items()})
    assert Counter(map(key, mcz.snapshot.methods)) == kept

    kinds = {"normal": "subclass", "bytes": "variableByteSubclass", "words": "variableWordSubclass",
             "variable": "variableSubclass", "weak": "weakSubclass"}
    for class_folder in class_folders:
        properties = json.loads((class_folder / "properties.json").read_text())
        definition = mcz.snapshot.classes[properties["name"]]
        assert definition.superclass == properties["super"]
        assert definition.kind == kinds[properties["type"]]
        assert definition.category == properties["category"]
        assert definition.instance_variables == tuple(properties["instvars"])
        assert definition.class_variables == tuple(properties["classvars"])
        assert definition.pool_dictionaries == tuple(properties["pools"])
        assert definition.class_instance_variables == tuple(properties["classinstvars"])
        assert definition.comment_stamp == properties.get("commentStamp", "")
        readme_path = class_folder / "README.md"
        assert definition.comment == (readme_path.read_text().lstrip("\n") if readme_path.is_file() else None)
    assert mcz.name == package.name == name.replace(".package", "")


def test_the_same_package_in_both_formats_packs_the_same_classes(tmp_path):
    """STON-Core exists as Tonel (pharo) and as FileTree (svenvc/ston): the same 14 classes and class methods."""
    tonel = read_package(corpus_folder("tonel") / "STON-Core")
    filetree = read_package(corpus_folder("filetree") / "STON-Core.package")
    assert set(tonel.snapshot.classes) == set(filetree.snapshot.classes)
    own = lambda p: {(m.class_name, m.meta) for m in p.snapshot.methods if m.class_name in p.snapshot.classes}  # noqa: E731
    assert own(tonel) == own(filetree)
    for name, definition in tonel.snapshot.classes.items():
        other = filetree.snapshot.classes[name]
        assert (definition.superclass, definition.instance_variables, definition.category) == (
            other.superclass, other.instance_variables, other.category,
        )
