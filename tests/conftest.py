import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "mcz"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# `hotload plan` keeps a per-user cache (hotload/formats/plan_cache.py): the tests, and every hotload they
# start, use one of their own, removed at the end, never the user's.
_CACHE_HOME = tempfile.mkdtemp(prefix="hotload-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
atexit.register(shutil.rmtree, _CACHE_HOME, True)

# Test files that run a Smalltalk image (GNU Smalltalk or Etoys); every test in them is marked
# `smalltalk`, and so is any other test that uses a fixture below or is skipped without GNU Smalltalk
# or the Squeak VM. `-m "not smalltalk"` runs the client suite alone (CI does so under the oldest
# Python the client supports).
SMALLTALK_FILES = {
    "test_demo.py",
    "test_install_live.py",
    "test_live_gst.py",
    "test_live_undo_gst.py",
    "test_loader_faults.py",
    "test_loader_hostile.py",
    "test_loader_reader.py",
    "test_selftest.py",
    "test_squeak.py",
    "test_squeak_requests.py",
    "test_squeak_rollback.py",
    "test_undo_gst.py",
}
SMALLTALK_FIXTURES = {"loader_renderings", "app"}  # every `app` here is a running image
SMALLTALK_SKIP_REASONS = ("GNU Smalltalk", "Squeak", "Etoys")


def _runs_smalltalk(item) -> bool:
    if Path(str(item.fspath)).name in SMALLTALK_FILES:
        return True
    if SMALLTALK_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    return any(
        any(word in str(mark.kwargs.get("reason", "")) for word in SMALLTALK_SKIP_REASONS)
        for mark in item.iter_markers("skipif")
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _runs_smalltalk(item):
            item.add_marker(pytest.mark.smalltalk)
        if {"sshd", "ssh_home"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sshd)


NEEDS_GST = pytest.mark.skipif(not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)")


def _etoys_missing():
    """Why no Etoys image can run here (the Squeak VM or the image is missing), or None."""
    from hotload.images.squeak import SqueakError, find_image, find_vm

    try:
        find_vm()
        find_image()
        return None
    except SqueakError as error:
        return str(error)


ETOYS_MISSING = _etoys_missing()
NEEDS_ETOYS = pytest.mark.skipif(ETOYS_MISSING is not None, reason=f"no Squeak VM or Etoys image: {ETOYS_MISSING}")


@pytest.fixture(scope="module")
def app(request, tmp_path_factory):
    """The example app (Seaside on Swazoo and the loader) serving, one per test module, once the loader has
    written its loaded record; the module's INTERVAL_MS (default 1000) is the poll interval. Modules that
    run another image (Etoys, a baked test image) define an `app` of their own."""
    from helpers import serving_counter
    from hotload.staging import protocol

    with serving_counter(tmp_path_factory.mktemp("counter"), getattr(request.module, "INTERVAL_MS", 1000)) as app:
        app.wait_until(lambda: (app.staging / protocol.LOADED).is_file(), "the loaded record at the first poll")
        yield app


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """examples/counter v1 and v2 packed, v2 descending from v1."""
    from helpers import example_versions

    return example_versions(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def fake_staging(tmp_path):
    """A staging folder served by the fake loader (tests/fake_loader.py); it must see no errors."""
    from fake_loader import FakeLoader

    folder = tmp_path / "staging"
    loader = FakeLoader(folder, interval=0.05).start()
    yield folder
    loader.stop()
    assert not loader.errors, loader.errors


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
