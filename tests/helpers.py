"""Small builders for test packages, and the example app serving for the live tests."""

import contextlib
import time
import zipfile
from pathlib import Path

from hotload.images.example_app import CounterApp, example_dir
from hotload.formats.pack import Packer


def class_def(name, superclass="Object", category="Pkg", ivars=""):
    return (
        f"{superclass} subclass: #{name}\n\tinstanceVariableNames: '{ivars}'\n\tclassVariableNames: ''\n"
        f"\tpoolDictionaries: ''\n\tcategory: '{category}'!\n\n"
    )


def method(class_name, source, protocol="demo"):
    return f"!{class_name} methodsFor: '{protocol}'!\n{source}! !\n\n"


def make_package(folder: Path, name: str, source: str, author="tester", **packer_options) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source_path = folder / f"{name}.st"
    source_path.write_text(source)
    return Packer(author=author, package_name=name, **packer_options).pack(source_path, folder).path


def add_member(mcz: Path, member: str, data: str):
    with zipfile.ZipFile(mcz, "a") as archive:
        archive.writestr(member, data)


def shop_packages(folder: Path):
    """Two packages, Shop-Web needing Shop-Core, answered out of load order."""
    base = make_package(folder, "Shop-Core", class_def("ShopItem", category="Shop-Core", ivars="price"))
    web = make_package(
        folder, "Shop-Web",
        class_def("ShopPage", "ShopItem", "Shop-Web") + method("ShopPage", "title\n\t^ 'Shop'"),
    )
    return [web, base]


def example_versions(dist: Path, author: str = "demo"):
    """examples/counter v1 and v2 packed into dist, in that order."""
    packer = Packer(author=author)
    return tuple(packer.pack(example_dir() / version / "Counter-App.st", dist).path for version in ("v1", "v2"))


def broken_counter(folder: Path, heading: str = "Counter v2", author: str = "broken", ancestor=None) -> Path:
    """examples/counter v2 packed with a page that raises (Seaside answers its error page), headed `heading`."""
    source = (example_dir() / "v2" / "Counter-App.st").read_text().replace(
        "\thtml heading: 'Counter v2'.", f"\tself error: 'broken page'.\n\thtml heading: '{heading}'.")
    assert "broken page" in source
    (folder / "Counter-App.st").write_text(source)
    return Packer(author=author).pack(folder / "Counter-App.st", folder, ancestor_path=ancestor).path


@contextlib.contextmanager
def serving_counter(folder: Path, interval_ms: int, before: str = ""):
    """The example image built (Seaside on Swazoo and the loader) and serving; killed at the end."""
    counter = CounterApp(folder, interval_ms=interval_ms)
    try:
        counter.build()
        counter.start(before=before)
        yield counter
    finally:
        counter.stop()


def wait_for_snapshot(image: Path, timeout: float) -> None:
    """Polls every 0.5 ms until the loader starts its snapshot (<image>.hotload-new appears): the test kills
    the image in the middle of writing it."""
    snapshot = image.with_name(image.name + ".hotload-new")
    deadline = time.monotonic() + timeout
    while not snapshot.exists() and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert snapshot.exists(), "the loader never started its snapshot"


def stage_batch(staging: Path, packages, health=None, unloads=None) -> str:
    """Stage a batch as a push does (folder published under its name, manifest built by the client's
    protocol module, optionally with a health check and `unloads`, (package, version) pairs, then the
    trigger) and answer its id."""
    import hashlib
    import os
    import shutil

    from hotload.staging import protocol

    batch = protocol.new_batch_id()
    folder = staging / protocol.temp_folder(batch)
    folder.mkdir()
    entries = []
    for position, package in enumerate(packages, 1):
        shutil.copyfile(package, folder / package.name)
        data = package.read_bytes()
        entries.append(protocol.ManifestEntry(position, package.name, len(data), hashlib.sha256(data).hexdigest(), package.stem))
    (folder / protocol.MANIFEST).write_text(protocol.Manifest.new(entries, batch, health=health, unloads=unloads).render())
    folder.rename(staging / batch)
    temp = staging / protocol.temp_name(batch, "load")
    temp.write_text(protocol.render_trigger(batch))
    os.link(temp, staging / protocol.TRIGGER)
    temp.unlink()
    return batch


