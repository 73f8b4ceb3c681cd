"""Planning time, in process and as a whole `hotload plan` process, against its peer in the same run.

    python benchmarks/planning.py [--sizes 250 500 1000] [--rounds 5] [--baseline REV] [--profile]

Synthetic packages (about 30 classes and 300 methods each, superclasses and
extensions reaching into earlier packages, a few ancestors in `version`) are
written once to a temporary folder; only reading and planning are timed. The
real-world corpus at ../shared/corpus/mcz (beside the repository) is timed too
when present. Not part of the test suite.

In process, each round times, one after the other:

- peer: `read_mcz` of every package + `LoadPlan.build` (the whole reader, what `hotload plan`
  did before it read packages for planning only; push and pack still read that way);
- cold: `PlanReader(use_cache=False)`, one process, + `LoadPlan.build`;
- cold, workers: the same with worker processes (one per processor, at most 4);
- warm: `PlanReader` with a cache filled before the rounds (a fresh cache folder).

As a whole process (`python -m hotload plan FILES > /dev/null`, interpreter start and imports
included), each round times `hotload plan` cold (HOTLOAD_NO_CACHE=1) and warm, and, with
--baseline REV, the same command of that revision (exported with `git archive`), the peer.

Every figure is printed as min / median / max over the rounds, with ratios taken pair by pair
within a round, and /proc/loadavg before and after.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hotload.formats import sexpr  # noqa: E402
from hotload.formats.mcz import SOURCE_MEMBER, VersionInfo, read_mcz  # noqa: E402
from hotload.formats.pack import version_sexpr  # noqa: E402
from hotload.formats.plan import LoadPlan  # noqa: E402
from hotload.formats.plan_cache import PlanReader  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "mcz"
CLASSES = 30
METHODS = 300
ANCESTORS = 4

PROTOCOLS = ["accessing", "initialization", "printing", "testing", "private", "actions"]
AUTHORS = ["jd", "SvenVanCaekenberghe", "JohanBrichau", "pmm", "AttilaMagyar"]
BODIES = [
    "\t| result |\r\tresult := {ivar} ifNil: [ 0 ].\r\t^ result + {n}",
    "\t\"Answer whether the receiver is ready.\"\r\t^ {ivar} notNil and: [ {ivar} > {n} ]",
    "\t{ivar} := anObject.\r\tself changed: #{ivar}.\r\t^ self",
    "\t^ String streamContents: [ :stream |\r\t\tstream nextPutAll: 'item {n}: '; print: {ivar} ]",
    "\tself assert: {ivar} isNil.\r\t{ivar} := OrderedCollection new.\r\t1 to: {n} do: [ :i | {ivar} add: i * 2 ].\r\t^ {ivar}",
]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def package_source(number: int, name: str, rng: random.Random) -> str:
    """A Monticello-style `snapshot/source.st`: classes, methods, extensions of earlier packages."""
    prefix = f"P{number:04d}"
    out = [f"SystemOrganization addCategory: #{name}!\r\r"]
    classes = [f"{prefix}Class{c:02d}" for c in range(CLASSES)]
    for index, class_name in enumerate(classes):
        if index == 0 and number > 0:
            superclass = f"P{rng.randrange(number):04d}Class{rng.randrange(CLASSES):02d}"  # from an earlier package
        elif index == 0:
            superclass = "Object"
        else:
            superclass = classes[rng.randrange(index)] if rng.random() < 0.6 else "Object"
        out.append(
            f"{superclass} subclass: #{class_name}\r\tinstanceVariableNames: 'alpha beta gamma'\r"
            f"\tclassVariableNames: 'Default'\r\tpoolDictionaries: ''\r\tcategory: {_quote(name)}!\r\r"
        )
        if index % 5 == 0:
            out.append(f"!{class_name} commentStamp: 'bench 1/1/2024 00:00' prior: 0!\rI am {class_name}; I hold the bench's state!!!\r\r")
    per_class = METHODS // CLASSES
    for class_name in classes:
        for m in range(per_class):
            body = BODIES[m % len(BODIES)].format(ivar=("alpha", "beta", "gamma")[m % 3], n=m)
            selector = f"at{m}: anObject" if m % 4 == 0 else f"value{m}"
            side = " class" if m % 10 == 9 else ""
            protocol = PROTOCOLS[m % len(PROTOCOLS)]
            stamp = f"{AUTHORS[rng.randrange(len(AUTHORS))]} {rng.randrange(1, 13)}/{rng.randrange(1, 29)}/20{rng.randrange(10, 25)} {rng.randrange(24)}:{rng.randrange(60):02d}"
            out.append(f"!{class_name}{side} methodsFor: '{protocol}' stamp: '{stamp}'!\r{selector}\r{body}! !\r\r")
    extensions = ["Object", "String"] + [f"P{rng.randrange(number):04d}Class{rng.randrange(CLASSES):02d}" for _ in range(3 if number else 0)]
    for target in extensions:
        out.append(
            f"!{target} methodsFor: '*{name}' stamp: 'bench 1/1/2024 00:00'!\rbench{prefix}Extension\r\t^ {_quote(name)}! !\r\r"
        )
    for class_name in classes[::10]:
        out.append(f"{class_name} initialize!\r")
    return "".join(out)


def version_of(name: str, number: int) -> VersionInfo:
    ancestors = ()
    for step in range(max(1, number - ANCESTORS), number):
        ancestors = (VersionInfo(f"{name}-bench.{step}", str(uuid.uuid4()), "earlier work", "bench", "1 January 2024", "12:00:00 pm", ancestors),)
    return VersionInfo(f"{name}-bench.{number}", str(uuid.uuid4()), "bench", "bench", "1 January 2024", "12:00:00 pm", ancestors)


def write_packages(folder: Path, count: int, seed: int = 1) -> list:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    paths = []
    for number in range(count):
        name = f"Bench{number:04d}-Core"
        version = version_of(name, ANCESTORS + 1)
        path = folder / f"{version.name}.mcz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("package", f"(name {sexpr.quote(name)})")
            archive.writestr("version", version_sexpr(version))
            archive.writestr(SOURCE_MEMBER, package_source(number, name, rng).encode("utf-8"))
            if number > 0 and number % 7 == 0:
                dependency = version_of(f"Bench{rng.randrange(number):04d}-Core", ANCESTORS + 1)
                archive.writestr(f"dependencies/{dependency.package_name}", version_sexpr(dependency))
        paths.append(path)
    return paths


def load() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "unknown"


def spread(values) -> str:
    return f"{min(values):7.3f} {statistics.median(values):7.3f} {max(values):7.3f}"


def ratio_spread(numerators, denominators) -> str:
    ratios = [n / d for n, d in zip(numerators, denominators)]
    return f"{min(ratios):5.2f}x {statistics.median(ratios):5.2f}x {max(ratios):5.2f}x"


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def in_process(paths, rounds: int, cache_folder: Path) -> dict:
    """Seconds per round of each way of planning, interleaved."""
    cache = cache_folder / "plan-facts.json"
    warm_reader = PlanReader(path=cache, workers=1)
    warm_reader.read_all(paths)
    warm_reader.save()

    def peer():
        return LoadPlan.build([read_mcz(p) for p in paths])

    def planned(**options):
        packages, problems = PlanReader(**options).read_all(paths)
        assert not problems, problems[0]
        return LoadPlan.build(packages)

    reference = peer().to_json()
    for options in ({"use_cache": False, "workers": 1}, {"use_cache": False}, {"path": cache}):
        assert planned(**options).to_json() == reference, f"the plan differs with {options}"
    ways = {
        "peer: read_mcz + build": peer,
        "cold, one process": lambda: planned(use_cache=False, workers=1),
        "cold, workers": lambda: planned(use_cache=False),
        "warm (cache)": lambda: planned(path=cache),
    }
    times = {name: [] for name in ways}
    for _ in range(rounds):
        for name, call in ways.items():
            times[name].append(timed(call))
    return times


def export_revision(revision: str, folder: Path) -> Path:
    """The revision's hotload package, exported with git archive, for `python -m hotload` with PYTHONPATH."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "hotload"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def whole_process(paths, rounds: int, baseline: "Path | None", cache_folder: Path) -> dict:
    """Seconds per round of `python -m hotload plan FILES`, output to /dev/null, interleaved."""
    files = [str(p) for p in paths]
    cache_folder.mkdir(parents=True, exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if k not in ("HOTLOAD_NO_CACHE", "PYTHONDONTWRITEBYTECODE")}
    warm_env = {**base_env, "XDG_CACHE_HOME": str(cache_folder), "PYTHONPATH": str(ROOT)}
    cold_env = {**warm_env, "HOTLOAD_NO_CACHE": "1"}
    commands = {"hotload plan, cold": cold_env, "hotload plan, warm": warm_env}
    if baseline is not None:
        commands = {"peer: baseline hotload plan": {**base_env, "PYTHONPATH": str(baseline)}, **commands}

    def run(env):
        subprocess.run([sys.executable, "-m", "hotload", "plan", *files], env=env, cwd=str(cache_folder),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)

    for env in commands.values():  # warm-up: byte code written, the cache filled
        run(env)
    times = {name: [] for name in commands}
    for _ in range(rounds):
        for name, env in commands.items():
            times[name].append(timed(lambda: run(env)))
    return times


