"""`hotload plan` and `hotload push` take Tonel and FileTree folders and pack them on the fly,
in a temporary folder that is gone when the command ends, whether it succeeds or fails."""

import json
import os
import tempfile

import pytest

from cli_runner import run_in_process
from fake_loader import FakeLoader
from hotload.staging import protocol
from hotload.formats.pack import Packer
from test_filetree import write_class
from test_tonel import class_file, tonel_method, write_package


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary folders of the command under test go here, so the test sees each one."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.delenv("HOTLOAD_AUTHOR", raising=False)
    return folder


@pytest.fixture
def sources(tmp_path):
    """Shop-Core as Tonel, Shop-Web as FileTree (a subclass of Shop-Core's Cart)."""
    core = write_package(
        tmp_path / "src" / "Shop-Core",
        {"Cart.class.st": class_file("Cart", package="Shop-Core", methods=tonel_method("Cart >> total", "\t^ 0"))},
    )
    web = tmp_path / "repository" / "Shop-Web.package"
    write_class(web, "WebCart", {"super": "Cart", "category": "Shop-Web", "type": "normal"},
                methods=[("instance", "render.st", "rendering\nrender\n\t^ self total printString")])
    return core, web


def test_push_packs_folders_on_the_fly_and_leaves_no_temporary_folder(tmp_path, private_tmp, sources):
    core, web = sources
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, consume=False).start()  # beats, never takes the trigger: the batch stays
    try:
        result = run_in_process("push", web, core, "--to", staging, "--json")
    finally:
        loader.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["packages"] == ["Shop-Core-hotload.1", "Shop-Web-hotload.1"]  # load order: Cart first
    local = [r.path for folder in (core, web) for r in Packer(author=None).pack_folder(folder, tmp_path / "local")]
    batch = staging / report["batch"]
    for path in local:
        assert (batch / path.name).read_bytes() == path.read_bytes()  # a folder packs the same bytes each time
    assert protocol.parse_trigger((staging / protocol.TRIGGER).read_text()) == report["batch"]
    assert os.listdir(private_tmp) == []


def test_a_broken_folder_pushes_nothing_and_leaves_no_temporary_folder(tmp_path, private_tmp, sources):
    core, web = sources
    (core / "Cart.class.st").write_text(class_file("Cart", package="Shop-Core", methods="\nCart >> total [\n\t^ 'open\n]\n"))
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, consume=False).start()
    try:
        result = run_in_process("push", web, core, "--to", staging)
    finally:
        loader.stop()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"hotload: {core / 'Cart.class.st'}:9: the string opened here is never closed" in result.stderr
    assert "nothing was planned or pushed" in result.stderr
    assert not (staging / protocol.TRIGGER).exists()
    assert [n for n in os.listdir(staging) if n.endswith(".mcz") or os.path.isdir(staging / n)] == []
    assert os.listdir(private_tmp) == []


def test_plan_takes_folders_and_mcz_files_together(tmp_path, private_tmp, sources):
    core, web = sources
    packed = Packer(author="jd").pack_folder(core, tmp_path / "dist")[0].path
    result = run_in_process("plan", web, packed, "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["order"] == ["Shop-Core", "Shop-Web"]
    assert [entry["version"] for entry in plan["packages"]] == ["Shop-Web-hotload.1", "Shop-Core-jd.1"]
    assert os.listdir(private_tmp) == []


def test_a_method_that_starts_with_a_comment_can_be_pushed(tmp_path, private_tmp, sources):
    core, web = sources
    (web / "WebCart.class" / "instance" / "render.st").write_text('rendering\n"Render me"\nrender\n\t^ 1')
    staging = tmp_path / "staging"
    loader = FakeLoader(staging, consume=False).start()
    try:
        result = run_in_process("push", web, core, "--to", staging)
    finally:
        loader.stop()
    assert result.returncode == 0, result.stderr
