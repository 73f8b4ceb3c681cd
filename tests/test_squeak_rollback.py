"""Etoys 5.0 (Squeak 3.x, Monticello-kfr.403): a failed batch leaves the image as it was, in memory too.

Monticello has no transaction: one `MCVersionLoader` loads the class definitions of the whole batch, then
compiles, installs and removes methods, then runs the class initializers, so a batch that fails halfway
leaves part of it loaded. `HLMonticelloPlatform>>installBatch:` keeps what the image has of every package
of the batch (`MCPackage>>snapshot`, the working copies, class variables) and, when the load fails, takes
every package back to it with one `MCPackageLoader`.

The image is baked with `hotload install-loader --dialect squeak`, and HLRb-Core v1 (a class with an
instance variable, a class variable and a class-side initialize, and a class v2 drops) is pushed to it.
Before each push a live instance holds state and the class variable has a value other than its initial
one. A batch then fails in its second package:

- a method that does not compile (Etoys: a SyntaxErrorNotification, after the class definitions of the
  whole batch were loaded: v2 has added an instance variable and classes);
- a class-side initialize that raises (after all methods were installed and v2's dropped class removed;
  it changes HLRbThing's class variable first);
- a superclass that is nowhere (Monticello's dependency warning: nothing is loaded, but working copies
  were made for every package).

Its first package is HLRb-Core v2 (a new version of a loaded package: changes, adds and removes methods,
an instance variable and classes); its third, HLRb-Fresh, is brand new (a class and an extension method
on HLRbThing). After the failed push every fact the probe reads is what it was before (code, layouts, the
live instance, the class variable, working copies, class categories, PackageInfos), v1's initialize was
not run again, the image file is byte-identical, and the next good push loads v2 and HLRb-Fresh.
"""

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from conftest import run_hotload
from helpers import PROBE_SHOW, class_def, make_package, method, monticello_organization_probe
from hotload.images.loader_sources import st_string
from hotload.images.squeak import Squeak, SqueakError


def _squeak():
    try:
        squeak = Squeak()
        squeak.base_image()
        return squeak
    except SqueakError as error:
        return str(error)


SQUEAK = _squeak()
pytestmark = pytest.mark.skipif(isinstance(SQUEAK, str), reason=str(SQUEAK))

STARTUP_TIMEOUT = 60
PUSH_TIMEOUT = 90


def cdef(name, category, ivars="", cvars=""):
    return class_def(name, category=category, ivars=ivars).replace(
        "classVariableNames: ''", f"classVariableNames: '{cvars}'")


def core(version: int) -> str:
    common = (
        method("HLRbThing class", "count\n\t^ Count")
        + method("HLRbThing class", "bump\n\tCount := Count + 1")
        + method("HLRbThing", "value\n\t^ value")
        + method("HLRbThing", "value: anObject\n\tvalue := anObject")
    )
    if version == 1:
        return (
            cdef("HLRbThing", "HLRb-Core", "value", "Count")
            + common
            + method("HLRbThing", "answer\n\t^ 1")
            + method("HLRbThing", "onlyInV1\n\t^ #v1")
            + method("HLRbThing class", "initialize\n\tCount := 0.\n\tSmalltalk at: #HLRbV1Inits put: "
                     "(Smalltalk at: #HLRbV1Inits ifAbsent: [ 0 ]) + 1", "class initialization")
            + cdef("HLRbGone", "HLRb-Core")
            + method("HLRbGone", "gone\n\t^ #gone")
        )
    return (
        cdef("HLRbThing", "HLRb-Core", "value extra", "Count")
        + common
        + method("HLRbThing", "answer\n\t^ 2")
        + method("HLRbThing", "onlyInV2\n\t^ extra ifNil: [ #v2 ]")
        + method("HLRbThing class", "initialize\n\tCount := 100", "class initialization")
        + cdef("HLRbAddedByV2", "HLRb-Core")
    )


FRESH = (
    cdef("HLRbFresh", "HLRb-Fresh")
    + method("HLRbFresh", "hello\n\t^ 'fresh'")
    + method("HLRbThing", "freshExtension\n\t^ #fresh", "*HLRb-Fresh")
)
# Its superclass is nowhere: Monticello warns before it loads anything (MCPackageLoader>>warnAboutDependencies).
NEEDS = class_def("HLRbNeeds", "HLRbNoSuchSuper", "HLRb-Needs") + method("HLRbNeeds", "fine\n\t^ 1")
BAD = cdef("HLRbBad", "HLRb-Bad") + method("HLRbBad", "fine\n\t^ 1") + method("HLRbBad", "broken\n\t^ 1 + + ")
# Changes HLRbThing's class variable before it raises (in whatever order Monticello runs the initializers).
RAISE = cdef("HLRbRaise", "HLRb-Raise") + method(
    "HLRbRaise class", "initialize\n\t(Smalltalk at: #HLRbThing) bump.\n\tself error: 'initialize raised on purpose'",
    "class initialization")

