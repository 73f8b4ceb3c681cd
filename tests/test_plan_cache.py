"""Reading for a plan (mcz.read_planned, PlanFacts) and the per-user cache of it (hotload/formats/plan_cache.py).

What a plan reads must be what the whole reader (read_mcz) reads, with the same errors; the cache
must never change a plan and never fail a command.
"""

import json
import os
import stat
import sys
import zipfile

import pytest

from conftest import ROOT, run_hotload
from helpers import add_member, class_def, make_package, method
from hotload.formats import plan_cache
from hotload.errors import PackageError
from hotload.formats.mcz import PlanFacts, PlannedPackage, read_mcz, read_planned
from hotload.formats.plan import LoadPlan
from hotload.formats.plan_cache import PlanReader, facts_from_json, facts_to_json, parse_cache
from test_corrupt_mcz import CORRUPT_KINDS, zip_bytes

sys.path.insert(0, str(ROOT / "benchmarks"))
import planning  # noqa: E402  (the benchmark's package generator)

TRAITS = (
    "Trait named: #TShape uses: {} category: 'Geo'!\n\n"
    "Object subclass: #Shape uses: TShape instanceVariableNames: 'a' classVariableNames: '' package: 'Geo'!\n\n"
    "Shape class uses: TShape classTrait!\n\n"
    "Shape subclass: #Circle\n\tinstanceVariableNames: 'r'\n\tclassVariableNames: ''\n\tpoolDictionaries: ''\n\tcategory: 'Geo'!\n\n"
    "!Circle commentStamp: 'jd 1/1/2020' prior: 0!\nA circle; it says ''hi!!''!\n\n"
    "Circle class instanceVariableNames: 'cache'!\n\n"
    + method("Circle", "area\n\t^ r * r")
    + method("Circle class", "unit\n\t^ self new")
    + method("Number", "squared\n\t^ self * self", protocol="*Geo")
)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Packages of many forms: the benchmark's, hotload pack's, traits and class-side forms, dependencies."""
    folder = tmp_path_factory.mktemp("packages")
    paths = planning.write_packages(folder / "bench", 12, seed=7)
    geo = folder / "Geo-jd.3.mcz"  # the source as written, not as hotload pack writes it
    geo.write_bytes(bytes(zip_bytes({
        "package": b"(name 'Geo')",
        "version": b"(name 'Geo-jd.3' message 'x' id 'c' date '' time '' author 'jd' ancestors ((name 'Geo-jd.2' id 'b' ancestors ())) stepChildren ())",
        "snapshot/source.st": TRAITS.encode(),
    })))
    paths.append(geo)
    paths.append(make_package(folder / "plain", "Plain", class_def("Plain", category="Plain") + method("Plain", "x\n\t^ 1")))
    add_member(paths[-1], "dependencies/Geo", "(name 'Geo-tester.1' id 'x' ancestors () stepChildren ())")
    return paths


def facts_of(path) -> PlanFacts:
    return read_mcz(path).facts


def test_planned_facts_are_the_whole_readers(packages):
    for path in packages:
        planned = read_planned(path)
        assert planned.facts == facts_of(path), path
        assert planned.size == path.stat().st_size


def test_planned_facts_on_the_corpus(corpus):
    for path in sorted(corpus.glob("*.mcz")):
        assert read_planned(path).facts == facts_of(path), path


def test_traits_and_class_side_forms_are_read(packages):
    facts = read_planned(packages[-2]).facts
    assert dict((name, (superclass, traits)) for name, superclass, traits in facts.classes) == {
        "TShape": (None, ()),
        "Shape": ("Object", ("TShape", "TShape")),  # the class side uses TShape classTrait
        "Circle": ("Shape", ()),
    }
    assert dict(facts.methods) == {"Circle": 2, "Number": 1}
    assert facts.extended_classes() == {"Number": 1}


def test_a_planned_package_reads_the_rest_when_asked(packages):
    planned = read_planned(packages[-1])
    assert isinstance(planned, PlannedPackage)
    assert planned.version.name == facts_of(packages[-1]).version
    assert [m.selector for m in planned.snapshot.methods] == ["x"]
    assert planned.dependencies[0].name == "Geo-tester.1"


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_damaged_archives_give_the_whole_readers_error(tmp_path, kind):
    source = make_package(tmp_path / "src", "Demo", TRAITS)
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    build, _ = CORRUPT_KINDS[kind]
    path = tmp_path / "Demo-tester.1.mcz"
    path.write_bytes(bytes(build(members)))
    with pytest.raises(PackageError) as whole:
        read_mcz(path)
    with pytest.raises(PackageError) as planned:
        read_planned(path)
    assert str(planned.value) == str(whole.value)


def test_a_damaged_source_gives_the_whole_readers_error(tmp_path):
    path = make_package(tmp_path, "Demo", TRAITS)
    members = {name: zipfile.ZipFile(path).read(name) for name in zipfile.ZipFile(path).namelist()}
    members["snapshot/source.st"] = b"!Foo bogus declaration!\nx! !\n"
    path.write_bytes(bytes(zip_bytes(members)))
    with pytest.raises(PackageError) as whole:
        read_mcz(path)
    with pytest.raises(PackageError) as planned:
        read_planned(path)
    assert str(planned.value) == str(whole.value) and "unknown reader declaration" in str(planned.value)


def test_the_version_is_read_for_its_name_only(tmp_path):
    """A history damaged after the name: the plan shows the name; read_mcz (push, pack) refuses the package."""
    path = make_package(tmp_path, "Demo", TRAITS)
    members = {name: zipfile.ZipFile(path).read(name) for name in zipfile.ZipFile(path).namelist()}
    members["version"] = b"(name 'Demo-tester.7' id 'x' ancestors ((name 'Demo-tester.6' id (("
    path.write_bytes(bytes(zip_bytes(members)))
    assert read_planned(path).facts.version == "Demo-tester.7"
    with pytest.raises(PackageError, match="unparsable 'version'"):
        read_mcz(path)
    members["version"] = b"(id 'x' name 'Demo-tester.8' ancestors ())"  # not first: the whole member is parsed
    path.write_bytes(bytes(zip_bytes(members)))
    assert read_planned(path).facts.version == "Demo-tester.8"
    members["version"] = b"(id 'x' name 'Demo-tester.9' ancestors ("
    path.write_bytes(bytes(zip_bytes(members)))
    with pytest.raises(PackageError, match="unparsable 'version'"):
        read_planned(path)


def test_a_plan_from_planned_packages_is_the_plan_from_whole_ones(packages):
    planned = LoadPlan.build([read_planned(p) for p in packages])
    whole = LoadPlan.build([read_mcz(p) for p in packages])
    assert planned.to_json() == whole.to_json()


# -- the cache ---------------------------------------------------------------------------------------


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("HOTLOAD_NO_CACHE", raising=False)
    return home


def test_facts_survive_the_cache_format(packages, corpus):
    for path in [*packages, *sorted(corpus.glob("*.mcz"))]:
        facts = facts_of(path)
        assert facts_from_json(json.loads(json.dumps(facts_to_json(facts)))) == facts


def test_the_second_read_comes_from_the_cache(packages, cache_home):
    first = PlanReader()
    found, problems = first.read_all(packages)
    assert not problems and (first.hits, first.misses) == (0, len(packages))
    assert first.save()
    assert (cache_home / "hotload" / "plan-facts.json").is_file()
    second = PlanReader()
    again, _ = second.read_all(packages)
    assert (second.hits, second.misses) == (len(packages), 0)
    assert [p.facts for p in again] == [p.facts for p in found] == [facts_of(p) for p in packages]
    assert not second.save()  # nothing changed: nothing written


def test_an_edit_misses_even_with_the_same_size_and_time(tmp_path, cache_home):
    path = make_package(tmp_path, "Demo", class_def("Alpha", category="Demo"))
    reader = PlanReader()
    reader.read_all([path])
    reader.save()
    status = path.stat()
    members = {name: zipfile.ZipFile(path).read(name) for name in zipfile.ZipFile(path).namelist()}
    members["snapshot/source.st"] = members["snapshot/source.st"].replace(b"Alpha", b"Omega")
    path.write_bytes(bytes(zip_bytes(members, zipfile.ZIP_STORED)))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    reader = PlanReader()
    found, _ = reader.read_all([path])
    assert reader.misses == 1 and found[0].facts.classes[0][0] == "Omega"


def test_errors_are_never_cached(tmp_path, cache_home):
    bad = tmp_path / "Bad-x.1.mcz"
    bad.write_bytes(b"not a zip")
    for _ in range(2):
        reader = PlanReader()
        found, problems = reader.read_all([bad, tmp_path / "missing.mcz"])
        assert not found and len(problems) == 2 and reader.misses == 1
        reader.save()


def test_no_cache_when_turned_off(packages, cache_home, monkeypatch):
    monkeypatch.setenv("HOTLOAD_NO_CACHE", "1")
    reader = PlanReader()
    reader.read_all(packages[:2])
    assert not reader.save() and not cache_home.exists()


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert plan_cache.cache_file() == tmp_path / ".cache" / "hotload" / "plan-facts.json"


def damaged(data: bytes, how: str) -> bytes:
    header, _, body = data.partition(b"\n")
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "flipped":
        return header + b"\n" + body[:10] + bytes([body[10] ^ 1]) + body[11:]
    if how == "empty":
        return b""
    if how == "garbage":
        return os.urandom(500)
    if how == "other format":
        fields = json.loads(header)
        fields["format"] = -1
        return json.dumps(fields).encode() + b"\n" + body
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "garbage", "other format"])
def test_a_damaged_cache_is_ignored_and_written_again(packages, cache_home, how):
    reader = PlanReader()
    reader.read_all(packages)
    reader.save()
    cache = cache_home / "hotload" / "plan-facts.json"
    cache.write_bytes(damaged(cache.read_bytes(), how))
    reader = PlanReader()
    found, _ = reader.read_all(packages)
    assert reader.misses == len(packages)
    assert [p.facts for p in found] == [facts_of(p) for p in packages]
    assert reader.save()
    assert PlanReader().entries  # intact again


def test_other_limits_ignore_the_cache(packages, cache_home, monkeypatch):
    reader = PlanReader()
    reader.read_all(packages[:3])
    reader.save()
    monkeypatch.setenv("HOTLOAD_MAX_MEMBER_MB", "1")
    reader = PlanReader()
    reader.read_all(packages[:3])
    assert reader.misses == 3


def test_wrong_entries_are_misses(packages, cache_home):
    reader = PlanReader()
    reader.read_all(packages[:2])
    for entry in reader.entries.values():
        entry[1][4] = [1, 2]  # class-side names that are not strings
    reader.changed = True
    reader.save()
    reader = PlanReader()
    found, _ = reader.read_all(packages[:2])
    assert reader.misses == 2 and [p.facts for p in found] == [facts_of(p) for p in packages[:2]]


def test_the_oldest_entries_go_first(packages, cache_home, monkeypatch):
    monkeypatch.setattr(plan_cache, "MAX_ENTRIES", 3)
    reader = PlanReader()
    reader.read_all(packages[:5])
    for day, entry in enumerate(reader.entries.values()):
        entry[0] = day  # the first read is the oldest
    kept = list(reader.entries)[-3:]
    reader.save()
    assert list(PlanReader().entries) == kept


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_folder_is_not_written(packages, cache_home):
    cache_home.mkdir()
    cache_home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        reader = PlanReader()
        reader.read_all(packages[:2])
        assert not reader.save()
    finally:
        cache_home.chmod(stat.S_IRWXU)


def test_a_cache_that_cannot_be_written_never_fails_the_command(packages, tmp_path):
    """The cache folder's place is a file: nothing can be created there, even as root."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    env = {**os.environ, "XDG_CACHE_HOME": str(blocker)}
    result = run_hotload("plan", *packages, env=env)
    assert result.returncode == 0, result.stderr
    assert not result.stderr
    env["XDG_CACHE_HOME"] = str(tmp_path / "fine")
    assert run_hotload("plan", *packages, env=env, check=True).stdout == result.stdout


