"""Re-pushing an unchanged set: package bytes sent by `hotload push`, first push against a re-push.

    python benchmarks/repush.py [--packages 50] [--methods 80] [--rounds 3]

Starts a throwaway OpenSSH sshd on 127.0.0.1 (tests/sshd.py) and the test double of the loader
(tests/fake_loader.py, which writes `loaded` and keeps `packages/` as the real loader does) on a
staging directory, then runs `hotload push --wait` over SFTP: once for the first push of the set,
then `--rounds` times for the same, unchanged set, and once with `--force`. The bytes are counted
where they leave the client: every `SftpTransport.upload` (package files) and `write` (lock,
manifest, trigger, clock probe). Not part of the test suite.
"""

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cli_runner import run_in_process  # noqa: E402
from fake_loader import FakeLoader  # noqa: E402
from helpers import class_def, make_package, method  # noqa: E402
from sshd import start_sshd  # noqa: E402

from hotload.staging.transports.sftp import SftpTransport  # noqa: E402


class Counter:
    """Bytes and calls leaving the client through SftpTransport, by kind."""

    def __init__(self):
        self.package_bytes = self.record_bytes = self.uploads = self.writes = 0
        upload, write = SftpTransport.upload, SftpTransport.write
        counter = self

        def counted_upload(transport, local_path, name, progress=None):
            counter.uploads += 1
            counter.package_bytes += os.path.getsize(local_path)
            return upload(transport, local_path, name, progress)

        def counted_write(transport, name, data):
            counter.writes += 1
            counter.record_bytes += len(data)
            return write(transport, name, data)

        SftpTransport.upload, SftpTransport.write = counted_upload, counted_write

    def reset(self):
        self.package_bytes = self.record_bytes = self.uploads = self.writes = 0


def build_packages(folder: Path, count: int, methods: int) -> list:
    paths = []
    for number in range(count):
        name = f"Repush{number:02d}-Core"
        source = class_def(f"Repush{number:02d}Thing", category=name, ivars="a b c")
        source += "".join(  # a digest per method: sources that compress about as real ones do
            method(f"Repush{number:02d}Thing", f"value{m}\n\t^ a + {m} * b - '{hashlib.sha256(f'{number} {m}'.encode()).hexdigest()}' size")
            for m in range(methods)
        )
        paths.append(make_package(folder, name, source, author="bench"))
    return paths


def push(counter: Counter, url: str, paths, *options) -> dict:
    counter.reset()
    started = time.perf_counter()
    result = run_in_process("push", *map(str, paths), "--to", url, "--wait", "--json", *options)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"push failed ({result.returncode}): {result.stderr}")
    report = json.loads(result.stdout)
    return {
        "result": report["result"], "sent": len(report["packages"]), "skipped": len(report["skipped"]),
        "package_bytes": counter.package_bytes, "uploads": counter.uploads,
        "record_bytes": counter.record_bytes, "writes": counter.writes, "seconds": seconds,
    }


def line(label: str, run: dict) -> str:
    return (
        f"{label:<22} {run['result']:<11} sent {run['sent']:>3}, skipped {run['skipped']:>3}; "
        f"package bytes {run['package_bytes']:>8,} in {run['uploads']:>3} uploads; "
        f"other writes {run['writes']} ({run['record_bytes']:,} bytes); {run['seconds']:.2f} s"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=50)
    parser.add_argument("--methods", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotload-repush-") as work:
        work = Path(work)
        server = start_sshd(work / "sshd")
        os.environ["HOME"] = str(server.home)  # the test client's ssh config and key
        os.environ.pop("SSH_AUTH_SOCK", None)
        staging = work / "staging"
        loader = FakeLoader(staging, interval=0.05).start()
        try:
            paths = build_packages(work / "dist", args.packages, args.methods)
            total = sum(path.stat().st_size for path in paths)
            print(f"{len(paths)} packages, {total:,} bytes, over SFTP to a loopback sshd")
            counter = Counter()
            url = server.url(staging)
            first = push(counter, url, paths)
            print(line("first push", first))
            repushes = [push(counter, url, paths) for _ in range(args.rounds)]
            for number, run in enumerate(repushes, start=1):
                print(line(f"re-push {number} (unchanged)", run))
            forced = push(counter, url, paths, "--force")
            print(line("re-push with --force", forced))
            print(
                f"re-push sends {max(run['package_bytes'] for run in repushes):,} package bytes "
                f"(first push {first['package_bytes']:,}); median {statistics.median(r['seconds'] for r in repushes):.2f} s "
                f"against {first['seconds']:.2f} s"
            )
            if loader.errors:
                raise SystemExit(f"the fake loader failed: {loader.errors}")
        finally:
            loader.stop()
            server.stop()


if __name__ == "__main__":
    main()
