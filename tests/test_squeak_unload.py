"""Etoys 5.0 (Squeak 3.x, Monticello-kfr.403): rollback through the command line, unload included.

A rollback is a batch that loads the versions of a kept state again and unloads (`unload` lines) the packages
loaded since. On Monticello `HLMonticelloPlatform>>unloadPackages:` takes each such package to nothing with one
`MCPackageLoader` and unregisters its working copy; when the batch then fails, `installBatch:` puts it back with
the rest of the batch (`rollBack:organization:`, `HLMonticelloPackageState>>restoreWorkingCopy`).

One image for the whole module, baked with `hotload install-loader --dialect squeak` and started with a script
whose step hook writes probe-<n>.txt (what the running image has of the two packages) after the n-th batch.
The tests run in file order:

1. HLUn-A v1 is pushed, then A v2 with the new package HLUn-B (a class with a class variable its initialize
   sets, a subclass, an extension method on A's class): kept/ holds both batches, `hotload history` marks
   them current and rollback.
2. `hotload rollback` (after a dry run that writes nothing): A is back at v1, B's classes, its extension, its
   working copy, its class category, its PackageInfo and the empty '*HLUn-B' method category are gone, the loaded
   record says so, the image was saved.
3. a second rollback goes forward again: A v2 and B, with its working copy.
4. a batch staged by hand that unloads B and loads an A v3 with a method that does not compile: B is back as
   it was (classes, methods, extension, class variable, working copy, category, PackageInfo), and so is A;
   an instance of B made before the batch is an instance of the HLUnB the image runs (the rollback made the
   class anew: `HLMonticelloPackageState>>restoreClasses` hands the instances over); nothing was saved.
"""

import hashlib
import json
from pathlib import Path

import pytest

from conftest import ETOYS_MISSING, NEEDS_ETOYS, run_hotload
from helpers import PROBE_SHOW, class_def, make_package, method, monticello_organization_probe, stage_batch, status_of_batch

from hotload.images.loader_sources import st_string
from hotload.staging import protocol

LoadedRecord = protocol.LoadedRecord


MISSING = ETOYS_MISSING
pytestmark = NEEDS_ETOYS

PUSH_TIMEOUT = 90
INTERVAL_MS = 200


def a_source(answer: int, broken: bool = False) -> str:
    source = class_def("HLUnA", category="HLUn-A") + method("HLUnA", f"answer\n\t^ {answer}")
    if broken:
        source += method("HLUnA", "broken\n\t^ 1 + + 2")
    return source


B_SOURCE = (
    class_def("HLUnB", category="HLUn-B", ivars="size").replace("classVariableNames: ''", "classVariableNames: 'Greeting'")
    + method("HLUnB", "bee\n\t^ #bee")
    + method("HLUnB class", "greeting\n\t^ Greeting")
    + method("HLUnB class", "initialize\n\tGreeting := 'hello from B'", "class initialization")
    + class_def("HLUnBHelper", "HLUnB", "HLUn-B")
    + method("HLUnBHelper", "bee\n\t^ #helper")
    + method("HLUnA", "fromB\n\t^ #extension", "*HLUn-B")
)

