"""install-loader --live-port against real GNU Smalltalk images served by `gst-remote --server`.

- A failed gst-remote (wrong port, ssh that reaches nothing) is an error, never a success.
- Success means the new loader runs: a heartbeat written after the install, by a new loader id.
- A loader installed live compiles pushed code as a baked one does: the same package, with Seaside
  names in a method and in a doit, gives the same result in both (gst-remote --server loads the
  Compiler package, whose STInST compiler replaces Behavior>>compile:ifError: in that image).
"""

import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from conftest import run_hotload
from hotload.staging import protocol
from hotload.errors import NoLoaderRunning, TargetError
from hotload.images.example_app import example_dir, free_port
from hotload.images.gst import Gst
from hotload.images.install import LoaderInstaller
from hotload.images.loader_sources import loader_files
from hotload.formats.pack import Packer
from hotload.staging.protocol import Heartbeat
from hotload.staging.transports.local import LocalTransport

pytestmark = pytest.mark.skipif(
    not (shutil.which("gst") and shutil.which("gst-remote")),
    reason="GNU Smalltalk (gst, gst-remote) is not installed (run .ci/install-system as root)",
)

INTERVAL_MS = 300

# One package that names Seaside classes without a namespace: from a method of a class that lands in
# Seaside (its superclass's namespace), from a method of a class in Smalltalk, and from a doit.
SAME_PACKAGE = """\
WAComponent subclass: #HLSameProbe
	instanceVariableNames: ''
	classVariableNames: ''
	poolDictionaries: ''
	category: 'Same-Probe'!

Object subclass: #HLSameHelper
	instanceVariableNames: ''
	classVariableNames: ''
	poolDictionaries: ''
	category: 'Same-Probe'!

!HLSameProbe methodsFor: 'probing'!
dispatcherName
	^ WADispatcher default name
! !

!HLSameHelper class methodsFor: 'probing'!
componentClass
	^ [ :each | each ] value: WAComponent
!
notYetDefined
	^ HLSameNotDefinedAnywhere
! !
"""

# `hotload pack` keeps only `Foo initialize` statements, so the doit is added to source.st afterwards.
SAME_DOIT = "Smalltalk at: #HLSameDoit put: WADispatcher default name , ' ' , WAComponent name!"

REPORT = (
    "[ | platform | HLLoader installFile: {mcz}. platform := HLPlatform current. "
    "('probe dispatcher ' , (platform classNamed: 'HLSameProbe') new dispatcherName) displayNl. "
    "('probe probe-namespace ' , (platform classNamed: 'HLSameProbe') environment name) displayNl. "
    "('probe helper-namespace ' , (platform classNamed: 'HLSameHelper') environment name) displayNl. "
    "('probe component ' , (platform classNamed: 'HLSameHelper') componentClass printString) displayNl. "
    "('probe undefined ' , (platform classNamed: 'HLSameHelper') notYetDefined printString) displayNl. "
    "('probe doit ' , (Smalltalk at: #HLSameDoit)) displayNl ] "
    "on: Error do: [ :e | ('probe failed ' , e messageText displayString) displayNl. e return: nil ]"
)

EXPECTED = [
    "probe dispatcher seaside",
    "probe probe-namespace Seaside",
    "probe helper-namespace Smalltalk",
    "probe component Seaside.WAComponent",
    "probe undefined nil",
    "probe doit seaside WAComponent",
]


def probe_lines(output: str):
    return [line.strip() for line in output.splitlines() if line.strip().startswith("probe ")]


@pytest.fixture(scope="module")
def seaside_image(tmp_path_factory) -> Path:
    """Seaside on Swazoo, no app and no loader."""
    folder = tmp_path_factory.mktemp("seaside")
    image = folder / "seaside.im"
    env = dict(os.environ, COUNTER_IMAGE=str(image), COUNTER_SOURCE="")
    Gst().run("", files=[example_dir() / "build-image.st"], env=env)
    return image


