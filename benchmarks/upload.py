"""Upload: hotload's SFTP push against OpenSSH's `sftp` client, same files, same run, near and far.

    python benchmarks/upload.py [--files 16] [--size-mb 4] [--small 50] [--rounds 3] [--rtt-ms 50]

Starts a throwaway OpenSSH sshd on 127.0.0.1 (tests/sshd.py) and, for the distant runs, a relay in
front of it that holds every chunk for half the round trip in each direction (tests/relay.py; this
kernel has no netem). Host keys are checked strictly on both paths (the relay's port has its own
known_hosts line). Three sets, each pushed by `sftp -b` (a `mkdir` and one `put` per file) and by
`hotload.staging.deploy.Deploy` over `SftpTransport` (what `hotload push FILES --to host:path` runs: the
reads before the push, then `Pusher`), into a new folder each time, alternating, on loopback and through
the relay:

- `big`: `--files` packages of `--size-mb` MB (throughput);
- `small`: `--small` packages of 16 KB (per-file cost);
- `one`: one small package (the fixed cost of a push, connection included).

For each it prints min / median / max seconds, the ratio per round (sftp seconds / hotload seconds:
above 1.0x hotload is faster), and through the relay the round trips each client waited for (the
times it spoke again after a silence, seen by the relay) and hotload's blocking SFTP waits. The
machine load (/proc/loadavg) is printed before and after. Not part of the test suite.
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
from relay import Relay  # noqa: E402
from sshd import start_sshd  # noqa: E402

from hotload.formats.mcz import read_mcz  # noqa: E402
from hotload.formats.plan import LoadPlan  # noqa: E402
from hotload.staging.deploy import Deploy, PushOptions  # noqa: E402
from hotload.staging.push import PushBatch  # noqa: E402
from hotload.staging.transports.sftp import SftpTransport  # noqa: E402


def build_packages(folder: Path, count: int, size: int, prefix: str = "Bench", methods: int = 300) -> list:
    """`count` packages of about `size` bytes: real source plus an incompressible stored `snapshot.bin`."""
    paths = []
    for number in range(count):
        name = f"{prefix}{number:02d}-Core"
        source = class_def(f"{prefix}{number:02d}Thing", category=name, ivars="a b c")
        source += "".join(
            method(f"{prefix}{number:02d}Thing", f"value{m}\n\t\"answer a value\"\n\t^ a + {m} * b - c") for m in range(methods)
        )
        path = make_package(folder, name, source, author="bench")
        missing = size - path.stat().st_size
        if missing > 0:
            with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
                archive.writestr("snapshot.bin", os.urandom(missing))
        paths.append(path)
    return paths


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def time_openssh(server, alias: str, paths, remote_dir: str, workdir: Path) -> float:
    batch = workdir / "sftp-batch"
    lines = [f"mkdir {remote_dir}"]
    lines += [f"put {p} {remote_dir}/{p.name}" for p in paths]
    batch.write_text("\n".join(lines) + "\n")
    command = [
        "sftp", "-q", "-b", str(batch), "-F", str(server.home / ".ssh" / "config"),
        "-o", f"UserKnownHostsFile={server.home / '.ssh' / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", alias,
    ]
    started = time.perf_counter()
    subprocess.run(command, env=server.env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_hotload(alias: str, plan, remote_dir: str, counters: dict, workdir: Path):
    """Seconds, and the batch folder the files are in (protocol 2 publishes each batch as `<batch>/`)."""
    close = SftpTransport.close

    def counting_close(transport):
        counters["waits"] = getattr(transport, "waits", 0)
        close(transport)

    SftpTransport.close = counting_close
    try:
        started = time.perf_counter()
        result = Deploy(PushBatch.of(plan), f"{alias}:{remote_dir}", lambda: workdir, PushOptions()).run()
        seconds = time.perf_counter() - started
    finally:
        SftpTransport.close = close
    if result.push is None:
        sys.exit(f"hotload did not push: {result.result} {result.error or ''}")
    return seconds, Path(remote_dir) / result.push.batch


def add_alias(server, alias: str, port: int):
    """An ~/.ssh/config alias to the sshd through `port`, with the host key trusted there (strict checking)."""
    ssh = server.home / ".ssh"
    kind, key = (ssh / "known_hosts").read_text().split()[1:3]
    with open(ssh / "known_hosts", "a") as known:
        known.write(f"[127.0.0.1]:{port} {kind} {key}\n")
    with open(ssh / "config", "a") as config:
        config.write(f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User {server.user}\n"
                     f"    IdentityFile {ssh / 'id_ed25519'}\n")


def spread(values, unit="", digits=2) -> str:
    return f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f} / {max(values):.{digits}f}{unit}"


def run_set(label, server, alias, paths, plan, remote: Path, workdir: Path, rounds: int, relay=None):
    total = sum(p.stat().st_size for p in paths)
    times = {"sftp": [], "hotload": []}
    turns = {"sftp": [], "hotload": []}
    waits = []
    for round_number in range(rounds):
        for runner in ("sftp", "hotload"):  # alternating, fresh directories, checked (not timed)
            where = remote / f"{''.join(c if c.isalnum() else '-' for c in label)}-{runner}-{round_number}"
            if runner == "sftp":
                seconds, arrived = time_openssh(server, alias, paths, str(where), workdir), where
            else:
                counters = {}
                seconds, arrived = time_hotload(alias, plan, str(where), counters, workdir)
                waits.append(counters["waits"])
            times[runner].append(seconds)
            if relay is not None:
                turns[runner].append(relay.turns())
            for path in paths:
                if (arrived / path.name).stat().st_size != path.stat().st_size:
                    sys.exit(f"{runner}: {path.name} arrived incomplete")
            shutil.rmtree(where)
    ratios = [peer / ours for peer, ours in zip(times["sftp"], times["hotload"])]
    print(f"{label}: {len(paths)} files, {total / 1e6:.2f} MB, {rounds} rounds")
    for runner in ("sftp", "hotload"):
        rate = total / 1e6 / statistics.median(times[runner])
        line = f"  {runner:<8} s min/median/max {spread(times[runner])}  ({rate:.1f} MB/s median)"
        if relay is not None:
            line += f"  round trips waited {spread(turns[runner], digits=0)}"
        if runner == "hotload":
            line += f"  SFTP waits {spread(waits, digits=0)}"
        print(line)
    print(f"  ratio sftp/hotload per round: min/median/max {spread(ratios, 'x')}")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round trip through the relay; 0 skips it")
    parser.add_argument("--sets", default="big,small,one", help="which sets, comma-separated")
    parser.add_argument("--where", default="near,far", help="loopback (near), the relay (far), or both")
    options = parser.parse_args()
    if not shutil.which("sftp"):
        sys.exit("OpenSSH's sftp client is not installed")

    workdir = Path(tempfile.mkdtemp(prefix="hotload-upload-bench-"))
    server = start_sshd(workdir / "ssh")
    relay = None
    try:
        os.environ["HOME"] = str(server.home)  # ~/.ssh/config, known_hosts and key of the fixture
        os.environ.pop("SSH_AUTH_SOCK", None)
        sets = {}
        wanted = options.sets.split(",")
        if "big" in wanted:
            sets["big"] = build_packages(workdir / "big", options.files, int(options.size_mb * 1024 * 1024))
        if "small" in wanted:
            sets["small"] = build_packages(workdir / "small", options.small, 16 * 1024, prefix="Small", methods=20)
        if "one" in wanted:
            sets["one"] = build_packages(workdir / "one", 1, 0, prefix="One", methods=20)
        remote = workdir / "remote"
        remote.mkdir()
        places = []
        if "near" in options.where.split(","):
            places.append(("loopback", server.alias, None))
        if "far" in options.where.split(",") and options.rtt_ms > 0:
            relay = Relay(server.port, delay=options.rtt_ms / 2000)
            add_alias(server, "hotload-far", relay.port)
            places.append((f"{options.rtt_ms:.0f} ms round trip", "hotload-far", relay))
        print(f"load average before: {loadavg()}")
        for place, alias, through in places:
            for label, paths in sets.items():
                plan = LoadPlan.build([read_mcz(p) for p in paths])
                run_set(f"{label}, {place}", server, alias, paths, plan, remote, workdir, options.rounds, through)
                print(f"  load average: {loadavg()}")
    finally:
        if relay is not None:
            relay.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
