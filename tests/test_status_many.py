"""`hotload status`: the loaded packages as a table, history entries parsed in --json, and many --to with
one row per image and the packages whose versions differ between them; the exit code is the worst."""

import json
import re
import time

import pytest

from cli_runner import run_in_process
from fake_loader import FakeLoader
from helpers import class_def, make_package, method, shop_packages
from hotload.staging import protocol


@pytest.fixture
def packages(tmp_path):
    return shop_packages(tmp_path / "src")


@pytest.fixture
def images(tmp_path):
    stagings = [tmp_path / "image-a", tmp_path / "image-b"]
    loaders = [FakeLoader(path, interval=0.05, loader_id=f"fake000{n}").start() for n, path in enumerate(stagings)]
    yield stagings
    for loader in loaders:
        loader.stop()


def push(*args):
    result = run_in_process("push", *map(str, args))
    assert result.returncode == 0, result.stderr
    return result


def test_status_shows_the_loaded_packages_and_parsed_history(images, packages):
    staging = images[0]
    report = json.loads(push(*packages, "--to", staging, "--wait", "--json").stdout)
    human = run_in_process("status", "--to", staging)
    assert human.returncode == 0, human.stderr
    rows = [line.split() for line in human.stdout.splitlines() if line.strip().startswith("Shop-")]
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert [row[:3] for row in rows] == [
        ["Shop-Core", "Shop-Core-tester.1", report["batch"]], ["Shop-Web", "Shop-Web-tester.1", report["batch"]]
    ]
    assert all(re.fullmatch(iso, row[3]) for row in rows)
    state = json.loads(run_in_process("status", "--to", staging, "--json").stdout)
    assert [(p["package"], p["version"], p["batch"]) for p in state["loaded"]] == [
        ("Shop-Core", "Shop-Core-tester.1", report["batch"]), ("Shop-Web", "Shop-Web-tester.1", report["batch"])
    ]
    assert re.fullmatch(iso, state["loaded"][0]["loaded_at"]) and len(state["loaded"][0]["sha256"]) == 64
    [entry] = state["history_entries"]
    assert (entry["batch"], entry["result"]) == (report["batch"], "ok") and re.fullmatch(iso, entry["time"])
    assert len(state["history"]) == 1  # the raw lines are still there


def test_a_fresh_loader_has_loaded_nothing(images):
    human = run_in_process("status", "--to", images[0])
    assert human.returncode == 0
    assert "loaded: no package loaded by hotload yet" in human.stdout


def test_many_images_one_row_each_and_the_differing_versions_flagged(images, packages, tmp_path):
    push(*packages, "--to", images[0], "--to", images[1], "--wait")
    newer = make_package(tmp_path / "src", "Shop-Web",
                         class_def("ShopPage", "ShopItem", "Shop-Web") + method("ShopPage", "title\n\t^ 'Shop 2'"))
    push(newer, "--to", images[1], "--wait")
    human = run_in_process("status", "--to", images[0], "--to", images[1])
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    row_a = next(line for line in lines if line.strip().startswith(str(images[0])))
    assert "running" in row_a and re.search(r"\s2\s+ok \(", row_a)
    differing = [line for line in lines if "Shop-" in line and line.strip().startswith("!")]
    assert len(differing) == 1 and "Shop-Web-tester.1" in differing[0] and "Shop-Web-tester.2" in differing[0]
    same = [line for line in lines if "Shop-Core-tester.1" in line]
    assert len(same) == 1 and not same[0].strip().startswith("!")
    assert "1 package(s) differ between the images: Shop-Web" in human.stdout
    data = json.loads(run_in_process("status", "--to", images[0], "--to", images[1], "--json").stdout)
    assert data["differences"] == ["Shop-Web"]
    assert data["versions"]["Shop-Web"] == {str(images[0]): "Shop-Web-tester.1", str(images[1]): "Shop-Web-tester.2"}
    assert [t["loader_running"] for t in data["targets"]] == [True, True]


def test_many_images_exit_with_the_worst(images, packages, tmp_path):
    push(*packages, "--to", images[0], "--wait")
    missing_file = tmp_path / "a-file"
    missing_file.write_text("not a folder\n")
    no_loader = tmp_path / "nobody"
    no_loader.mkdir()
    result = run_in_process("status", "--to", images[0], "--to", no_loader)
    assert result.returncode == 3, result.stdout
    assert "no heartbeat" in result.stdout
    result = run_in_process("status", "--to", images[0], "--to", no_loader, "--to", missing_file, "--json")
    assert result.returncode == 5
    data = json.loads(result.stdout)
    assert data["targets"][2]["exit_code"] == 5 and "not a folder" in data["targets"][2]["error"]
    human = run_in_process("status", "--to", images[0], "--to", missing_file)
    assert human.returncode == 5 and "unreachable" in human.stdout and "Traceback" not in human.stdout + human.stderr


def test_a_stale_heartbeat_without_a_record_is_not_called_an_older_loader(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    beat = time.time() - 100
    (staging / protocol.HEARTBEAT).write_text(protocol.render_record(
        "heartbeat", [("time", int(beat), protocol.iso(beat)), ("loader", "gst", "priority 5", "interval 2000")]))
    result = run_in_process("status", "--to", staging, "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["notes"] == []
