"""Tonel package folders -> .mcz: method bodies with tricky brackets, every kind of definition, bad input.

Each package here is written by the test; the real-world corpus is in test_sources_corpus.py.
"""

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from cli_runner import run_in_process
from hotload.formats.mcz import read_mcz
from hotload.formats.pack import Packer
from hotload.formats.sources import SourceError, read_sources
from hotload.formats.tonel import read_tonel_package


def write_package(folder: Path, files: dict, name=None) -> Path:
    """A Tonel package folder: package.st plus the given files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.st").write_text(f"Package {{ #name : '{name or folder.name}' }}\n")
    for file_name, text in files.items():
        (folder / file_name).write_text(text)
    return folder


def class_file(name="Foo", extra="", methods="", comment=None, package="Pkg", superclass="Object"):
    head = f'"\n{comment}\n"\n' if comment is not None else ""
    return (
        f"{head}Class {{\n\t#name : '{name}',\n\t#superclass : '{superclass}',{extra}\n"
        f"\t#category : '{package}',\n\t#package : '{package}'\n}}\n{methods}"
    )


def tonel_method(header, body, category="demo"):
    return f"\n{{ #category : '{category}' }}\n{header} [\n{body}\n]\n"


def pack_and_read(folder: Path, dist: Path):
    results = Packer(author="jd").pack_folder(folder, dist)
    return [(result, read_mcz(result.path)) for result in results]


# Each body is what Monticello stores after the message pattern; all of them close a bracket that a
# naive counter would take for the end of the method.
TRICKY = {
    "characters": "\t^ { $]. $[. $'. $\". $$. $] }",
    "strings": "\t^ 'a ] b [[ c '' ]] d' , ']' , '['",
    "comments": '\t"a ] comment [ with ""quoted ]"" text"\n\t^ 1 "]"',
    "literalArrays": "\t^ #( $] ']' #( ] ) ] #[ 1 2 ] foo: #bar )",
    "byteArrays": "\t^ #[1 2 255] , #[ ]",
    "nestedBlocks": "\t^ [:x | [:y | [ x + y ] value ] value: 2 ] value: 1",
    "symbols": "\t^ #(#']' #'[' #']]')",
    "mixed": "\t| s |\n\ts := '$]'. \"$]\" $' == $' ifTrue: [ s := s , ']' ].\n\t^ [ s ] value",
    "bangs": "\t^ 'Hello!' , '!!' \"!\"",
}


def test_method_bodies_with_brackets_in_strings_comments_characters_and_literals(tmp_path):
    methods = "".join(tonel_method(f"Foo >> {selector}", body) for selector, body in TRICKY.items())
    methods += tonel_method("Foo >> at: index put: value", "\t^ index -> value", "accessing")
    methods += tonel_method("Foo >> , other", "\t^ other")
    folder = write_package(tmp_path / "Pkg", {"Foo.class.st": class_file(methods=methods)})
    package = read_tonel_package(folder)
    expected = {selector: f"{selector}\n{body}" for selector, body in TRICKY.items()}
    expected["at:put:"] = "at: index put: value\n\t^ index -> value"
    expected[","] = ", other\n\t^ other"
    read = {}
    for method in package.snapshot.methods:
        key = method.source.split("\n")[0]
        read[{"at: index put: value": "at:put:", ", other": ","}.get(key, key)] = method.source
    assert read == expected
    _, mcz = pack_and_read(folder, tmp_path / "dist")[0]
    assert [m.source for m in mcz.snapshot.methods] == [m.source for m in package.snapshot.methods]
    assert [m.protocol for m in mcz.snapshot.methods][-2:] == ["accessing", "demo"]


def test_the_body_keeps_its_layout_and_loses_one_line_end(tmp_path):
    methods = "\n{ #category : 'x' }\nFoo >> a [ ^ 1 ]\n\n{ #category : 'x' }\nFoo >> b [\n\n\t^ 2\n\t\n\t\n]\n"
    methods += "\nFoo >> c\t[\n\t^ 3\n]\n"  # no metadata: no category
    folder = write_package(tmp_path / "Pkg", {"Foo.class.st": class_file(methods=methods)})
    sources = [(m.source, m.protocol) for m in read_tonel_package(folder).snapshot.methods]
    assert sources == [("a ^ 1", "x"), ("b\n\n\t^ 2\n\t\n\t", "x"), ("c\t\n\t^ 3", "")]


V1_CLASS = '''"
A comment with ""quotes"", [brackets] and a bang!
"
Class {
	#name : #Shape,
	#superclass : #Object,
	#instVars : [
		'width',
		'height'
	],
	#classVars : [
		'Registry'
	],
	#pools : [
		'ShapeConstants'
	],
	#classInstVars : [
		'default'
	],
	#category : #'Shapes-Core'
}

{ #category : #'instance creation' }
Shape class >> default [
	^ default ifNil: [ default := self new ]
]

{ #category : #initialization }
Shape class >> initialize [
	Registry := Dictionary new
]

{ #category : #accessing }
Shape >> area [
	^ width * height
]
'''

V1_KINDS = "".join(
    f"Class {{ #name : #{name}, #superclass : #Shape, #type : #{kind}, #category : #'Shapes-Kinds' }}\n"
    for name, kind in (("Bits", "bytes"), ("Slots", "variable"), ("Words", "words"), ("Weak", "weak"))
)

V1_TRAIT = '''"
I name things.
"
Trait {
	#name : #TNamed,
	#category : #'Shapes-Traits'
}

{ #category : #accessing }
TNamed classSide >> defaultName [
	^ 'thing'
]

{ #category : #accessing }
TNamed >> name [
	^ self class defaultName
]
'''

V1_USER = '''Class {
	#name : #NamedShape,
	#superclass : #Shape,
	#traits : 'TNamed - {#name}',
	#classTraits : 'TNamed classTrait',
	#category : #'Shapes-Core'
}
'''

V1_EXTENSION = '''Extension { #name : #Integer }

{ #category : #'*Shapes' }
Integer >> squared [
	^ self * self
]

{ #category : #'*shapes-printing' }
Integer class >> unit [
	^ 1
]
'''


def write_v1_package(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "package.st").write_text("Package { #name : #Shapes }\n")
    (folder / "Shape.class.st").write_text(V1_CLASS)
    for index, chunk in enumerate(V1_KINDS.strip().split("\n")):
        (folder / f"Kind{index}.class.st").write_text(chunk + "\n")
    (folder / "TNamed.trait.st").write_text(V1_TRAIT)
    (folder / "NamedShape.class.st").write_text(V1_USER)
    (folder / "Integer.extension.st").write_text(V1_EXTENSION)
    return folder


def test_v1_definitions_of_every_kind_reach_the_mcz(tmp_path):
    folder = write_v1_package(tmp_path / "Shapes")
    result, mcz = pack_and_read(folder, tmp_path / "dist")[0]
    assert (result.version.name, result.classes, result.methods) == ("Shapes-jd.1", 7, 7)
    classes = mcz.snapshot.classes
    shape = classes["Shape"]
    assert (shape.superclass, shape.kind, shape.category) == ("Object", "subclass", "Shapes-Core")
    assert shape.instance_variables == ("width", "height")
    assert shape.class_variables == ("Registry",) and shape.pool_dictionaries == ("ShapeConstants",)
    assert shape.class_instance_variables == ("default",)
    assert shape.comment == 'A comment with "quotes", [brackets] and a bang!'
    assert {name: classes[name].kind for name in ("Bits", "Slots", "Words", "Weak")} == {
        "Bits": "variableByteSubclass", "Slots": "variableSubclass", "Words": "variableWordSubclass", "Weak": "weakSubclass",
    }
    assert classes["Bits"].category == "Shapes-Kinds"
    trait = classes["TNamed"]
    assert trait.is_trait and trait.category == "Shapes-Traits" and trait.comment == "I name things."
    user = classes["NamedShape"]
    assert user.traits == ("TNamed",) and user.class_traits == ("TNamed",)
    assert user.traits_expression.replace(" ", "") == "TNamed-{#name}"
    methods = {(m.class_name, m.meta, m.selector): m for m in mcz.snapshot.methods}
    assert methods["Shape", True, "default"].protocol == "instance creation"
    assert methods["TNamed", True, "defaultName"].source == "defaultName\n\t^ 'thing'"
    assert methods["Integer", False, "squared"].protocol == "*Shapes"
    assert methods["Integer", True, "unit"].protocol == "*shapes-printing"
    assert mcz.snapshot.doits == ["Shape initialize"]  # Monticello runs class-side #initialize after loading
    with zipfile.ZipFile(result.path) as archive:
        source = archive.read("snapshot/source.st").decode()
    assert source.index("Object subclass: #Shape") < source.index("Shape subclass: #NamedShape")
    assert "Shape subclass: #NamedShape\r\tuses: TNamed - {#name}\r" in source
    assert "NamedShape class\r\tuses: TNamed classTrait\r\tinstanceVariableNames: ''!" in source
    assert "Shape class\r\tinstanceVariableNames: 'default'!" in source
    for category in ("Shapes", "Shapes-Core", "Shapes-Kinds", "Shapes-Traits"):
        assert f"SystemOrganization addCategory: #'{category}'!\r" in source
    assert source.rstrip("\r").endswith("Shape initialize!")


def test_v3_package_and_tag_give_the_category(tmp_path):
    text = (
        "Class {\n\t#name : 'Reader',\n\t#superclass : 'Object',\n\t#package : 'Json',\n\t#tag : 'Parsing'\n}\n"
        "\n{ #category : 'drag\\'n\\'drop' }\nReader >> read [\n\t^ nil\n]\n"
    )
    untagged = "Class {\n\t#name : 'Writer',\n\t#superclass : 'Object',\n\t#package : 'Json'\n}\n"
    folder = write_package(tmp_path / "Json", {"Reader.class.st": text, "Writer.class.st": untagged})
    _, mcz = pack_and_read(folder, tmp_path / "dist")[0]
    assert mcz.snapshot.classes["Reader"].category == "Json-Parsing"
    assert mcz.snapshot.classes["Writer"].category == "Json"
    assert mcz.snapshot.classes["Reader"].comment is None
    assert mcz.snapshot.methods[0].protocol == "drag'n'drop"


def test_ancestry_continues_and_a_folder_packs_the_same_bytes(tmp_path):
    folder = write_v1_package(tmp_path / "Shapes")
    first, _ = pack_and_read(folder, tmp_path / "dist")[0]
    second, mcz = pack_and_read(folder, tmp_path / "dist")[0]
    assert second.version.name == "Shapes-jd.2"
    assert [a.name for a in mcz.version.ancestors] == ["Shapes-jd.1"]
    assert mcz.version.ancestors[0].id == first.version.id
    again, _ = pack_and_read(folder, tmp_path / "elsewhere")[0]
    assert again.version.name == "Shapes-jd.1"
    assert again.path.read_bytes() == first.path.read_bytes()


def test_a_repository_folder_packs_every_package(tmp_path):
    repository = tmp_path / "repo"
    (repository / "src").mkdir(parents=True)
    (repository / ".project").write_text("{\n\t'srcDirectory' : 'src'\n}")
    (repository / "src" / ".properties").write_text("{\n\t#format : #tonel\n}")
    write_package(repository / "src" / "Alpha", {"A.class.st": class_file("A", package="Alpha")})
    write_package(repository / "src" / "Beta", {"B.class.st": class_file("B", superclass="A", package="Beta")})
    result = run_in_process("pack", repository, "-o", tmp_path / "dist", "--author", "jd")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["Alpha-jd.1.mcz", "Beta-jd.1.mcz"]
    assert [p.name for p in read_sources(repository / "src")] == ["Alpha", "Beta"]
    refused = run_in_process("pack", repository, "-o", tmp_path / "one.mcz")
    assert refused.returncode == 2 and "give a folder as the output" in refused.stderr


def git(folder, *args, env=None):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, env=env)


@pytest.fixture
def git_package(tmp_path, monkeypatch):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    monkeypatch.delenv("HOTLOAD_AUTHOR", raising=False)
    repository = tmp_path / "repo"
    folder = write_package(repository / "src" / "Pkg", {"Foo.class.st": class_file(methods=tonel_method("Foo >> a", "\t^ 1"))})
    (repository / "README").write_text("not part of the package\n")
    git(repository, "init", "-q")
    env = {"GIT_AUTHOR_NAME": "Jane Doe-Smith", "GIT_AUTHOR_EMAIL": "j@example.org", "GIT_COMMITTER_NAME": "J",
           "GIT_COMMITTER_EMAIL": "j@example.org", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    git(repository, "add", "src", env=env)
    git(repository, "commit", "-q", "-m", "Fix the reader\n\nIt read one byte too many.", env=env)
    git(repository, "add", "README", env=env)
    git(repository, "commit", "-q", "-m", "A later commit elsewhere", env=env)
    return folder


def test_author_and_message_come_from_the_folders_last_commit(tmp_path, git_package):
    result = run_in_process("pack", git_package, "-o", tmp_path / "dist")
    assert result.returncode == 0, result.stderr
    mcz = read_mcz(tmp_path / "dist" / "Pkg-JaneDoeSmith.1.mcz")
    assert mcz.version.author == "JaneDoeSmith"
    assert mcz.version.message == "Fix the reader\n\nIt read one byte too many."
    explicit = run_in_process("pack", git_package, "-o", tmp_path / "other", "--author", "kb", "--message", "hot fix")
    assert explicit.returncode == 0, explicit.stderr
    version = read_mcz(tmp_path / "other" / "Pkg-kb.1.mcz").version
    assert (version.author, version.message) == ("kb", "hot fix")


def test_outside_git_the_author_is_hotload(tmp_path, monkeypatch):
    monkeypatch.delenv("HOTLOAD_AUTHOR", raising=False)
    folder = write_package(tmp_path / "Pkg", {"Foo.class.st": class_file()})
    result = run_in_process("pack", folder, "-o", tmp_path / "dist")
    assert result.returncode == 0, result.stderr
    version = read_mcz(tmp_path / "dist" / "Pkg-hotload.1.mcz").version
    assert version.message == "packed from Pkg"


# -- bad input: one line naming file and line, exit 2 -----------------------------------------------

BAD = {
    "an unterminated method": (
        {"Foo.class.st": class_file(methods="\n{ #category : 'x' }\nFoo >> a [\n\t^ [ 1\n")},
        "Foo.class.st", 9, "no closing ]",
    ),
    "an unterminated string": (
        {"Foo.class.st": class_file(methods="\nFoo >> a [\n\t^ 'oops ]\n]\n")},
        "Foo.class.st", 9, "string opened here is never closed",
    ),
    "an unterminated comment": (
        {"Foo.class.st": class_file(methods="\nFoo >> a [\n\t\"oops ]\n]\n")},
        "Foo.class.st", 9, "comment opened here is never closed",
    ),
    "a class of another package": (
        {"Foo.class.st": class_file(package="Other")}, "Foo.class.st", 1, "is in package 'Other' (#package)",
    ),
    "a v1 class of another category": (
        {"Foo.class.st": "Class { #name : #Foo, #superclass : #Object, #category : #Elsewhere }\n"},
        "Foo.class.st", 1, "is in category 'Elsewhere', which is not package 'Pkg'",
    ),
    "a method for a class not defined here": (
        {"Foo.class.st": class_file(methods="\nBar >> a [\n\t^ 1\n]\n")},
        "Foo.class.st", 8, "a method for Bar, but this file defines class Foo",
    ),
    "a method for a class not extended here": (
        {"Object.extension.st": "Extension { #name : #Object }\n\nString >> a [\n\t^ 1\n]\n"},
        "Object.extension.st", 3, "a method for String, but this file extends Object",
    ),
    "a method without a header": (
        {"Foo.class.st": class_file(methods="\n{ #category : 'x' }\n^ 1\n")},
        "Foo.class.st", 9, "expected a method such as `Foo >> selector [`",
    ),
    "a method twice": (
        {"Foo.class.st": class_file(methods="\nFoo >> a [ ^ 1 ]\n\nFoo >> a [ ^ 2 ]\n")},
        "Foo.class.st", 10, "Foo >> a is defined twice",
    ),
    "a broken definition map": (
        {"Foo.class.st": "Class {\n\t#name : 'Foo'\n\t#superclass : 'Object'\n}\n"},
        "Foo.class.st", 3, "a STON map needs ','",
    ),
    "an unknown class type": (
        {"Foo.class.st": class_file(extra="\n\t#type : 'huge',")}, "Foo.class.st", 1, "#type 'huge' of Foo",
    ),
    "a file that is not UTF-8": ({"Foo.class.st": None}, "Foo.class.st", 2, "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_with_file_and_line_and_exit_2(tmp_path, case):
    files, file_name, line, message = BAD[case]
    folder = tmp_path / "Pkg"
    write_package(folder, {name: text for name, text in files.items() if text is not None})
    if files.get("Foo.class.st", "") is None:
        (folder / "Foo.class.st").write_bytes(b"Class { #name : #Foo,\n #category : #'Pkg\xff' }\n")
    with pytest.raises(SourceError):
        read_sources(folder)
    result = run_in_process("pack", folder, "-o", tmp_path / "dist")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hotload: {folder / file_name}:{line}: "), lines[0]
    assert message in lines[0]
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("Package { #name : 'Pkg'\n", 1, "STON map { opened here is never closed"),
        ("Class { #name : #Pkg }\n", 1, "must hold `Package { #name : '...' }`"),
        ("Package { }\n", 1, "needs a #name"),
        ("Pakage { #name : 'Pkg' }\n", 1, "expected `Class {`"),
        ("Package { #name : 'Pkg' }\n\nPkg >> x [ ]\n", 3, "package.st holds only"),
    ],
)
def test_a_broken_package_st_is_named_with_its_line(tmp_path, text, line, message):
    folder = write_package(tmp_path / "Pkg", {"Foo.class.st": class_file()})
    (folder / "package.st").write_text(text)
    result = run_in_process("plan", folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"hotload: {folder / 'package.st'}:{line}: ") and message in first, first


def test_a_folder_with_no_package_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_in_process("pack", tmp_path / "empty", "-o", tmp_path / "dist")
    assert result.returncode == 2 and "holds no Tonel package" in result.stderr


def test_crlf_line_ends_and_a_byte_order_mark_read_as_lf(tmp_path):
    text = class_file(comment="Two\nlines", methods=tonel_method("Foo >> a", "\t^ 'x\ny'"))
    lf = read_tonel_package(write_package(tmp_path / "lf" / "Pkg", {"Foo.class.st": text}))
    crlf_folder = write_package(tmp_path / "crlf" / "Pkg", {})
    (crlf_folder / "Foo.class.st").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    crlf = read_tonel_package(crlf_folder)
    assert [m.source for m in crlf.snapshot.methods] == [m.source for m in lf.snapshot.methods] == ["a\n\t^ 'x\ny'"]
    assert crlf.snapshot.classes["Foo"].comment == lf.snapshot.classes["Foo"].comment == "Two\nlines"