def test_a_cache_that_is_a_folder_never_fails_the_command(packages, tmp_path):
    (tmp_path / "cache" / "hotload" / "plan-facts.json").mkdir(parents=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_hotload("plan", *packages, env=env)
    assert result.returncode == 0 and not result.stderr, result.stderr


def test_the_plan_is_the_same_cold_and_warm(packages, tmp_path, corpus):
    paths = [*packages, *sorted(corpus.glob("*.mcz"))]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cold = run_hotload("plan", *paths, env=env, check=True)
    warm = run_hotload("plan", *paths, env=env, check=True)
    env["HOTLOAD_NO_CACHE"] = "1"
    off = run_hotload("plan", *paths, env=env, check=True)
    assert cold.stdout == warm.stdout == off.stdout
    as_json = json.loads(run_hotload("plan", "--json", *paths, env=env, check=True).stdout)
    assert as_json == LoadPlan.build([read_mcz(p) for p in paths]).to_json()


# -- worker processes --------------------------------------------------------------------------------


@pytest.fixture
def forking(monkeypatch):
    """Workers even in this test process, which may have threads (the children only read and pickle)."""
    monkeypatch.setattr(plan_cache, "_may_fork", lambda: True)


def test_a_threaded_process_reads_alone(monkeypatch):
    import threading

    started = threading.Event()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: (started.set(), stop.wait(10)))
    thread.start()
    try:
        started.wait(10)
        assert not plan_cache._may_fork()
    finally:
        stop.set()
        thread.join()


