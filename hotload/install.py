"""Putting the loader into an image: baked at build time, live through gst-remote, or as a snippet.

    >>> installer = LoaderInstaller("gst", "/srv/app/staging", interval_ms=2000)
    >>> installer.bake("app.im").actions          # runs gst on the image and saves it
    >>> installer.live(port=12345).actions        # gst-remote into a running image
    >>> print(LoaderInstaller("pharo", "/srv/app/staging").snippet("/srv/app/staging/loader").snippet)

The loader sources go to `<staging>/loader/` for the live and snippet ways, so
the image reads them from its own machine.
"""

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import HotloadError
from .gst import Gst
from .loader_sources import loader_files, st_string

LOADER_FOLDER = "loader"

_FILE_IN = {
    "gst": "FileStream fileIn: {path}",
    "pharo": "CodeImporter evaluateFileNamed: {path}",
    "squeak": "FileStream fileIn: {path}",
}
_SAVE = {
    "gst": "ObjectMemory snapshot",
    "pharo": "Smalltalk snapshot: true andQuit: false",
    "squeak": "Smalltalk snapshot: true andQuit: false",
}


class InstallError(HotloadError):
    exit_code = 2


@dataclass
class InstallResult:
    dialect: str
    way: str  # baked | live | snippet | command
    staging: str
    actions: List[str] = field(default_factory=list)
    snippet: str = ""


class LoaderInstaller:
    def __init__(self, dialect: str, staging: str, interval_ms: int = 2000, priority: Optional[int] = None):
        if dialect not in _FILE_IN:
            raise InstallError(f"unknown dialect {dialect!r}: use gst, pharo or squeak")
        if interval_ms < 100:
            raise InstallError(f"poll interval {interval_ms} ms is too short: use at least 100 ms")
        self.dialect = dialect
        self.staging = staging
        self.interval_ms = interval_ms
        self.priority = priority

    def start_statement(self) -> str:
        priority = "nil" if self.priority is None else str(int(self.priority))
        return f"HLLoader startOn: {st_string(self.staging)} interval: {self.interval_ms} priority: {priority}"

    def file_in_statements(self, folder) -> List[str]:
        return [
            _FILE_IN[self.dialect].format(path=st_string(f"{str(folder).rstrip('/')}/{source.name}"))
            for source in loader_files(self.dialect)
        ]

    # -- the three ways -----------------------------------------------------------------

    def bake(self, image, vm: Optional[str] = None) -> InstallResult:
        """Load the loader into `image` at build time and save it; the previous file is kept as .bak."""
        image = Path(image)
        if not image.is_file():
            raise InstallError(f"image {image} does not exist")
        if self.dialect == "gst":
            return self._bake_gst(image)
        return self._bake_with_vm(image, vm)

    def _bake_gst(self, image: Path) -> InstallResult:
        backup = image.with_name(image.name + ".bak")
        shutil.copy2(image, backup)
        output = Gst().run(
            f"{self.start_statement()}!\nObjectMemory snapshot: {st_string(image)}!\n",
            image=image, files=loader_files("gst"),
        )
        priority = next((line for line in output.splitlines() if "polling" in line), "").strip()
        return InstallResult("gst", "baked", self.staging, [
            f"kept the previous image as {backup}",
            f"filed in {', '.join(p.name for p in loader_files('gst'))} and started the loader: {priority}",
            f"saved {image}; the loader polls again whenever the image starts",
        ])

    def _bake_with_vm(self, image: Path, vm: Optional[str]) -> InstallResult:
        script = image.with_name("hotload-install.st")
        statements = self.file_in_statements(loader_files(self.dialect)[0].parent) + [
            self.start_statement(),
            "Smalltalk snapshot: true andQuit: true",
        ]
        script.write_text(".\n".join(statements) + ".\n")
        if self.dialect == "pharo":
            command = [vm or "pharo", "--headless", str(image), "st", "--quit", str(script)]
        else:
            command = [vm or "squeak", "-headless", str(image), str(script)]
        shown = " ".join(command)
        if vm is None:
            return InstallResult(self.dialect, "command", self.staging, [
                f"wrote {script}",
                f"run this where the {self.dialect} VM is installed (or pass --vm PATH): {shown}",
            ])
        shutil.copy2(image, image.with_name(image.name + ".bak"))
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise InstallError(f"{shown} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        return InstallResult(self.dialect, "baked", self.staging, [f"ran {shown}", f"saved {image}"])

    def live(self, port: int, loader_folder: str, host: Optional[str] = None) -> InstallResult:
        """Load and start the loader in a running gst image served by `gst-remote --server`."""
        if self.dialect != "gst":
            raise InstallError("live installation uses gst-remote and works for GNU Smalltalk only; "
                               "for Pharo or Squeak use the printed snippet")
        remote = shutil.which("gst-remote")
        if not remote:
            raise InstallError("gst-remote is not installed (it comes with GNU Smalltalk)")
        code = ". ".join(self.file_in_statements(loader_folder) + [self.start_statement()]) + "."
        command = [remote, f"--port={port}", "--eval", code] + ([host] if host else [])
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or "error" in output.lower():
            raise InstallError(
                f"gst-remote on port {port} failed: {output or 'exit ' + str(result.returncode)}; "
                "is the image running under `gst-remote --server`?"
            )
        return InstallResult("gst", "live", self.staging, [
            f"filed the loader in from {loader_folder} through gst-remote on port {port}",
            f"started it: {self.start_statement()}",
            "the image on disk does not have the loader until it is saved (a save-only trigger does that)",
        ])

    def snippet(self, loader_folder: str) -> InstallResult:
        """The exact code to evaluate in a Playground (Pharo), Workspace (Squeak) or gst REPL."""
        statements = self.file_in_statements(loader_folder) + [self.start_statement(), _SAVE[self.dialect]]
        code = ".\n".join(statements) + "."
        return InstallResult(self.dialect, "snippet", self.staging, [
            f"the loader sources are in {loader_folder}",
            "evaluate the snippet below in the running image (select all, Do it)",
        ], code)
