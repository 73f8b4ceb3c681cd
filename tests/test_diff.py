"""The diff of two snapshots (hotload/staging/diff.py): every kind of change on synthetic snapshots, properties
checked by hypothesis, real packages from the corpus, and the text and JSON a user sees."""

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from hotload.formats.chunks import ClassDefinition, MethodDefinition, Snapshot
from hotload.staging.diff import (
    ADDED, CHANGED, REMOVED, DiffReport, PackageDiff, SnapshotDiff, render_report, selector_of,
)
from hotload.formats.mcz import read_mcz
from hotload.formats.pack import Packer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
EXAMPLES = int(os.environ.get("HOTLOAD_FUZZ_EXAMPLES", "200"))


def snapshot(classes=(), methods=(), categories=(), doits=()):
    return Snapshot(
        categories=list(categories), classes={c.name: c for c in classes}, methods=list(methods), doits=list(doits),
    )


def shop(**changes) -> ClassDefinition:
    fields = dict(
        name="ShopItem", superclass="Object", instance_variables=("price",), class_variables=("Default",),
        pool_dictionaries=("Codes",), category="Shop-Core", class_instance_variables=("cache",),
        comment="An item.", comment_stamp="jd 1/1/2020",
    )
    fields.update(changes)
    return ClassDefinition(**fields)


def price(source="price\n\t^ price", protocol="accessing", meta=False, class_name="ShopItem", stamp="jd 1/1/2020"):
    return MethodDefinition(class_name, meta, protocol, source, stamp)


def only_field(old: ClassDefinition, new: ClassDefinition):
    diff = SnapshotDiff.between(snapshot([old]), snapshot([new]))
    [change] = diff.classes
    assert change.change == CHANGED and change.name == "ShopItem"
    [field] = change.fields
    return field


# -- classes ----------------------------------------------------------------------------------


def test_a_snapshot_against_itself_is_empty():
    same = snapshot([shop()], [price()], ["Shop-Core"], ["ShopItem initialize"])
    diff = SnapshotDiff.between(same, same)
    assert diff.is_empty()
    assert diff.summary() == dict.fromkeys(diff.summary(), 0)


def test_classes_added_and_removed_carry_their_whole_definition():
    diff = SnapshotDiff.between(snapshot([shop(name="Old")]), snapshot([shop(name="New", superclass="WAComponent")]))
    assert [(c.name, c.change) for c in diff.classes] == [("New", ADDED), ("Old", REMOVED)]
    added = diff.classes[0].to_json()["definition"]
    assert added["superclass"] == "WAComponent" and added["instance_variables"] == ["price"]
    assert added["class_instance_variables"] == ["cache"] and added["comment"] == "An item."


@pytest.mark.parametrize("name, old, new", [
    ("superclass", "Object", "WAComponent"),
    ("superclass", "Object", None),  # nil
    ("kind", "subclass", "variableSubclass"),
    ("instance_variables", ("price",), ("price", "name")),
    ("class_variables", ("Default",), ()),
    ("pool_dictionaries", ("Codes",), ("Codes", "Keys")),
    ("class_instance_variables", ("cache",), ("cache", "hits")),
    ("category", "Shop-Core", "Shop-Core-Model"),
    ("comment", "An item.", "An item\nfor sale."),
    ("class_traits", (), ("TComparable",)),
])
def test_each_part_of_a_class_definition_is_compared(name, old, new):
    field = only_field(shop(**{name: old}), shop(**{name: new}))
    assert field.name == name
    expected = (list(old), list(new)) if isinstance(old, tuple) else (old, new)
    assert (field.old, field.new) == expected


def test_traits_are_compared_by_their_composition():
    field = only_field(shop(traits=("TA",), traits_expression="TA"), shop(traits=("TA", "TB"), traits_expression="TA + TB"))
    assert (field.name, field.old, field.new) == ("traits_expression", "TA", "TA + TB")


def test_a_comment_stamp_alone_is_no_change():
    assert SnapshotDiff.between(snapshot([shop()]), snapshot([shop(comment_stamp="other 2/2/2022")])).is_empty()