def status_of_batch(app, batch: str, timeout: float = 60):
    """The loader's status once it is about `batch` and the trigger is gone (`app` has a `staging` folder)."""
    from hotload.staging import protocol

    path = app.staging / protocol.STATUS

    def arrived():
        try:
            return protocol.Status.parse(path.read_text()).batch == batch and not (app.staging / protocol.TRIGGER).exists()
        except (OSError, protocol.ProtocolError):
            return False

    deadline = time.monotonic() + timeout
    while not arrived():
        assert time.monotonic() < deadline, f"no status of batch {batch} after {timeout:.0f} s"
        time.sleep(0.1)
    return protocol.Status.parse(path.read_text())


def assert_reported_after_restart(report, staging: Path, image_folder: Path, history: str, batch: str, expected: str,
                                  step: str) -> None:
    """What a loader killed at `step` of `batch` reports once its image is up again (docs/protocol.md, "Crash
    during a batch"): `expected` (ok: loaded and saved; failed: not saved, kept in failed/), and nothing left."""
    from hotload.staging import protocol

    assert report.result == expected, report
    if expected == "ok":
        assert any("recovered after a restart" in note for note in report.notes) or step == "recorded"
        assert not (staging / batch).exists()
    else:
        assert "the image stopped during the" in report.error and "not saved" in report.error
        assert (staging / protocol.FAILED / batch / "reason").is_file()
    assert batch in history
    assert not list(image_folder.glob("*.hotload-new")) and not list(image_folder.glob("*.hotload-bak"))


def staging_names(staging: Path) -> list:
    """The names in a staging directory, but a loader's records being written (`.hotload-loader-*`)."""
    return sorted(path.name for path in Path(staging).iterdir() if not path.name.startswith(".hotload-loader-"))


def staging_listing(staging: Path) -> dict:
    """Every entry under a staging directory with its kind, size and modification time, but what a loader
    rewrites while idle: `heartbeat`, and its records being written (`.hotload-loader-*`, renamed a moment
    later: gone, perhaps, before they could be looked at)."""
    import os

    entries = {}
    for root, folders, files in os.walk(staging):
        for name in folders + files:
            path = Path(root) / name
            if name.startswith(".hotload-loader-") or path == staging / "heartbeat":
                continue
            status = path.lstat()
            entries[str(path.relative_to(staging))] = (status.st_mode, status.st_size, status.st_mtime_ns)
    return entries


# Etoys probes: Smalltalk that writes one "key = value" line per fact (values printString'd, errors as ERROR ...)
# into `out`, through `show`; a probe block declares both and starts with PROBE_SHOW.
PROBE_SHOW = """	out := WriteStream on: String new.
	show := [ :key :block | | value |
		value := [ block value printString ] on: Error do: [ :e | e return: 'ERROR ' , e class name , ' ' , e messageText printString ].
		out nextPutAll: key , ' = ' , (value copyReplaceAll: (String with: Character cr) with: '\\n'); nextPut: (Character value: 10) ].
"""


def monticello_organization_probe(prefix: str) -> str:
    """The probe lines for Monticello's organization of the packages named `prefix...`: working copies with
    their ancestry and modified flag, class categories, PackageInfos."""
    return f"""	show value: 'working copies' value: [ ((MCWorkingCopy registry keys select: [ :p | p name beginsWith: '{prefix}' ])
		collect: [ :p | | wc | wc := MCWorkingCopy registry at: p.
			p name , ' ' , (wc ancestors collect: [ :v | v name ]) asArray printString , ' modified=' , wc modified printString ])
		asSortedCollection asArray ].
	show value: 'class categories' value: [ (SystemOrganization categories select: [ :c | c beginsWith: '{prefix}' ])
		asSortedCollection asArray ].
	show value: 'PackageInfos' value: [ (PackageOrganizer default packageNames select: [ :n | n beginsWith: '{prefix}' ])
		asSortedCollection asArray ].
"""
