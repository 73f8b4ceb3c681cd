import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "mcz"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip("the real-world .mcz corpus is not beside the project (expected ../shared/corpus/mcz)")
    return CORPUS


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from sshd import start_sshd

    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def ssh_home(sshd, monkeypatch):
    """Point ~ at the test client's home (ssh config, known_hosts, key); no agent."""
    monkeypatch.setenv("HOME", str(sshd.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return sshd


def run_hotload(*args, env=None, cwd=None, timeout=120, check=False):
    result = subprocess.run(
        [sys.executable, "-m", "hotload", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"hotload {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
