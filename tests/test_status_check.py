"""status --check: one Nagios-style line and the Nagios exit codes (monit's `check program` reads them too)."""

import json

from conftest import run_hotload
from fake_loader import FakeLoader
from helpers import shop_packages


def check(*targets, extra=()):
    return run_hotload("status", "--check", *sum((["--to", str(t)] for t in targets), []), *extra)


def test_ok_warning_critical_and_unknown(tmp_path):
    good, failing = tmp_path / "good", tmp_path / "failing"
    packages = shop_packages(tmp_path / "src")
    loaders = [FakeLoader(good, interval=0.05).start(),
               FakeLoader(failing, interval=0.05, fail_package="Shop-Web-tester.1.mcz").start()]
    try:
        assert run_hotload("push", *packages, "--to", good, "--wait").returncode == 0
        ok = check(good)
        assert (ok.returncode, ok.stdout.strip()) == (0, "HOTLOAD OK - 1 image(s): loaders running, last batches ok")
        assert run_hotload("push", *packages, "--to", failing, "--wait").returncode == 1
        warning = check(good, failing)
        assert warning.returncode == 1 and warning.stdout.startswith("HOTLOAD WARNING - ")
        assert f"{failing}: batch" in warning.stdout and "failed" in warning.stdout
        assert len(warning.stdout.strip().splitlines()) == 1
    finally:
        for loader in loaders:
            loader.stop()
    (tmp_path / "a-file").write_text("not a folder")
    unknown = check(tmp_path / "a-file")
    assert unknown.returncode == 3 and unknown.stdout.startswith("HOTLOAD UNKNOWN - "), unknown.stdout + unknown.stderr
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    critical = check(nobody)
    assert critical.returncode == 2 and critical.stdout.startswith("HOTLOAD CRITICAL - ") and "no loader" in critical.stdout
    as_json = json.loads(check(nobody, extra=("--json",)).stdout)
    assert as_json["code"] == 2 and as_json["reasons"] == [f"{nobody}: no loader running"]
