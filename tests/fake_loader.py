"""TEST DOUBLE ONLY: a stand-in for the in-image loader, written from docs/protocol.md.

It lets client tests exercise `push --wait` without a Smalltalk image. It checks
sizes and SHA-256 but installs nothing. Never shipped: the real loader is smalltalk/.
Like the real one (Hotload-Loader.st `rememberLoaded:`, `keepPackagesOf:`, `writeLoaded`) it
writes `loaded` at its first poll and after every batch, and keeps each loaded `.mcz` in
`packages/`; `record=False` plays an older loader that does neither.

    loader = FakeLoader(staging).start()
    ...
    loader.stop()
    loader.batches   # manifests of the batches it loaded (or failed), in order
    loader.saves     # save-only triggers it took
    loader.errors    # anything that went wrong inside a poll (tests assert it stays empty)
    loader.loaded    # package name -> its `package` row of the loaded record ("the image")
"""

import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
import zipfile
from pathlib import Path

from hotload.staging import protocol
from hotload.errors import HotloadError
from hotload.staging.protocol import Manifest, Status, render_record


class FakeLoader:
    def __init__(
        self, staging: Path, interval: float = 0.1, fail_package: str = "", loader_id: str = "fake0001",
        consume: bool = True, record: bool = True,
    ):
        self.staging = Path(staging)
        self.loader_id = loader_id
        self.interval = interval
        self.fail_package = fail_package
        self.consume = consume  # False: a live loader that never takes a trigger (it beats only)
        self.record = record  # False: an older loader, with no `loaded` and no `packages/`
        self.loaded = {}
        self.batches = []
        self.rejected = []  # batch ids of triggers it could not act on (missing folder, bad manifest)
        self.saves = 0
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.staging.mkdir(parents=True, exist_ok=True)
        self._write_loaded()  # at its first poll
        self._beat()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def wait_idle(self, timeout=10.0):
        """Wait until no trigger is pending (the loader took it)."""
        deadline = time.time() + timeout
        while os.path.lexists(self.staging / protocol.TRIGGER) and time.time() < deadline:
            time.sleep(0.02)
        return not os.path.lexists(self.staging / protocol.TRIGGER)

    def _write(self, name, text):
        temporary = self.staging / f".hotload-loader-{secrets.token_hex(4)}"
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
            try:
                self._poll()
            except Exception as error:  # noqa: BLE001 - a poll never stops the loader
                self.errors.append(repr(error))
            time.sleep(self.interval)

    def _poll(self):
        self._beat()
        trigger = self.staging / protocol.TRIGGER
        if not self.consume or not os.path.lexists(trigger):
            return
        if not stat.S_ISREG(os.lstat(trigger).st_mode):
            return  # never opened (reported as a problem by the real loader)
        text = trigger.read_text()
        try:
            batch = protocol.parse_trigger(text)
        except HotloadError as error:
            self._status(Status(batch="-", result="failed", error=str(error)))
            trigger.unlink()
            return
        if batch is None:
            self.saves += 1
            trigger.unlink()  # the real loader deletes load first, then saves and appends the history line
            now = time.time()
            with open(self.staging / protocol.HISTORY, "a") as history:
                history.write(f"{int(now)}\t{protocol.iso(now)}\t-\tsaved\t/fake/app.im 100 -> 90 bytes\n")
            return
        else:
            self._take(batch)
        trigger.unlink()  # last (docs/protocol.md, The loader, 7 and 8)

    def _take(self, batch: str):
        folder = self.staging / batch
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise HotloadError(f"{batch} is not a folder")
            manifest = Manifest.parse((folder / protocol.MANIFEST).read_text())
            if manifest.batch != batch:
                raise HotloadError("the manifest names another batch")
        except (OSError, HotloadError) as error:
            self.rejected.append(batch)
            self._status(Status(batch=batch, result="failed", error=f"rejected: {error}"))
            return
        status = Status(batch=manifest.batch, result="ok")
        for entry in manifest.entries:
            data = (folder / entry.file).read_bytes()
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256 or entry.file == self.fail_package:
                status.result, status.failed_package, status.error = "failed", entry.version, "checksum or forced failure"
                break
            status.loaded.append(entry.version)
        self.batches.append(manifest)
        if status.ok:
            self._remember(manifest, folder)
            self._keep_packages(manifest, folder)
            for entry in manifest.entries:
                if (folder / entry.file).exists():
                    (folder / entry.file).unlink()
            (folder / protocol.MANIFEST).unlink()
            folder.rmdir()
        else:
            failed = self.staging / protocol.FAILED
            failed.mkdir(exist_ok=True)
            shutil.move(str(folder), str(failed / batch))
            (failed / batch / "reason").write_text(status.error + "\n")
        self._write_loaded()
        self._status(status)

    # -- the loaded record and packages/ (Hotload-Loader.st) ------------------------------------

    @staticmethod
    def _package_name(path: Path, version: str) -> str:
        """The `package` member's name, as HLPackageEntry reads it; else from the version name."""
        with zipfile.ZipFile(path) as archive:
            match = re.search(r"name\s+'((?:[^']|'')*)'", archive.read("package").decode("utf-8", "replace"))
        return match.group(1).replace("''", "'") if match else version.rsplit("-", 1)[0]

    def _remember(self, manifest, folder: Path):
        now = int(time.time())
        for entry in manifest.entries:
            name = self._package_name(folder / entry.file, entry.version)
            self.loaded[name] = (
                "package", name, entry.version, entry.file, entry.size, entry.sha256, manifest.batch, now, protocol.iso(now)
            )

    def _keep_packages(self, manifest, folder: Path):
        """Move the batch's loaded files into packages/ and delete those of versions no longer loaded."""
        if not self.record:
            return
        kept = self.staging / protocol.PACKAGES
        if not os.path.lexists(kept):
            kept.mkdir()
        if not stat.S_ISDIR(os.lstat(kept).st_mode):
            return  # never through a link (reported by the real loader)
        names = {row[3] for row in self.loaded.values()}
        for row in self.loaded.values():
            source, target = folder / row[3], kept / row[3]
            if row[6] == manifest.batch and source.is_file() and (not os.path.lexists(target) or target.is_file()):
                source.replace(target)
        for path in kept.iterdir():
            if protocol._PACKAGE_FILE.match(path.name) and path.name not in names and path.is_file():
                path.unlink()

    def _write_loaded(self):
        if not self.record:
            return
        target = self.staging / protocol.LOADED
        if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
            return  # never through a link or into a FIFO
        rows = [("image", "fake.im")] + [self.loaded[name] for name in sorted(self.loaded)]
        self._write(protocol.LOADED, render_record(protocol.LOADED, rows))

    def _status(self, status: Status):
        rows = [("batch", status.batch), ("result", status.result)] + [("loaded", v) for v in status.loaded]
        if status.failed_package:
            rows.append(("failed-package", status.failed_package))
        if status.error:
            rows.append(("error", status.error))
        rows.append(("timing", "install", 1))
        self._write(protocol.STATUS, render_record("status", rows))
        now = time.time()
        with open(self.staging / protocol.HISTORY, "a") as history:
            history.write(f"{int(now)}\t{protocol.iso(now)}\t{status.batch}\t{status.result}\t{status.error or '-'}\n")
