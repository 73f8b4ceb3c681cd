"""The GNU Smalltalk loader against a real image: push-to-serving, a 2,000-method load under traffic, idle cost.

    python benchmarks/loader.py [--bench push|bigload|idle|all] [--repeats 9] [--big-repeats 3]
                                [--idle-seconds 60] [--interval-ms 1000] [--keep DIR]

Builds one image with `hotload.images.example_app.CounterApp` (Seaside on Swazoo + the loader, polling
every `--interval-ms`), starts it and pushes examples/counter v1, then:

- push:    pushes v2, v1, v2, ... (`hotload.staging.deploy.Deploy`, as `push --wait`, after a random wait of 0..interval so
           the push lands at a random phase of the poll) and times start of push -> first GET whose page
           shows the new heading. Peer, same run: a restart deploy (kill gst, put an image that already has
           the other version in place, start it with serve.st) timed until the first page with that version.
- bigload: a generated Counter-App package with 2,000 more methods (20 classes x 100) and a new heading,
           pushed while a background client requests a fresh page and an open session as fast as it can.
           Reports `timing install`, the total until the page shows it, the slowest request overlapping
           the load, the slowest request still open when the save started (its window from `timing save`),
           request and failure counts, and the latency median outside the load.
- idle:    CPU of the gst process (utime+stime from /proc/<pid>/stat) over `--idle-seconds` with the
           loader idle, then with the same image started by a script that runs `HLLoader stop` first;
           then `strace -f -c` and `strace -f -tt -e trace=file,desc` of both for a few poll intervals.
           Needs strace (`apt-get install -y strace`) and permission to ptrace the gst process.

Run by hand, not by pytest. Needs gst 3.2.5, unzip and (for fast verification) sha256sum.
"""

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the request loop

from hotload.staging.deploy import Deploy, PushOptions  # noqa: E402
from hotload.images.example_app import CounterApp, example_dir, heading_of, link  # noqa: E402
from request_loop import RequestLoop  # noqa: E402
from hotload.formats.mcz import read_mcz  # noqa: E402
from hotload.formats.pack import Packer  # noqa: E402
from hotload.formats.plan import LoadPlan  # noqa: E402
from hotload.staging.push import PushBatch  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- helpers ---------------------------------------------------------------------------------------


def summary(values, unit="s", scale=1.0):
    values = [v * scale for v in values]
    return f"median {statistics.median(values):.3f} {unit}, min {min(values):.3f}, max {max(values):.3f} (n={len(values)})"


def page_heading(url):
    try:
        status, page, _ = CounterApp.get(url)
    except (OSError, urllib.error.URLError):
        return None
    return heading_of(page) if status == 200 else None


