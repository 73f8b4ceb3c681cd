"""Send only what changed, never downgrade silently, look before pushing, and see what each image runs:
on the live gst image, over the loopback sshd.

The tests share one image and run in file order: v1 is pushed and shown by `status`, pushed again (up to
date: nothing written, the image not saved), v2 is previewed with `--dry-run` and pushed, v1 is then refused
as older, a Tonel folder continues from the version the image runs, and `status` of two images flags
the package whose versions differ.
"""

import json
import re
import shutil
from pathlib import Path

from conftest import NEEDS_GST, run_hotload
from fake_loader import FakeLoader
from helpers import staging_listing
from hotload.staging import protocol
from hotload.staging.protocol import LoadedRecord
from test_tonel import class_file, tonel_method, write_package

pytestmark = NEEDS_GST

INTERVAL_MS = 500



def hotload(sshd, *args, env=None):
    result = run_hotload(*args, env=dict(sshd.env(), **(env or {})))
    assert "Traceback" not in result.stdout + result.stderr and result.returncode != 70, result.stderr
    return result


def loaded(app) -> LoadedRecord:
    return LoadedRecord.parse((app.staging / protocol.LOADED).read_text())


def test_status_shows_what_the_image_runs(app, versions, sshd):
    v1, _ = versions
    pushed = hotload(sshd, "push", v1, "--to", sshd.url(app.staging), "--wait", "--json")
    assert pushed.returncode == 0, pushed.stderr
    batch = json.loads(pushed.stdout)["batch"]
    human = hotload(sshd, "status", "--to", sshd.url(app.staging))
    assert human.returncode == 0, human.stderr
    assert re.search(rf"Counter-App\s+Counter-App-demo\.1\s+{batch}\s+\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ", human.stdout)
    state = json.loads(hotload(sshd, "status", "--to", sshd.url(app.staging), "--json").stdout)
    assert [(p["package"], p["version"], p["batch"]) for p in state["loaded"]] == [("Counter-App", "Counter-App-demo.1", batch)]
    assert state["history_entries"][-1]["batch"] == batch and state["history_entries"][-1]["result"] == "ok"
    assert state["notes"] == []


def test_a_repush_of_the_loaded_version_is_up_to_date_and_saves_nothing(app, versions, sshd):
    v1, _ = versions
    image_saved = app.image.stat().st_mtime_ns
    before = staging_listing(app.staging)
    result = hotload(sshd, "push", v1, "--to", sshd.url(app.staging), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["result"], report["bytes"], report["skipped"]) == ("up-to-date", 0, ["Counter-App-demo.1"])
    human = hotload(sshd, "push", v1, "--to", sshd.url(app.staging))
    assert "skipped 1 package(s) already loaded: Counter-App-demo.1" in human.stdout and "up to date" in human.stdout
    assert staging_listing(app.staging) == before  # no batch, no trigger, no lock, no new status or history
    assert app.image.stat().st_mtime_ns == image_saved


def test_dry_run_shows_the_diff_and_writes_nothing(app, versions, sshd):
    _, v2 = versions
    before = staging_listing(app.staging)
    result = hotload(sshd, "push", v2, "--to", sshd.url(app.staging), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would send Counter-App-demo.2 (Counter-App-demo.2 descends from the loaded Counter-App-demo.1)" in result.stdout
    assert "Counter-App-demo.1 (loaded) -> Counter-App-demo.2" in result.stdout
    assert "legacyBanner" in result.stdout  # v2 removes it
    report = json.loads(hotload(sshd, "push", v2, "--to", sshd.url(app.staging), "--dry-run", "--json").stdout)
    assert report["result"] == "dry-run" and report["diff"]["packages"][0]["status"] == "changed"
    assert staging_listing(app.staging) == before
    assert loaded(app).packages["Counter-App"].version == "Counter-App-demo.1"


def test_an_older_version_is_refused_with_both_names(app, versions, sshd):
    v1, v2 = versions
    upgrade = hotload(sshd, "push", v2, "--to", sshd.url(app.staging), "--wait")
    assert upgrade.returncode == 0, upgrade.stderr
    before = staging_listing(app.staging)
    refused = hotload(sshd, "push", v1, "--to", sshd.url(app.staging), "--wait")
    assert refused.returncode == 2
    assert "Counter-App-demo.1 is older than the loaded Counter-App-demo.2 (an ancestor of it)" in refused.stderr
    assert "--allow-downgrade" in refused.stderr.strip().splitlines()[-1]
    assert staging_listing(app.staging) == before
    _, page, _ = app.get(app.url)
    assert "<h1>Counter v2</h1>" in page


def tonel_greeting(root: Path, text: str) -> Path:
    folder = root / "Counter-Greeting"
    if folder.exists():
        shutil.rmtree(folder)
    return write_package(folder, {"HLGreeting.class.st": class_file(
        "HLGreeting", package="Counter-Greeting", methods=tonel_method("HLGreeting >> greeting", f"\t^ '{text}'"))})


def test_a_tonel_folder_continues_from_the_loaded_version(app, sshd, tmp_path):
    env = {"HOTLOAD_AUTHOR": "jd"}
    folder = tonel_greeting(tmp_path, "hello")
    first = hotload(sshd, "push", folder, "--to", sshd.url(app.staging), "--wait", "--json", env=env)
    assert first.returncode == 0 and json.loads(first.stdout)["packages"] == ["Counter-Greeting-jd.1"], first.stderr
    again = hotload(sshd, "push", folder, "--to", sshd.url(app.staging), "--wait", "--json", env=env)
    assert json.loads(again.stdout)["result"] == "up-to-date", again.stdout
    tonel_greeting(tmp_path, "hello again")
    changed = hotload(sshd, "push", folder, "--to", sshd.url(app.staging), "--wait", "--json", env=env)
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["packages"] == ["Counter-Greeting-jd.2"]
    record = loaded(app)
    assert record.packages["Counter-Greeting"].version == "Counter-Greeting-jd.2"
    assert (app.staging / protocol.PACKAGES / "Counter-Greeting-jd.2.mcz").is_file()


def test_status_of_two_images_flags_the_version_that_differs(app, versions, sshd, tmp_path):
    v1, _ = versions
    other = tmp_path / "other-image"
    loader = FakeLoader(other, interval=0.05).start()
    try:
        assert hotload(sshd, "push", v1, "--to", other, "--wait").returncode == 0
        human = hotload(sshd, "status", "--to", sshd.url(app.staging), "--to", other)
        data = json.loads(hotload(sshd, "status", "--to", sshd.url(app.staging), "--to", other, "--json").stdout)
    finally:
        loader.stop()
    assert human.returncode == 0, human.stdout + human.stderr
    marked = [line for line in human.stdout.splitlines() if line.strip().startswith("!")]
    assert [line.split()[1:] for line in marked] == [  # a package one image lacks differs too
        ["Counter-App", "Counter-App-demo.2", "Counter-App-demo.1"], ["Counter-Greeting", "Counter-Greeting-jd.2", "-"],
    ]
    assert data["differences"] == ["Counter-App", "Counter-Greeting"]
    assert data["versions"]["Counter-App"] == {sshd.url(app.staging): "Counter-App-demo.2", str(other): "Counter-App-demo.1"}
