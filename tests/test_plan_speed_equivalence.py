"""The shortcuts of reading for a plan read what the whole reader reads.

`chunks.source_plan_facts` reads a source in Monticello's exact layout (one run of stamped method
units) without a regular expression over every character, and skips chunks that add nothing to a
plan (`SystemOrganization addCategory:`, doits of names only). These sources are mostly in that
layout, with pieces that break it: the facts must be read_source's, or its error.

    HOTLOAD_FUZZ_EXAMPLES=3000 python3 -m pytest -q tests/test_plan_speed_equivalence.py
"""

import os
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hotload.formats import chunks, sexpr
from hotload.formats.chunks import ChunkError, read_source, source_plan_facts

EXAMPLES = int(os.environ.get("HOTLOAD_FUZZ_EXAMPLES", "200"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def unit(class_name, body, protocol="accessing", stamp="jd 1/1/2020 10:00", side=""):
    return f"!{class_name}{side} methodsFor: '{protocol}' stamp: '{stamp}'!\r{body}! !\r\r"


CHUNKS = [
    "SystemOrganization addCategory: #Demo!\r\r",
    "SystemOrganization addCategory: #'Demo-Core'!\r",
    "SystemOrganization addCategory: #Demo-Core-Tests!\r",
    "SystemOrganization addCategory: 'Demo'!\r",
    "SystemOrganization addCategory: #Demo foo: 3!\r",
    "SystemOrganization addCategory: !\r",
    "Object subclass: #Foo\r\tinstanceVariableNames: 'a'\r\tclassVariableNames: ''\r\tpoolDictionaries: ''\r\tcategory: 'Demo'!\r\r",
    "Foo subclass: #Bar uses: TFoo instanceVariableNames: '' classVariableNames: '' package: 'Demo'!\r\r",
    "Foo class instanceVariableNames: 'x'!\r\r",
    "Baz class instanceVariableNames: 'x'!\r\r",
    "!Foo commentStamp: 'jd 1/1/2020' prior: 0!\rA comment with an escaped !! in it!\r\r",
    "Foo initialize!\r",
    "Foo initialize. Bar initialize!\r",
    "Smalltalk at: #Foo put: 3!\r",
    unit("Foo", "a\r\t^ a"),
    unit("Foo", "b: x\r\t^ x + 1", protocol="actions"),
    unit("Foo", "c\r\t^ 'c'", side=" class"),
    unit("Bar", "d\r\t^ self", side=" classSide", stamp=""),
    unit("Object", "isFoo\r\t^ false", protocol="*Demo"),
    unit("String", "shout\r\t^ self , '!!'"),
    unit("Foo", "e\r\t^ 'it''s'", protocol="it''s"),
    "!Foo methodsFor: 'no stamp'!\rf\r\t^ 6! !\r\r",
    "!Foo  methodsFor: 'two spaces' stamp: 'x'!\rg\r\t^ 7! !\r\r",
    "!Foo methodsFor: 'two' stamp: 'x'!\rh\r\t^ 8!\ri\r\t^ 9! !\r\r",
    "!Foo reorganize!\r('acc' a)\r!\r",
]
PIECES = [
    "!", "!!", "! !", " ", "\r", "\n", "\t", "'", "''", "\"", "#", "$!", "Foo", " class", " methodsFor: ",
    " stamp: ", "'x'", "\r\r", "subclass:", "\u00e9", "\x00",
]


def source_text(recipe: bytes) -> str:
    return "".join(CHUNKS[byte % len(CHUNKS)] if byte < 224 else PIECES[byte % len(PIECES)] for byte in recipe)


def outcome(call):
    try:
        return ("ok", call())
    except (ChunkError, sexpr.SexprError) as error:
        return ("error", type(error).__name__, str(error))


def facts_of_snapshot(snapshot):
    classes = tuple(
        (name, each.superclass, tuple(each.traits) + tuple(each.class_traits)) for name, each in snapshot.classes.items()
    )
    return classes, snapshot.method_class_counts()


def split_facts(text):
    """source_plan_facts without the run shortcut: the split at _PLAN_UNIT, or reading chunk by chunk."""
    chunks._check_terminated(text)
    snapshot = chunks._read_split(text, chunks._PLAN_UNIT.split(text), chunks._plan_doit)
    if snapshot is None:
        snapshot = chunks.Snapshot()
        chunks._read_chunks(text, snapshot, snapshot._methods, True, chunks._plan_doit)
    return chunks._plan_classes(snapshot), snapshot.method_class_counts()


def check(text, record=True):
    whole = outcome(lambda: read_source(text))
    planned = outcome(lambda: source_plan_facts(text))
    run = chunks._plan_run_split(text) if whole[0] == "ok" or not whole[2].startswith("the text ends") else None
    if record:
        event(f"run shortcut: {run is not None}")
    if whole[0] == "error":
        assert planned == whole
        assert run is None
        return
    assert planned == ("ok", facts_of_snapshot(whole[1]))
    if run is not None:
        assert run == planned[1]
        assert outcome(lambda: split_facts(text)) == planned


@fuzz
@given(st.binary(min_size=1, max_size=80))
def test_plan_facts_shortcuts_read_what_read_source_reads(recipe):
    check(source_text(recipe))


@fuzz
@given(
    st.lists(st.sampled_from(CHUNKS[:14]), max_size=6),
    st.lists(st.sampled_from(CHUNKS[14:19]), min_size=1, max_size=30),
    st.binary(max_size=6),
)
def test_runs_of_units_with_text_around(before, units, after):
    """Mostly Monticello's layout: definitions and such, a run of units, then anything."""
    check("".join(before) + "".join(units) + source_text(after))


@pytest.mark.parametrize(
    "text",
    [
        CHUNKS[0] + CHUNKS[6] + unit("Foo", "a\r\t^ a") + unit("Foo", "b\r\t^ b") + "Foo initialize!\r",
        unit("Foo", "a\r\t^ a"),
        unit("Foo", "a\r\t^ a").rstrip("\r"),
        unit("Foo", "a\r\t^ a") + "!",
        unit("Foo", "a\r\t^ a") + "!!",
        unit("Foo", "a\r\t^ a") + unit("Foo", "b\r\t^ b").replace("! !", "!  !"),
        unit("Foo", "a\r\t^ a") + unit("Foo", "  \r"),
        unit("Foo", "a\r\t^ a").replace("\r\r", "") + unit("Bar", "b\r\t^ b"),
        unit("Foo", "a\r\t^ a") + "Foo initialize! !",
    ],
)
def test_edges_of_a_run(text):
    check(text, record=False)


def test_the_run_shortcut_takes_monticellos_layout():
    text = CHUNKS[0] + CHUNKS[6] + "".join(unit("Foo", f"m{i}\r\t^ {i}", side=" class" * (i % 2)) for i in range(20))
    text += unit("Object", "isFoo\r\t^ true") + "Foo initialize!\r"
    classes, counts = chunks._plan_run_split(text)
    assert classes == (("Foo", "Object", ()),)
    assert counts == {"Foo": 20, "Object": 1}
    assert re.search("!!", text) is None
