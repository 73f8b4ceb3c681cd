"""A three-image environment, end to end: three example apps (GNU Smalltalk images, Seaside and the loader), each
polling a staging directory of its own, reached through the loopback sshd as sftp:// targets with strict host-key
checking, and named in hotload.toml as `prod` (canary 1, parallel 2, a health check on the app's page). Every step
is the command line a user would type, with `--env prod`, in the order an operator would run them; each step
starts from where the one before left the images:

    1. `hotload config` shows the environment
    2. a good v2 reaches all three images (`push --wait`), `status` shows them on v2, each page serves v2
    3. a v3 whose page breaks: the canary's health check fails and undoes it, the others are not pushed
    4. the nightly save (`hotload save --wait`) of each image, with its size before and after
    5. `status --json` over the three images agrees with all of the above
    6. `hotload history` lists each image's kept batches, and `hotload rollback` brings all three back to v1
       from the packages the loaders kept, canary first, health-checked and saved

The images start on v1 (pushed by the fixture, without the environment). One health URL serves the whole
environment, as on real servers where each image answers at the same address; here the three images share one
machine and so cannot share a port, and the URL is the canary's page: the canary checks its own page, the others
check it too.
"""

import hashlib
import json
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import NEEDS_GST, run_hotload
from helpers import broken_counter, serving_counter, staging_listing
from hotload.staging import protocol
from hotload.images.example_app import CounterApp, heading_of
from hotload.staging.protocol import HistoryEntry, LoadedRecord

pytestmark = NEEDS_GST

INTERVAL_MS = 500
IMAGES = 3


@dataclass
class Fleet:
    """The three running images, canary first, with their targets and the project folder holding hotload.toml."""

    apps: List[CounterApp]
    targets: List[str]  # sftp:// URL of each image's staging directory, in the order of `apps`
    project: Path
    env: dict  # HOME with the test client's ssh config, known_hosts and key; no agent
    #: per step, the batch each image ran it as (target -> batch id), filled in as the steps go
    batches: Dict[str, Dict[str, str]] = field(default_factory=dict)
    #: the history detail of each image's last save (target -> `<image> <before> -> <after> bytes`)
    saves: Dict[str, str] = field(default_factory=dict)

    def hotload(self, *args, check=False):
        """`hotload ARGS` run in the project folder, as a user there would."""
        return run_hotload(*args, env=self.env, cwd=self.project, check=check)

    @property
    def canary(self) -> CounterApp:
        return self.apps[0]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, sshd, versions):
    """Three example apps serving, on v1, and a project whose hotload.toml names them as environment `prod`."""
    folder = tmp_path_factory.mktemp("fleet")
    with ExitStack() as stack:
        apps = [stack.enter_context(serving_counter(folder / f"image-{n}", INTERVAL_MS)) for n in range(1, IMAGES + 1)]
        for app in apps:
            app.wait_until(lambda: (app.staging / protocol.LOADED).is_file(), "the loaded record at the first poll")
        targets = [sshd.url(app.staging) for app in apps]
        project = folder / "project"
        project.mkdir()
        (project / "hotload.toml").write_text(
            "[env.prod]\n"
            f"targets = [{', '.join(json.dumps(t) for t in targets)}]\n"
            "canary = 1\n"
            "parallel = 2\n"
            "poll_timeout = 60\n"
            "\n"
            "[env.prod.health]\n"
            f'url = "{apps[0].url}"\n'
            'body = "Counter"\n'
            "timeout = 5\n"
        )
        fleet = Fleet(apps, targets, project, sshd.env())
        first = fleet.hotload("push", versions[0], *sum((["--to", t] for t in targets), []), "--wait")
        assert first.returncode == 0, first.stdout + first.stderr
        assert [page_heading(app) for app in apps] == ["Counter v1"] * IMAGES
        yield fleet


@pytest.fixture(scope="module")
def broken_v3(tmp_path_factory, versions):
    """examples/counter v2 again as v3 (v2 its ancestor), but its page raises: Seaside answers its error page."""
    return broken_counter(tmp_path_factory.mktemp("v3"), "Counter v3", "demo", versions[1])


def page_heading(app) -> str:
    status, page, _ = app.get(app.url)
    assert status == 200, (status, page[:500])
    return heading_of(page)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def loaded_version(app, package="Counter-App") -> str:
    return LoadedRecord.parse((app.staging / protocol.LOADED).read_text()).packages[package].version


def history(app) -> List[HistoryEntry]:
    lines = (app.staging / protocol.HISTORY).read_text().splitlines()
    return [entry for entry in map(HistoryEntry.parse, lines) if entry is not None]


