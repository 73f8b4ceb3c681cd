"""Every damaged or hostile .mcz gets one PackageError (exit 2, one `hotload:` line), never a traceback."""

import ctypes
import io
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import pytest

from conftest import run_hotload
from helpers import class_def, make_package, method
from hotload.errors import PackageError
from hotload.formats.mcz import SOURCE_MEMBER, parse_version_info, read_mcz

SOURCE = class_def("Shape", category="Demo") + method("Shape", "area\n\t^ 0")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def package_members(tmp_path_factory):
    """The members of a small package written by `hotload pack`."""
    path = make_package(tmp_path_factory.mktemp("package"), "Demo", SOURCE)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def zip_bytes(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return bytearray(buffer.getvalue())


# -- finding the headers of a member in zip bytes ---------------------------------------------


def central_entry(data, name: str) -> int:
    """Offset of the member's central directory entry."""
    end = bytes(data).rindex(b"PK\x05\x06")
    size, offset = struct.unpack("<II", data[end + 12 : end + 20])
    position = offset
    while position < offset + size:
        name_length, extra_length, comment_length = struct.unpack("<HHH", data[position + 28 : position + 34])
        if data[position + 46 : position + 46 + name_length] == name.encode("utf-8"):
            return position
        position += 46 + name_length + extra_length + comment_length
    raise KeyError(name)


def local_header(data, name: str) -> int:
    return struct.unpack("<I", data[central_entry(data, name) + 42 : central_entry(data, name) + 46])[0]


def data_start(data, name: str) -> int:
    header = local_header(data, name)
    name_length, extra_length = struct.unpack("<HH", data[header + 26 : header + 30])
    return header + 30 + name_length + extra_length


def set_field(data, name: str, local_offset: int, central_offset: int, fmt: str, value):
    """Set one field in both the local header and the central directory entry."""
    local, central = local_header(data, name), central_entry(data, name)
    struct.pack_into(fmt, data, local + local_offset, value)
    struct.pack_into(fmt, data, central + central_offset, value)


# -- the corrupt kinds ---------------------------------------------------------------------------------


def crc_error(members):
    data = zip_bytes(members, zipfile.ZIP_STORED)
    data[data_start(data, "version") + 5] ^= 0x01
    return data


def broken_deflate(members):
    data = zip_bytes(members)
    data[data_start(data, SOURCE_MEMBER)] = 0xFF  # final block of reserved type 3
    return data


def encrypted_member(members):
    data = zip_bytes(members)
    flags = struct.unpack("<H", data[local_header(data, SOURCE_MEMBER) + 6 : local_header(data, SOURCE_MEMBER) + 8])[0]
    set_field(data, SOURCE_MEMBER, 6, 8, "<H", flags | 0x1)
    return data


def unknown_method(members):
    data = zip_bytes(members)
    set_field(data, SOURCE_MEMBER, 8, 10, "<H", 99)
    return data


def bzip2_method(members):
    data = zip_bytes(members)
    set_field(data, SOURCE_MEMBER, 8, 10, "<H", zipfile.ZIP_BZIP2)
    return data


def non_utf8_name(members):
    data = zip_bytes({**members, "dependencies/Caf\u00e9": b"(name 'Cafe-x.1')"})  # stored with the UTF-8 flag
    at = bytes(data).index("Caf\u00e9".encode("utf-8"))
    data[at + 3 : at + 5] = b"\xff\xfe"
    central = bytes(data).rindex("Caf\u00e9".encode("utf-8"))
    data[central + 3 : central + 5] = b"\xff\xfe"
    return data


def truncated_central_directory(members):
    data = zip_bytes(members)
    end = bytes(data).rindex(b"PK\x05\x06")
    return data[: end - 20] + data[end:]


def truncated_file(members):
    data = zip_bytes(members)
    return data[: len(data) * 2 // 3]


def lying_size(members):
    """The header says 100 bytes; the deflate stream holds 1 MiB."""
    data = zip_bytes({**members, SOURCE_MEMBER: b"!" * MIB})
    set_field(data, SOURCE_MEMBER, 22, 24, "<I", 100)
    return data


def duplicate_member(members):
    buffer = io.BytesIO(zip_bytes(members))
    with zipfile.ZipFile(buffer, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("version", "(name 'Other-x.9' id 'x' ancestors ())")
    return bytearray(buffer.getvalue())


def overlapping_members(members):
    """`dependencies/B` lives inside the data of `dependencies/A`: one stretch of bytes read twice."""
    inner = zip_bytes({"dependencies/B": b"(name 'B-x.1')"}, zipfile.ZIP_STORED)
    inner_directory = central_entry(inner, "dependencies/B")
    data = zip_bytes({**members, "dependencies/A": bytes(inner[:inner_directory])}, zipfile.ZIP_STORED)
    end = bytes(data).rindex(b"PK\x05\x06")
    count, size, offset = struct.unpack("<HII", data[end + 10 : end + 20])
    extra = bytearray(inner[inner_directory : bytes(inner).rindex(b"PK\x05\x06")])
    struct.pack_into("<I", extra, 42, data_start(data, "dependencies/A"))
    directory = data[offset:end] + extra
    return data[:offset] + directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count + 1, count + 1, len(directory), offset, 0)


CORRUPT_KINDS = {
    # kind: (builder, what the message says)
    "crc": (crc_error, "damaged .*CRC"),
    "deflate": (broken_deflate, "damaged .*invalid block type"),
    "encrypted": (encrypted_member, "encrypted"),
    "unknown method": (unknown_method, "compression method 99"),
    "bzip2 method": (bzip2_method, "compression method 12"),
    "non-UTF-8 name": (non_utf8_name, "not valid UTF-8"),
    "truncated central directory": (truncated_central_directory, "not a zip archive"),
    "truncated file": (truncated_file, "not a zip archive"),
    "lying size": (lying_size, "damaged"),
    "duplicate member": (duplicate_member, "member 'version' appears twice"),
    "overlapping members": (overlapping_members, "member 'dependencies/B' overlaps member 'dependencies/A'"),
}


def assert_one_line_exit_2(path, timeout=60, env=None):
    result = run_hotload("plan", path, timeout=timeout, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("hotload:")]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_corrupt_zip_is_one_clear_error(tmp_path, package_members, kind):
    build, problem = CORRUPT_KINDS[kind]
    path = tmp_path / "Demo-tester.1.mcz"
    path.write_bytes(bytes(build(package_members)))
    with pytest.raises(PackageError, match=problem) as caught:
        read_mcz(path)
    assert "; " in caught.value.problem  # what is wrong; what to do
    assert_one_line_exit_2(path)


def test_the_untouched_package_reads(tmp_path, package_members):
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = tmp_path / "Demo-tester.1.mcz"
        path.write_bytes(bytes(zip_bytes(package_members, compression)))
        assert "Shape" in read_mcz(path).snapshot.classes


# -- not regular files ---------------------------------------------------------------------------------


def test_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "Demo-x.1.mcz"
    os.mkfifo(fifo)
    with pytest.raises(PackageError, match="is a FIFO, not a .mcz file"):
        read_mcz(fifo)
    assert_one_line_exit_2(fifo, timeout=30)  # a hang fails with TimeoutExpired


def test_directory_is_refused(tmp_path):
    folder = tmp_path / "Demo-x.1.mcz"
    folder.mkdir()
    with pytest.raises(PackageError, match="is a directory, not a .mcz file"):
        read_mcz(folder)
    assert_one_line_exit_2(folder)


def test_device_behind_a_symlink_is_refused(tmp_path):
    link = tmp_path / "zero.mcz"
    link.symlink_to("/dev/zero")
    with pytest.raises(PackageError, match="is a character device, not a .mcz file"):
        read_mcz(link)
    assert_one_line_exit_2(link, timeout=30)


def test_missing_file_and_dangling_symlink(tmp_path):
    with pytest.raises(PackageError, match="no such file"):
        read_mcz(tmp_path / "gone.mcz")
    (tmp_path / "dangling.mcz").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PackageError, match="no such file"):
        read_mcz(tmp_path / "dangling.mcz")


def without_file_permission_override():
    """In a child process about to run as root: drop the capabilities that let root read any file."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop a capability")


def test_unreadable_file(tmp_path, package_members):
    path = tmp_path / "Demo-x.1.mcz"
    path.write_bytes(bytes(zip_bytes(package_members)))
    path.chmod(0)
    probe = "from hotload.formats.mcz import read_mcz\ntry:\n    read_mcz(%r)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    as_root = os.geteuid() == 0
    try:
        runs = [
            subprocess.run(
                [sys.executable, *arguments], capture_output=True, text=True, timeout=60,
                preexec_fn=without_file_permission_override if as_root else None,
            )
            for arguments in (["-c", probe % str(path)], ["-m", "hotload", "plan", str(path)])
        ]
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop root's file permission override here: {error}")
    probed, planned = runs
    assert probed.stdout.startswith("PackageError") and "permission denied" in probed.stdout, probed
    assert planned.returncode == 2 and "Traceback" not in planned.stderr, planned.stderr
    # click's own readable check of the argument may answer first, as a usage error
    said = [line for line in planned.stderr.splitlines() if str(path) in line]
    assert said in (
        [f"hotload: {path}: cannot be read (permission denied); check its permissions"],
        [f"Error: Invalid value for 'PACKAGES...': Path {str(path)!r} is not readable."],
    ), planned.stderr


# -- limits ------------------------------------------------------------------------------------------------


def deflated_zeros(size: int):
    """A raw deflate stream of `size` zero bytes (a multiple of 1 MiB), and their CRC-32, built in a few MiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)  # self-contained
    stream = block * (size // MIB) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(bytes(MIB), crc)
    return stream, crc


def bomb_bytes(members, declared_size=None):
    """The package with `snapshot/source.st` inflating to 1 GiB of zeros, declared as `declared_size` bytes."""
    stream, crc = deflated_zeros(1024 * MIB)
    data = zip_bytes({**members, SOURCE_MEMBER: stream}, zipfile.ZIP_STORED)  # the stream stored raw...
    set_field(data, SOURCE_MEMBER, 8, 10, "<H", zipfile.ZIP_DEFLATED)  # ...then declared deflated
    set_field(data, SOURCE_MEMBER, 14, 16, "<I", crc)
    set_field(data, SOURCE_MEMBER, 22, 24, "<I", 1024 * MIB if declared_size is None else declared_size)
    return data


def run_measured(arguments, folder, timeout=120):
    """Run a command; its exit status, its stderr and its peak resident memory in MiB."""
    with open(folder / "stderr", "w+") as stderr:
        process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise AssertionError(f"{arguments} did not finish within {timeout} s")
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        return process.returncode, stderr.read(), usage.ru_maxrss / 1024  # KiB on Linux


@pytest.mark.parametrize("declared", ["honest", "lying"])
def test_zip_bomb_fails_fast_in_little_memory(tmp_path, package_members, declared):
    path = tmp_path / "Demo-x.1.mcz"
    path.write_bytes(bytes(bomb_bytes(package_members, None if declared == "honest" else 1000)))
    assert path.stat().st_size < 2 * MIB
    with pytest.raises(PackageError, match="max_member_bytes" if declared == "honest" else "damaged"):
        read_mcz(path)
    code, stderr, peak_mib = run_measured([sys.executable, "-m", "hotload", "plan", str(path)], tmp_path)
    assert code == 2 and "Traceback" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("hotload:")]) == 1, stderr
    assert peak_mib < 300, f"hotload plan peaked at {peak_mib:.0f} MiB"
    if declared == "honest":
        assert "HOTLOAD_MAX_MEMBER_MB" in stderr