def test_variables_show_the_names_added_and_removed():
    field = only_field(shop(instance_variables=("a", "b")), shop(instance_variables=("b", "c")))
    assert field.added_and_removed() == (["c"], ["a"])


def test_several_parts_of_one_class_are_listed_in_a_fixed_order():
    old, new = shop(), shop(superclass="Model", category="X", instance_variables=())
    [change] = SnapshotDiff.between(snapshot([old]), snapshot([new])).classes
    assert [f.name for f in change.fields] == ["superclass", "instance_variables", "category"]


# -- methods ----------------------------------------------------------------------------------


def test_methods_added_removed_and_changed_are_keyed_by_class_side_and_selector():
    old = snapshot(methods=[price(), price("new\n\t^ super new init", "instance creation", meta=True),
                            price("gone\n\t^ 1", class_name="Other")])
    new = snapshot(methods=[price("price\n\t^ price ifNil: [0]"), price("new\n\t^ super new init", "instance creation"),
                            price("fresh\n\t^ 2", class_name="Other")])
    diff = SnapshotDiff.between(old, new, ("A-jd.1", "A-jd.2"))
    assert [(m.label, m.change) for m in diff.methods] == [
        ("Other>>fresh", ADDED), ("Other>>gone", REMOVED),
        ("ShopItem>>new", ADDED), ("ShopItem>>price", CHANGED), ("ShopItem class>>new", REMOVED),
    ]
    changed = diff.methods[3]
    assert changed.diff == [
        "--- ShopItem>>price (A-jd.1)", "+++ ShopItem>>price (A-jd.2)", "@@ -1,2 +1,2 @@",
        " price", "-\t^ price", "+\t^ price ifNil: [0]",
    ]
    assert not changed.protocol_changed
    assert diff.summary() == {"classes_added": 0, "classes_removed": 0, "classes_changed": 0,
                              "methods_added": 2, "methods_removed": 2, "methods_changed": 1}


def test_a_protocol_change_alone_is_a_change_without_a_source_diff():
    [change] = SnapshotDiff.between(snapshot(methods=[price()]), snapshot(methods=[price(protocol="public")])).methods
    assert change.change == CHANGED and change.protocol_changed
    assert (change.old_protocol, change.new_protocol, change.diff) == ("accessing", "public", [])
    assert change.to_json()["source_diff"] == ""


def test_a_stamp_alone_is_no_change():
    assert SnapshotDiff.between(snapshot(methods=[price()]), snapshot(methods=[price(stamp="x 1/1/2030")])).is_empty()


def test_a_method_given_twice_counts_as_its_last_source():
    old = snapshot(methods=[price("price\n\t^ 1"), price("price\n\t^ 2")])
    assert SnapshotDiff.between(old, snapshot(methods=[price("price\n\t^ 2")])).is_empty()


def test_a_method_starting_with_a_comment_is_keyed_by_its_selector():
    old = snapshot(methods=[price('"protocol: adding"\naddAll: aDictionary\n\t^ 1')])
    new = snapshot(methods=[price('"protocol: adding"\naddAll: aDictionary\n\t^ 2')])
    [change] = SnapshotDiff.between(old, new).methods
    assert (change.label, change.change) == ("ShopItem>>addAll:", CHANGED)


def test_categories_and_doits_added_and_removed():
    diff = SnapshotDiff.between(snapshot(categories=["A", "B"], doits=["X initialize"]),
                                snapshot(categories=["B", "C"], doits=["Y initialize"]))
    assert (diff.categories_added, diff.categories_removed) == (["C"], ["A"])
    assert (diff.doits_added, diff.doits_removed) == (["Y initialize"], ["X initialize"])
    assert not diff.is_empty()


# -- properties -------------------------------------------------------------------------------

_names = st.sampled_from(["A", "B", "Shop", "ShopItem", "TFoo"])
_selectors = st.sampled_from(["a", "b", "at:put:", "+", "value:", "printOn:"])
_texts = st.text(alphabet=st.sampled_from("ab []'\"!\t\n\\:$#^"), max_size=30)


def _source(selector: str, body: str) -> str:
    head = {"at:put:": "at: i put: v", "+": "+ other", "value:": "value: x", "printOn:": "printOn: s"}.get(selector, selector)
    return f"{head}\n\t{body}"