class RemoteImage:
    """A gst image run by `gst-remote --server --port=P -I image`."""

    def __init__(self, image: Path):
        self.port = free_port()
        self.remote = shutil.which("gst-remote")
        self.log = image.with_suffix(".log")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.remote, "--server", f"--port={self.port}", "-I", str(image)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.time() + 30
        while "ready" not in self.eval("'ready' displayNl"):
            assert self.process.poll() is None, f"gst-remote --server exited:\n{self.log.read_text()}"
            assert time.time() < deadline, "the gst-remote server did not start"
            time.sleep(0.2)

    def eval(self, code: str) -> str:
        result = subprocess.run([self.remote, f"--port={self.port}", "--eval", code],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        return result.stdout + result.stderr

    def stop(self):
        subprocess.run([self.remote, f"--port={self.port}", "--kill"], capture_output=True, timeout=30)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture(scope="module")
def remote_image(seaside_image, tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    image = folder / "live.im"
    shutil.copy2(seaside_image, image)
    server = RemoteImage(image)
    try:
        yield server
    finally:
        server.stop()


def one_line_error(result):
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotload: "), result.stderr
    return lines[0]


# -- (a) gst-remote that reaches nothing --------------------------------------------------------


def test_wrong_port_is_a_target_error(tmp_path):
    port = free_port()  # nothing listens there
    result = run_hotload("install-loader", "--to", tmp_path / "staging", "--dialect", "gst", "--live-port", port)
    assert result.returncode == 5, (result.stdout, result.stderr)
    line = one_line_error(result)
    assert f"gst-remote could not reach a gst image on port {port}" in line
    assert "Connection refused" in line and f"gst-remote --server --port={port}" in line
    assert "(live)" not in result.stdout
    assert not (tmp_path / "staging" / protocol.HEARTBEAT).exists()


def test_gst_remote_through_ssh_that_fails_exits_0_but_is_an_error(tmp_path, monkeypatch):
    # gst-remote [user@]host runs `$SSH user@host nc localhost PORT` and exits 0 when that reaches nothing.
    monkeypatch.setenv("SSH", "false")
    staging = tmp_path / "staging"
    staging.mkdir()
    installer = LoaderInstaller("gst", str(staging), INTERVAL_MS)
    with pytest.raises(TargetError, match="gst-remote could not reach a gst image on port .* of nobody@localhost"):
        installer.live(free_port(), str(staging / "loader"), "nobody@localhost", transport=LocalTransport(staging))


# -- (b) success means a fresh heartbeat from a new loader ----------------------------------------


def read_heartbeat_file(staging: Path) -> Heartbeat:
    return Heartbeat.parse((staging / protocol.HEARTBEAT).read_text())


def test_live_install_waits_for_a_fresh_heartbeat(remote_image, tmp_path):
    staging = tmp_path / "staging"
    started = int(time.time())
    result = run_hotload("install-loader", "--to", staging, "--dialect", "gst", "--live-port", remote_image.port,
                         "--interval", INTERVAL_MS, check=True)
    assert "through gst-remote on port" in result.stdout and "it runs: fresh heartbeat from loader" in result.stdout
    assert (staging / "loader" / "Hotload-GST.st").read_bytes() == loader_files("gst")[-1].read_bytes()
    first = read_heartbeat_file(staging)
    assert first.time >= started and first.dialect == "gst" and first.interval_ms == INTERVAL_MS
    assert first.id and first.id in result.stdout

    # Installing again replaces the loader: success needs a heartbeat from the new one.
    again = run_hotload("install-loader", "--to", staging, "--dialect", "gst", "--live-port", remote_image.port,
                        "--interval", INTERVAL_MS, check=True)
    second = read_heartbeat_file(staging)
    assert second.id != first.id and second.id in again.stdout


def test_no_fresh_heartbeat_is_no_loader_running(remote_image, tmp_path):
    """The image starts its loader on another directory than the one read: a heartbeat that was
    already there, even one with a time in the future, is not taken for the new loader's."""
    served = tmp_path / "served"
    served.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stale = protocol.render_record("heartbeat", [
        ("time", str(int(time.time()) + 5), "-"),
        ("loader", "gst", "priority 5", f"interval {INTERVAL_MS}", "image /old.im"),
        ("id", "0123456789ab"),
    ])
    (elsewhere / protocol.HEARTBEAT).write_text(stale)
    loader = served / "loader"
    loader.mkdir()
    for source in loader_files("gst"):
        shutil.copy2(source, loader / source.name)
    installer = LoaderInstaller("gst", str(served), INTERVAL_MS)
    started = time.monotonic()
    with pytest.raises(NoLoaderRunning) as raised:
        installer.live(remote_image.port, str(loader), transport=LocalTransport(elsewhere), wait=2)
    message = str(raised.value)
    assert "gst-remote ran but no heartbeat from the new loader appeared" in message
    assert f"in 2 s: is the image at port {remote_image.port} the one" in message
    assert "See its Transcript" in message and "\n" not in message
    assert time.monotonic() - started < 60
    assert (served / protocol.HEARTBEAT).exists()  # the loader did start, on the other directory


# -- (c) baked and live-installed loaders compile the same package the same way -----------------


@pytest.fixture(scope="module")
def same_package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("same")
    source = folder / "Same-Probe.st"
    source.write_text(SAME_PACKAGE)
    mcz = Packer(author="probe").pack(source, folder).path
    with zipfile.ZipFile(mcz) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(mcz, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            if info.filename == "snapshot/source.st":
                data += f"\r{SAME_DOIT}\r".encode()
            archive.writestr(info, data)
    return mcz


def test_same_package_in_a_baked_and_a_live_installed_loader(seaside_image, remote_image, same_package, tmp_path):
    baked = tmp_path / "baked.im"
    shutil.copy2(seaside_image, baked)
    LoaderInstaller("gst", str(tmp_path / "baked-staging"), INTERVAL_MS).bake(baked)
    report = REPORT.format(mcz=f"'{same_package}'")
    baked_lines = probe_lines(Gst().run(report + "!\n", image=baked))

    staging = tmp_path / "live-staging"
    run_hotload("install-loader", "--to", staging, "--dialect", "gst", "--live-port", remote_image.port,
                "--interval", INTERVAL_MS, check=True)
    assert "STInST.STCompiler" in remote_image.eval("Object compilerClass printNl")  # what gst-remote --server loads
    live_lines = probe_lines(remote_image.eval(report))

    assert baked_lines == EXPECTED
    assert live_lines == EXPECTED


def test_batch_verification_is_the_same_baked_and_live(seaside_image, remote_image, tmp_path):
    check = "('syntax ' , (HLPlatform current checkSyntax: 'probe ^ WADispatcher default' in: nil) printString) displayNl"
    baked = tmp_path / "baked.im"
    shutil.copy2(seaside_image, baked)
    LoaderInstaller("gst", str(tmp_path / "baked-staging"), INTERVAL_MS).bake(baked)
    assert "syntax true" in Gst().run(check + "!\n", image=baked)
    run_hotload("install-loader", "--to", tmp_path / "live-staging", "--dialect", "gst", "--live-port",
                remote_image.port, "--interval", INTERVAL_MS, check=True)
    assert "syntax true" in remote_image.eval(check)