def wait_heading(url, wanted, started, timeout=120.0, pause=0.01):
    """Seconds from `started` (monotonic) until a GET of `url` answers a page headed `wanted`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page_heading(url) == wanted:
            return time.monotonic() - started
        time.sleep(pause)
    raise RuntimeError(f"the page never showed {wanted!r}")


def push_and_wait(app, path, timeout=300.0, while_loading=lambda started: None):
    """Push one package as `push --wait` does (downgrades allowed: v1 follows v2) and wait for the loader.

    `while_loading(started)` runs once the batch is triggered, before the wait. Answers (push start, the
    upload's seconds, the loader's status, what while_loading answered); the push starts with the upload.
    """
    marks = {}
    workdir = Path(app.folder) / "push-work"
    workdir.mkdir(parents=True, exist_ok=True)
    result = Deploy(
        PushBatch.of(LoadPlan.build([read_mcz(path)])), str(app.staging), lambda: workdir,
        PushOptions(wait=True, timeout=timeout, allow_downgrade=True, poll=0.02),
        on_upload=lambda total: marks.update(started=time.monotonic()),
        on_pushed=lambda pushed: marks.update(during=while_loading(marks["started"])),
    ).run()
    if result.error is not None:
        raise RuntimeError(f"the push failed: {result.error}")
    if not result.status.ok:
        raise RuntimeError(f"the loader failed {result.status.failed_package}: {result.status.error}")
    return marks["started"], result.push.seconds, result.status, marks.get("during")


def launch(app, code):
    """Start gst on app.image running `code`, without waiting."""
    env = dict(os.environ, COUNTER_PORT=str(app.port))
    app.process = app.gst.start(app.image, code, app.log, env=env, folder=app.folder)


def serve_code():
    return (example_dir() / "serve.st").read_text()


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def counter_source(heading, extra=""):
    text = (example_dir() / "v2" / "Counter-App.st").read_text()
    text = text.replace("html heading: 'Counter v2'", f"html heading: '{heading}'")
    assert heading in text
    return text + extra


def bench_classes(classes, methods, round_number):
    """`classes` x `methods` methods of a few lines; bodies change with `round_number`."""
    out = []
    for c in range(classes):
        name = f"HLBench{c:02d}"
        out.append(
            f"Object subclass: #{name}\n\tinstanceVariableNames: 'a b c'\n\tclassVariableNames: ''\n"
            f"\tpoolDictionaries: ''\n\tcategory: 'Counter-App'!\n\n!{name} methodsFor: 'generated'!\n"
        )
        for m in range(methods):
            out.append(
                f"value{m}: x\n\t\"generated method {m} of {name}, round {round_number}\"\n\t| y |\n"
                f"\ty := x * {m} + {round_number}.\n\ta := y.\n"
                f"\t^ y > 100 ifTrue: [ y - b ] ifFalse: [ y + c ]\n!"
            )
        out.append(" !\n\n")
    return "".join(out)


# -- 1. push to new code serving -------------------------------------------------------------------


def bench_push(app, versions, repeats, folder):
    print(f"\n== 1. push -> new code serving (interval {app.interval_ms} ms, {repeats} pushes) ==")
    rng = random.Random(1)
    totals, pushes, verify, install, save = [], [], [], [], []
    images = {}
    current = "Counter v1"
    for number in range(repeats):
        target = "Counter v2" if current == "Counter v1" else "Counter v1"
        path = versions[target]
        time.sleep(rng.uniform(0, app.interval_ms / 1000))  # a random phase against the poll
        started, push_seconds, status, total = push_and_wait(
            app, path, while_loading=lambda started: wait_heading(app.url, target, started),
        )
        totals.append(total)
        pushes.append(push_seconds)
        verify.append(status.timings_ms.get("verify", 0) / 1000)
        install.append(status.timings_ms.get("install", 0) / 1000)
        save.append(status.timings_ms.get("save", 0) / 1000)
        print(
            f"  push {number + 1}: {target}: {total:.3f} s (client push {push_seconds * 1000:.0f} ms, "
            f"verify {status.timings_ms.get('verify')} ms, install {status.timings_ms.get('install')} ms, "
            f"save {status.timings_ms.get('save')} ms)"
        )
        if target not in images:
            images[target] = folder / f"saved-{target[-2:]}.im"
            shutil.copyfile(app.image, images[target])
        current = target
    # Nothing runs between the install and the save (same process, priority 5): the page changes after both.
    waits = [t - p - v - i - s for t, p, v, i, s in zip(totals, pushes, verify, install, save)]
    print(f"  push -> serving: {summary(totals)}")
    print(f"  breakdown (medians): client push {statistics.median(pushes) * 1000:.0f} ms, "
          f"waiting for the poll ~{statistics.median(waits) * 1000:.0f} ms, verify {statistics.median(verify) * 1000:.0f} ms, "
          f"install {statistics.median(install) * 1000:.0f} ms, save {statistics.median(save) * 1000:.0f} ms")
    verdict = "met" if statistics.median(totals) <= 2.0 else "MISSED"
    print(f"  target median <= 2 s: {verdict}")

    print(f"\n-- peer: restart deploy ({repeats} restarts: kill gst, image with the other version in place, serve.st) --")
    restarts = []
    for number in range(repeats):
        target = "Counter v2" if current == "Counter v1" else "Counter v1"
        staged = folder / "next.im"
        shutil.copyfile(images[target], staged)
        started = time.monotonic()
        app.stop()
        os.replace(staged, app.image)
        launch(app, serve_code())
        total = wait_heading(app.url, target, started)
        restarts.append(total)
        print(f"  restart {number + 1}: {target}: {total:.3f} s")
        current = target
    print(f"  restart -> serving: {summary(restarts)}")
    ratio = statistics.median(totals) / statistics.median(restarts)
    print(f"  ratio hot push / restart (medians): {ratio:.2f}")
    return current


# -- 2. a 2,000-method load under traffic ----------------------------------------------------------


def stalls(records, since, until):
    """Gaps between consecutive response completions in [since, until], longest first."""
    ends = sorted(end for _, end, _, _ in records if since <= end <= until)
    return sorted(zip(ends, ends[1:]), key=lambda gap: gap[0] - gap[1])


def bench_bigload(app, repeats, folder, classes=20, methods=100):
    print(f"\n== 2. {classes * methods}-method hot load under requests ({repeats} loads) ==")
    dist = folder / "big"
    dist.mkdir(exist_ok=True)
    packer = Packer(author="bench", package_name="Counter-App")
    rows = []
    for number in range(repeats):
        heading = f"Counter big {number + 1}"
        source = dist / "Counter-App.st"
        source.write_text(counter_source(heading, "\n" + bench_classes(classes, methods, number + 1)))
        packed = packer.pack(source, dist)
        size = packed.path.stat().st_size
        _, page, session = app.get(app.url)
        _, page, session = app.get(link(page, "++"))
        hammer = RequestLoop([app.url, session])
        hammer.start()
        time.sleep(3.0)
        started, push_seconds, status, _ = push_and_wait(app, packed.path)
        finished = time.monotonic()
        time.sleep(3.0)
        hammer.done.set()
        hammer.join(30)
        records = hammer.records
        seen = next((end for start, end, ok, h in records if end > started and h == heading), None)
        if seen is None:
            raise RuntimeError("the background client never saw the new heading")
        during = [r for r in records if r[1] > started and r[0] < finished]
        to_serving = [r for r in records if r[1] > started and r[0] < seen]
        outside = [r[1] - r[0] for r in records if r[1] < started or r[0] > finished]
        failed = [r for r in records if not r[2]]
        slowest = max(r[1] - r[0] for r in during)
        slowest_to_serving = max(r[1] - r[0] for r in to_serving)
        install = status.timings_ms.get("install", 0) / 1000
        row = dict(
            methods=packed.methods, size=size, push=push_seconds, verify=status.timings_ms.get("verify", 0) / 1000,
            install=install, save=status.timings_ms.get("save", 0) / 1000, total=seen - started,
            finished=finished - started, slowest=slowest, slowest_to_serving=slowest_to_serving,
            requests=len(records), during=len(during), failed=len(failed), outside=statistics.median(outside),
        )
        rows.append(row)
        print(
            f"  load {number + 1}: {packed.methods} methods, {size} bytes .mcz: install {install * 1000:.0f} ms "
            f"(verify {row['verify'] * 1000:.0f}, save {row['save'] * 1000:.0f}); push -> page shows it {row['total']:.3f} s, "
            f"-> status written {row['finished']:.3f} s"
        )
        print(
            f"    requests {len(records)} ({len(during)} during the load), failed {len(failed)}; slowest during the load "
            f"{slowest * 1000:.0f} ms (until the page showed it: {slowest_to_serving * 1000:.0f} ms); "
            f"median outside the load {row['outside'] * 1000:.1f} ms"
        )
        slow = max(during, key=lambda r: r[1] - r[0])
        install_end = finished - row["save"]
        # Requests still open when the save started (status timings, so the window ends when status was seen).
        around_save = [r for r in records if r[1] > install_end and r[0] < finished]
        row["slowest_save"] = max((r[1] - r[0] for r in around_save), default=0.0)
        print(f"    slowest request open during the save: {row['slowest_save'] * 1000:.0f} ms ({len(around_save)} requests)")
        print(
            f"    times from the push start: slowest request {slow[0] - started:.3f}..{slow[1] - started:.3f} s; "
            f"loader phases (from status timings, ending when status was seen) verify ~{install_end - install - row['verify'] - started:.3f}"
            f"..{install_end - install - started:.3f}, install ..{install_end - started:.3f}, save ..{finished - started:.3f}"
        )
        print("    longest stalls (no response completed): " + ", ".join(
            f"{b - a:.3f} s at {a - started:.3f}..{b - started:.3f}" for a, b in stalls(records, started - 1, finished + 1)[:3]))
        if failed:
            print(f"    failures: {failed[:5]}")
    worst_fail = sum(r["failed"] for r in rows)
    ok_slowest = all(r["slowest"] <= r["install"] + 0.1 for r in rows)
    print(f"  install: {summary([r['install'] for r in rows])}; total to serving: {summary([r['total'] for r in rows])}")
    print(f"  slowest request during load: {summary([r['slowest'] for r in rows], 'ms', 1000)}")
    print(f"  save: {summary([r['save'] for r in rows], 'ms', 1000)}; slowest request open during the save: "
          f"{summary([r['slowest_save'] for r in rows], 'ms', 1000)}")
    print(f"  target 0 failed: {'met' if worst_fail == 0 else 'MISSED'} ({worst_fail} failed)")
    print(f"  target slowest <= install + 100 ms: {'met' if ok_slowest else 'MISSED'} "
          + ", ".join(f"{r['slowest'] * 1000:.0f} vs {(r['install'] + 0.1) * 1000:.0f} ms" for r in rows))
    print(f"  requests paused (the install, measured in the image): {summary([r['install'] for r in rows], 'ms', 1000)}; "
          f"target <= 100 ms: {'met' if all(r['install'] <= 0.1 for r in rows) else 'MISSED'}")
    print(f"  slowest request until the page showed the new version (verify, compile ahead, install): "
          f"{summary([r['slowest_to_serving'] for r in rows], 'ms', 1000)}")
    print(f"  ratio slowest request during the load / median outside: "
          f"{statistics.median(r['slowest'] for r in rows) / statistics.median(r['outside'] for r in rows):.0f}x")
    return rows


# -- 3. idle loader cost ---------------------------------------------------------------------------


def measure_cpu(app, code, seconds, label):
    app.stop()
    launch(app, code)
    app.wait_until(lambda: app.get(app.url)[0] == 200, "the app to serve")
    time.sleep(3.0)  # let start-up work finish
    pid = app.process.pid
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    after, t1 = cpu_seconds(pid), time.monotonic()
    percent = 100 * (after - before) / (t1 - t0)
    print(f"  {label}: {after - before:.2f} s CPU in {t1 - t0:.1f} s = {percent:.3f} % of one core")
    return percent, pid


def strace_summary(pid, seconds):
    result = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-f", "-c", "-p", str(pid)],
        capture_output=True, text=True,
    )
    counts = {}
    for line in result.stderr.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def strace_trace(pid, seconds):
    result = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-f", "-tt", "-e", "trace=file,desc", "-p", str(pid)],
        capture_output=True, text=True,
    )
    return [line for line in result.stderr.splitlines() if not line.startswith(("strace:", "Process "))]


def bench_idle(app, seconds, strace_intervals=5):
    print(f"\n== 3. idle loader cost ({seconds} s each, interval {app.interval_ms} ms) ==")
    loader_code = "Semaphore new wait"  # the saved image restarts Swazoo and the loader by itself
    stopped_code = "HLLoader stop!\nSemaphore new wait"
    running, pid_running = measure_cpu(app, loader_code, seconds, "loader idle   ")
    trace_seconds = strace_intervals * app.interval_ms / 1000
    have_strace = shutil.which("strace") is not None
    if have_strace:
        counts_running = strace_summary(pid_running, trace_seconds)
        trace = strace_trace(pid_running, 2 * app.interval_ms / 1000 + 0.5)
    stopped, pid_stopped = measure_cpu(app, stopped_code, seconds, "loader stopped")
    if have_strace:
        counts_stopped = strace_summary(pid_stopped, trace_seconds)
    difference = running - stopped
    print(f"  difference: {difference:.3f} % of one core; target < 0.1 %: {'met' if difference < 0.1 else 'MISSED'}")
    if not have_strace:
        print("  strace is not installed: apt-get install -y strace")
        return
    print(f"\n  system calls per poll interval ({trace_seconds:.0f} s traced each; loader idle minus loader stopped):")
    for name in sorted(set(counts_running) | set(counts_stopped)):
        a, b = counts_running.get(name, 0) / strace_intervals, counts_stopped.get(name, 0) / strace_intervals
        if a or b:
            print(f"    {name:<16} {a:6.1f} {b:6.1f}  {a - b:+6.1f}")
    print("\n  file and descriptor calls of the idle loader (strace -tt -e trace=file,desc), about two intervals:")
    staging = str(app.staging)
    for line in trace:
        print("    " + re.sub(r"^\[pid\s+\d+\] ", "", line).replace(staging, "<staging>").replace(str(app.folder), "<app>"))


# -- main ------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", choices=["push", "bigload", "idle", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=9, help="pushes and restarts in the push benchmark")
    parser.add_argument("--big-repeats", type=int, default=3, help="loads in the 2,000-method benchmark")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="hotload-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    app = CounterApp(folder / "app", interval_ms=args.interval_ms)
    try:
        started = time.monotonic()
        app.build()
        print(f"built the image (Seaside on Swazoo + the loader) in {time.monotonic() - started:.1f} s; "
              f"image {app.image.stat().st_size / 1e6:.1f} MB; gst {subprocess.run(['gst', '--version'], capture_output=True, text=True).stdout.split(chr(10))[0]}")
        dist = folder / "dist"
        packer = Packer(author="bench")
        versions = {}
        for version in ("v1", "v2"):
            versions[f"Counter {version}"] = packer.pack(example_dir() / version / "Counter-App.st", dist).path
        app.start()
        push_and_wait(app, versions["Counter v1"])
        if args.bench in ("push", "all"):
            bench_push(app, versions, args.repeats, folder)
        if args.bench in ("bigload", "all"):
            bench_bigload(app, args.big_repeats, folder)
        if args.bench in ("idle", "all"):
            bench_idle(app, args.idle_seconds)
    finally:
        app.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
