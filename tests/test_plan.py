import json

import pytest

from conftest import run_hotload
from helpers import add_member, class_def, make_package, method
from hotload.errors import PlanError
from hotload.formats.mcz import read_mcz
from hotload.formats.plan import LoadPlan


def test_corpus_order_and_reasons(corpus):
    files = sorted(corpus.glob("*.mcz"), reverse=True)  # input order must not matter
    plan = LoadPlan.build([read_mcz(p) for p in files])
    order = [p.name for p in plan.order]
    position = {name: order.index(name) for name in order}
    for edge in plan.edges:
        assert position[edge.before] < position[edge.after], edge
    assert position["Zinc-Resource-Meta-Core"] < position["Zinc-HTTP"] < position["Teapot-Core"] < position["Teapot-Tools"]
    assert position["Grease-Core"] < position["Javascript-Core"] < position["JQuery-Core"] < position["JQuery-UI"]
    reasons = {(e.before, e.after): e.reasons for e in plan.edges}
    assert "Teapot-Core extends ZnResponse from Zinc-HTTP" in reasons[("Zinc-HTTP", "Teapot-Core")]
    assert "Zinc-HTTP subclasses ZnUrlOperation from Zinc-Resource-Meta-Core" in reasons[("Zinc-Resource-Meta-Core", "Zinc-HTTP")]
    assert "Grease-Pharo30-Core subclasses GRCodec from Grease-Core" in reasons[("Grease-Core", "Grease-Pharo30-Core")]
    assert plan.cycles == []
    teapot = next(p for p in plan.packages if p.name == "Teapot-Core")
    assert {r.name for r in teapot.expected_in_image} >= {"Object", "Error", "BlockClosure"}


def test_plan_command_prints_order_with_reasons(corpus):
    result = run_hotload("plan", *sorted(corpus.glob("*.mcz")), check=True)
    assert "Load order" in result.stdout
    assert "Teapot-Core extends ZnResponse from Zinc-HTTP" in result.stdout
    assert "expected in the image" in result.stdout
    data = json.loads(run_hotload("plan", "--json", *sorted(corpus.glob("*.mcz")), check=True).stdout)
    assert data["order"].index("Zinc-HTTP") < data["order"].index("Teapot-Core")
    assert len(data["packages"]) == 33


def test_cycle_is_reported_and_other_edges_respected(tmp_path):
    base = make_package(tmp_path, "Base", class_def("BaseThing", category="Base"))
    a = make_package(tmp_path, "Alpha", class_def("AlphaThing", "BaseThing", "Alpha") + method("BetaThing", "fromAlpha\n\t^ 1", "*Alpha"))
    b = make_package(tmp_path, "Beta", class_def("BetaThing", "BaseThing", "Beta") + method("AlphaThing", "fromBeta\n\t^ 2", "*Beta"))
    top = make_package(tmp_path, "Top", class_def("TopThing", "AlphaThing", "Top"))
    plan = LoadPlan.build([read_mcz(p) for p in (top, b, a, base)])
    assert plan.cycles == [["Beta", "Alpha"]]
    order = [p.name for p in plan.order]
    assert order[0] == "Base" and order[-1] == "Top"
    assert set(order[1:3]) == {"Alpha", "Beta"}
    result = run_hotload("plan", top, b, a, base, check=True)
    assert "cycle: Beta <-> Alpha" in result.stdout


def test_dependencies_member_makes_an_edge(tmp_path):
    lib = make_package(tmp_path, "Lib", class_def("LibThing", category="Lib"))
    app = make_package(tmp_path, "App", class_def("AppThing", category="App"))
    add_member(app, "dependencies/Lib", "(name 'Lib-tester.1' id 'x' ancestors () stepChildren ())")
    plan = LoadPlan.build([read_mcz(app), read_mcz(lib)])
    assert [p.name for p in plan.order] == ["Lib", "App"]
    assert plan.edges[0].reasons == ["App depends on Lib from Lib"]


def test_trait_requirement(tmp_path):
    traits = make_package(tmp_path, "Traits", "Trait named: #TShiny\n\tuses: {}\n\tcategory: 'Traits'!\n\n")
    user = make_package(
        tmp_path, "User",
        "Object subclass: #Gem\n\tuses: TShiny\n\tinstanceVariableNames: ''\n\tclassVariableNames: ''\n\tpoolDictionaries: ''\n\tcategory: 'User'!\n",
    )
    plan = LoadPlan.build([read_mcz(user), read_mcz(traits)])
    assert [p.name for p in plan.order] == ["Traits", "User"]
    assert "User uses trait TShiny from Traits" in plan.edges[0].reasons


def test_two_versions_of_one_package_are_refused(tmp_path):
    first = make_package(tmp_path / "one", "Dup", class_def("DupThing", category="Dup"))
    second = make_package(tmp_path / "two", "Dup", class_def("DupThing", category="Dup"), author="other")
    with pytest.raises(PlanError, match="two versions of package Dup"):
        LoadPlan.build([read_mcz(first), read_mcz(second)])
    result = run_hotload("plan", first, second)
    assert result.returncode == 2
    assert "two versions of package Dup" in result.stderr


def test_broken_files_get_one_line_each_and_exit_2(tmp_path):
    (tmp_path / "bad.mcz").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("hi")
    result = run_hotload("plan", tmp_path / "bad.mcz", tmp_path / "notes.txt", tmp_path / "missing.mcz")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("hotload:")]
    assert len(lines) == 3
    assert "not a zip archive" in lines[0] and "not a .mcz file" in lines[1] and "no such file" in lines[2]
