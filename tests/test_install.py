"""hotload install-loader: baked, live through gst-remote, and as a snippet."""

import shutil
import subprocess
import time

import pytest

from conftest import run_hotload
from hotload import protocol
from hotload.example_app import free_port
from hotload.gst import Gst
from hotload.loader_sources import loader_files
from hotload.protocol import Heartbeat

needs_gst = pytest.mark.skipif(not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)")


@pytest.fixture
def plain_image(tmp_path):
    image = tmp_path / "plain.im"
    Gst().run(f"ObjectMemory snapshot: '{image}'")
    return image


@needs_gst
def test_bake_into_an_image(tmp_path, plain_image):
    staging = tmp_path / "staging"
    result = run_hotload("install-loader", "--to", staging, "--dialect", "gst", "--image", plain_image, "--interval", 500, "--priority", 4, check=True)
    assert "baked" in result.stdout and "at priority 4" in result.stdout
    assert (tmp_path / "plain.im.bak").is_file()
    output = Gst().run(
        "HLLoader current directory displayNl. HLLoader current interval printNl. HLLoader current priority printNl!\n",
        image=plain_image,
    )
    assert f"{staging}\n500\n4" in output


@needs_gst
def test_live_install_through_gst_remote(tmp_path, plain_image):
    remote = shutil.which("gst-remote")
    port = free_port()
    server = subprocess.Popen([remote, "--server", f"--port={port}", "-I", str(plain_image)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while subprocess.run([remote, f"--port={port}", "--eval", "nil"], capture_output=True).returncode != 0:
            assert time.time() < deadline, "gst-remote server did not start"
            time.sleep(0.2)
        staging = tmp_path / "live-staging"
        result = run_hotload("install-loader", "--to", staging, "--dialect", "gst", "--live-port", port, "--interval", 300, check=True)
        assert "gst-remote on port" in result.stdout or "through gst-remote" in result.stdout
        assert (staging / "loader" / "Hotload-GST.st").is_file()
        deadline = time.time() + 5
        while not (staging / protocol.HEARTBEAT).exists():
            assert time.time() < deadline, "the live loader wrote no heartbeat"
            time.sleep(0.1)
        beat = Heartbeat.parse((staging / protocol.HEARTBEAT).read_text())
        assert beat.dialect == "gst" and beat.interval_ms == 300
    finally:
        subprocess.run([remote, f"--port={port}", "--kill"], capture_output=True)
        server.kill()
        server.wait(10)


@pytest.mark.parametrize("dialect, file_in", [("pharo", "CodeImporter evaluateFileNamed:"), ("squeak", "FileStream fileIn:")])
def test_snippet_for_pharo_and_squeak(tmp_path, dialect, file_in):
    staging = tmp_path / "stage"
    result = run_hotload("install-loader", "--to", staging, "--dialect", dialect, check=True)
    source = "Hotload-Pharo.st" if dialect == "pharo" else "Hotload-Squeak.st"
    file_ins = [f"{file_in} '{staging}/loader/{name}'." for name in ("Hotload-Core.st", "Hotload-Monticello.st", source)]
    positions = [result.stdout.find(line) for line in file_ins]
    assert -1 not in positions and positions == sorted(positions), result.stdout
    assert f"HLLoader startOn: '{staging}' interval: 2000 priority: nil." in result.stdout
    assert "Smalltalk snapshot: true andQuit: false." in result.stdout
    assert loader_files(dialect)[-1].name == source
    assert (staging / "loader" / source).read_bytes() == loader_files(dialect)[-1].read_bytes()
    assert (staging / "loader" / "Hotload-Core.st").is_file()
    assert (staging / "loader" / "Hotload-Monticello.st").is_file()
    assert (staging.stat().st_mode & 0o777) == 0o700


def test_pharo_bake_without_a_vm_prints_the_command(tmp_path):
    image = tmp_path / "Pharo.image"
    image.write_bytes(b"image bytes")
    result = run_hotload("install-loader", "--to", "/srv/app/staging", "--dialect", "pharo", "--image", image, check=True)
    assert f"pharo --headless {image} st --quit" in result.stdout
    script = (tmp_path / "hotload-install.st").read_text()
    assert "HLLoader startOn: '/srv/app/staging' interval: 2000 priority: nil." in script
    assert image.read_bytes() == b"image bytes"


def test_bad_install_requests_are_refused(tmp_path):
    result = run_hotload("install-loader", "--to", tmp_path, "--dialect", "pharo", "--live-port", 1234)
    assert result.returncode == 2 and "GNU Smalltalk only" in result.stderr
    result = run_hotload("install-loader", "--to", "relative/dir", "--dialect", "gst", "--image", tmp_path / "x.im")
    assert result.returncode == 2 and "absolute path" in result.stderr
    result = run_hotload("install-loader", "--to", tmp_path, "--dialect", "gst", "--image", tmp_path / "missing.im")
    assert result.returncode == 2 and "does not exist" in result.stderr
