"""Rolling push to many images (issue: canary, parallelism, stop at the first failure, one table at the end and on
Ctrl-C), against fake loaders, through deploy.Rollout and the command line."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import run_hotload
from fake_loader import FakeLoader
from helpers import shop_packages
from hotload.staging import protocol
from hotload.staging.deploy import DeployResult, PushOptions, Rollout, RolloutInterrupted
from hotload.errors import TargetError


@pytest.fixture
def packages(tmp_path):
    return shop_packages(tmp_path / "src")


@pytest.fixture
def images(tmp_path):
    """Four staging folders, each with a fake loader; the third fails any batch with Shop-Web in it."""
    folders = [tmp_path / f"image-{n}" for n in range(1, 5)]
    loaders = [FakeLoader(folder, interval=0.05, fail_package="Shop-Web-tester.1.mcz" if n == 2 else "").start()
               for n, folder in enumerate(folders)]
    yield folders
    for loader in loaders:
        loader.stop()


def batches_in(folder):
    return [line for line in (folder / protocol.HISTORY).read_text().splitlines()] if (folder / protocol.HISTORY).exists() else []


def test_the_canary_goes_first_and_a_failure_stops_the_rollout(packages, images):
    result = run_hotload("push", *packages, *sum((["--to", str(f)] for f in images), []), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    assert [r["result"] for r in reports] == ["ok", "ok", "failed", "not pushed"]  # waited for, without --wait
    assert all(isinstance(r["seconds"], float) for r in reports[:3]) and "seconds" not in reports[3]
    assert batches_in(images[3]) == [] and not list(images[3].glob("2*"))  # left untouched


def test_a_failing_canary_leaves_every_other_image_untouched(packages, images):
    order = [images[2], images[0], images[1]]  # the failing image is the canary
    result = run_hotload("push", *packages, *sum((["--to", str(f)] for f in order), []), "--canary", "1")
    assert result.returncode == 1
    assert "rollout" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(str(order[0].parent))]
    assert [row[1] for row in rows] == ["failed", "not", "not"], result.stdout  # "not pushed"
    assert batches_in(images[0]) == [] and batches_in(images[1]) == []


def test_the_table_names_the_versions_pushed_to_each_image(packages, images):
    result = run_hotload("push", *packages, "--to", str(images[0]), "--to", str(images[1]))
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout[result.stdout.index("rollout"):]
    assert "target" in table and "pushed" in table and "seconds" in table
    assert table.count("Shop-Core-tester.1 Shop-Web-tester.1") == 2


def test_a_source_folder_rolls_out_in_parallel(tmp_path, images):
    """Packing on top of each image's version happens in the rollout's threads (their scratch folder too)."""
    source = tmp_path / "Shop-Core.package"
    (source / "ShopItem.class" / "instance").mkdir(parents=True)
    (source / "properties.json").write_text("{}")
    (source / "ShopItem.class" / "properties.json").write_text(
        '{"name": "ShopItem", "super": "Object", "category": "Shop-Core", "instvars": [], "classvars": [], '
        '"pools": [], "classinstvars": [], "type": "normal", "commentStamp": ""}')
    (source / "ShopItem.class" / "instance" / "price.st").write_text("accessing\nprice\n\t^ 1")
    targets = [images[0], images[1], images[3]]
    result = run_hotload("push", source, *sum((["--to", str(f)] for f in targets), []), "--parallel", "2", "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert [r["result"] for r in json.loads(result.stdout)] == ["ok", "ok", "ok"]


class SlowDeploy:
    """Stands in for deploy.Deploy: takes `seconds`, counts how many run at once, fails for `failing`."""

    running = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, target, seconds=0.2, failing=()):
        self.target, self.seconds, self.failing = target, seconds, failing

    def run(self):
        with SlowDeploy.lock:
            SlowDeploy.running += 1
            SlowDeploy.most = max(SlowDeploy.most, SlowDeploy.running)
        time.sleep(self.seconds)
        with SlowDeploy.lock:
            SlowDeploy.running -= 1
        if self.target in self.failing:
            return DeployResult.failed(self.target, TargetError("the connection was lost"))
        return DeployResult(self.target, "ok")


def rollout_of(targets, failing=(), **options):
    SlowDeploy.running = SlowDeploy.most = 0
    return Rollout(None, targets, lambda: None, PushOptions(), deploy=lambda t: SlowDeploy(t, failing=failing), **options)


def test_after_the_canary_at_most_parallel_run_at_once():
    started = time.monotonic()
    rollout = rollout_of([f"t{n}" for n in range(7)], canary=1, parallel=3).run()
    assert [r.result for r in rollout.results] == ["ok"] * 7
    assert SlowDeploy.most == 3
    assert time.monotonic() - started < 7 * 0.2  # in parallel, not one after the other


def test_a_failure_in_a_parallel_wave_stops_what_has_not_started():
    rollout = rollout_of([f"t{n}" for n in range(8)], failing={"t2"}, canary=1, parallel=2).run()
    results = {r.target: r.result for r in rollout.results}
    assert results["t0"] == "ok" and results["t2"] == "error"
    assert results["t7"] == "not pushed" and "t7" in rollout.not_pushed
    assert SlowDeploy.most <= 2


class InterruptingDeploy(SlowDeploy):
    def run(self):
        if self.target == "t1":
            raise KeyboardInterrupt
        return super().run()


def test_ctrl_c_answers_what_each_target_came_to():
    rollout = Rollout(None, ["t0", "t1", "t2"], lambda: None, PushOptions(), deploy=lambda t: InterruptingDeploy(t, 0.01))
    with pytest.raises(RolloutInterrupted) as caught:
        rollout.run()
    assert [(r.target, r.result) for r in caught.value.result.results] == [
        ("t0", "ok"), ("t1", "interrupted"), ("t2", "not pushed")]


def test_ctrl_c_on_the_command_line_prints_the_table_and_exits_130(packages, tmp_path):
    quick, stuck, untouched = tmp_path / "quick", tmp_path / "stuck", tmp_path / "untouched"
    loaders = [FakeLoader(quick, interval=0.05).start(), FakeLoader(stuck, consume=False).start(),
               FakeLoader(untouched, interval=0.05).start()]
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotload", "push", *map(str, packages), "--to", str(quick), "--to", str(stuck),
             "--to", str(untouched)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not (stuck / protocol.TRIGGER).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # waiting for the stuck loader
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        for loader in loaders:
            loader.stop()
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "rollout" in stdout and "interrupted" in stdout and "not pushed" in stdout, stdout
    assert batches_in(untouched) == [] and not list(untouched.glob("2*"))