def report(title: str, times: dict, peer: "str | None"):
    print(f"\n{title}")
    print(f"  {'':32} {'min':>7} {'median':>7} {'max':>7}   {'peer / this, pair by pair (min median max)'}")
    for name, values in times.items():
        ratios = ratio_spread(times[peer], values) if peer and name != peer else ""
        print(f"  {name:32} {spread(values)}   {ratios}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also time `hotload plan` of this git revision (the peer)")
    parser.add_argument("--no-whole-process", action="store_true", help="time in process only")
    parser.add_argument("--profile", action="store_true", help="cProfile cold planning of the largest size instead")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hotload-planning-bench-"))
    try:
        batches = {}
        for size in options.sizes:
            batches[size] = write_packages(workdir / str(size), size)
        sample = read_mcz(batches[options.sizes[0]][1])
        kilobytes = sum(p.stat().st_size for p in batches[options.sizes[0]]) / len(batches[options.sizes[0]]) / 1e3
        print(
            f"synthetic packages: {len(sample.snapshot.classes)} classes, {len(sample.snapshot.methods)} methods, "
            f"{kilobytes:.0f} kB each; {options.rounds} rounds; Python {sys.version.split()[0]}, {os.cpu_count()} processors"
        )
        if options.profile:
            import cProfile
            import pstats

            paths = batches[options.sizes[-1]]
            profile = cProfile.Profile()
            profile.enable()
            LoadPlan.build(PlanReader(use_cache=False, workers=1).read_all(paths)[0])
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            return
        baseline = export_revision(options.baseline, workdir / "baseline") if options.baseline else None
        sets = {f"{size} packages": batches[size] for size in options.sizes}
        if CORPUS.is_dir():
            sets[f"corpus, {len(list(CORPUS.glob('*.mcz')))} real packages"] = sorted(CORPUS.glob("*.mcz"))
        else:
            print("corpus: skipped (no ../shared/corpus/mcz beside the repository)")
        print(f"load average before: {load()}")
        for number, (label, paths) in enumerate(sets.items()):
            times = in_process(paths, options.rounds, workdir / f"cache-in-{number}")
            report(f"{label}, in process, seconds", times, "peer: read_mcz + build")
            if not options.no_whole_process:
                times = whole_process(paths, options.rounds, baseline, workdir / f"cache-whole-{number}")
                report(f"{label}, whole process (python -m hotload plan), seconds", times,
                       "peer: baseline hotload plan" if baseline else None)
        print(f"\nload average after: {load()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
