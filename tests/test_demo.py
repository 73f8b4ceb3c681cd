import os
import re
import shutil
import signal

import pytest

from conftest import run_hotload

pytestmark = pytest.mark.skipif(not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)")


def test_demo_upgrades_the_app_and_stops_it(tmp_path):
    result = run_hotload("demo", "--workdir", tmp_path, check=True)
    assert "page: 'Counter v1', count 2" in result.stdout
    assert "page: 'Counter v2', count 2: the open session kept its state" in result.stdout
    assert "stopped the app" in result.stdout
    assert (tmp_path / "app" / "app.im.bak").is_file()


def test_demo_keep_leaves_the_app_running(tmp_path):
    result = run_hotload("demo", "--workdir", tmp_path, "--keep", check=True)
    pid = int(re.search(r"gst pid (\d+)", result.stdout).group(1))
    try:
        os.kill(pid, 0)  # still alive
    finally:
        os.killpg(pid, signal.SIGKILL)
