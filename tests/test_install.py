"""hotload install-loader: baked and as a snippet; the pure parts of the live way (live images: test_install_live.py)."""

import shutil

import pytest

from conftest import run_hotload
from hotload.images.gst import Gst
from hotload.images.install import LoaderInstaller, _is_new
from hotload.images.loader_sources import loader_files
from hotload.staging.protocol import Heartbeat

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


@pytest.mark.parametrize("dialect, file_in", [("pharo", "CodeImporter evaluateFileNamed:"), ("squeak", "FileStream fileIn:")])
def test_snippet_for_pharo_and_squeak(tmp_path, dialect, file_in):
    staging = tmp_path / "stage"
    result = run_hotload("install-loader", "--to", staging, "--dialect", dialect, check=True)
    source = "Hotload-Pharo.st" if dialect == "pharo" else "Hotload-Squeak.st"
    file_ins = [f"{file_in} '{staging}/loader/{path.name}'." for path in loader_files(dialect)]
    positions = [result.stdout.find(line) for line in file_ins]
    assert -1 not in positions and positions == sorted(positions), result.stdout
    assert f"HLLoader startOn: '{staging}' interval: 2000 priority: nil." in result.stdout
    assert "Smalltalk snapshot: true andQuit: false." in result.stdout
    assert loader_files(dialect)[-1].name == source
    assert (staging / "loader" / source).read_bytes() == loader_files(dialect)[-1].read_bytes()
    assert all((staging / "loader" / path.name).is_file() for path in loader_files(dialect))
    assert "Hotload-Monticello.st" in [path.name for path in loader_files(dialect)]
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


def test_a_fresh_heartbeat_is_one_written_after_the_install_by_a_new_loader():
    started, returned = 1000.5, 1003.2
    assert _is_new(Heartbeat(1001, id="b"), "a", started, returned)
    assert _is_new(Heartbeat(1001, id="b"), "", started, returned)
    assert not _is_new(Heartbeat(1000, id="b"), "a", started, returned)  # written before the install
    assert not _is_new(Heartbeat(1005, id="a"), "a", started, returned)  # the loader that was there
    # Without ids, only a heartbeat written after gst-remote returned (startOn: had stopped the old loader).
    assert not _is_new(Heartbeat(1002), "", started, returned)
    assert _is_new(Heartbeat(1004), "", started, returned)


def test_gst_remote_output_is_read_by_its_markers():
    outcome = LoaderInstaller._outcome
    assert outcome("", "n1") == (False, False, "")
    assert outcome("ssh: connect to host h port 22: Connection refused\n", "n1") == (False, False, "")
    assert outcome("hotload-live-install connected n0\nhotload-live-install started n0\n", "n1") == (False, False, "")
    done = "hotload-live-install connected n1\n[hotload] loader (gst) polling\nhotload-live-install started n1\n"
    assert outcome(done, "n1") == (True, True, "")
    failed = "hotload-live-install connected n1\nhotload-live-install failed n1 SystemExceptions.FileError: could not open x\n"
    assert outcome(failed, "n1") == (True, False, "SystemExceptions.FileError: could not open x")


def test_the_install_code_prints_its_outcome_whatever_fails():
    code = LoaderInstaller("gst", "/srv/st", 500, 4)._live_code("/srv/st/loader", "n1")
    assert code.startswith("'hotload-live-install connected n1' displayNl.")
    assert " ".join(f"FileStream fileIn: '/srv/st/loader/{path.name}'." for path in loader_files("gst")) in code
    assert "(Smalltalk at: #HLLoader) startOn: '/srv/st' interval: 500 priority: 4. 'hotload-live-install started n1' displayNl ]" in code
    assert "on: Error do: [ :e | ('hotload-live-install failed n1 ' , e class name" in code


def test_the_wait_covers_a_previous_loader_going_stale():
    installer = LoaderInstaller("gst", "/srv/st", 500)
    assert installer.confirm_wait() == 10.0
    assert LoaderInstaller("gst", "/srv/st", 5000).confirm_wait() == 15.0
    assert installer.confirm_wait(Heartbeat(900, interval_ms=2000), started=1000) == 10.0  # stale before
    assert installer.confirm_wait(Heartbeat(995, interval_ms=2000), started=1000) == 21.0  # fresh: may stand by