def test_member_over_the_limit_names_it(tmp_path, package_members, monkeypatch):
    path = tmp_path / "Demo-x.1.mcz"
    path.write_bytes(bytes(zip_bytes({**package_members, SOURCE_MEMBER: b" " * (2 * MIB)})))
    line = assert_one_line_exit_2(path, env={**os.environ, "HOTLOAD_MAX_MEMBER_MB": "1"})
    assert "max_member_bytes" in line and "HOTLOAD_MAX_MEMBER_MB" in line
    monkeypatch.setenv("HOTLOAD_MAX_MEMBER_MB", "3")
    assert read_mcz(path).snapshot.classes == {}


def test_file_over_the_limit_is_refused_unread(tmp_path, package_members, monkeypatch):
    path = tmp_path / "Demo-x.1.mcz"
    path.write_bytes(bytes(zip_bytes({**package_members, "snapshot.bin": os.urandom(2 * MIB)}, zipfile.ZIP_STORED)))
    monkeypatch.setenv("HOTLOAD_MAX_MCZ_MB", "1")
    with pytest.raises(PackageError, match="max_mcz_bytes.*HOTLOAD_MAX_MCZ_MB"):
        read_mcz(path)
    monkeypatch.setenv("HOTLOAD_MAX_MCZ_MB", "3")
    assert read_mcz(path).name == "Demo"


