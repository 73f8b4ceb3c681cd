"""The Monticello loader on Etoys 5.0 (squeak-vm 4.10.2): a 2,000-method load under requests.

    python benchmarks/loader_etoys.py [--repeats 3] [--classes 20] [--methods 100] [--interval-ms 1000] [--keep DIR]

The Etoys variant of `bench_bigload` in benchmarks/loader.py (whose generator, push and statistics it
imports). Etoys has no web server (no Seaside, no Kom), so the image runs a minimal HTTP/1.0 responder
written for the benchmark (`RESPONDER`): a listener process at `Processor userBackgroundPriority` (where
Seaside and Kom serve on Squeak) and one process per connection at the same priority, answering every
request with a short fixed page whose <h1> is `HLBenchPage heading` (a method of the pushed package, so
the page shows when the new version is in).

Bakes the loader into a copy of the Etoys image with `hotload install-loader --dialect squeak` (as
tests/test_squeak.py does), starts it with the responder, then per round pushes a generated package
(`HLBench-App`: HLBenchPage plus `--classes` x `--methods` generated methods, bodies new each round)
while a client requests as fast as it can. Reports install (status timing), push -> page shows it, the
slowest request overlapping the load, request and failure counts, the median latency outside the load;
then min/median/max over the rounds and the targets of the gst benchmark: 0 failed, and the slowest
request at most install + 100 ms.

Run by hand, not by pytest (tests/test_squeak_requests.py runs a small load). Needs squeakvm and the
Etoys image (`sudo bash .ci/install-system`).
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the request loop
sys.path.insert(0, str(ROOT / "benchmarks"))

from loader import bench_classes, push_and_wait, stalls  # noqa: E402  (the gst benchmark's generator and helpers)

from hotload.staging import protocol  # noqa: E402
from hotload.images.example_app import CounterApp, free_port, heading_of  # noqa: E402
from request_loop import RequestLoop  # noqa: E402
from hotload.formats.pack import Packer  # noqa: E402
from hotload.staging.protocol import Heartbeat  # noqa: E402
from hotload.images.squeak import STARTS, Squeak  # noqa: E402

PACKAGE = "HLBench-App"
HEADING = "Counter etoys"  # RequestLoop counts a 200 whose <h1> starts with "Counter" as answered

#: The responder, filed in as the start script of the baked image (Squeak 3.x: non-closure blocks, so the
#: per-connection process is forked inside a method, whose activation holds its own socket).
RESPONDER = """Object subclass: #HLBenchResponder
	instanceVariableNames: ''
	classVariableNames: 'Listener'
	poolDictionaries: ''
	category: 'HLBench-Responder'!

!HLBenchResponder class methodsFor: 'serving'!
startOn: port
	Listener := Socket newTCP.
	Listener listenOn: port backlogSize: 64.
	[ [ true ] whileTrue: [ self accept ] ] forkAt: Processor userBackgroundPriority!

accept
	| connection |
	connection := [ Listener waitForAcceptFor: 10 ] on: Error do: [ :e | e return: nil ].
	connection isNil ifFalse: [ self serve: connection ]!

serve: aSocket
	[ self answer: aSocket ] forkAt: Processor userBackgroundPriority!

heading
	| page |
	page := Smalltalk at: #HLBenchPage ifAbsent: [ nil ].
	^ page isNil ifTrue: [ 'Counter etoys 0' ] ifFalse: [ page heading ]!

answer: aSocket
	| crlf request body status |
	crlf := String with: Character cr with: Character lf.
	[ request := ''.
	  [ (request indexOfSubCollection: crlf , crlf) = 0 and: [ aSocket isConnected ] ]
		whileTrue: [ request := request , (aSocket receiveDataTimeout: 5) ].
	  status := '200 OK'.
	  body := [ '<html><body><h1>' , self heading , '</h1></body></html>' ]
		on: Error do: [ :e | status := '500 Error'. e return: e messageText asString ].
	  aSocket sendData: 'HTTP/1.0 ' , status , crlf , 'Content-Type: text/html' , crlf
		, 'Content-Length: ' , body size printString , crlf , 'Connection: close' , crlf , crlf , body ]
		on: Error do: [ :e | e return: nil ].
	[ aSocket closeAndDestroy: 2 ] on: Error do: [ :e | e return: nil ]! !

