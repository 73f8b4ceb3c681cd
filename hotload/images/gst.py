"""Running GNU Smalltalk (`gst`, 3.2.5) for baking images and serving them.

    >>> gst = Gst()
    >>> gst.run("Transcript showCr: 3 printString", image="app.im")
    >>> server = gst.start("app.im", "Semaphore new wait", log="app.log")

Scripts are written in the bang format that gst reads from files: statements
separated by `!`. gst exits when its last script ends, so a serving script
must block (`Semaphore new wait`).
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from hotload.errors import HotloadError

INSTALL_HINT = (
    "GNU Smalltalk 3.2.5 is not installed. On Debian bookworm it comes from bullseye: "
    "run `sudo bash .ci/install-system` from the hotload sources (it adds a bullseye source pinned to "
    "priority 100 and installs gnu-smalltalk)"
)


class GstError(HotloadError):
    exit_code = 2


class Gst:
    def __init__(self, executable: str = "gst"):
        found = shutil.which(executable)
        if not found:
            raise GstError(INSTALL_HINT)
        self.executable = found

    def _script(self, code: str, folder: Optional[Path] = None) -> Path:
        handle, name = tempfile.mkstemp(prefix="hotload-", suffix=".st", dir=folder)
        with os.fdopen(handle, "w") as out:
            out.write(code if code.rstrip().endswith("!") else code + "!\n")
        return Path(name)

    def command(self, image=None, files: Iterable = ()) -> list:
        args = [self.executable]
        if image:
            args += ["-I", str(image)]
        return args + [str(f) for f in files]

    def run(self, code: str, image=None, files: Iterable = (), env=None, timeout: float = 300) -> str:
        """Run gst on `files` then `code`; answer its output, raise GstError when it fails."""
        script = self._script(code)
        try:
            result = subprocess.run(
                self.command(image, [*files, script]), capture_output=True, text=True, env=env,
                timeout=timeout, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise GstError(f"gst did not finish within {timeout:.0f} s") from None
        finally:
            script.unlink(missing_ok=True)
        output = result.stdout + result.stderr
        if result.returncode != 0 or "(Exception)>>signal" in output:
            raise GstError(f"gst failed (exit {result.returncode}):\n{output.strip()[-2000:]}")
        return output

    def start(self, image, code: str, log, env=None, folder=None) -> subprocess.Popen:
        """Start gst on `image` running `code` in the background, output to `log`."""
        script = self._script(code, folder)  # kept: gst reads it while it runs; it sits beside the image
        with open(log, "ab") as output:
            return subprocess.Popen(
                self.command(image, [script]), stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
