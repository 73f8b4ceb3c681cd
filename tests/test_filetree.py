"""FileTree package folders -> .mcz: definitions, comments, stamps, the stored version, bad input.

Each package here is written by the test; the real-world corpus is in test_sources_corpus.py.
"""

import json
from pathlib import Path

import pytest

from cli_runner import run_in_process
from hotload.formats.mcz import read_mcz
from hotload.formats.mcz import VersionInfo
from hotload.formats.pack import Packer, version_sexpr
from hotload.formats.sources import SourceError, read_sources


def write_class(package: Path, name: str, properties: dict, methods=(), comment=None, suffix=".class"):
    folder = package / f"{name}{suffix}"
    folder.mkdir(parents=True)
    (folder / "properties.json").write_text(json.dumps({"name": name, **properties}, indent="\t"))
    if comment is not None:
        (folder / "README.md").write_text(comment)
    for side, file_name, text in methods:
        (folder / side).mkdir(exist_ok=True)
        (folder / side / file_name).write_text(text)
    return folder


def write_filetree(root: Path, name="Shop-Core") -> Path:
    package = root / f"{name}.package"
    (package / "monticello.meta").mkdir(parents=True)
    (package / "monticello.meta" / "package").write_text(f"(name '{name}')")
    (package / "monticello.meta" / "categories.st").write_text(f"SystemOrganization addCategory: #'{name}'!\n")
    (package / "monticello.meta" / "initializers.st").write_text("")
    (package / ".filetree").write_text('{"noMethodMetaData" : true, "useCypressPropertiesFile" : true}')
    (package / "properties.json").write_text("{ }")
    write_class(
        package, "Cart",
        {"super": "Object", "category": f"{name}-Model", "instvars": ["items", "owner"], "classvars": ["Default"],
         "pools": ["ShopConstants"], "classinstvars": ["count"], "type": "normal", "commentStamp": "jd 1/2/2024 10:00"},
        methods=[
            ("instance", "add..st", "adding\nadd: anItem\n\titems add: anItem.\n\t^ anItem"),
            ("instance", "^comma.st", "copying\n, other\n\t^ self copy addAll: other; yourself"),
            ("instance", "items.st", 'accessing\n"a comment first"\nitems\n\t^ items ifNil: [ #() ]\n'),
            ("class", "initialize.st", "class initialization\ninitialize\n\tDefault := nil"),
        ],
        comment="A cart.\nIt holds [items] and 'quotes' and bangs!",
    )
    for kind, subclass in (("bytes", "variableByteSubclass"), ("words", "variableWordSubclass"),
                           ("variable", "variableSubclass"), ("weak", "weakSubclass")):
        write_class(package, f"Cart{kind.title()}", {"super": "Cart", "category": name, "type": kind})
    write_class(
        package, "TPriced", {"category": f"{name}-Traits", "instvars": [], "traitcomposition": "{}"},
        methods=[("instance", "price.st", "pricing\nprice\n\t^ 0"), ("class", "currency.st", "pricing\ncurrency\n\t^ #EUR")],
        comment="I price things.", suffix=".trait",
    )
    write_class(
        package, "PricedCart",
        {"super": "Cart", "category": name, "traitcomposition": "TPriced", "classtraitcomposition": "TPriced classTrait"},
    )
    extension = package / "Integer.extension"
    (extension / "instance").mkdir(parents=True)
    (extension / "properties.json").write_text('{\n\t"name" : "Integer" }')
    (extension / "instance" / "asMoney.st").write_text(f"*{name.lower()}\nasMoney\n\t^ self")
    (extension / "methodProperties.json").write_text(
        '{\n\t"class" : {\n\t\t },\n\t"instance" : {\n\t\t"asMoney" : "jd 7/15/2024 14:23" } }'
    )
    return package