_classes = st.builds(
    ClassDefinition, name=_names, superclass=st.sampled_from(["Object", "Model", None]),
    kind=st.sampled_from(["subclass", "variableSubclass"]),
    instance_variables=st.lists(st.sampled_from("abcd"), max_size=3, unique=True).map(tuple),
    class_variables=st.lists(st.sampled_from("XY"), max_size=2, unique=True).map(tuple),
    category=st.sampled_from(["P", "P-Core"]), comment=st.one_of(st.none(), _texts),
)
_methods = st.builds(
    lambda cls, meta, selector, protocol, body: MethodDefinition(cls, meta, protocol, _source(selector, body)),
    _names, st.booleans(), _selectors, st.sampled_from(["accessing", "[x]", "printing"]), _texts,
)
_snapshots = st.builds(
    lambda classes, methods, categories: snapshot(classes, methods, categories),
    st.lists(_classes, max_size=4), st.lists(_methods, max_size=8), st.lists(st.sampled_from(["P", "Q"]), max_size=2),
)


def _keys(diff: SnapshotDiff, change: str):
    return ({c.name for c in diff.classes if c.change == change},
            {m.key for m in diff.methods if m.change == change})


@settings(max_examples=EXAMPLES, deadline=None)
@given(_snapshots)
def test_property_a_snapshot_against_itself_is_empty(one):
    assert SnapshotDiff.between(one, one).is_empty()


@settings(max_examples=EXAMPLES, deadline=None)
@given(_snapshots, _snapshots)
def test_property_what_one_way_adds_the_other_way_removes(a, b):
    forward, backward = SnapshotDiff.between(a, b), SnapshotDiff.between(b, a)
    assert _keys(forward, ADDED) == _keys(backward, REMOVED)
    assert _keys(forward, REMOVED) == _keys(backward, ADDED)
    assert _keys(forward, CHANGED) == _keys(backward, CHANGED)
    assert forward.categories_added == backward.categories_removed
    assert forward.is_empty() == backward.is_empty()
    for there, back in zip(forward.classes, backward.classes):
        if there.change == CHANGED:
            assert [(f.name, f.old, f.new) for f in there.fields] == [(f.name, f.new, f.old) for f in back.fields]


@settings(max_examples=EXAMPLES, deadline=None)
@given(_snapshots, _snapshots)
def test_property_the_diff_is_the_same_each_time_and_renders_as_plain_text(a, b):
    first, second = SnapshotDiff.between(a, b), SnapshotDiff.between(a, b)
    assert first.to_json() == second.to_json()
    json.dumps(first.to_json())
    report = DiffReport("t", [PackageDiff("P", "P-jd.2", CHANGED, "P-jd.1", first)])
    printed = _printed(report).split("\n")
    expected = (report.render_plain() + "\n").split("\n")
    assert [line.rstrip() for line in printed] == [line.expandtabs(8).rstrip() for line in expected]  # as rich shows tabs


# -- rendering ---------------------------------------------------------------------------------


def _printed(report: DiffReport, colour=False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, highlight=False, soft_wrap=True, force_terminal=colour, color_system="standard" if colour else None, width=200)
    for line in report.render():
        console.print(line)
    return buffer.getvalue()


def test_source_text_that_looks_like_markup_prints_as_it_is():
    tricky = "at: i\n\t\"[bold]x[/] [/link] :smile: \\\" ^ #([red] $[ $] '[/]') , '\\'"
    old = snapshot([shop(comment="[b]old[/b]")], [price(tricky.replace("x", "y")), price("zap\n\t^ '[/]'", "[x]")])
    new = snapshot([shop(comment="[i]new\\")], [price(tricky)])
    diff = SnapshotDiff.between(old, new)
    report = DiffReport("t", [PackageDiff("Shop-Core", "Shop-Core-jd.2", CHANGED, "Shop-Core-jd.1", diff)])
    for colour in (False, True):
        printed = _printed(report, colour)
        for text in ("[bold]x[/] [/link] :smile:", "'[/]')", "[i]new\\", "[b]old[/b]", "ShopItem>>zap", "  ([x])"):
            assert text in printed
    assert "\x1b[" in _printed(report, True) and "\x1b[" not in _printed(report)


