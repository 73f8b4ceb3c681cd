"""The client's readers of the loaded record and of history.log lines (docs/protocol.md)."""

import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotload.errors import ProtocolError
from hotload.staging.protocol import HistoryEntry, LoadedPackage, LoadedRecord, render_record

SHA = "ab" * 32
BATCH = "20261122T203700Z-3fa9c1"
ROW = ("package", "Grease-Core", "Grease-Core-JohanBrichau.97", "Grease-Core-JohanBrichau.97.mcz", "123456", SHA,
       BATCH, "1795379820", "2026-11-22T20:37:00Z")
EXAMPLES = int(os.environ.get("HOTLOAD_FUZZ_EXAMPLES", "200"))


def test_a_record_reads_into_packages_by_name():
    text = render_record("loaded", [("image", "/srv/app/app.im"), ROW,
                                    ("package", "A", "A-jd.2", "A-jd.2.mcz", "10", SHA, BATCH, "1795379821", "x")])
    record = LoadedRecord.parse(text)
    assert record.image == "/srv/app/app.im"
    assert record.packages["Grease-Core"] == LoadedPackage(
        "Grease-Core", "Grease-Core-JohanBrichau.97", "Grease-Core-JohanBrichau.97.mcz", 123456, SHA, BATCH, 1795379820.0)
    assert record.to_json()["packages"][0]["package"] == "A"
    assert record.to_json()["packages"][1]["loaded_at"] == "2026-11-22T20:37:00Z"


@pytest.mark.parametrize("fields, origin", [((), "unknown"), (("added",), "added"), (("replaced",), "replaced"),
                                            (("baked",), "unknown"), (("added", "later"), "added")])
def test_the_origin_is_added_replaced_or_unknown(fields, origin):
    """An older loader writes no origin; a word the client does not know counts as unknown (never unloaded)."""
    record = LoadedRecord.parse(render_record("loaded", [ROW + fields]))
    assert record.packages["Grease-Core"].origin == origin


def test_an_empty_record_has_no_packages():
    assert LoadedRecord.parse(render_record("loaded", [("image", "/i.im")])).packages == {}


@pytest.mark.parametrize("index, value", [
    (3, "../../etc/passwd"),  # file name
    (4, "12x"),  # size
    (5, "AB" * 32),  # SHA-256 in upper case
    (6, "not-a-batch"),
    (1, ""),  # no package name
])
def test_a_bad_package_line_is_refused(index, value):
    row = list(ROW)
    row[index] = value
    with pytest.raises(ProtocolError):
        LoadedRecord.parse(render_record("loaded", [row]))


def test_a_short_package_line_or_a_truncated_record_is_refused():
    with pytest.raises(ProtocolError, match="fields"):
        LoadedRecord.parse(render_record("loaded", [ROW[:5]]))
    with pytest.raises(ProtocolError, match="truncated"):
        LoadedRecord.parse(render_record("loaded", [ROW])[:-4])


def test_history_lines_read_into_fields_with_iso_times():
    entry = HistoryEntry.parse(f"1795379820\t2026-11-22T20:37:00Z\t{BATCH}\tok\tA-jd.1 B-jd.2")
    assert entry == HistoryEntry(1795379820.0, BATCH, "ok", "A-jd.1 B-jd.2")
    assert entry.to_json()["time"] == "2026-11-22T20:37:00Z"
    assert HistoryEntry.parse("1795379820\tx\t-\tsaved\t/srv/app/app.im").result == "saved"
    assert HistoryEntry.parse("1795379820\tx\tinvalid-1795379820\trejected\tunreadable trigger").batch == "invalid-1795379820"
    for bad in ["", "garbage", f"x\ty\t{BATCH}\tok\td", f"1\ty\t{BATCH}\tmaybe\td", "1\ty\t../x\tok\td"]:
        assert HistoryEntry.parse(bad) is None


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_any_text_is_a_record_or_one_protocol_error(text):
    try:
        record = LoadedRecord.parse(text)
    except ProtocolError:
        return
    for package in record.packages.values():
        assert package.package and package.version and len(package.sha256) == 64


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\t\n\r"), max_size=30), min_size=1, max_size=10))
@example(values=["0", "0", "\ud800", "", "", "", "", ""])  # a lone surrogate, as os.listdir gives for non-UTF-8 bytes
def test_fuzz_any_row_in_a_valid_frame_is_read_or_refused(values):
    try:
        LoadedRecord.parse(render_record("loaded", [["package", *values]]))
    except ProtocolError:
        pass


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_any_history_line_is_an_entry_or_none(line):
    entry = HistoryEntry.parse(line)
    assert entry is None or entry.result in ("ok", "failed", "saved", "rejected")


def _heartbeat(loader_id: str) -> str:
    return render_record("heartbeat", [("time", "1795379820", "2026-11-22T20:37:00Z"), ("id", loader_id)])


def test_a_record_of_an_earlier_start_is_waited_for_then_refused(tmp_path):
    """A loader writes its record before its first heartbeat; a record with another id is an earlier start's."""
    import threading

    from hotload.staging.status import read_current_loaded
    from hotload.staging.transports.local import LocalTransport

    (tmp_path / "heartbeat").write_text(_heartbeat("aaaaaaaaaaaa"))
    (tmp_path / "loaded").write_text(render_record("loaded", [("image", "/i.im"), ("id", "bbbbbbbbbbbb"), ROW]))
    with LocalTransport(tmp_path) as transport:
        stale = read_current_loaded(transport, wait=0.3, pause=0.05)
        assert stale.record is None and "earlier start" in stale.problem and "bbbbbbbbbbbb" in stale.problem
        rewrite = threading.Timer(0.2, lambda: (tmp_path / "loaded").write_text(
            render_record("loaded", [("image", "/i.im"), ("id", "aaaaaaaaaaaa")])))
        rewrite.start()
        current = read_current_loaded(transport, wait=5, pause=0.05)
        rewrite.join()
        assert current.record is not None and current.record.packages == {}  # the current start's record
        (tmp_path / "loaded").write_text(render_record("loaded", [("image", "/i.im"), ROW]))  # a loader without ids
        assert "Grease-Core" in read_current_loaded(transport, wait=0).record.packages