# What the running image has of HLUn-A and HLUn-B, one "key = value" line each (values printString'd, errors as
# ERROR ...). Written by the step hook after every batch, loaded or failed. HLUnLive is an instance of HLUnB made
# at the previous probe: whether it is still of the class the image runs (an undone unload puts the class back).
PROBE = """[ :file | | out show a b |
""" + PROBE_SHOW + """	a := Smalltalk at: #HLUnA ifAbsent: [ nil ].
	b := Smalltalk at: #HLUnB ifAbsent: [ nil ].
	show value: 'A answer' value: [ a new answer ].
	show value: 'A selectors' value: [ (a selectors collect: [ :s | s asString ]) asSortedCollection asArray ].
	show value: 'A fromB' value: [ a new fromB ].
	show value: 'A>>fromB category' value: [ (a organization categoryOfElement: #fromB) asString ].
	show value: 'A protocols' value: [ (a organization categories collect: [ :c | c asString ]) asSortedCollection asArray ].
	#(#HLUnA #HLUnB #HLUnBHelper) do: [ :name | show value: name value: [ Smalltalk includesKey: name ] ].
	show value: 'B bee' value: [ b new bee ].
	show value: 'B instVarNames' value: [ b instVarNames asArray ].
	show value: 'B greeting' value: [ b greeting ].
	show value: 'B class selectors' value: [ (b class selectors collect: [ :s | s asString ]) asSortedCollection asArray ].
	show value: 'BHelper superclass' value: [ (Smalltalk at: #HLUnBHelper) superclass == b ].
	show value: 'BHelper bee' value: [ (Smalltalk at: #HLUnBHelper) new bee ].
	show value: 'B subclasses' value: [ (b subclasses collect: [ :c | c name asString ]) asArray ].
	show value: 'live B instance of HLUnB' value: [ (Smalltalk at: #HLUnLive ifAbsent: [ nil ]) isNil
		ifTrue: [ nil ] ifFalse: [ (Smalltalk at: #HLUnLive) class == b ] ].
""" + monticello_organization_probe("HLUn") + """	b isNil
		ifTrue: [ Smalltalk removeKey: #HLUnLive ifAbsent: [ nil ] ]
		ifFalse: [ Smalltalk at: #HLUnLive put: b new ].
	HLPlatform current writeText: out contents to: file ]"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Etoys:
    """The baked image serving a staging directory; the n-th finished batch writes probe-<n>.txt."""

    def __init__(self, folder: Path):
        from test_squeak_rollback import SQUEAK, start_vm  # one VM start-up recipe (a retry on its start-up abort)

        self.squeak = SQUEAK
        self.folder = folder
        self.image = SQUEAK.prepare(folder / "image")
        self.staging = folder / "staging"
        self.staging.mkdir(mode=0o700)
        self.packages = folder / "packages"
        self.batches = 0
        baking = run_hotload("install-loader", "--to", self.staging, "--dialect", "squeak", "--image", self.image,
                             "--vm", SQUEAK.vm, "--interval", INTERVAL_MS, timeout=400)
        assert baking.returncode == 0, baking.stdout + baking.stderr
        self.failure = folder / "start-failed.txt"
        script = folder / "start.st"
        probe_dir = st_string(str(folder) + "/")
        script.write_text(
            "[ | probe count |\n"
            f"probe := {PROBE}.\n"
            "count := 0.\n"
            f"probe value: {probe_dir} , 'probe-0.txt'.\n"
            "HLLoader stepHook: [ :step | step = #recorded ifTrue: [\n"
            f"\tcount := count + 1. probe value: {probe_dir} , 'probe-' , count printString , '.txt' ] ].\n"
            f"HLLoader startOn: {st_string(str(self.staging))} interval: {INTERVAL_MS} priority: nil ]\n"
            "\ton: Error, Warning do: [ :e |\n"
            f"\t\t(StandardFileStream forceNewFileNamed: {st_string(str(self.failure))}) nextPutAll: e class name , ': ' , "
            "e messageText asString; close.\n"
            "\t\tSmalltalkImage current snapshot: false andQuit: true ]!\n"
        )
        probe0, beat = folder / "probe-0.txt", self.staging / protocol.HEARTBEAT

        def ready():
            if self.failure.exists():
                raise AssertionError(f"the start script failed: {self.failure.read_text()}")
            return probe0.is_file() and beat.is_file()

        def reset():
            probe0.unlink(missing_ok=True)
            beat.unlink(missing_ok=True)

        self.process = start_vm(self.image, folder / "vm.log", ready, script=script, reset=reset)

    def probe(self, n: int) -> dict:
        path = self.folder / f"probe-{n}.txt"
        self.squeak.wait_for(path, 60, process=self.process, image=self.image)
        facts = {}
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(" = ")
            facts[key] = value
        return facts

    def next_probe(self) -> dict:
        """The probe written after the batch that just finished."""
        self.batches += 1
        return self.probe(self.batches)

    def package(self, name: str, source: str) -> Path:
        """Packed in one folder, so each version's ancestor is the one before."""
        return make_package(self.packages, name, source)

    def running(self) -> dict:
        record = LoadedRecord.parse((self.staging / protocol.LOADED).read_text())
        return {name: package.version for name, package in record.packages.items()}

    def loader_log(self) -> str:
        path = self.image.parent / "hotload.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        self.squeak.kill(self.process)


