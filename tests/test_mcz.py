import zipfile

import pytest

from hotload.formats import sexpr
from hotload.formats.chunks import ChunkError, read_source
from hotload.errors import PackageError
from hotload.formats.mcz import parse_version_info, read_mcz


def test_every_corpus_file_parses(corpus):
    files = sorted(corpus.glob("*.mcz"))
    assert len(files) == 33
    for path in files:
        package = read_mcz(path)
        assert package.version.name.startswith(package.name)
        assert package.snapshot.methods or package.snapshot.classes
        for method in package.snapshot.methods:
            assert method.selector  # every method header and selector reads


def test_real_values_from_zinc(corpus):
    zinc = read_mcz(corpus / "Zinc-HTTP-SvenVanCaekenberghe.453.mcz")
    assert zinc.name == "Zinc-HTTP"
    assert zinc.version.author == "SvenVanCaekenberghe"
    assert zinc.version.ancestors[0].name == "Zinc-HTTP-SvenVanCaekenberghe.452"
    assert len(zinc.snapshot.classes) == 94
    assert len(zinc.snapshot.methods) == 1314
    client = zinc.snapshot.classes["ZnClient"]
    assert client.superclass == "Object"
    assert client.instance_variables[:4] == ("request", "response", "connection", "lastUsed")
    assert client.category == "Zinc-HTTP-Client-Server"
    assert zinc.snapshot.classes["ZnSingleThreadedServer"].class_instance_variables == ("Default",)


def test_real_values_from_grease(corpus):
    grease = read_mcz(corpus / "Grease-Core-JohanBrichau.97.mcz")
    assert len(grease.snapshot.classes) == 32
    assert grease.snapshot.classes["GRPlatform"].superclass == "GRObject"
    assert grease.snapshot.classes["GRPlatform"].class_variables == ("Current",)
    current = [m for m in grease.snapshot.methods if m.class_name == "GRPlatform" and m.meta and m.selector == "current"]
    assert current and current[0].protocol == "registration"
    assert grease.extended_classes()["String"] == 9
    pharo = read_mcz(corpus / "Grease-Pharo30-Core-JohanBrichau.19.mcz")
    assert pharo.snapshot.classes["GRPharoRandomProvider"].class_instance_variables == ("mutex", "generator")


def test_back_references_resolve_in_real_history(corpus):
    zinc = read_mcz(corpus / "Zinc-HTTP-SvenVanCaekenberghe.453.mcz")
    history = list(zinc.version.ancestry())
    assert len(history) == 475
    assert len({info.id for info in history}) == len(history)


def test_version_sexpr_escaping_nesting_and_back_references():
    text = (
        "(name 'A-jd.3' message 'it''s fixed' id 'c' date '1 May 2020' time '1:00 pm' author 'jd' "
        "ancestors ((name 'A-jd.2' message '' id 'b' date '' time '' author 'jd' "
        "ancestors ((name 'A-jd.1' message 'first' id 'a' date '' time '' author 'jd' ancestors () stepChildren ())) "
        "stepChildren ()) (id 'a')) stepChildren ())"
    )
    info = parse_version_info(text)
    assert info.message == "it's fixed"
    assert [a.name for a in info.ancestors] == ["A-jd.2", "A-jd.1"]
    assert info.ancestors[1] is info.ancestors[0].ancestors[0]
    assert info.package_name == "A" and info.number == 3


def test_unknown_back_reference_is_an_error():
    with pytest.raises(sexpr.SexprError, match="unknown version id"):
        parse_version_info("(name 'A-jd.1' ancestors ((id 'zzz')))")


def test_latin1_fallback():
    assert sexpr.decode("(name 'Caf\xe9')".encode("latin-1")) == "(name 'Café')"
    assert sexpr.decode("(name 'Café')".encode("utf-8")) == "(name 'Café')"


SOURCE = """SystemOrganization addCategory: #'Demo-Core'!

Object subclass: #Shape
	instanceVariableNames: 'name'
	classVariableNames: 'Count'
	poolDictionaries: ''
	category: 'Demo-Core'!

Shape class
	instanceVariableNames: 'registry'!

!Shape commentStamp: 'jd 1/1/2020 10:00' prior: 0!
I shout!! a lot!

Trait named: #TPrintable
	uses: {}
	category: 'Demo-Core'!

Shape subclass: #Circle
	uses: TPrintable + TComparable - {#=}
	instanceVariableNames: 'radius'
	classVariableNames: ''
	package: 'Demo-Core'!

!Shape methodsFor: 'accessing' stamp: 'jd 1/1/2020 10:00'!
name
	^ name ifNil: ['it''s!!']! !

!Shape class methodsFor: 'instance creation'!
named: aString
	^ self new setName: aString!
new: a with: b
	^ self new! !

!Circle classSide methodsFor: 'x'!
unit
	^ self new! !

!String methodsFor: '*Demo-Core'!
asShape
	^ Shape named: self! !
Shape initialize!
"""