HLBenchResponder startOn: PORT!
"""


def page_source(heading: str) -> str:
    return (
        f"Object subclass: #HLBenchPage\n\tinstanceVariableNames: ''\n\tclassVariableNames: ''\n"
        f"\tpoolDictionaries: ''\n\tcategory: '{PACKAGE}'!\n\n"
        f"!HLBenchPage class methodsFor: 'page'!\nheading\n\t^ '{heading}'\n! !\n\n"
    )


def bench_package(dist: Path, packer: Packer, heading: str, classes: int, methods: int, round_number: int):
    """Pack HLBench-App: HLBenchPage (answering `heading`) and the gst benchmark's generated classes."""
    source = dist / f"{PACKAGE}.st"
    generated = bench_classes(classes, methods, round_number).replace("category: 'Counter-App'", f"category: '{PACKAGE}'")
    source.write_text(page_source(heading) + generated)
    return packer.pack(source, dist)


class EtoysServer:
    """A copy of the Etoys image with the loader baked in, started with the responder on `port`."""

    def __init__(self, folder: Path, interval_ms: int = 1000, port: int = None):
        self.squeak = Squeak()
        self.folder = Path(folder)
        self.interval_ms = interval_ms
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.image = self.squeak.prepare(self.folder)
        self.staging = self.folder / "staging"
        self.staging.mkdir(mode=0o700, exist_ok=True)
        self.vm_log = self.folder / "vm.log"
        self.process = None

    def bake(self, timeout: float = 400) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "hotload", "install-loader", "--to", str(self.staging), "--dialect", "squeak",
             "--image", str(self.image), "--vm", str(self.squeak.vm), "--interval", str(self.interval_ms)],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"install-loader failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def heartbeat(self):
        try:
            return Heartbeat.parse((self.staging / protocol.HEARTBEAT).read_text())
        except (OSError, ValueError, protocol.ProtocolError):
            return None

    def start(self, timeout: float = 60) -> float:
        """Start the VM with the responder; wait for a fresh heartbeat and a 200 from the responder."""
        started = time.time()
        before = self.heartbeat()
        script = self.folder / "hotload-responder.st"
        script.write_text(RESPONDER.replace("PORT", str(self.port)))
        self.process = self.squeak.start(self.image, self.vm_log, script=script)
        deadline = time.monotonic() + timeout
        aborts = 0

        def ready():
            beat = self.heartbeat()
            if beat is None or beat.time < int(started) or (before is not None and beat.id == before.id):
                return False
            try:
                status, page, _ = CounterApp.get(self.url)
            except OSError:
                return False
            return status == 200 and heading_of(page).startswith(HEADING)

        while not ready():
            if self.process.poll() is not None:
                if self.process.returncode == -signal.SIGABRT and aborts < STARTS - 1:  # the start-up abort
                    aborts += 1
                    self.process = self.squeak.start(self.image, self.vm_log, script=script)
                    continue
                raise RuntimeError(f"the VM exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the image did not serve within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)
        return time.time() - started

    def stop(self):
        if self.process is not None:
            self.squeak.kill(self.process)
            self.process = None

    def tail(self) -> str:
        parts = []
        for path in (self.folder / "hotload.log", self.vm_log, self.folder / "My Squeak" / "SqueakDebug.log"):
            if path.is_file():
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)


class PatientLoop(RequestLoop):
    """RequestLoop with a client timeout of `timeout` seconds (RequestLoop's GET gives up after 10 s)."""

    def __init__(self, urls, timeout: float):
        super().__init__(urls)
        self.timeout = timeout

    def run(self):
        while not self.done.is_set():
            started, heading, ok = time.monotonic(), None, False
            try:
                with urllib.request.urlopen(self.urls[0], timeout=self.timeout) as response:
                    heading = heading_of(response.read().decode("utf-8"))
                    ok = response.status == 200 and heading.startswith(HEADING)
            except OSError:  # URLError, HTTPError, timeouts and connection errors
                pass
            self.records.append((started, time.monotonic(), ok, heading))


def load_under_requests(server: EtoysServer, dist: Path, packer: Packer, round_number: int, classes: int,
                        methods: int, settle: float = 3.0, client_timeout: float = 10.0) -> dict:
    """One round: push a generated package while a client requests as fast as it can (each request
    failing after `client_timeout` s without an answer); answer the figures."""
    heading = f"{HEADING} {round_number}"
    packed = bench_package(dist, packer, heading, classes, methods, round_number)
    hammer = RequestLoop([server.url]) if client_timeout == 10.0 else PatientLoop([server.url], client_timeout)
    hammer.start()
    time.sleep(settle)
    started, push_seconds, status, _ = push_and_wait(server, packed.path, timeout=600)
    finished = time.monotonic()
    time.sleep(settle)
    hammer.done.set()
    hammer.join(30)
    records = list(hammer.records)
    seen = next((end for start, end, ok, h in records if end > started and h == heading), None)
    during = [r for r in records if r[1] > started and r[0] < finished]
    outside = [r[1] - r[0] for r in records if r[1] < started or r[0] > finished]
    failed = [r for r in records if not r[2]]
    slow = max(during, key=lambda r: r[1] - r[0]) if during else None
    timings = status.timings_ms
    return dict(
        methods=packed.methods, size=packed.path.stat().st_size, push=push_seconds,
        verify=timings.get("verify", 0) / 1000, install=timings.get("install", 0) / 1000,
        save=timings.get("save", 0) / 1000, total=None if seen is None else seen - started,
        finished=finished - started, slowest=slow[1] - slow[0] if slow else 0.0,
        slowest_at=(slow[0] - started, slow[1] - started) if slow else None,
        requests=len(records), during=len(during), failed=len(failed), failures=failed[:5],
        outside=statistics.median(outside) if outside else float("nan"),
        stalls=[(a - started, b - started) for a, b in stalls(records, started - 1, finished + 1)[:3]],
    )