# Every fact the test compares, one "key = value" line each (values printString'd, errors as ERROR ...).
PROBE = """[ :file | | out show thing |
""" + PROBE_SHOW + """	thing := Smalltalk at: #HLRbThing ifAbsent: [ nil ].
	show value: 'HLRbThing instVarNames' value: [ thing instVarNames asArray ].
	show value: 'HLRbThing selectors' value: [ (thing selectors collect: [ :s | s asString ]) asSortedCollection asArray ].
	show value: 'HLRbThing class selectors' value: [ (thing class selectors collect: [ :s | s asString ]) asSortedCollection asArray ].
	show value: 'HLRbThing>>answer' value: [ (thing sourceCodeAt: #answer) asString ].
	show value: 'HLRbThing class>>initialize' value: [ (thing class sourceCodeAt: #initialize) asString ].
	show value: 'new answer' value: [ thing new answer ].
	show value: 'Count' value: [ thing count ].
	show value: 'v1 initialize runs' value: [ Smalltalk at: #HLRbV1Inits ifAbsent: [ nil ] ].
	show value: 'live instance class' value: [ (Smalltalk at: #HLRbLive) class == thing ].
	show value: 'live instance value' value: [ (Smalltalk at: #HLRbLive) value ].
	#(#HLRbGone #HLRbAddedByV2 #HLRbFresh #HLRbBad #HLRbRaise #HLRbNeeds) do: [ :name |
		show value: name value: [ Smalltalk includesKey: name ] ].
	show value: 'HLRbGone new gone' value: [ (Smalltalk at: #HLRbGone) new gone ].
""" + monticello_organization_probe("HLRb") + """	HLPlatform current writeText: out contents to: file ]"""


def start_vm(image: Path, log: Path, ready, script=None, reset=None, tries: int = 3):
    """Start the VM on `image` and wait until `ready()`. Retried (a second later) only when the VM dies of
    SIGABRT before that: squeak-vm 4.10 on a saved Etoys image now and then crashes at start-up with a
    segmentation fault in StandardFileStream>>finalize (the finalization of a file stream of an earlier
    session, whose handle the VM takes for valid when the two sessions' ids, ioLowResMSecs() + time(NULL),
    are equal: likely when VMs start seconds apart, as here). It happens before any code of ours runs.
    `reset` is called before each attempt."""
    for attempt in range(1, tries + 1):
        if reset is not None:
            reset()
        process = SQUEAK.start(image, log, script=script)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return process
        SQUEAK.kill(process)
        if process.returncode != -signal.SIGABRT or attempt == tries:
            raise AssertionError(f"the VM on {image} did not get ready (exit {process.returncode}): "
                                 + log.read_text(errors="replace")[-1500:])
        time.sleep(1.1)


def heartbeat_changed(staging: Path):
    """A `ready` for start_vm: the heartbeat file is rewritten (by a loader of this start)."""
    path = staging / "heartbeat"
    before = path.read_bytes() if path.is_file() else None
    return lambda: path.is_file() and path.read_bytes() != before


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    """Etoys with the loader baked in by `hotload install-loader --dialect squeak`, then HLRb-Core v1 pushed:
    loaded and saved by the loader."""
    folder = tmp_path_factory.mktemp("etoys-rollback")
    image = SQUEAK.prepare(folder / "image")
    staging = folder / "staging"
    staging.mkdir()
    baking = run_hotload("install-loader", "--to", staging, "--dialect", "squeak", "--image", image,
                         "--vm", SQUEAK.vm, "--interval", "200", timeout=400)
    assert baking.returncode == 0, baking.stdout + baking.stderr
    packages = folder / "packages"
    v1 = make_package(packages, "HLRb-Core", core(1))
    process = start_vm(image, folder / "vm.log", heartbeat_changed(staging))
    try:
        pushed = run_hotload("push", v1, "--to", staging, "--wait", "--json", "--timeout", PUSH_TIMEOUT,
                             timeout=PUSH_TIMEOUT + 30)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    finally:
        SQUEAK.kill(process)
    return {"image": image, "packages": packages}


