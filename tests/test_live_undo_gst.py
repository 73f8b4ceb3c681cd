"""Live: a failed batch leaves the serving counter app exactly as it was.

One GNU Smalltalk image serves the example Seaside counter (v1, pushed first). An open session has a count.
Then v2 batches of the same package `Counter-App` that change HLCounter (a WAComponent subclass, so its
superclass has instance variables of its own) fail at one stage each: the class-side #initialize raises
(same shape: the reported defect, which aborted the VM on the next request; and with `count` renamed), a
method does not compile (after a variable was added), a class definition fails (after `count` was removed,
which drops every live counter's count in gst until the undo puts it back). After each failure the open
session still shows its count and counts on, a new session starts at 0, both on the v1 code; finally the
real v2 installs and the session keeps its count.
"""

import json
import shutil

import pytest

from conftest import run_hotload
from helpers import make_package, serving_counter
from hotload.images.example_app import count_of, example_dir, link

pytestmark = pytest.mark.skipif(
    not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)"
)

EXAMPLE = example_dir()
V1 = (EXAMPLE / "v1" / "Counter-App.st").read_text()
REGISTER = "ifFalse: [ self registerAsApplication: 'counter' ]"


def edited(text: str, *replacements) -> str:
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


RAISE_IN_INITIALIZE = (REGISTER, REGISTER + ".\n\tself error: 'initialize failed'")
RENAME_COUNT = [
    ("instanceVariableNames: 'count'", "instanceVariableNames: 'total'"),
    ("count := 0", "total := 0"),
    ("count := count + 1", "total := total + 1"),
    ("count := count - 1", "total := total - 1"),
    ("\t^ count\n", "\t^ total\n"),
    ("count printString", "total printString"),
]
REMOVE_COUNT = [
    ("instanceVariableNames: 'count'", "instanceVariableNames: ''"),
    ("\tsuper initialize.\n\tcount := 0", "\tsuper initialize"),
    ("count := count + 1", "^ self"),
    ("count := count - 1", "^ self"),
    ("\t^ count\n", "\t^ 0\n"),
    ("count printString", "0 printString"),
]
MISSING_SUPERCLASS = (
    "WAComponentThatIsNot subclass: #HLCounterPart\n\tinstanceVariableNames: ''\n\tclassVariableNames: ''\n"
    "\tpoolDictionaries: ''\n\tcategory: 'Counter-App'!\n\n"
)
BROKEN_METHOD = "\n!HLCounter methodsFor: 'actions'!\nstepTwice\n\tstep := zork + 2\n! !\n"

VARIANTS = {
    # name: (source of the failing v2, text expected in the error)
    "same-shape-initialize-raises": (edited(V1, RAISE_IN_INITIALIZE), "initialize failed"),
    "renamed-ivar-initialize-raises": (edited(V1, *RENAME_COUNT, RAISE_IN_INITIALIZE), "initialize failed"),
    "added-ivar-compile-fails": (
        edited(V1, ("instanceVariableNames: 'count'", "instanceVariableNames: 'count step'")) + BROKEN_METHOD,
        "undefined variable zork",
    ),
    "removed-ivar-class-definition-fails": (edited(V1, *REMOVE_COUNT) + MISSING_SUPERCLASS, "WAComponentThatIsNot"),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with serving_counter(tmp_path_factory.mktemp("counter-undo"), 500) as counter:
        yield counter


@pytest.fixture(scope="module")
def session(app, tmp_path_factory):
    """v1 pushed; an open session counted to 3. Tests update url and count as they click."""
    dist = tmp_path_factory.mktemp("dist")
    v1 = make_package(dist, "Counter-App", V1, author="demo")
    run_hotload("push", v1, "--to", app.staging, "--wait", check=True)
    status, page, url = app.get(app.url)
    for _ in range(3):
        status, page, url = app.get(link(page, "++"))
    assert status == 200 and "<h1>Counter v1</h1>" in page and count_of(page) == 3
    return {"url": url, "count": 3, "dist": dist}


def assert_serves_v1(app, session):
    status, page, _ = app.get(session["url"])
    assert status == 200, page
    assert "<h1>Counter v1</h1>" in page and "legacy banner" in page
    assert count_of(page) == session["count"]  # the open session kept its state
    status, page, url = app.get(link(page, "++"))  # and its component is still usable
    assert status == 200 and count_of(page) == session["count"] + 1
    session.update(url=url, count=session["count"] + 1)
    status, page, _ = app.get(app.url)  # a new session, on the old code
    assert status == 200 and "<h1>Counter v1</h1>" in page and count_of(page) == 0
    status, page, _ = app.get(link(page, "++"))
    assert status == 200 and count_of(page) == 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_failed_batch_leaves_the_app_as_it_was(app, session, tmp_path, variant):
    source, expected = VARIANTS[variant]
    package = make_package(tmp_path, "Counter-App", source, author="broken")  # no ancestry to the loaded version
    result = run_hotload("push", package, "--to", app.staging, "--wait", "--json", "--allow-downgrade")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "failed" and expected in report["error"], report
    assert app.process.poll() is None, app._log_tail()
    assert_serves_v1(app, session)
    assert "undo failed" not in app.log.read_text(errors="replace")


def test_the_real_v2_still_installs_and_the_session_keeps_its_count(app, session):
    v2 = make_package(session["dist"], "Counter-App", (EXAMPLE / "v2" / "Counter-App.st").read_text(), author="demo")
    run_hotload("push", v2, "--to", app.staging, "--wait", check=True)
    status, page, _ = app.get(session["url"])
    assert status == 200 and "<h1>Counter v2</h1>" in page
    assert count_of(page) == session["count"]