def image_file(app):
    """What tells a rewritten image file apart: the loader snapshots beside it and renames over it."""
    status = app.image.stat()
    return status.st_ino, status.st_mtime_ns, status.st_size


def first_line(lines, start) -> int:
    return next(number for number, line in enumerate(lines) if line.startswith(start))


def test_1_config_shows_the_environment(fleet):
    human = fleet.hotload("config")
    assert human.returncode == 0, human.stdout + human.stderr
    assert human.stdout.splitlines()[0] == str(fleet.project / "hotload.toml")
    assert "env prod" in human.stdout
    for setting, shown, origin in [
        ("canary", "1", "hotload.toml:3"), ("parallel", "2", "hotload.toml:4"),
        ("poll_timeout", "60", "hotload.toml:5"),
        ("health.url", f'"{fleet.canary.url}"', "hotload.toml:8"), ("health.body", '"Counter"', "hotload.toml:9"),
        ("health.status", "200", "default"), ("health.timeout", "5", "hotload.toml:10"),
    ]:
        row = rf"^\s+{re.escape(setting)}\s+{re.escape(shown)}\s+{re.escape(origin)}$"
        assert re.search(row, human.stdout, re.M), (setting, human.stdout)
    [targets_row] = [line for line in human.stdout.splitlines() if line.split()[:1] == ["targets"]]
    assert targets_row.endswith("hotload.toml:2") and all(target in targets_row for target in fleet.targets)
    data = json.loads(fleet.hotload("config", "--json", check=True).stdout)
    [prod] = data["environments"]
    assert prod["name"] == "prod"
    assert prod["settings"]["targets"] == {"value": fleet.targets, "from": "hotload.toml:2"}
    assert {key: prod["settings"][key]["value"] for key in ("canary", "parallel", "health.url", "health.status")} == {
        "canary": 1, "parallel": 2, "health.url": fleet.canary.url, "health.status": 200}