def test_chunk_format_definitions():
    snapshot = read_source(SOURCE.replace("\n", "\r"))  # Monticello writes CR line ends
    assert snapshot.categories == ["Demo-Core"]
    shape = snapshot.classes["Shape"]
    assert shape.class_variables == ("Count",)
    assert shape.class_instance_variables == ("registry",)
    assert shape.comment == "I shout! a lot"
    circle = snapshot.classes["Circle"]
    assert circle.superclass == "Shape" and circle.category == "Demo-Core"
    assert circle.traits == ("TPrintable", "TComparable")
    assert snapshot.classes["TPrintable"].is_trait
    selectors = [(m.class_name, m.meta, m.selector) for m in snapshot.methods]
    assert selectors == [
        ("Shape", False, "name"),
        ("Shape", True, "named:"),
        ("Shape", True, "new:with:"),
        ("Circle", True, "unit"),
        ("String", False, "asShape"),
    ]
    assert "'it''s!'" in snapshot.methods[0].source
    assert snapshot.methods[0].stamp == "jd 1/1/2020 10:00"
    assert snapshot.methods[-1].protocol == "*Demo-Core"
    assert snapshot.doits == ["Shape initialize"]


@pytest.mark.parametrize("text", ["Object subclass: #A instanceVariableNames: ''", "Foo!!", "A initialize!\nB!!  "])
def test_unterminated_chunk_is_reported(text):
    with pytest.raises(ChunkError, match="no closing"):
        read_source(text)


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "members, problem",
    [
        ({"version": "(name 'A-x.1')", "snapshot/source.st": ""}, "missing member 'package'"),
        ({"package": "(name 'A')", "snapshot/source.st": ""}, "missing member 'version'"),
        ({"package": "(name 'A')", "version": "(name 'A-x.1'"}, "missing member 'snapshot/source.st'"),
        ({"package": "(name 'A')", "version": "(name 'A-x.1' (", "snapshot/source.st": ""}, "unparsable 'version'"),
        ({"package": "(name 'A')", "version": "(name 'A-x.1')", "snapshot/source.st": "!Foo bar!"}, "unknown reader declaration"),
    ],
)
def test_broken_packages_say_what_is_wrong(tmp_path, members, problem):
    path = _zip(tmp_path / "A-x.1.mcz", members)
    with pytest.raises(PackageError, match=problem) as caught:
        read_mcz(path)
    assert str(path) in str(caught.value)


def test_not_a_zip_and_not_an_mcz(tmp_path):
    (tmp_path / "junk.mcz").write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="not a zip archive"):
        read_mcz(tmp_path / "junk.mcz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PackageError, match="not a .mcz file"):
        read_mcz(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    "definition",
    [
        "Seaside.WAComponent subclass: #Foo\r\tinstanceVariableNames: 'a'\r\tclassVariableNames: ''\r"
        "\tpoolDictionaries: ''\r\tcategory: 'Demo'!\r",
        "Seaside.WAComponent subclass: #Foo \"a comment takes the general path\" instanceVariableNames: 'a' "
        "classVariableNames: '' package: 'Demo'!\n",
    ],
)
def test_gst_namespace_superclass(definition):
    snapshot = read_source(definition + "!Seaside.WAComponent methodsFor: 'x'!\nfoo\n\t^ 1! !\n")
    foo = snapshot.classes["Foo"]
    assert (foo.superclass, foo.kind, foo.instance_variables, foo.category) == ("Seaside.WAComponent", "subclass", ("a",), "Demo")
    assert snapshot.doits == []
    assert [(m.class_name, m.selector) for m in snapshot.methods] == [("Seaside.WAComponent", "foo")]


def test_versions_compare_without_their_history():
    text = "(name 'A-jd.2' id 'b' ancestors ((name 'A-jd.1' id 'a' ancestors ())))"
    first, second = parse_version_info(text), parse_version_info(text)
    assert first == second and hash(first) == hash(second)
    assert "A-jd.1" not in repr(first)


@pytest.mark.parametrize(
    "chunk, problem",
    [("Trait named: uses: {} category: 'X'!\r", "without a trait name"), ("SystemOrganization addCategory: !\r", "without a category")],
)
def test_definitions_without_a_name_are_errors(chunk, problem):
    with pytest.raises(ChunkError, match=problem):
        read_source(chunk)