def hotload(*args) -> dict:
    result = run_hotload(*args, timeout=PUSH_TIMEOUT + 60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    report["exit"] = result.returncode
    return report


@pytest.fixture(scope="module")
def etoys(tmp_path_factory):
    if MISSING is not None:
        pytest.skip(f"no Squeak VM or Etoys image: {MISSING}")
    server = Etoys(tmp_path_factory.mktemp("etoys-unload"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pushed(etoys):
    """Batch 1: HLUn-A v1. Batch 2: HLUn-A v2 and HLUn-B (new). Answers the batch ids and the probes."""
    a1, a2, b = (etoys.package("HLUn-A", a_source(1)), etoys.package("HLUn-A", a_source(2)),
                 etoys.package("HLUn-B", B_SOURCE))
    first = hotload("push", a1, "--to", etoys.staging, "--wait", "--json", "--timeout", PUSH_TIMEOUT)
    assert first["exit"] == 0 and first["result"] == "ok", (first, etoys.loader_log()[-2000:])
    after_first = etoys.next_probe()
    second = hotload("push", a2, b, "--to", etoys.staging, "--wait", "--json", "--timeout", PUSH_TIMEOUT)
    assert second["exit"] == 0 and second["result"] == "ok", (second, etoys.loader_log()[-2000:])
    after_second = etoys.next_probe()
    return {"first": first["batch"], "second": second["batch"], "probes": (after_first, after_second)}


def assert_b_loaded(facts):
    assert facts["A answer"] == "2", facts
    assert facts["HLUnB"] == "true" and facts["HLUnBHelper"] == "true", facts
    assert facts["A fromB"] == "#extension" and facts["A>>fromB category"] == "'*HLUn-B'", facts
    assert facts["B bee"] == "#bee" and facts["BHelper bee"] == "#helper" and facts["BHelper superclass"] == "true"
    assert facts["B instVarNames"] == "#('size')" and facts["B greeting"] == "'hello from B'", facts
    assert facts["class categories"] == "#(#'HLUn-A' #'HLUn-B')", facts
    assert facts["PackageInfos"] == "#('HLUn-A' 'HLUn-B')", facts


def test_kept_holds_both_batches_and_history_marks_them(etoys, pushed):
    first, second = pushed["first"], pushed["second"]
    after_first, after_second = pushed["probes"]
    assert after_first["A answer"] == "1" and after_first["HLUnB"] == "false", after_first
    assert after_first["working copies"] == "#('HLUn-A #(''HLUn-A-tester.1'') modified=false')", after_first
    assert_b_loaded(after_second)
    assert after_second["working copies"] == ("#('HLUn-A #(''HLUn-A-tester.2'') modified=false' "
                                              "'HLUn-B #(''HLUn-B-tester.1'') modified=false')"), after_second
    kept = etoys.staging / protocol.KEPT
    assert sorted(path.name for path in kept.iterdir()) == sorted([first, second])
    for batch, state in ((first, {"HLUn-A": "HLUn-A-tester.1"}),
                         (second, {"HLUn-A": "HLUn-A-tester.2", "HLUn-B": "HLUn-B-tester.1"})):
        assert sorted(path.name for path in (kept / batch).iterdir()) == [protocol.LOADED, protocol.MANIFEST]
        assert protocol.Manifest.parse((kept / batch / protocol.MANIFEST).read_text()).batch == batch
        record = LoadedRecord.parse((kept / batch / protocol.LOADED).read_text())
        assert {name: p.version for name, p in record.packages.items()} == state
    # Their .mcz stay in packages/ (one per version a kept state names).
    assert sorted(path.name for path in (etoys.staging / protocol.PACKAGES).iterdir()) == [
        "HLUn-A-tester.1.mcz", "HLUn-A-tester.2.mcz", "HLUn-B-tester.1.mcz"]
    report = hotload("history", "--to", etoys.staging, "--json")
    assert report["exit"] == 0 and report["problems"] == [], report
    assert [(each["batch"], each["mark"]) for each in report["kept"]] == [(second, "current"), (first, "rollback")]
    assert report["kept"][0]["sent"] == ["HLUn-A-tester.2", "HLUn-B-tester.1"]


def test_a_dry_run_says_what_it_would_send_and_unload(etoys, pushed):
    image = sha256(etoys.image)
    report = hotload("rollback", "--to", etoys.staging, "--dry-run", "--json")
    assert report["exit"] == 0 and report["result"] == "dry-run", report
    assert [d["version"] for d in report["decisions"] if d["action"] == "send"] == ["HLUn-A-tester.1"], report
    assert report["unloads"] == ["HLUn-B-tester.1"], report
    assert sha256(etoys.image) == image and etoys.running() == {"HLUn-A": "HLUn-A-tester.2", "HLUn-B": "HLUn-B-tester.1"}


def test_rollback_loads_a_v1_again_and_unloads_b(etoys, pushed):
    image = sha256(etoys.image)
    report = hotload("rollback", "--to", etoys.staging, "--wait", "--json", "--timeout", PUSH_TIMEOUT)
    assert report["exit"] == 0 and report["result"] == "ok", (report, etoys.loader_log()[-2000:])
    assert report["packages"] == ["HLUn-A-tester.1"] and report["unloads"] == ["HLUn-B-tester.1"], report
    facts = etoys.next_probe()
    assert facts["A answer"] == "1", facts
    assert facts["HLUnA"] == "true" and facts["HLUnB"] == "false" and facts["HLUnBHelper"] == "false", facts
    assert "'fromB'" not in facts["A selectors"] and facts["A fromB"].startswith("ERROR MessageNotUnderstood"), facts
    assert facts["A protocols"] == "#('demo')", facts  # no empty '*HLUn-B' left
    assert facts["working copies"] == "#('HLUn-A #(''HLUn-A-tester.1'') modified=false')", facts
    assert facts["class categories"] == "#(#'HLUn-A')" and facts["PackageInfos"] == "#('HLUn-A')", facts
    assert etoys.running() == {"HLUn-A": "HLUn-A-tester.1"}
    assert sha256(etoys.image) != image  # saved
    kept = sorted(path.name for path in (etoys.staging / protocol.KEPT).iterdir())
    assert kept == sorted([pushed["first"], pushed["second"], report["batch"]])
    marks = {each["batch"]: each["mark"] for each in hotload("history", "--to", etoys.staging, "--json")["kept"]}
    assert marks == {report["batch"]: "current", pushed["first"]: "current", pushed["second"]: "rollback"}


def test_a_second_rollback_goes_forward_again(etoys, pushed):
    image = sha256(etoys.image)
    report = hotload("rollback", "--to", etoys.staging, "--wait", "--json", "--timeout", PUSH_TIMEOUT)
    assert report["exit"] == 0 and report["result"] == "ok", (report, etoys.loader_log()[-2000:])
    assert report["packages"] == ["HLUn-A-tester.2", "HLUn-B-tester.1"] and report["unloads"] == [], report
    facts = etoys.next_probe()
    assert_b_loaded(facts)
    assert facts["working copies"] == ("#('HLUn-A #(''HLUn-A-tester.2'') modified=false' "
                                       "'HLUn-B #(''HLUn-B-tester.1'') modified=false')"), facts
    assert etoys.running() == {"HLUn-A": "HLUn-A-tester.2", "HLUn-B": "HLUn-B-tester.1"}
    assert sha256(etoys.image) != image


def test_an_unload_is_undone_when_the_batch_fails_after_it(etoys, pushed):
    """Unload B, then load an A v3 that does not compile: the batch fails after B was taken out, and B is put
    back as it was with A v2; nothing is saved."""
    before = etoys.probe(etoys.batches)
    assert_b_loaded(before)
    image, record = sha256(etoys.image), (etoys.staging / protocol.LOADED).read_text()
    broken = etoys.package("HLUn-A", a_source(3, broken=True))
    batch = stage_batch(etoys.staging, [broken], unloads=[("HLUn-B", "HLUn-B-tester.1")])
    status = status_of_batch(etoys, batch, timeout=PUSH_TIMEOUT)
    assert status.result == "failed" and "does not compile" in status.error, status
    assert "rollback incomplete" not in status.error, status
    assert "install" in status.timings_ms, status  # failed in the install (after the unload), not in the verification
    facts = etoys.next_probe()
    live = "live B instance of HLUnB"  # made at the probe before: nil there
    differences = {key: (before.get(key), facts.get(key)) for key in before.keys() | facts.keys()
                   if before.get(key) != facts.get(key) and key != live}
    assert differences == {}, (differences, etoys.loader_log()[-2000:])
    assert facts[live] == "true", facts  # an instance made before the batch is of the class the image runs
    assert "rolled back: HLUn-B HLUn-A as before the batch" in etoys.loader_log()
    assert sha256(etoys.image) == image  # not saved
    assert (etoys.staging / protocol.LOADED).read_text() == record
    assert (etoys.staging / protocol.FAILED / batch / protocol.MANIFEST).is_file()
