"""hotload/staging/deploy.py: one target's push (`Deploy`) and many in turn (`Rollout`), against the fake loader;
their results as `push --json` prints them, and the callbacks that tell what happens."""

import pytest

from fake_loader import FakeLoader
from helpers import class_def, make_package, method, shop_packages
from hotload.staging.deploy import Deploy, DeployResult, PushOptions, Rollout
from hotload.errors import NoLoaderRunning, TargetError
from hotload.staging.push import PushBatch

SELECTION_KEYS = ["target", "decisions", "skipped", "refused", "unloads", "note"]
PUSH_KEYS = ["batch", "packages", "bytes", "upload_seconds", "cleaned", "kept"]
STATUS_KEYS = ["loaded", "failed_package", "error", "stack", "timings_ms", "paused_ms"]


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return lambda: folder


@pytest.fixture
def batch(tmp_path, workdir):
    return PushBatch.read(shop_packages(tmp_path / "src"), workdir)


def test_a_waited_push_answers_the_loaders_result_and_tells_each_step(fake_staging, batch, workdir):
    events = []
    result = Deploy(
        batch, str(fake_staging), workdir, PushOptions(wait=True, timeout=30),
        on_note=lambda line: events.append(("note", line)),
        on_upload=lambda total: events.append(("upload", total)),
        on_pushed=lambda pushed: events.append(("pushed", pushed.batch)),
        on_wait=lambda batch_id: events.append(("wait", batch_id)),
    ).run()
    assert (result.result, result.exit_code, result.ok) == ("ok", 0, True)
    report = result.to_json()
    assert list(report) == SELECTION_KEYS + PUSH_KEYS + ["result"] + STATUS_KEYS
    assert report["loaded"] == ["Shop-Core-tester.1", "Shop-Web-tester.1"] and report["target"] == str(fake_staging)
    kinds = [kind for kind, _ in events]
    assert kinds == ["upload", "pushed", "wait"]
    assert events[0][1] == sum(entry.size for entry in batch.entries.values())
    assert events[1][1] == events[2][1] == report["batch"]


def test_without_wait_the_result_is_pushed(fake_staging, batch, workdir):
    result = Deploy(batch, str(fake_staging), workdir, PushOptions()).run()
    assert result.result == "pushed" and result.status is None and result.exit_code == 0
    assert list(result.to_json()) == SELECTION_KEYS + PUSH_KEYS + ["result"]


def test_up_to_date_pushes_nothing_and_notes_what_it_skipped(fake_staging, batch, workdir):
    Deploy(batch, str(fake_staging), workdir, PushOptions(wait=True, timeout=30)).run()
    notes, uploads = [], []
    result = Deploy(batch, str(fake_staging), workdir, PushOptions(wait=True), on_note=notes.append, on_upload=uploads.append).run()
    assert result.result == "up-to-date" and result.exit_code == 0 and uploads == []
    report = result.to_json()
    assert list(report) == SELECTION_KEYS + ["result", "packages", "bytes"]
    assert (report["packages"], report["bytes"]) == ([], 0)
    assert notes == [f"{fake_staging}: skipped 2 package(s) already loaded: Shop-Core-tester.1, Shop-Web-tester.1"]


def test_a_dry_run_answers_the_diff_and_writes_nothing(fake_staging, batch, workdir):
    before = sorted(path.name for path in fake_staging.iterdir())
    result = Deploy(batch, str(fake_staging), workdir, PushOptions(dry_run=True)).run()
    assert result.result == "dry-run" and result.exit_code == 0
    report = result.to_json()
    assert list(report) == SELECTION_KEYS + ["result", "diff"]
    assert [package["package"] for package in report["diff"]["packages"]] == ["Shop-Core", "Shop-Web"]
    assert sorted(path.name for path in fake_staging.iterdir() if path.name != "heartbeat") == [n for n in before if n != "heartbeat"]


def test_a_downgrade_is_a_refused_result_with_exit_2(tmp_path, fake_staging, workdir):
    src = tmp_path / "versions"
    older = make_package(src, "Shop-Core", class_def("ShopItem", category="Shop-Core"))
    newer = make_package(src, "Shop-Core", class_def("ShopItem", category="Shop-Core") + method("ShopItem", "price\n\t^ 2"))
    Deploy(PushBatch.read([newer], workdir), str(fake_staging), workdir, PushOptions(wait=True, timeout=30)).run()
    result = Deploy(PushBatch.read([older], workdir), str(fake_staging), workdir, PushOptions(wait=True)).run()
    assert result.result == "refused" and result.exit_code == 2 and result.push is None
    report = result.to_json()
    assert list(report) == SELECTION_KEYS + ["result", "error"]
    assert report["refused"] == ["Shop-Core-tester.1"] and "older than the loaded" in report["error"]


def test_an_error_result_names_the_target_and_the_error_only():
    result = DeployResult.failed("app9:/srv/staging", TargetError("cannot connect to app9"))
    assert result.exit_code == 5 and not result.ok
    assert result.to_json() == {"target": "app9:/srv/staging", "error": "cannot connect to app9", "result": "error"}


def test_a_rollout_stops_at_the_first_failed_target_and_answers_the_worst_exit_code(tmp_path, fake_staging, batch, workdir):
    nowhere = tmp_path / "no-loader"
    told = []
    rollout = Rollout(
        batch, [str(nowhere), str(fake_staging)], workdir, PushOptions(wait=True, timeout=30), on_result=told.append,
    ).run()
    assert [result.result for result in rollout.results] == ["error", "not pushed"]
    assert told == rollout.results[:1]  # the canary failed: the other target was never started
    assert isinstance(rollout.results[0].error, NoLoaderRunning)
    assert rollout.exit_code == NoLoaderRunning.exit_code and rollout.not_reached == [str(nowhere)]
    assert rollout.not_pushed == [str(fake_staging)] and not list(fake_staging.glob("2*"))
    reports = rollout.to_json()
    assert [report["target"] for report in reports] == [str(nowhere), str(fake_staging)]
    assert list(reports[0]) == ["target", "error", "result", "seconds"]
    assert reports[1] == {"target": str(fake_staging), "result": "not pushed"}


def test_without_stopping_a_rollout_goes_on_after_a_failed_target(tmp_path, fake_staging, batch, workdir):
    nowhere = tmp_path / "no-loader"
    rollout = Rollout(batch, [str(nowhere), str(fake_staging)], workdir, PushOptions(wait=True, timeout=30),
                      stop_at_failure=False).run()
    assert [result.result for result in rollout.results] == ["error", "ok"]


def test_a_rollout_of_a_loader_failure_exits_1_without_an_error(tmp_path, batch, workdir):
    staging = tmp_path / "failing"
    loader = FakeLoader(staging, interval=0.05, fail_package="Shop-Web-tester.1.mcz").start()
    try:
        rollout = Rollout(batch, [str(staging)], workdir, PushOptions(wait=True, timeout=30)).run()
    finally:
        loader.stop()
    [result] = rollout.results
    assert (result.result, result.exit_code, rollout.exit_code, rollout.not_reached) == ("failed", 1, 1, [])
    assert result.to_json()["failed_package"] == "Shop-Web-tester.1"
