"""Compiling ahead on gst (HLApplier>>precompile:): the methods of classes a batch does not reshape are compiled
below the web server before the install, never visible before it, and the install only puts them in place.
Each test runs the loader's sources in a fresh gst and reads what it prints."""

import shutil

import pytest

from helpers import class_def, make_package, method
from hotload.images.gst import Gst
from hotload.images.loader_sources import loader_files, st_string

pytestmark = pytest.mark.skipif(not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)")


def run(code: str) -> dict:
    """Evaluate `code` after filing in the loader; answers the `key: value` lines it printed."""
    out = Gst().run(code + "\n!\n", files=loader_files("gst"), timeout=300)
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith('"'))


def prepared(version1, version2) -> str:
    """Smalltalk that installs version1, reads version2 into batch `b` (entry `e`) and compiles it ahead."""
    return f"""| e b r |
HLApplier new platform: HLPlatform current; installFile: {st_string(version1)}.
e := HLPackageEntry forFile: {st_string(version2)}.
e readWith: HLPlatform current.
b := HLBatch new entries: (Array with: e); yourself.
HLPlatform current prepareBatch: b.
"""


def test_compiled_ahead_is_not_visible_until_the_install(tmp_path):
    v1 = make_package(tmp_path / "1", "HLAhead", class_def("HLAhead", category="HLAhead")
                      + method("HLAhead", "answer\n\t^ 1") + method("HLAhead", "same\n\t^ 0"))
    v2 = make_package(tmp_path / "2", "HLAhead", class_def("HLAhead", category="HLAhead")
                      + method("HLAhead", "answer\n\t^ 2") + method("HLAhead", "same\n\t^ 0") + method("HLAhead", "added\n\t^ 3"))
    found = run(prepared(v1, v2) + """
Transcript showCr: 'ahead: ', (e precompiled values select: [ :each | each first notNil ]) size printString.
Transcript showCr: 'unchanged: ', (e precompiled values select: [ :each | each first isNil ]) size printString.
Transcript showCr: 'before: ', HLAhead new answer printString, ' ', (HLAhead includesSelector: #added) printString.
r := HLPlatform current installBatch: b.
Transcript showCr: 'after: ', r isOk printString, ' ', HLAhead new answer printString, ' ', HLAhead new added printString.""")
    assert found["ahead"] == "2" and found["unchanged"] == "1"  # answer and added; same is unchanged
    assert found["before"] == "1 false"  # compiled ahead, yet the image still runs v1
    assert found["after"] == "true 2 3"


def test_a_method_changed_after_compiling_ahead_is_compiled_again(tmp_path):
    v1 = make_package(tmp_path / "1", "HLAhead", class_def("HLAhead", category="HLAhead") + method("HLAhead", "answer\n\t^ 1"))
    v2 = make_package(tmp_path / "2", "HLAhead", class_def("HLAhead", category="HLAhead") + method("HLAhead", "answer\n\t^ 2"))
    found = run(prepared(v1, v2) + """
HLAhead compile: 'answer ^ 99'.
r := HLPlatform current installBatch: b.
Transcript showCr: 'after: ', r isOk printString, ' ', HLAhead new answer printString.
r := nil.""")
    assert found["after"] == "true 2"


def test_reshaped_classes_and_names_still_to_come_are_left_to_the_install(tmp_path):
    v1 = make_package(tmp_path / "1", "HLAhead", class_def("HLAhead", category="HLAhead")
                      + class_def("HLAheadSub", "HLAhead", category="HLAhead")
                      + method("HLAhead", "answer\n\t^ 1") + method("HLAheadSub", "sub\n\t^ 1"))
    v2 = make_package(tmp_path / "2", "HLAhead", class_def("HLAhead", category="HLAhead", ivars="extra")
                      + class_def("HLAheadSub", "HLAhead", category="HLAhead")
                      + class_def("HLAheadNew", category="HLAhead")
                      + method("HLAhead", "answer\n\t^ extra ifNil: [ 2 ]")
                      + method("HLAheadSub", "sub\n\t^ HLAheadNew name"))
    found = run(prepared(v1, v2) + """
Transcript showCr: 'ahead: ', (e precompiled values select: [ :each | each first notNil ]) size printString.
Transcript showCr: 'undeclared: ', (Undeclared includesKey: #HLAheadNew) printString.
r := HLPlatform current installBatch: b.
Transcript showCr: 'after: ', r isOk printString, ' ', HLAhead new answer printString, ' ', HLAheadSub new sub printString.""")
    assert found["ahead"] == "0"  # HLAhead is reshaped (and so HLAheadSub); nothing was compiled ahead
    assert found["undeclared"] == "false"
    assert found["after"] == "true 2 #HLAheadNew"


def test_a_name_still_to_come_in_a_class_not_reshaped_is_left_to_the_install(tmp_path):
    v1 = make_package(tmp_path / "1", "HLAhead", class_def("HLAhead", category="HLAhead") + method("HLAhead", "other\n\t^ nil"))
    v2 = make_package(tmp_path / "2", "HLAhead", class_def("HLAhead", category="HLAhead")
                      + class_def("HLAheadLater", category="HLAhead")
                      + method("HLAhead", "other\n\t^ [ HLAheadLater name ] value"))
    found = run(prepared(v1, v2) + """
Transcript showCr: 'ahead: ', (e precompiled values select: [ :each | each first notNil ]) size printString.
Transcript showCr: 'undeclared: ', (Undeclared includesKey: #HLAheadLater) printString.
r := HLPlatform current installBatch: b.
Transcript showCr: 'after: ', r isOk printString, ' ', HLAhead new other printString.""")
    assert found["ahead"] == "0" and found["undeclared"] == "false"
    assert found["after"] == "true #HLAheadLater"


SAMPLER = """| e b sampler seen samples done |
HLApplier new platform: HLPlatform current; installFile: {v1}.
e := HLPackageEntry forFile: {v2}.
e readWith: HLPlatform current.
b := HLBatch new entries: (Array with: e); yourself.
seen := 0. samples := 0. done := false.
sampler := [ [ done ] whileFalse: [
        (Delay forMilliseconds: 1) wait.
        samples := samples + 1.
        1 to: 300 do: [ :i | (HLAhead new perform: ('m', i printString) asSymbol) = (1 + i) ifFalse: [ seen := seen + 1 ] ] ] ]
    forkAt: Processor userInterruptPriority.
{before}
HLPlatform current prepareBatch: b.
done := true.
(Delay forMilliseconds: 5) wait.
Transcript showCr: 'samples: ', samples printString.
Transcript showCr: 'seen: ', seen printString.
"""


def test_a_process_above_never_sees_a_method_compiled_ahead(tmp_path):
    """A process above the compiling one (as a request is) wakes every millisecond while 300 methods are compiled
    ahead and runs all of them: it never runs a new one. Each wake-up preempts the compiling process wherever
    it is, except inside the platform's withoutPreemption:, where the new method is in place. (With a
    withoutPreemption: that only evaluates its block, the same run saw a new method 1 to 4 times in each of 4 runs.)"""
    body = lambda answer: "".join(method("HLAhead", f"m{i}\n\t^ {answer} + {i}") for i in range(1, 301))
    v1 = make_package(tmp_path / "1", "HLAhead", class_def("HLAhead", category="HLAhead") + body(1))
    v2 = make_package(tmp_path / "2", "HLAhead", class_def("HLAhead", category="HLAhead") + body(2))
    found = run(SAMPLER.format(v1=st_string(v1), v2=st_string(v2), before=""))
    assert int(found["samples"]) >= 5, found  # it woke up throughout the compiling
    assert found["seen"] == "0", found
