"""docs/operations.md: monit's own `monit -t` accepts its monit file, `systemd-analyze verify` its unit (where
systemd can run it here), and the commands of the monit check and of the cron line do what the page says
against a staging directory served by a loader."""

import re
import shlex
import shutil
import subprocess

import pytest

from conftest import ROOT, run_hotload
from fake_loader import FakeLoader
from helpers import shop_packages

PAGE = (ROOT / "docs" / "operations.md").read_text()
STAGING = "/srv/app/staging"


def block(info: str) -> str:
    found = re.findall(rf"```{info}\n(.*?)```", PAGE, re.S)
    assert len(found) == 1, f"docs/operations.md has {len(found)} ```{info} blocks"
    return found[0]


def hotload_args(command: str, staging) -> list:
    """The arguments after `hotload` in a command of the page, with the staging directory replaced."""
    words = shlex.split(command)
    return [str(staging) if word == STAGING else word for word in words[words.index("/usr/local/bin/hotload") + 1:]]


@pytest.mark.skipif(not shutil.which("monit"), reason="monit is not installed (run .ci/install-system as root)")
def test_monit_accepts_the_monit_file(tmp_path):
    hotload = shutil.which("hotload")
    assert hotload, "the hotload command is not installed (pip install -e .)"
    control = tmp_path / "monitrc"
    control.write_text(block("monitrc").replace("/usr/local/bin/hotload", hotload))
    control.chmod(0o600)  # monit refuses a control file others can read
    checked = subprocess.run(["monit", "-t", "-c", str(control)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Control file syntax OK" in checked.stdout + checked.stderr


def _systemd_verifies() -> bool:
    if not shutil.which("systemd-analyze"):
        return False
    probe = subprocess.run(["systemd-analyze", "verify", "--man=no", "/dev/null"], capture_output=True, text=True)
    return "bus" not in (probe.stdout + probe.stderr).lower()


@pytest.mark.skipif(not _systemd_verifies(), reason="systemd-analyze verify cannot run here")
def test_systemd_verifies_the_unit(tmp_path):
    unit = tmp_path / "seaside-app.service"
    unit.write_text(block("ini"))
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "seaside-app.service" not in checked.stdout + checked.stderr, \
        checked.stdout + checked.stderr


def test_the_monit_check_and_the_cron_line_work_against_a_loader(tmp_path):
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, interval=0.05).start()
    try:
        assert run_hotload("push", *shop_packages(tmp_path / "src"), "--to", staging, "--wait").returncode == 0
        monit_command = re.search(r'with path "([^"]+)"', block("monitrc")).group(1)
        checked = run_hotload(*hotload_args(monit_command, staging))
        assert checked.returncode == 0 and checked.stdout.startswith("HOTLOAD OK - "), checked.stdout + checked.stderr
        cron_line = block("cron").strip()
        assert len(cron_line.split()) > 6 and cron_line.split()[5] == "app"  # /etc/cron.d: five times, a user
        saved = run_hotload(*hotload_args(" ".join(cron_line.split()[6:]), staging))
        assert saved.returncode == 0 and "image saved" in saved.stdout, saved.stdout + saved.stderr
    finally:
        loader.stop()
