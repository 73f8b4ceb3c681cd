"""`hotload diff` against the live gst image: the example app's v1 is pushed and loaded; the diff of v2
is read from what the loader kept (the loaded record and packages/), locally and over the loopback sshd."""

import json

import pytest

from conftest import NEEDS_GST, run_hotload
from hotload.staging import protocol
from hotload.staging.protocol import LoadedRecord

pytestmark = NEEDS_GST

INTERVAL_MS = 500



@pytest.fixture(scope="module")
def v1_loaded(app, versions):
    result = run_hotload("push", versions[0], "--to", app.staging, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert LoadedRecord.parse((app.staging / protocol.LOADED).read_text()).packages["Counter-App"].version == \
        "Counter-App-demo.1"
    return app


def test_diff_of_v2_against_the_loaded_v1_shows_the_real_change(v1_loaded, versions):
    result = run_hotload("diff", versions[1], "--to", v1_loaded.staging)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("Counter-App Counter-App-demo.1 (loaded) -> Counter-App-demo.2: "
                        "1 class changed, 1 method added, 1 method removed, 1 method changed")
    for expected in ("  - HLCounter>>legacyBanner  (rendering)", "  + HLCounter>>reset  (actions)",
                     "  ~ HLCounter>>renderContentOn:  (rendering)", "      -    html heading: 'Counter v1'.",
                     "      -    html paragraph: self legacyBanner.", "      +    html heading: 'Counter v2'.",
                     "      +    html anchor callback: [ self reset ]; with: 'reset'"):
        assert expected in lines, result.stdout
    assert "Traceback" not in result.stderr


def test_diff_of_the_loaded_version_itself_is_empty_over_sshd(v1_loaded, versions, ssh_home):
    result = run_hotload("diff", *versions[:1], "--to", ssh_home.url(v1_loaded.staging), "--json",
                         env=ssh_home.env())
    assert result.returncode == 0, result.stderr
    [package] = json.loads(result.stdout)["packages"]
    assert (package["status"], package["loaded_version"]) == ("unchanged", "Counter-App-demo.1")
    result = run_hotload("diff", versions[1], "--to", ssh_home.url(v1_loaded.staging), "--json", env=ssh_home.env())
    [package] = json.loads(result.stdout)["packages"]
    assert {(m["selector"], m["change"]) for m in package["methods"]} == \
        {("legacyBanner", "removed"), ("reset", "added"), ("renderContentOn:", "changed")}


def test_after_pushing_v2_the_diff_of_v2_is_empty(v1_loaded, versions):
    result = run_hotload("push", versions[1], "--to", v1_loaded.staging, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_hotload("diff", versions[1], "--to", v1_loaded.staging)
    assert result.returncode == 0
    assert result.stdout.strip() == "Counter-App Counter-App-demo.2: same as loaded (Counter-App-demo.2)"
    result = run_hotload("diff", versions[0], "--to", v1_loaded.staging)  # going back: the reverse change
    assert "  + HLCounter>>legacyBanner  (rendering)" in result.stdout.splitlines()
    assert "  - HLCounter>>reset  (actions)" in result.stdout.splitlines()