def test_the_text_report_of_a_change():
    old = snapshot([shop(), shop(name="Gone")], [price(), price("zap\n\t^ 0", class_name="Gone"),
                                                  price("name\n\t^ 'x'", "printing")])
    new = snapshot([shop(instance_variables=("price", "name"), superclass="Model")],
                   [price("price\n\t^ price ifNil: [0]"), price("name\n\t^ 'x'", "accessing")])
    report = DiffReport("t", [PackageDiff.of(_package("Shop-Core-jd.2", new), _package("Shop-Core-jd.1", old))])
    assert report.render_plain().split("\n") == [
        "Shop-Core Shop-Core-jd.1 (loaded) -> Shop-Core-jd.2: 1 class removed, 1 class changed, "
        "1 method removed, 2 methods changed",
        "  - class Gone  (superclass 'Object', category 'Shop-Core', 1 method)",
        "  ~ class ShopItem",
        "      superclass: 'Object' -> 'Model'",
        "      instance variables: 'price' -> 'price name'  (+name)",
        "  ~ ShopItem>>name  protocol 'printing' -> 'accessing'",
        "  ~ ShopItem>>price  (accessing)",
        "      @@ -1,2 +1,2 @@",
        "       price",
        "      -    ^ price",
        "      +    ^ price ifNil: [0]",
    ]
    data = report.to_json()["packages"][0]
    assert (data["status"], data["loaded_version"], data["new_version"]) == ("changed", "Shop-Core-jd.1", "Shop-Core-jd.2")
    assert [m["selector"] for m in data["methods"]] == ["zap", "name", "price"]


def test_a_package_not_loaded_is_all_added_and_the_same_package_is_unchanged():
    new = _package("Shop-Core-jd.1", snapshot([shop()], [price()], ["Shop-Core"]))
    fresh = PackageDiff.of(new)
    assert fresh.status == "new" and fresh.loaded_version is None
    assert fresh.diff.summary()["classes_added"] == 1 and fresh.diff.summary()["methods_added"] == 1
    same = PackageDiff.of(new, new)
    assert same.status == "unchanged"
    assert render_report(DiffReport("t", [same]))[0].plain == "Shop-Core Shop-Core-jd.1: same as loaded (Shop-Core-jd.1)"


def test_traits_are_named_as_traits_and_a_same_named_version_is_said_to_differ():
    trait = ClassDefinition("TShop", None, kind="trait", category="Shop-Core", is_trait=True)
    changed = ClassDefinition("TShop", None, kind="trait", category="Shop-Core", traits=("TBase",),
                              traits_expression="TBase", is_trait=True)
    report = DiffReport("t", [
        PackageDiff.of(_package("Shop-Core-jd.1", snapshot([trait])), _package("Shop-Core-jd.1", snapshot())),
        PackageDiff.of(_package("Shop-Core-jd.1", snapshot([changed])), _package("Shop-Core-jd.1", snapshot([trait]))),
    ])
    assert report.render_plain().split("\n") == [
        "Shop-Core Shop-Core-jd.1 (loaded) -> Shop-Core-jd.1 (same name, other contents): 1 class added",
        "  + trait TShop  (category 'Shop-Core')",
        "",
        "Shop-Core Shop-Core-jd.1 (loaded) -> Shop-Core-jd.1 (same name, other contents): 1 class changed",
        "  ~ trait TShop",
        "      traits: '' -> 'TBase'",
    ]


class _package:
    """Stands for an McPackage: a name, a version and a snapshot."""

    def __init__(self, version: str, snapshot: Snapshot):
        self.name = version.rsplit("-", 1)[0]
        self.version = type("Version", (), {"name": version})()
        self.snapshot = snapshot


# -- the real corpus -----------------------------------------------------------------------------


def _corpus(kind: str) -> Path:
    folder = SHARED / kind
    if not folder.is_dir():
        pytest.skip(f"the real-world corpus is not beside the project (expected ../shared/corpus/{kind})")
    return folder


