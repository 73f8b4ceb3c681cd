"""The example Seaside counter app (examples/counter) in a GNU Smalltalk image.

    >>> app = CounterApp(Path("/tmp/demo"))
    >>> app.build()                 # Seaside on Swazoo + the loader, polling /tmp/demo/staging
    >>> app.start()                 # serves http://127.0.0.1:<port>/seaside/counter
    >>> status, page, url = app.get(app.url)
    >>> app.stop()

Used by `hotload demo`, the live tests and the loader benchmarks.
"""

import html
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from hotload.errors import HotloadError
from hotload.images.gst import Gst
from hotload.images.install import LoaderInstaller


def example_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # hotload/
    for candidate in (package / "examples" / "counter", package.parent / "examples" / "counter"):
        if (candidate / "build-image.st").is_file():
            return candidate
    raise HotloadError("the example app is missing from this installation; reinstall hotload")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def link(page: str, label: str) -> str:
    """The href of the anchor labelled `label` (e.g. '++')."""
    match = re.search(rf'href="([^"]+)">{re.escape(label)}<', page)
    if not match:
        raise HotloadError(f"the page has no {label!r} link")
    return html.unescape(match.group(1))


def count_of(page: str) -> int:
    return int(re.search(r"count: (-?\d+)", page).group(1))


def heading_of(page: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page)
    return match.group(1) if match else ""


class CounterApp:
    def __init__(self, folder: Path, port: Optional[int] = None, interval_ms: int = 1000):
        self.folder = Path(folder)
        self.image = self.folder / "app.im"
        self.staging = self.folder / "staging"
        self.port = port or free_port()
        self.interval_ms = interval_ms
        self.log = self.folder / "gst.log"
        self.process = None
        self.gst = Gst()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/seaside/counter"

    def build(self):
        """An image with Seaside on Swazoo and the loader (not the app: that is pushed)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, COUNTER_IMAGE=str(self.image), COUNTER_SOURCE="")
        self.gst.run("", files=[example_dir() / "build-image.st"], env=env)
        return LoaderInstaller("gst", str(self.staging), self.interval_ms).bake(self.image)

    def start(self, serve: bool = True, timeout: float = 30.0, before: str = "", env: Optional[dict] = None):
        """Start the image; `serve=False` relies on Swazoo restarting itself from a saved image.
        `before` is Smalltalk run first (statements ending in `!`), `env` extra environment variables."""
        code = before + ((example_dir() / "serve.st").read_text() if serve else "Semaphore new wait")
        env = dict(os.environ, COUNTER_PORT=str(self.port), **(env or {}))
        self.process = self.gst.start(self.image, code, self.log, env=env, folder=self.folder)
        try:
            self.wait_until(lambda: self.get(self.url)[0] in (200, 404), "Swazoo to answer", timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise HotloadError(f"gst exited while waiting for {what}; its log:\n{self._log_tail()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise HotloadError(f"timed out waiting for {what}; gst log:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    @staticmethod
    def get(url: str):
        """(status, body, final url); an HTTP error status is answered, not raised."""
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode("utf-8"), response.geturl()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace"), url
