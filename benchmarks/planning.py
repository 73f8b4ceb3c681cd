"""Planning time: `read_mcz` of every package plus `LoadPlan.build`, for growing batches.

    python benchmarks/planning.py [--sizes 250 500 1000] [--rounds 3]

Synthetic packages (about 30 classes and 300 methods each, superclasses and
extensions reaching into earlier packages, a few ancestors in `version`) are
written once to a temporary folder; only reading and planning are timed. The
real-world corpus at ../shared/corpus/mcz (beside the repository) is timed too
when present. Not part of the test suite.
"""

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hotload import sexpr  # noqa: E402
from hotload.mcz import SOURCE_MEMBER, VersionInfo, read_mcz  # noqa: E402
from hotload.pack import version_sexpr  # noqa: E402
from hotload.plan import LoadPlan  # noqa: E402

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


def time_planning(paths, rounds: int):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        plan = LoadPlan.build([read_mcz(p) for p in paths])
        times.append(time.perf_counter() - started)
    return statistics.median(times), plan


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the largest size instead")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hotload-planning-bench-"))
    try:
        batches = {}
        for size in options.sizes:
            batches[size] = write_packages(workdir / str(size), size)
        sample = read_mcz(batches[options.sizes[0]][1])
        megabytes = sum(p.stat().st_size for p in batches[options.sizes[0]]) / len(batches[options.sizes[0]]) / 1e3
        print(
            f"synthetic packages: {len(sample.snapshot.classes)} classes, {len(sample.snapshot.methods)} methods, "
            f"{megabytes:.0f} kB each; median of {options.rounds} rounds"
        )
        if options.profile:
            import cProfile
            import pstats

            paths = batches[options.sizes[-1]]
            profile = cProfile.Profile()
            profile.enable()
            LoadPlan.build([read_mcz(p) for p in paths])
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            return
        print(f"{'packages':>10} {'seconds':>9} {'ms/package':>11} {'edges':>7}")
        for size in options.sizes:
            seconds, plan = time_planning(batches[size], options.rounds)
            print(f"{size:>10} {seconds:>9.3f} {seconds / size * 1000:>11.3f} {len(plan.edges):>7}")
        if CORPUS.is_dir():
            paths = sorted(CORPUS.glob("*.mcz"))
            seconds, plan = time_planning(paths, options.rounds)
            print(f"corpus: {len(paths)} real packages, {seconds:.3f} s ({seconds / len(paths) * 1000:.2f} ms/package), "
                  f"{len(plan.edges)} edges")
        else:
            print("corpus: skipped (no ../shared/corpus/mcz beside the repository)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