class Live:
    """A copy of the baked image serving a staging directory; every finished batch writes probe-<n>.txt."""

    def __init__(self, baked, folder: Path, before: str = ""):
        self.folder = folder
        self.image = SQUEAK.prepare(folder / "image", image=baked["image"])
        self.staging = folder / "staging"
        self.staging.mkdir()
        self.packages = folder / "packages"
        shutil.copytree(baked["packages"], self.packages)  # HLRb-Core-tester.1 is v2's ancestor
        self.log = folder / "vm.log"
        self.failure = folder / "start-failed.txt"
        script = folder / "start.st"
        probe_dir = st_string(str(folder) + "/")
        script.write_text(
            "[ | probe count |\n"
            f"{before}\n"
            "(Smalltalk at: #HLRbThing) bump; bump; bump; bump; bump.\n"
            "Smalltalk at: #HLRbLive put: ((Smalltalk at: #HLRbThing) new value: 7; yourself).\n"
            f"probe := {PROBE}.\n"
            "count := 0.\n"
            f"probe value: {probe_dir} , 'probe-0.txt'.\n"
            "HLLoader stepHook: [ :step | step = #recorded ifTrue: [\n"
            f"\tcount := count + 1. probe value: {probe_dir} , 'probe-' , count printString , '.txt' ] ].\n"
            f"HLLoader startOn: {st_string(str(self.staging))} interval: 200 priority: nil ]\n"
            "\ton: Error, Warning do: [ :e |\n"
            f"\t\t(StandardFileStream forceNewFileNamed: {st_string(str(self.failure))}) nextPutAll: e class name , ': ' , "
            "e messageText asString; close.\n"
            "\t\tSmalltalkImage current snapshot: false andQuit: true ]!\n"
        )
        self.pushes = 0
        self.packed = {}
        probe0, beat = self.folder / "probe-0.txt", self.staging / "heartbeat"

        def ready():
            if self.failure.exists():
                raise AssertionError(f"the start script failed: {self.failure.read_text()}")
            return probe0.is_file() and beat.is_file()

        def reset():
            probe0.unlink(missing_ok=True)
            beat.unlink(missing_ok=True)

        self.process = start_vm(self.image, self.log, ready, script=script, reset=reset)

    def wait_for(self, path: Path):
        SQUEAK.wait_for(path, STARTUP_TIMEOUT, process=self.process, image=self.image)

    def image_digest(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()

    def probe(self, n: int) -> dict:
        self.wait_for(self.folder / f"probe-{n}.txt")
        facts = {}
        for line in (self.folder / f"probe-{n}.txt").read_text(errors="replace").splitlines():
            key, _, value = line.partition(" = ")
            facts[key] = value
        return facts

    def push(self, *packages) -> dict:
        result = run_hotload("push", *packages, "--to", self.staging, "--wait", "--json",
                             "--timeout", PUSH_TIMEOUT, timeout=PUSH_TIMEOUT + 30)
        assert result.stdout.strip(), result.stderr
        report = json.loads(result.stdout)
        report["exit"] = result.returncode
        self.pushes += 1
        report["probe"] = self.probe(self.pushes)
        return report

    def stop(self):
        SQUEAK.kill(self.process)

    def loader_log(self) -> str:
        path = self.image.parent / "hotload.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def live(baked, tmp_path):
    server = Live(baked, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def package(live, name, source):
    """The package packed once per test (packing it again would make the next version)."""
    key = (name, source)
    if key not in live.packed:
        live.packed[key] = make_package(live.packages, name, source)
    return live.packed[key]


def assert_v1_with_live_state(facts):
    """The facts of the image before any batch (probe-0), spelled out."""
    assert facts["HLRbThing instVarNames"] == "#('value')", facts
    assert facts["new answer"] == "1"
    assert "'onlyInV1'" in facts["HLRbThing selectors"] and "'onlyInV2'" not in facts["HLRbThing selectors"]
    assert "'freshExtension'" not in facts["HLRbThing selectors"]
    assert "Count := 0" in facts["HLRbThing class>>initialize"]
    assert facts["Count"] == "5"
    assert facts["v1 initialize runs"] == "1"
    assert facts["live instance class"] == "true" and facts["live instance value"] == "7"
    assert facts["HLRbGone"] == "true" and facts["HLRbGone new gone"] == "#gone"
    for name in ("HLRbAddedByV2", "HLRbFresh", "HLRbBad", "HLRbRaise", "HLRbNeeds"):
        assert facts[name] == "false", name
    assert facts["working copies"] == "#('HLRb-Core #(''HLRb-Core-tester.1'') modified=false')"
    assert facts["class categories"] == "#(#'HLRb-Core')"
    assert facts["PackageInfos"] == "#('HLRb-Core')"


def assert_good_push_loads_v2(live, before_digest):
    good = live.push(package(live, "HLRb-Core", core(2)), package(live, "HLRb-Fresh", FRESH))
    assert good["exit"] == 0 and good["result"] == "ok", good
    assert good["loaded"] == ["HLRb-Core-tester.2", "HLRb-Fresh-tester.1"]
    facts = good["probe"]
    assert facts["HLRbThing instVarNames"] == "#('value' 'extra')", facts
    assert facts["new answer"] == "2"
    assert "'onlyInV2'" in facts["HLRbThing selectors"] and "'onlyInV1'" not in facts["HLRbThing selectors"]
    assert "'freshExtension'" in facts["HLRbThing selectors"]
    assert facts["Count"] == "100"  # v2's changed initialize ran
    assert facts["live instance class"] == "true" and facts["live instance value"] == "7"
    assert facts["HLRbGone"] == "false" and facts["HLRbAddedByV2"] == "true" and facts["HLRbFresh"] == "true"
    assert facts["HLRbBad"] == "false" and facts["HLRbRaise"] == "false"
    assert facts["working copies"] == ("#('HLRb-Core #(''HLRb-Core-tester.2'') modified=false' "
                                       "'HLRb-Fresh #(''HLRb-Fresh-tester.1'') modified=false')")
    assert live.image_digest() != before_digest  # saved this time


CASES = {
    # name: (second package, its source, what the error says)
    "method-does-not-compile": ("HLRb-Bad", BAD, ["does not compile", "broken"]),
    "initialize-raises": ("HLRb-Raise", RAISE, ["initialize raised on purpose"]),
    # Nothing is loaded, but MCVersionLoader made working copies first: they go again.
    "dependency-warning": ("HLRb-Needs", NEEDS, ["Monticello warning", "HLRbNoSuchSuper"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failed_batch_is_rolled_back_and_the_next_push_loads(live, case):
    name, source, expected = CASES[case]
    before = live.probe(0)
    assert_v1_with_live_state(before)
    digest = live.image_digest()
    failing = live.push(package(live, "HLRb-Core", core(2)), package(live, name, source),
                        package(live, "HLRb-Fresh", FRESH))
    assert failing["exit"] == 1 and failing["result"] == "failed", failing
    for text in expected:
        assert text in failing["error"], failing
    assert "rollback incomplete" not in failing["error"], failing
    assert "install" in failing["timings_ms"], failing  # it failed in the install, not in the verification
    if case != "dependency-warning":  # the warning is about the whole load, not one package
        assert failing["failed_package"] == f"{name}-tester.1", failing
    after = failing["probe"]
    differences = {key: (before.get(key), after.get(key)) for key in before.keys() | after.keys()
                   if before.get(key) != after.get(key)}
    assert differences == {}, failing
    assert live.image_digest() == digest  # the image file is byte-identical
    assert f"rolled back: HLRb-Core {name} HLRb-Fresh as before the batch" in live.loader_log()
    assert_good_push_loads_v2(live, digest)


def test_trouble_in_the_rollback_is_reported_with_the_original_failure(baked, tmp_path):
    """A rollback step that fails (injected: forgetting the batch's working copies) is added to the error;
    the steps before it still ran."""
    # Etoys forgets the author initials at start-up; compile:classified: would ask for them (and hang).
    inject = ("Utilities setAuthorInitials: 'hotload'. HLSqueakPlatform compile: "
              "'forgetOrganizationNotIn: anArray\n\tself error: ''injected''' classified: 'test'.")
    live = Live(baked, tmp_path, before=inject)
    try:
        failing = live.push(package(live, "HLRb-Core", core(2)), package(live, "HLRb-Raise", RAISE),
                            package(live, "HLRb-Fresh", FRESH))
        assert failing["exit"] == 1, failing
        assert "initialize raised on purpose" in failing["error"], failing
        assert "rollback incomplete: organization: Error: injected" in failing["error"], failing
        facts = failing["probe"]
        assert facts["new answer"] == "1" and facts["HLRbFresh"] == "false" and facts["Count"] == "5", facts
        assert "HLRb-Raise" in facts["working copies"]  # what the failed step would have forgotten
    finally:
        live.stop()