def test_definitions_comments_stamps_and_protocols_reach_the_mcz(tmp_path):
    package = write_filetree(tmp_path / "repository")
    result = Packer(author="jd").pack_folder(package, tmp_path / "dist")[0]
    mcz = read_mcz(result.path)
    assert (mcz.name, result.classes, result.methods) == ("Shop-Core", 7, 7)
    cart = mcz.snapshot.classes["Cart"]
    assert (cart.superclass, cart.kind, cart.category) == ("Object", "subclass", "Shop-Core-Model")
    assert (cart.instance_variables, cart.class_variables, cart.pool_dictionaries, cart.class_instance_variables) == (
        ("items", "owner"), ("Default",), ("ShopConstants",), ("count",),
    )
    assert cart.comment == "A cart.\nIt holds [items] and 'quotes' and bangs!"
    assert cart.comment_stamp == "jd 1/2/2024 10:00"
    kinds = {name: mcz.snapshot.classes[name].kind for name in ("CartBytes", "CartWords", "CartVariable", "CartWeak")}
    assert kinds == {"CartBytes": "variableByteSubclass", "CartWords": "variableWordSubclass",
                     "CartVariable": "variableSubclass", "CartWeak": "weakSubclass"}
    trait = mcz.snapshot.classes["TPriced"]
    assert trait.is_trait and trait.category == "Shop-Core-Traits" and trait.comment == "I price things."
    priced = mcz.snapshot.classes["PricedCart"]
    assert priced.traits == ("TPriced",) and priced.class_traits == ("TPriced",)
    methods = {(m.class_name, m.meta, m.source.split("\n")[0]): m for m in mcz.snapshot.methods}
    assert methods["Cart", False, "add: anItem"].protocol == "adding"
    assert methods["Cart", False, ", other"].source == ", other\n\t^ self copy addAll: other; yourself"
    assert methods["Cart", False, '"a comment first"'].source == '"a comment first"\nitems\n\t^ items ifNil: [ #() ]'
    assert methods["TPriced", True, "currency"].protocol == "pricing"
    asMoney = methods["Integer", False, "asMoney"]
    assert (asMoney.protocol, asMoney.stamp) == ("*shop-core", "jd 7/15/2024 14:23")
    assert mcz.snapshot.doits == ["Cart initialize"]


def test_the_stored_monticello_version_is_the_ancestor(tmp_path):
    package = write_filetree(tmp_path / "repository")
    stored = VersionInfo(name="Shop-Core-pmm.3", id="id-3", message="line one\rline two",
                         ancestors=(VersionInfo(name="Shop-Core-pmm.2", id="id-2"),))
    (package / "monticello.meta" / "version").write_text(version_sexpr(stored))
    result = Packer(author="jd").pack_folder(package, tmp_path / "dist")[0]
    version = read_mcz(result.path).version
    assert version.name == "Shop-Core-jd.4"
    assert [a.name for a in version.ancestry()] == ["Shop-Core-pmm.3", "Shop-Core-pmm.2"]
    again = Packer(author="jd").pack_folder(package, tmp_path / "dist")[0]
    assert again.version.name == "Shop-Core-jd.5"  # the output folder's newest comes first


def test_a_repository_of_filetree_packages(tmp_path, monkeypatch):
    monkeypatch.delenv("HOTLOAD_AUTHOR", raising=False)
    repository = tmp_path / "repository"
    write_filetree(repository, "Shop-Core")
    write_filetree(repository, "Shop-Web")
    result = run_in_process("plan", repository)
    assert result.returncode == 0, result.stderr
    assert "Shop-Core-hotload.1" in result.stdout and "Shop-Web-hotload.1" in result.stdout
    assert [p.name for p in read_sources(repository)] == ["Shop-Core", "Shop-Web"]


BAD = {
    "broken properties.json": (
        "Cart.class/properties.json", '{\n\t"name" : "Cart",\n\t"super" : "Object"\n\t"category" : "Shop-Core" }', 4,
        "is not valid JSON",
    ),
    "properties.json not an object": ("Cart.class/properties.json", "[1, 2]", 1, "must hold a JSON object"),
    "instvars not a list": (
        "Cart.class/properties.json", '{"name" : "Cart", "super" : "Object", "instvars" : 3, "category" : "Shop-Core"}', 1,
        '"instvars" must be a list of names',
    ),
    "a class of another package": (
        "Cart.class/properties.json", '{"name" : "Cart", "super" : "Object", "category" : "Elsewhere"}', 1,
        "is in category 'Elsewhere', which is not package 'Shop-Core'",
    ),
    "a method file without source": ("Cart.class/instance/add..st", "adding", 1, "method source from line 2"),
    "a bad package name": ("monticello.meta/package", "(name 'Shop-Core'", 1, "cannot be read"),
    "a bad stored version": ("monticello.meta/version", "(name 'x' ancestors ((id", 1, "is not a Monticello version"),
    "broken methodProperties.json": ("Integer.extension/methodProperties.json", '{\n"instance" : [', 2, "is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_with_file_and_line_and_exit_2(tmp_path, case):
    member, text, line, message = BAD[case]
    package = write_filetree(tmp_path / "repository")
    (package / member).write_text(text)
    with pytest.raises(SourceError):
        read_sources(package)
    result = run_in_process("pack", package, "-o", tmp_path / "dist")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hotload: {package / member}:{line}: "), lines[0]
    assert message in lines[0]
