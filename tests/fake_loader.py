"""TEST DOUBLE ONLY: a stand-in for the in-image loader, written from docs/protocol.md.

It lets client tests exercise `push --wait` without a Smalltalk image. It checks
sizes and SHA-256 but installs nothing. Never shipped: the real loader is smalltalk/.
"""

import hashlib
import threading
import time
from pathlib import Path

from hotload import protocol
from hotload.protocol import Manifest, Status, render_record


class FakeLoader:
    def __init__(self, staging: Path, interval: float = 0.1, fail_package: str = "", loader_id: str = "fake0001"):
        self.staging = Path(staging)
        self.loader_id = loader_id
        self.interval = interval
        self.fail_package = fail_package
        self.batches = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.staging.mkdir(parents=True, exist_ok=True)
        self._beat()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _write(self, name, text):
        temporary = self.staging / f"{name}.tmp"
        temporary.write_text(text)
        temporary.replace(self.staging / name)

    def _beat(self):
        now = time.time()
        self._write(
            protocol.HEARTBEAT,
            render_record("heartbeat", [
                ("time", int(now), protocol.iso(now)),
                ("loader", "fake", "priority 0", f"interval {int(self.interval * 1000)}", "image fake.im"),
                ("id", self.loader_id),
            ]),
        )

    def _run(self):
        while not self._stop.is_set():
            self._beat()
            trigger = self.staging / protocol.TRIGGER
            if trigger.exists():
                batch = protocol.parse_trigger(trigger.read_text())
                if batch is not None:
                    folder = self.staging / batch
                    self._take(folder, Manifest.parse((folder / protocol.MANIFEST).read_text()))
                trigger.unlink()
            time.sleep(self.interval)

    def _take(self, folder: Path, manifest: Manifest):
        status = Status(batch=manifest.batch, result="ok")
        for entry in manifest.entries:
            data = (folder / entry.file).read_bytes()
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256 or entry.file == self.fail_package:
                status.result, status.failed_package, status.error = "failed", entry.version, "checksum or forced failure"
                break
            status.loaded.append(entry.version)
        for entry in manifest.entries:
            (folder / entry.file).unlink()
        (folder / protocol.MANIFEST).unlink()
        folder.rmdir()
        self.batches.append(manifest)
        rows = [("batch", status.batch), ("result", status.result)] + [("loaded", v) for v in status.loaded]
        if status.failed_package:
            rows += [("failed-package", status.failed_package), ("error", status.error)]
        rows.append(("timing", "install", 1))
        self._write(protocol.STATUS, render_record("status", rows))
