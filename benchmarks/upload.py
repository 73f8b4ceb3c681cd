"""Upload throughput: hotload's SFTP push against OpenSSH's `sftp` client, same files, same run.

    python benchmarks/upload.py [--files 16] [--size-mb 4] [--rounds 3]

Starts a throwaway OpenSSH sshd on 127.0.0.1 (tests/sshd.py), builds the
packages once, then alternates `sftp -b` (a batch of `put`s) and
`hotload.push.Pusher` over `SftpTransport`, and prints the medians and the
ratio hotload/OpenSSH. Not part of the test suite.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import class_def, make_package, method  # noqa: E402
from sshd import start_sshd  # noqa: E402

from hotload.mcz import read_mcz  # noqa: E402
from hotload.plan import LoadPlan  # noqa: E402
from hotload.push import Pusher  # noqa: E402
from hotload.targets import parse_target  # noqa: E402
from hotload.transports.sftp import SftpTransport  # noqa: E402


GCM = "aes128-gcm@openssh.com"


def build_packages(folder: Path, count: int, size: int) -> list:
    """`count` packages of about `size` bytes: real source plus an incompressible stored `snapshot.bin`."""
    paths = []
    for number in range(count):
        name = f"Bench{number:02d}-Core"
        source = class_def(f"Bench{number:02d}Thing", category=name, ivars="a b c")
        source += "".join(
            method(f"Bench{number:02d}Thing", f"value{m}\n\t\"answer a value\"\n\t^ a + {m} * b - c") for m in range(300)
        )
        path = make_package(folder, name, source, author="bench")
        missing = size - path.stat().st_size
        if missing > 0:
            with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
                archive.writestr("snapshot.bin", os.urandom(missing))
        paths.append(path)
    return paths


def time_openssh(server, paths, remote_dir: str, workdir: Path, cipher: str = "") -> float:
    batch = workdir / "sftp-batch"
    lines = [f"mkdir {remote_dir}"]
    lines += [f"put {p} {remote_dir}/{p.name}" for p in paths]
    batch.write_text("\n".join(lines) + "\n")
    command = [
        "sftp", "-q", "-b", str(batch), "-F", str(server.home / ".ssh" / "config"),
        "-o", f"UserKnownHostsFile={server.home / '.ssh' / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
    ]
    if cipher:
        command += ["-c", cipher]
    command.append(server.alias)
    started = time.perf_counter()
    subprocess.run(command, env=server.env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_hotload(server, plan, remote_dir: str):
    """Seconds, and the batch folder the files are in (protocol 2 publishes each batch as `<batch>/`)."""
    started = time.perf_counter()
    with SftpTransport.connect(parse_target(f"{server.alias}:{remote_dir}")) as transport:
        result = Pusher(transport).push(plan)
    return time.perf_counter() - started, Path(remote_dir) / result.batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if not shutil.which("sftp"):
        sys.exit("OpenSSH's sftp client is not installed")

    workdir = Path(tempfile.mkdtemp(prefix="hotload-upload-bench-"))
    server = start_sshd(workdir / "ssh")
    try:
        os.environ["HOME"] = str(server.home)  # ~/.ssh/config, known_hosts and key of the fixture
        os.environ.pop("SSH_AUTH_SOCK", None)
        paths = build_packages(workdir / "packages", options.files, int(options.size_mb * 1024 * 1024))
        total = sum(p.stat().st_size for p in paths)
        plan = LoadPlan.build([read_mcz(p) for p in paths])
        remote = workdir / "remote"
        remote.mkdir()
        print(f"{len(paths)} files, {total / 1e6:.1f} MB, {options.rounds} rounds each, alternating")

        # OpenSSH with its own cipher choice (the peer), and with the cipher hotload prefers.
        runners = {
            "OpenSSH sftp": lambda where: (time_openssh(server, paths, where, workdir), Path(where)),
            f"OpenSSH sftp -c {GCM}": lambda where: (time_openssh(server, paths, where, workdir, GCM), Path(where)),
            "hotload push": lambda where: time_hotload(server, plan, where),
        }
        times = {label: [] for label in runners}
        for round_number in range(options.rounds):
            # Fresh directories each round, checked and removed afterwards (not timed).
            line = []
            for number, (label, run) in enumerate(runners.items()):
                where = remote / str(number)
                seconds, arrived = run(str(where))
                times[label].append(seconds)
                for path in paths:
                    if (arrived / path.name).stat().st_size != path.stat().st_size:
                        sys.exit(f"{label}: {path.name} arrived incomplete")
                shutil.rmtree(where)
                line.append(f"{label} {times[label][-1]:.2f} s")
            print(f"  round {round_number + 1}: " + ", ".join(line))

        rates = {label: total / 1e6 / statistics.median(values) for label, values in times.items()}
        for label, values in times.items():
            print(f"{label:<42} {statistics.median(values):6.2f} s {rates[label]:7.1f} MB/s (median)")
        for label in list(runners)[:2]:
            per_round = [peer / ours for peer, ours in zip(times[label], times["hotload push"])]
            print(f"ratio hotload / {label}: {rates['hotload push'] / rates[label]:.2f}x (of the medians); per round "
                  f"min {min(per_round):.2f}x, median {statistics.median(per_round):.2f}x, max {max(per_round):.2f}x")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
