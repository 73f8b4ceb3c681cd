"""Property-based fuzzing of the Tonel and FileTree readers.

    HOTLOAD_FUZZ_EXAMPLES=10000 python3 -m pytest -q -m fuzz tests/test_fuzz_sources.py

Properties: any class comment and any method body built from the tricky pieces (brackets inside strings, comments,
character literals and literal arrays, nested blocks, byte arrays, doubled quotes, bangs) reads back
exactly, and through the .mcz chunk format too; edited or arbitrary bytes in any file of a package
raise nothing but SourceError. Same settings and HOTLOAD_FUZZ_EXAMPLES as tests/test_fuzz.py.
"""

import shutil
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from hotload.formats.chunks import Snapshot, read_source
from hotload.formats.filetree import read_filetree_package
from hotload.formats.pack import monticello_source
from hotload.formats.sources import SourceError
from hotload.formats.tonel import TonelFile, read_tonel_package
from test_fuzz import edit, fuzz_settings, pick

pytestmark = pytest.mark.fuzz


def only_source_errors(call, label=""):
    """The call's result, or None when it raised SourceError; any other exception fails the test."""
    try:
        result = call()
    except SourceError as error:
        assert str(error).count("\n") == 0, str(error)  # one line
        event(f"{label}SourceError")
        return None
    event(f"{label}read")
    return result


# -- method bodies ----------------------------------------------------------------------------------

# Closed pieces: each is complete Smalltalk on its own, and most hold a bracket that does not count.
PIECES = [
    "'a ] b'", "']'", "'['", "'it''s ]'", "''''", "'\"'", "'$'",
    '"a ] comment"', '"["', '"say ""hi"" ]"', '"\'"', '"$"',
    "$]", "$[", "$'", '$"', "$$", "$ ", "$!",
    "#( $] ']' ] #( ) [ )", "#( #( $) ) ')' )", "#(1 2 #foo: 'x]')", "#[ 1 2 255 ]", "#[]",
    "#']'", "#'['", "#foo:bar:", "#+",
    "x", "self foo", "^ 1", "3 + 4", "a := b", ".", ";", "!", "!!", "{ 1. 2 }", "( 1 )",
    " ", "\t", "\n", "\n\t",
]


def body_from(recipe: bytes, depth: int = 0) -> str:
    """Pieces and blocks: a byte below 24 opens a block `[ ... ]` around what follows, up to 8 deep."""
    out = []
    index = 0
    while index < len(recipe):
        byte = recipe[index]
        index += 1
        if byte < 24 and depth < 8:
            inner_length = byte % 7 + 1
            inner = body_from(recipe[index : index + inner_length], depth + 1)
            index += inner_length
            out.append(f"[ {inner} ]" if byte % 2 else f"[:each | {inner}]")
        else:
            out.append(pick(PIECES, byte))
            if out[-1].startswith("$") and len(out[-1]) == 2:
                out.append(" ")  # `$x` followed by a letter would read on as one token anyway
    return "".join(out)


def tonel_class(*methods) -> str:
    head = "Class {\n\t#name : #Foo,\n\t#superclass : #Object,\n\t#category : #Fuzz\n}\n"
    return head + "".join(f"\n{{ #category : #fuzz }}\nFoo >> {selector} [\n\t{body}\n]\n" for selector, body in methods)


@fuzz_settings
@given(st.binary(min_size=1, max_size=60), st.binary(max_size=30))
def test_fuzz_tricky_method_bodies_read_back_exactly(first, second):
    bodies = [body_from(first) + " x", body_from(second) + " y"]
    comment = "c " + body_from(second[::-1]) + " c"  # a class comment doubles its quotes
    text = f'"\n{comment.replace(chr(34), chr(34) * 2)}\n"\n' + tonel_class(("first", bodies[0]), ("second: arg", bodies[1]))
    tonel = TonelFile.parse(Path("Foo.class.st"), text)
    assert tonel.comment == comment
    sources = [m.source for m in tonel.methods]
    assert sources == [f"first\n\t{bodies[0]}", f"second: arg\n\t{bodies[1]}"]
    snapshot = Snapshot(methods=list(tonel.methods))
    read = read_source(monticello_source("Fuzz", snapshot, []))
    assert [m.source for m in read.methods] == sources  # through the chunk format: `!` doubled and back


# -- bytes in package files ---------------------------------------------------------------------------