def spread(values, scale=1.0, digits=0):
    values = sorted(v * scale for v in values)
    f = f"{{:.{digits}f}}"
    return f"median {f.format(statistics.median(values))} (min {f.format(values[0])}, max {f.format(values[-1])})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--methods", type=int, default=100, help="methods per class")
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--client-timeout", type=float, default=10.0,
                        help="seconds a request waits for its answer (10: the gst benchmark's client)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="hotload-bench-etoys-"))
    folder.mkdir(parents=True, exist_ok=True)
    server = EtoysServer(folder / "app", interval_ms=args.interval_ms)
    try:
        t0 = time.monotonic()
        server.bake()
        print(f"baked the loader into Etoys in {time.monotonic() - t0:.1f} s; image "
              f"{server.image.stat().st_size / 1e6:.1f} MB; started serving in {server.start():.1f} s")
        print(f"load average before: {os.getloadavg()}")
        dist = folder / "dist"
        dist.mkdir(exist_ok=True)
        packer = Packer(author="bench", package_name=PACKAGE)
        n = args.classes * args.methods
        print(f"\n== Etoys: {n}-method hot load under requests ({args.repeats} loads, interval {args.interval_ms} ms) ==")
        rows = []
        for number in range(1, args.repeats + 1):
            row = load_under_requests(server, dist, packer, number, args.classes, args.methods,
                                      client_timeout=args.client_timeout)
            rows.append(row)
            total = "never seen" if row["total"] is None else f"{row['total']:.3f} s"
            print(f"  load {number}: {row['methods']} methods, {row['size']} bytes .mcz: verify {row['verify'] * 1000:.0f} ms, "
                  f"install {row['install'] * 1000:.0f} ms, save {row['save'] * 1000:.0f} ms; push -> page shows it {total}, "
                  f"-> status seen {row['finished']:.3f} s")
            at = row["slowest_at"]
            print(f"    requests {row['requests']} ({row['during']} during the load), failed {row['failed']}; slowest during "
                  f"the load {row['slowest'] * 1000:.0f} ms" + (f" at {at[0]:.3f}..{at[1]:.3f} s" if at else "")
                  + f"; median outside the load {row['outside'] * 1000:.1f} ms")
            print("    longest stalls (no response completed): "
                  + ", ".join(f"{b - a:.3f} s at {a:.3f}..{b:.3f}" for a, b in row["stalls"]))
            if row["failures"]:
                print(f"    failures: {row['failures']}")
            print(f"    load average: {os.getloadavg()}")
        print(f"\n  install: {spread([r['install'] for r in rows], 1000)} ms; verify: {spread([r['verify'] for r in rows], 1000)} ms; "
              f"save: {spread([r['save'] for r in rows], 1000)} ms")
        seen = [r["total"] for r in rows if r["total"] is not None]
        if seen:
            print(f"  push -> page shows it: {spread(seen, 1, 2)} s")
        print(f"  slowest request during the load: {spread([r['slowest'] for r in rows], 1000)} ms; "
              f"minus install: {spread([r['slowest'] - r['install'] for r in rows], 1000)} ms")
        print(f"  requests: {spread([r['requests'] for r in rows])} (during the load {spread([r['during'] for r in rows])}); "
              f"median outside the load {spread([r['outside'] for r in rows], 1000, 1)} ms")
        failed = sum(r["failed"] for r in rows)
        print(f"  target 0 failed: {'met' if failed == 0 else 'MISSED'} ({failed} failed)")
        ok = all(r["slowest"] <= r["install"] + 0.1 for r in rows)
        print(f"  target slowest <= install + 100 ms: {'met' if ok else 'MISSED'} ("
              + ", ".join(f"{r['slowest'] * 1000:.0f} vs {(r['install'] + 0.1) * 1000:.0f} ms" for r in rows) + ")")
        print(f"  load average after: {os.getloadavg()}")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
