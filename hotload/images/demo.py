"""`hotload demo`: the example app upgraded from v1 to v2 while it serves, all on this machine.

    >>> Demo(Path("/tmp/hotload-demo"), say=print).run(keep=False)
"""

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from hotload.staging import protocol
from hotload.staging.deploy import Deploy, PushOptions
from hotload.errors import HotloadError
from hotload.images.example_app import CounterApp, count_of, example_dir, heading_of, link
from hotload.formats.mcz import read_mcz
from hotload.formats.pack import Packer
from hotload.formats.plan import LoadPlan
from hotload.staging.push import PushBatch


@dataclass
class DemoResult:
    url: str
    pid: Optional[int]
    steps: List[tuple] = field(default_factory=list)  # (what, seconds)


class Demo:
    def __init__(self, folder: Optional[Path] = None, say: Callable[[str], None] = print, port: Optional[int] = None):
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="hotload-demo-"))
        self.say = say
        self.port = port

    def run(self, keep: bool = False) -> DemoResult:
        if not shutil.which("unzip"):
            raise HotloadError("the loader reads .mcz files with `unzip`: install it (apt-get install unzip)")
        app = CounterApp(self.folder / "app", port=self.port, interval_ms=500)
        result = DemoResult(app.url, None)

        def step(what, action):
            started = time.monotonic()
            value = action()
            result.steps.append((what, time.monotonic() - started))
            self.say(f"{what} ({time.monotonic() - started:.2f} s)")
            return value

        versions = step("packed examples/counter v1 and v2", self._pack)
        step(f"built a GNU Smalltalk image with Seaside and the loader in {app.folder}", app.build)
        step("started the image", app.start)
        self.say(f"the app is at {app.url}")
        try:
            app.wait_until(lambda: (app.staging / protocol.LOADED).is_file(), "the loader's first poll")
            step("pushed v1 and the loader installed it", lambda: self._push(app.staging, versions[0]))
            _, page, session = app.get(app.url)
            for _ in range(2):
                _, page, session = app.get(link(page, "++"))
            self.say(f"page: {heading_of(page)!r}, count {count_of(page)} after clicking ++ twice in one session")
            step("pushed v2 while the app serves; the loader installed it and saved the image", lambda: self._push(app.staging, versions[1]))
            _, page, _ = app.get(session)
            self.say(f"page: {heading_of(page)!r}, count {count_of(page)}: the open session kept its state")
        except BaseException:
            app.stop()
            raise
        if keep:
            result.pid = app.process.pid
            self.say(f"the app keeps running at {app.url} (gst pid {result.pid}; stop it with `kill {result.pid}`)")
            self.say(f"push more with: hotload push PKG.mcz --to {app.staging} --wait")
        else:
            app.stop()
            self.say("stopped the app (use --keep to leave it running)")
        return result

    def _pack(self):
        dist = self.folder / "dist"
        packer = Packer(author="demo", message="hotload demo")
        return [packer.pack(example_dir() / version / "Counter-App.st", dist).path for version in ("v1", "v2")]

    def _push(self, staging: Path, path: Path):
        batch = PushBatch.of(LoadPlan.build([read_mcz(path)]))
        result = Deploy(batch, str(staging), self._workdir, PushOptions(wait=True, timeout=60)).run()
        if result.error is not None:
            raise result.error
        if not result.status.ok:
            raise HotloadError(f"the loader failed {result.status.failed_package}: {result.status.error}")
        return result.status

    def _workdir(self) -> Path:
        """Where the push keeps what it reads from the staging directory."""
        folder = self.folder / "work"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
