"""hotload save: a save-only trigger written the protocol's atomic way, and with --wait the save's history line
(fake loader here; the live gst image in test_live_gst's save-only test and below)."""

import json

from conftest import NEEDS_GST, run_hotload
from hotload.staging import protocol


def test_save_waits_for_the_history_line_and_reports_the_sizes(fake_staging):
    result = run_hotload("save", "--to", fake_staging, "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["result"], report["size_before"], report["size_after"]) == ("saved", 100, 90)
    assert not (fake_staging / protocol.TRIGGER).exists()
    assert not list(fake_staging.glob(".hotload-tmp-*"))


def test_save_without_wait_only_requests_it(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    result = run_hotload("save", "--to", staging)
    assert result.returncode == 0 and "save requested" in result.stdout
    assert (staging / protocol.TRIGGER).read_text() == ""  # empty: save only
    assert not list(staging.glob(".hotload-tmp-*"))


def test_a_pending_batch_trigger_is_never_replaced(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    trigger = protocol.render_trigger("20261122T203700Z-3fa9c1")
    (staging / protocol.TRIGGER).write_text(trigger)
    result = run_hotload("save", "--to", staging, "--timeout", "0.5")
    assert result.returncode == 6 and "was not taken in time" in result.stderr, result.stderr
    assert (staging / protocol.TRIGGER).read_text() == trigger
    assert not list(staging.glob(".hotload-tmp-*"))


def test_a_pending_save_is_this_save_too(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / protocol.TRIGGER).write_text("")
    assert run_hotload("save", "--to", staging).returncode == 0
    assert [p.name for p in staging.iterdir()] == [protocol.TRIGGER]


def test_save_wait_without_a_loader_exits_3(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    result = run_hotload("save", "--to", staging, "--wait")
    assert result.returncode == 3 and "no loader is running" in result.stderr and "Traceback" not in result.stderr


def test_a_link_at_load_is_refused(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / protocol.TRIGGER).symlink_to(tmp_path / "elsewhere")
    result = run_hotload("save", "--to", staging, "--timeout", "2")
    assert result.returncode == 5 and "not a trigger file" in result.stderr, result.stderr


@NEEDS_GST
def test_the_nightly_save_on_gst_records_the_image_size(app):
    result = run_hotload("save", "--to", app.staging, "--wait", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "saved"
    assert report["size_after"] == app.image.stat().st_size and report["size_before"] > 0
    last = (app.staging / protocol.HISTORY).read_text().splitlines()[-1]
    assert last.split("\t")[2:4] == ["-", "saved"] and last.endswith(f"{report['size_after']} bytes")


def test_a_long_history_is_followed_from_its_end(fake_staging):
    """history.log longer than what is read of it (its last 256 KiB): the save's line is still found."""
    with open(fake_staging / protocol.HISTORY, "a") as history:
        history.write("garbage\n" * 40000)  # 320 KB of short lines: the save's longer line pushes several out
    result = run_hotload("save", "--to", fake_staging, "--wait", "--json", "--timeout", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["size_after"] == 90
