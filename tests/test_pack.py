import zipfile

import pytest

from conftest import run_hotload
from helpers import class_def, method
from hotload.formats.mcz import read_mcz
from hotload.formats.pack import PackError, Packer

SOURCE = class_def("Greeter", category="Greeting", ivars="name") + method("Greeter", "greet\n\t^ 'Hello!!'") + (
    "!Greeter class methodsFor: 'initialization'!\ninitialize\n\tself new! !\n\nGreeter initialize!\n"
)


def test_pack_roundtrip_and_ancestry(tmp_path):
    source = tmp_path / "Greeting.st"
    source.write_text(SOURCE)
    dist = tmp_path / "dist"
    first = Packer(author="jd", message="first cut").pack(source, dist)
    assert first.path.name == "Greeting-jd.1.mcz"
    package = read_mcz(first.path)
    assert package.name == "Greeting"
    assert package.version.message == "first cut" and package.version.author == "jd"
    assert package.snapshot.classes["Greeter"].instance_variables == ("name",)
    assert [m.selector for m in package.snapshot.methods] == ["greet", "initialize"]
    assert "'Hello!'" in package.snapshot.methods[0].source
    assert package.snapshot.doits == ["Greeter initialize"]
    second = Packer(author="jd").pack(source, dist)
    assert second.version.name == "Greeting-jd.2"
    info = read_mcz(second.path).version
    assert [a.name for a in info.ancestors] == ["Greeting-jd.1"]
    assert info.ancestors[0].id == package.version.id
    third = Packer(author="kb").pack(source, dist)
    assert [a.name for a in read_mcz(third.path).version.ancestry()] == ["Greeting-jd.2", "Greeting-jd.1"]


def test_pack_writes_monticello_layout(tmp_path):
    source = tmp_path / "Greeting.st"
    source.write_text(SOURCE)
    result = Packer(author="jd").pack(source, tmp_path / "out.mcz")
    with zipfile.ZipFile(result.path) as archive:
        assert sorted(archive.namelist()) == ["package", "snapshot/source.st", "version"]
        text = archive.read("snapshot/source.st").decode()
        assert archive.read("package") == b"(name 'Greeting')"
    assert "\n" not in text and text.startswith("SystemOrganization addCategory: #'Greeting'!\r")
    assert "!Greeter methodsFor: 'demo'!\rgreet\r\t^ 'Hello!!'! !" in text


def test_pack_refuses_what_monticello_cannot_hold(tmp_path):
    source = tmp_path / "x.st"
    source.write_text(class_def("A", category="X") + "Transcript show: 'hi'!\n")
    with pytest.raises(PackError, match="cannot be stored in a Monticello package"):
        Packer(author="jd").pack(source, tmp_path)
    source.write_text(class_def("A", category="X") + class_def("B", category="Y"))
    with pytest.raises(PackError, match="give it with --name"):
        Packer(author="jd").pack(source, tmp_path)
    with pytest.raises(PackError, match="letters and digits"):
        Packer(author="j d")


def test_pack_command(tmp_path):
    source = tmp_path / "Greeting.st"
    source.write_text(SOURCE)
    result = run_hotload("pack", source, "-o", tmp_path, "--author", "jd", check=True)
    assert "Greeting-jd.1.mcz" in result.stdout
    missing = run_hotload("pack", tmp_path / "nope.st", "-o", tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_a_long_history_is_written_and_read_back():
    from hotload.formats.mcz import VersionInfo, parse_version_info
    from hotload.formats.pack import version_sexpr

    version = VersionInfo(name="Deep-jd.0", id="id-0")
    for number in range(1, 5001):
        version = VersionInfo(name=f"Deep-jd.{number}", id=f"id-{number}", ancestors=(version,))
    read = parse_version_info(version_sexpr(version))
    assert read.name == "Deep-jd.5000"
    assert [info.name for info in read.ancestry()][-1] == "Deep-jd.0"
    assert len(list(read.ancestry())) == 5000
