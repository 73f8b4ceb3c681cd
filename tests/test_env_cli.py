"""`--env NAME` on push, status, diff and watch: the targets of an environment of hotload.toml (found
from the working directory upward), its poll_timeout as push --wait's default timeout, and the usage
errors as one line with exit 2."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_hotload
from fake_loader import FakeLoader
from helpers import class_def, method, shop_packages
from hotload.staging import protocol


def write_config(folder, text):
    (folder / "hotload.toml").write_text(text)
    return folder


def one_line_error(result, code):
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotload: "), result.stderr
    return lines[0]


@pytest.fixture
def packages(tmp_path):
    return shop_packages(tmp_path / "src")


@pytest.fixture
def project(tmp_path, fake_staging):
    """A project folder whose hotload.toml names `beta` (the fake loader's staging) and `prod` (two images)."""
    second = FakeLoader(tmp_path / "staging2", interval=0.05).start()
    write_config(tmp_path, f"""\
[defaults]
poll_timeout = 30

[env.beta]
targets = ["{fake_staging}"]

[env.prod]
targets = ["{fake_staging}", "{tmp_path / 'staging2'}"]
""")
    (tmp_path / "sub").mkdir()
    yield tmp_path
    second.stop()
    assert not second.errors, second.errors


def test_push_env_goes_to_the_environments_target(project, fake_staging, packages):
    result = run_hotload("push", *packages, "--env", "beta", "--wait", "--json", cwd=project / "sub")  # found upward
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == str(fake_staging) and report["result"] == "ok"


def test_push_env_of_many_targets_pushes_each(project, packages):
    result = run_hotload("push", *packages, "--env", "prod", "--wait", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [r["target"] for r in reports] == [str(project / "staging"), str(project / "staging2")]
    assert [r["result"] for r in reports] == ["ok", "ok"]


def test_status_and_diff_take_env(project, packages):
    run_hotload("push", *packages, "--env", "beta", "--wait", cwd=project, check=True)
    one = json.loads(run_hotload("status", "--env", "beta", "--json", cwd=project, check=True).stdout)
    assert one["target"] == str(project / "staging") and one["last_result"] == "ok"
    many = run_hotload("status", "--env", "prod", cwd=project)
    assert many.returncode == 0, many.stderr
    assert "package(s) differ between the images" in many.stdout  # beta's image got the packages, the other not
    diff = json.loads(run_hotload("diff", *packages, "--env", "beta", "--json", cwd=project, check=True).stdout)
    assert diff["target"] == str(project / "staging")
    assert {p["package"]: p["status"] for p in diff["packages"]} == {"Shop-Core": "unchanged", "Shop-Web": "unchanged"}
    both = json.loads(run_hotload("diff", *packages, "--env", "prod", "--json", cwd=project, check=True).stdout)
    assert [report["target"] for report in both] == [str(project / "staging"), str(project / "staging2")]
    assert [p["status"] for p in both[1]["packages"]] == ["new", "new"]


def test_the_environments_poll_timeout_is_push_waits_default(tmp_path, packages):
    staging = tmp_path / "never-takes"
    write_config(tmp_path, f'[env.slow]\ntargets = ["{staging}"]\npoll_timeout = 1\n')
    loader = FakeLoader(staging, interval=0.05, consume=False).start()  # beats, never takes a batch
    try:
        with_env = run_hotload("push", *packages, "--env", "slow", "--wait", cwd=tmp_path)
        (staging / "load").unlink()
        given = run_hotload("push", *packages, "--env", "slow", "--wait", "--timeout", "2", cwd=tmp_path)
    finally:
        loader.stop()
    assert "within 1 s" in one_line_error(with_env, 6)
    assert "within 2 s" in one_line_error(given, 6)


@pytest.mark.parametrize("command", [
    ["push", "{package}", "--env", "beta", "--to", "{staging}"],
    ["status", "--env", "beta", "--to", "{staging}"],
    ["diff", "{package}", "--env", "beta", "--to", "{staging}"],
    ["watch", "{package}", "--env", "beta", "--to", "{staging}"],
])
def test_env_and_to_together_is_a_usage_error(project, packages, command):
    args = [a.format(package=packages[0], staging=project / "staging") for a in command]
    assert "either --env or --to" in one_line_error(run_hotload(*args, cwd=project), 2)


def test_an_unknown_environment_or_no_project_file_is_one_line_exit_2(project, tmp_path_factory, packages):
    unknown = one_line_error(run_hotload("status", "--env", "nightly", cwd=project), 2)
    assert "no environment 'nightly' (environments: beta, prod)" in unknown and "hotload.toml" in unknown
    elsewhere = tmp_path_factory.mktemp("no-project")
    missing = one_line_error(run_hotload("push", *packages, "--env", "beta", cwd=elsewhere), 2)
    assert "no hotload.toml in this folder or any parent" in missing


def test_a_bad_project_file_names_file_line_and_key(tmp_path, packages):
    write_config(tmp_path, '[env.beta]\ntargets = ["/srv/staging"]\npoll_timeout = "soon"\n')
    line = one_line_error(run_hotload("status", "--env", "beta", cwd=tmp_path), 2)
    assert "hotload.toml:3: env.beta.poll_timeout: must be a number of seconds" in line


def test_install_loader_env_puts_the_loader_sources_into_each_target(tmp_path):
    write_config(tmp_path, f'[env.two]\ntargets = ["{tmp_path / "a"}", "{tmp_path / "b"}"]\n')
    result = run_hotload("install-loader", "--env", "two", "--dialect", "gst", cwd=tmp_path, check=True)
    assert result.stdout.count("loader for gst (snippet)") == 2
    assert all(list((tmp_path / name).rglob("*.st")) for name in ("a", "b"))
    baked = run_hotload("install-loader", "--env", "two", "--dialect", "gst", "--image", tmp_path / "app.im", cwd=tmp_path)
    assert "--image bakes one image" in one_line_error(baked, 2)


def test_watch_env_pushes_each_change_to_every_target(project):
    source = project / "Shop-Watch.st"
    source.write_text(class_def("WatchedThing", category="Shop-Watch"))
    records = [project / "staging" / protocol.LOADED, project / "staging2" / protocol.LOADED]
    process = subprocess.Popen(
        [sys.executable, "-m", "hotload", "watch", str(source), "--env", "prod", "--dist", str(project / "dist"), "--author", "watcher"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project,
    )
    try:
        time.sleep(1.5)
        source.write_text(class_def("WatchedThing", category="Shop-Watch") + method("WatchedThing", "round\n\t^ 1"))
        deadline = time.time() + 20
        while not all("Shop-Watch-watcher.1" in record.read_text() for record in records) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert all("Shop-Watch-watcher.1" in record.read_text() for record in records), out + err
    assert out.count("batch ") >= 2 and "Traceback" not in err