TONEL_FILE = tonel_class(("a", "^ 'a]' , $] asString"), ("b: x", "^ #( ] ) , [ x ]")) + (
    "\n{ #category : 'drag\\'n\\'drop' }\nFoo class >> c [ ^ \"]\" 1 ]\n"
)
TONEL_TOKENS = [
    "[", "]", "{", "}", "(", ")", "'", '"', "$", "#", "#(", ":", ",", ">>", " >> ", "class", "classSide",
    "Foo", "Bar", "\n", "\t", " ", "\\", "\\'", "#name", "#category", "#superclass", "Class {", "Trait {",
    "Extension {", "Package {", "\x00", "\u00e9", "\ufeff", "\r\n", "\r", "#[", "[]", "1", "-", "nil",
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-sources")


def tonel_package(folder: Path, file_name: str, data: bytes) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    (folder / "package.st").write_text("Package { #name : #Fuzz }\n")
    (folder / "Foo.class.st").write_text(TONEL_FILE)
    (folder / file_name).write_bytes(data)
    return folder


@fuzz_settings
@given(st.binary(min_size=1, max_size=60))
def test_fuzz_edited_tonel_files_raise_only_source_errors(scratch, recipe):
    target = pick(["Foo.class.st", "package.st", "Foo.extension.st"], recipe[0])
    start = {"Foo.class.st": TONEL_FILE, "package.st": "Package { #name : #Fuzz }\n",
             "Foo.extension.st": "Extension { #name : #Foo }\n\nFoo >> z [ ^ $' ]\n"}[target]
    text = edit(start, recipe[1:], TONEL_TOKENS)
    folder = tonel_package(scratch / "edited", target, text.encode("utf-8", "surrogatepass"))
    package = only_source_errors(lambda: read_tonel_package(folder), f"{target}: ")
    if package is not None:
        assert all(isinstance(m.source, str) and isinstance(m.protocol, str) for m in package.snapshot.methods)


@fuzz_settings
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_in_a_tonel_file_raise_only_source_errors(scratch, data):
    folder = tonel_package(scratch / "bytes", "Bar.class.st", data)
    only_source_errors(lambda: read_tonel_package(folder), "bytes: ")


# -- FileTree metadata and method files ----------------------------------------------------------------

FILETREE_FILES = {
    "Foo.class/properties.json": (
        '{\n\t"commentStamp" : "jd 1/2/2024 10:00",\n\t"super" : "Object",\n\t"category" : "Fuzz",\n'
        '\t"classinstvars" : [ ],\n\t"pools" : [ "P" ],\n\t"classvars" : [ "C" ],\n\t"instvars" : [ "a", "b" ],\n'
        '\t"name" : "Foo",\n\t"type" : "normal" }'
    ),
    "Foo.class/README.md": "A comment.",
    "Foo.class/instance/a.st": "accessing\na\n\t^ a",
    "Foo.class/class/new.st": "instance creation\nnew\n\t^ super new",
    "Foo.class/methodProperties.json": '{\n\t"class" : {\n\t\t"new" : "jd 1/2/2024 10:00" },\n\t"instance" : {\n\t\t"a" : "x" } }',
    "Bar.extension/properties.json": '{\n\t"name" : "Bar" }',
    "Bar.extension/instance/b.st": "*fuzz\nb\n\t^ 'b'",
    "monticello.meta/package": "(name 'Fuzz')",
    "monticello.meta/version": "(name 'Fuzz-jd.2' message 'x' id 'b' date '' time '' author 'jd' ancestors "
    "((name 'Fuzz-jd.1' message '' id 'a' date '' time '' author 'jd' ancestors () stepChildren ())) stepChildren ())",
}
JSON_TOKENS = [
    "{", "}", "[", "]", '"', ":", ",", "\\", '\\"', "\\u00", "null", "true", "1e999", "-", "\n", " ",
    '"name"', '"super"', '"type"', '"bytes"', '"huge"', '"category"', '"instvars"', "(", ")", "'", "(id 'a')",
    "\x00", "\u00e9", "\ud800", "\n!", "#", "[[[[[[[[[[[[[[[[[[[[", "]]]]]]]]]]",
]


def filetree_package(folder: Path, member: str, data: bytes) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    for name, text in FILETREE_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / member).write_bytes(data)
    return folder


@fuzz_settings
@given(st.binary(min_size=1, max_size=60))
def test_fuzz_edited_filetree_files_raise_only_source_errors(scratch, recipe):
    members = sorted(FILETREE_FILES)
    member = pick(members, recipe[0])
    text = edit(FILETREE_FILES[member], recipe[1:], JSON_TOKENS)
    folder = filetree_package(scratch / "Fuzz.package", member, text.encode("utf-8", "surrogatepass"))
    package = only_source_errors(lambda: read_filetree_package(folder), f"{member}: ")
    if package is not None:
        assert all(isinstance(name, str) for d in package.snapshot.classes.values() for name in d.instance_variables)


@fuzz_settings
@given(st.binary(min_size=1, max_size=120))
def test_fuzz_arbitrary_bytes_in_filetree_files_raise_only_source_errors(scratch, data):
    member = pick(sorted(FILETREE_FILES), data[0])
    folder = filetree_package(scratch / "Fuzz.package", member, data[1:])
    only_source_errors(lambda: read_filetree_package(folder), f"{member} bytes: ")