def test_2_a_good_v2_reaches_every_image(fleet, versions):
    before = [image_file(app) for app in fleet.apps]
    result = fleet.hotload("push", versions[1], "--env", "prod", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    pushed_line = re.compile(r"^pushed batch (\S+) to (\S+): 1 package")
    pushed = {m.group(2): m.group(1) for m in map(pushed_line.match, lines) if m}  # target -> batch
    assert sorted(pushed) == sorted(fleet.targets), result.stdout
    fleet.batches["v2"] = pushed
    # the canary's result is in before the others are pushed
    canary_ok = lines.index(f"batch {pushed[fleet.targets[0]]}: ok")
    others = [first_line(lines, f"pushed batch {pushed[t]} to {t}: ") for t in fleet.targets[1:]]
    assert canary_ok < min(others), result.stdout
    table = lines[lines.index("rollout") + 1:]
    assert table[0].split() == ["target", "result", "pushed", "seconds"]
    assert [row.split()[:3] for row in table[1:]] == [[t, "ok", "Counter-App-demo.2"] for t in fleet.targets]

    status = fleet.hotload("status", "--env", "prod")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = [line.split() for line in status.stdout.splitlines() if set(line.split()[:1]) & set(fleet.targets)]
    assert rows == [[t, "running", "1", "ok", f"({pushed[t]})"] for t in fleet.targets], status.stdout
    [versions_row] = [line.split() for line in status.stdout.splitlines() if line.split()[:1] == ["Counter-App"]]
    assert versions_row == ["Counter-App"] + ["Counter-App-demo.2"] * IMAGES
    assert "every image runs the same versions" in status.stdout

    for app, target, was in zip(fleet.apps, fleet.targets, before):
        assert page_heading(app) == "Counter v2"  # over HTTP, from the running image
        assert loaded_version(app) == "Counter-App-demo.2"
        assert [(e.batch, e.result) for e in history(app)][-1] == (pushed[target], "ok")
        assert image_file(app) != was  # saved


def test_3_a_v3_that_breaks_the_page_is_undone_by_the_canary_and_goes_no_further(fleet, broken_v3):
    canary, others = fleet.canary, fleet.apps[1:]
    image, record = sha256(canary.image), (canary.staging / protocol.LOADED).read_text()
    untouched = [staging_listing(app.staging) for app in others]

    result = fleet.hotload("push", broken_v3, "--env", "prod", "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    results = ["failed", "not pushed", "not pushed"]
    assert [(r["target"], r["result"]) for r in reports] == list(zip(fleet.targets, results))
    first = reports[0]
    batch = first["batch"]
    fleet.batches["v3"] = {fleet.targets[0]: batch}
    assert first["packages"] == ["Counter-App-demo.3"] and isinstance(first["seconds"], float)
    assert first["error"].startswith(f"health check failed: GET {canary.url} answered 500, not 200"), first["error"]
    assert "undone in the running image" in first["error"] and "health" in first["timings_ms"]
    assert reports[1:] == [{"target": t, "result": "not pushed"} for t in fleet.targets[1:]]

    # the canary: its status says why, it serves v2 again, and its image on disk is still v2's
    status = protocol.Status.parse((canary.staging / protocol.STATUS).read_text())
    assert (status.batch, status.result, status.error) == (batch, "failed", first["error"])
    assert page_heading(canary) == "Counter v2"
    assert sha256(canary.image) == image
    assert (canary.staging / protocol.LOADED).read_text() == record
    assert (canary.staging / protocol.FAILED / batch / broken_v3.name).is_file()
    # the others: never reached, their staging directories as they were
    for app, listing in zip(others, untouched):
        assert staging_listing(app.staging) == listing
        assert not list(app.staging.glob("2*")) and not (app.staging / protocol.FAILED).exists()
        assert page_heading(app) == "Counter v2"


def test_4_the_nightly_save_of_every_image(fleet):
    before = [image_file(app) for app in fleet.apps]
    result = fleet.hotload("save", "--env", "prod", "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    assert [(r["target"], r["result"]) for r in reports] == [(t, "saved") for t in fleet.targets]
    for app, target, report, was in zip(fleet.apps, fleet.targets, reports, before):
        last = (app.staging / protocol.HISTORY).read_text().splitlines()[-1]
        saved = re.fullmatch(r"\d+\t\S+\t-\tsaved\t(\S+) (\d+) -> (\d+) bytes", last)
        assert saved, last
        assert (saved.group(1), int(saved.group(2)), int(saved.group(3))) == (
            str(app.image), report["size_before"], report["size_after"])
        assert report["size_before"] == was[2]  # the file the save replaced
        assert report["size_after"] == app.image.stat().st_size
        assert image_file(app) != was  # rewritten
        assert not list(app.image.parent.glob("*.hotload-new"))
        fleet.saves[target] = report["detail"]
        assert page_heading(app) == "Counter v2"  # still serving, after its own save


def test_5_status_over_the_three_images_agrees(fleet):
    result = fleet.hotload("status", "--env", "prod", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    v2, v3 = fleet.batches["v2"], fleet.batches["v3"]
    canary = fleet.targets[0]
    assert data["differences"] == []
    assert data["versions"] == {"Counter-App": {t: "Counter-App-demo.2" for t in fleet.targets}}
    assert [state["target"] for state in data["targets"]] == fleet.targets
    for app, state in zip(fleet.apps, data["targets"]):
        target = state["target"]
        assert (state["loader_running"], state["dialect"], state["image"]) == (True, "gst", str(app.image))
        assert (state["pending"], state["lock"], state["conflict"], state["problems"]) == ([], None, None, [])
        [loaded] = state["loaded"]
        assert (loaded["version"], loaded["batch"]) == ("Counter-App-demo.2", v2[target])
        entries = [(e["batch"], e["result"]) for e in state["history_entries"]]
        expected = [(v2[target], "ok")] + ([(v3[target], "failed")] if target == canary else []) + [("-", "saved")]
        assert entries[-len(expected):] == expected
        assert state["history_entries"][-1]["detail"] == fleet.saves[target]
        if target == canary:
            assert (state["last_batch"], state["last_result"], state["failed"]) == (v3[canary], "failed", [v3[canary]])
            assert state["history_entries"][-2]["detail"].startswith("health check failed: GET ")
        else:
            assert (state["last_batch"], state["last_result"], state["failed"]) == (v2[target], "ok", [])


def test_6_history_and_rollback_bring_every_image_back_to_v1(fleet):
    listed = fleet.hotload("history", "--env", "prod", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for target, report in zip(fleet.targets, json.loads(listed.stdout)):
        assert report["target"] == target and report["problems"] == []
        marks = [(kept["sent"], kept["mark"]) for kept in report["kept"]]
        assert marks == [(["Counter-App-demo.2"], "current"), (["Counter-App-demo.1"], "rollback")]  # v3 was not kept
    before = {app.staging: image_file(app) for app in fleet.apps}
    result = fleet.hotload("rollback", "--env", "prod", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    assert [(r["target"], r["result"], r["packages"]) for r in reports] == \
        [(t, "ok", ["Counter-App-demo.1"]) for t in fleet.targets]
    for app in fleet.apps:
        assert page_heading(app) == "Counter v1" and loaded_version(app) == "Counter-App-demo.1"
        assert image_file(app) != before[app.staging]  # saved