@pytest.mark.parametrize("package, mcz, source", [
    ("Teapot-Core", "Teapot-Core-AttilaMagyar.84.mcz", "tonel/Teapot-Core"),
    ("Neo-JSON-Core", "Neo-JSON-Core-SvenVanCaekenberghe.42.mcz", "tonel/Neo-JSON-Core"),
    ("Grease-Core", "Grease-Core-JohanBrichau.97.mcz", "filetree/Grease-Core.package"),
])
def test_a_published_mcz_against_the_newer_sources_of_the_same_package(package, mcz, source, tmp_path):
    """The corpus holds one package twice: a published .mcz and, years later, its git sources."""
    old = read_mcz(_corpus("mcz") / mcz)
    [packed] = Packer(author="tester").pack_folder(_corpus(source.split("/")[0]) / source.split("/")[1], tmp_path)
    new = read_mcz(packed.path)
    result = PackageDiff.of(new, old)
    diff = result.diff
    assert result.status == "changed"
    old_keys = {(m.class_name, m.meta, selector_of(m)): m for m in old.snapshot.methods}
    new_keys = {(m.class_name, m.meta, selector_of(m)): m for m in new.snapshot.methods}
    # Counted independently of the diff: by key, and by source and protocol for the common ones.
    assert {m.key for m in diff.methods_with(ADDED)} == set(new_keys) - set(old_keys)
    assert {m.key for m in diff.methods_with(REMOVED)} == set(old_keys) - set(new_keys)
    assert {m.key for m in diff.methods_with(CHANGED)} == {
        key for key in set(old_keys) & set(new_keys)
        if (old_keys[key].source, old_keys[key].protocol) != (new_keys[key].source, new_keys[key].protocol)
    }
    assert {c.name for c in diff.classes_with(ADDED)} == set(new.snapshot.classes) - set(old.snapshot.classes)
    assert {c.name for c in diff.classes_with(REMOVED)} == set(old.snapshot.classes) - set(new.snapshot.classes)
    for change in diff.methods_with(CHANGED):
        if change.diff:  # applying the unified diff to the old source gives the new one
            key = change.key
            assert _patched(old_keys[key].source, change.diff) == new_keys[key].source
    json.dumps(result.to_json())
    assert SnapshotDiff.between(new.snapshot, new.snapshot).is_empty()


def test_the_real_change_of_teapot_core(tmp_path):
    """What a reader of the diff sees for Teapot-Core 84 -> the 2026 sources (checked by hand)."""
    old = read_mcz(_corpus("mcz") / "Teapot-Core-AttilaMagyar.84.mcz")
    [packed] = Packer(author="tester").pack_folder(_corpus("tonel") / "Teapot-Core", tmp_path)
    diff = PackageDiff.of(read_mcz(packed.path), old).diff
    assert {c.name for c in diff.classes_with(ADDED)} >= {"IsUUID", "TeaNotFoundHandler", "Tea405AwareNotFoundHandler"}
    [router] = [c for c in diff.classes if c.name == "TeaCompositeRouter"]
    [variables] = router.fields
    assert variables.added_and_removed() == (["notFoundHandler"], [])
    labels = {m.label: m.change for m in diff.methods}
    assert labels["TeaCompositeRouter>>evaluateRouters:"] == REMOVED
    assert labels["TeaCompositeRouter>>evaluateRouters:ifUnhandled:"] == ADDED
    assert labels["TeaCompositeRouter>>initialize"] == CHANGED
    [initialize] = [m for m in diff.methods if m.label == "TeaCompositeRouter>>initialize"]
    assert "+\tnotFoundHandler := TeaNotFoundHandler new." in initialize.diff


def _patched(old: str, diff_lines) -> str:
    """Apply a unified diff (as difflib writes it) to old."""
    old_lines, result, position = old.split("\n"), [], 0
    for line in diff_lines[2:]:
        if line.startswith("@@"):
            start = int(line.split()[1][1:].split(",")[0])
            start = start - 1 if start else 0
            result.extend(old_lines[position:start])
            position = start
        elif line.startswith("-"):
            position += 1
        elif line.startswith("+"):
            result.append(line[1:])
        else:
            result.append(old_lines[position])
            position += 1
    result.extend(old_lines[position:])
    return "\n".join(result)