def test_workers_read_what_one_process_reads(tmp_path, monkeypatch, forking):
    monkeypatch.setenv("HOTLOAD_NO_CACHE", "1")
    paths = planning.write_packages(tmp_path / "many", plan_cache.PARALLEL_MIN + 6, seed=3)
    broken = tmp_path / "many" / "Broken-x.1.mcz"
    broken.write_bytes(paths[5].read_bytes()[:-30])
    paths.insert(7, broken)
    serial, serial_problems = PlanReader(workers=1).read_all(paths)
    parallel, parallel_problems = PlanReader(workers=3).read_all(paths)
    assert [p.facts for p in parallel] == [p.facts for p in serial]
    assert [str(e) for e in parallel_problems] == [str(e) for e in serial_problems] and len(serial_problems) == 1


def test_cache_parser_rejects_what_it_did_not_write():
    header = {"format": plan_cache.FORMAT, "max_member_bytes": 1, "sha256": ""}
    for data in [b"", b"\n", b"{}\n{}", b"[]\n[]", b"\xff\xfe\n\x00", b"{" * 100000 + b"\n"]:
        assert parse_cache(data, header) == {}


def test_workers_that_cannot_start_or_fail_leave_their_share_to_this_process(tmp_path, monkeypatch, forking):
    monkeypatch.setenv("HOTLOAD_NO_CACHE", "1")
    paths = planning.write_packages(tmp_path / "many", plan_cache.PARALLEL_MIN, seed=5)
    expected = [p.facts for p in PlanReader(workers=1).read_all(paths)[0]]

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(os, "fork", no_fork)
        assert [p.facts for p in PlanReader(workers=3).read_all(paths)[0]] == expected

    import pickle

    def failing_dumps(*args, **kwargs):
        raise RuntimeError("a worker that breaks")

    with monkeypatch.context() as patched:
        patched.setattr(pickle, "dumps", failing_dumps)  # the children fail; this process reads their shares
        assert [p.facts for p in PlanReader(workers=2).read_all(paths)[0]] == expected