# -- long histories ----------------------------------------------------------------------------------------


def deep_version(package: str, depth: int) -> str:
    """`depth` versions, each the only ancestor of the one before it, nested as Monticello writes them;
    the newest also names the oldest as a step child, by back-reference."""
    opening = "".join(f"(name '{package}-jd.{n}' id 'id-{n}' author 'jd' ancestors (" for n in range(depth, 1, -1))
    oldest = f"(name '{package}-jd.1' id 'id-1' author 'jd' ancestors ())"
    return opening + oldest + ") stepChildren ())" * (depth - 2) + ") stepChildren ((id 'id-1')))"


def test_twenty_thousand_nested_ancestors_parse():
    info = parse_version_info(deep_version("Deep", 20_000))
    assert info.name == "Deep-jd.20000"
    history = list(info.ancestry())
    assert len(history) == 19_999
    assert history[0].name == "Deep-jd.19999" and history[-1].name == "Deep-jd.1"
    assert info.step_children[0] is history[-1]


def test_deep_history_in_a_package_reads_through_the_cli(tmp_path, package_members):
    path = tmp_path / "Demo-jd.20000.mcz"
    path.write_bytes(bytes(zip_bytes({**package_members, "version": deep_version("Demo", 20_000)})))
    assert len(list(read_mcz(path).version.ancestry())) == 19_999
    result = run_hotload("plan", path)
    assert result.returncode == 0 and "Demo-jd.20000" in result.stdout, result.stderr


def test_longest_real_history_reads(corpus):
    def depth(path):
        with zipfile.ZipFile(path) as archive:
            text = archive.read("version").decode("latin-1")
        deepest = level = 0
        for character in text:
            level += {"(": 1, ")": -1}.get(character, 0)
            deepest = max(deepest, level)
        return deepest

    longest = max(corpus.glob("*.mcz"), key=depth)
    history = list(read_mcz(longest).version.ancestry())
    assert longest.name.startswith("Zinc-HTTP") and len(history) == 475
