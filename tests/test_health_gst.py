"""The health gate on the live gst image (docs/protocol.md, "Health gate"): after the install and before the save
the loader GETs the manifest's URL; a failing check undoes the batch in the running image and saves nothing,
a passing one saves. The batches are staged as a push stages them, with a health line in the manifest."""

import hashlib
import socket
import threading

import pytest

from conftest import NEEDS_GST, run_hotload
from helpers import broken_counter, stage_batch, status_of_batch
from hotload.staging import protocol
from hotload.images.example_app import heading_of
from hotload.staging.protocol import HealthCheck, Heartbeat, LoadedRecord

pytestmark = NEEDS_GST

INTERVAL_MS = 500


@pytest.fixture(scope="module")
def app(app, versions):
    """conftest's example app, with v1 pushed."""
    result = run_hotload("push", versions[0], "--to", app.staging, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    return app


@pytest.fixture(scope="module")
def broken_v2(tmp_path_factory, versions):
    """examples/counter v2 whose page raises: Seaside answers its error page."""
    return broken_counter(tmp_path_factory.mktemp("broken"))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def page_heading(app) -> str:
    return heading_of(app.get(app.url)[1])


def test_the_heartbeat_says_the_loader_checks_health(app):
    text = (app.staging / protocol.HEARTBEAT).read_text()
    assert "features\thealth" in text
    assert Heartbeat.parse(text).dialect == "gst"


def test_a_page_that_breaks_is_undone_and_nothing_is_saved(app, broken_v2):
    image = sha256(app.image)
    record = (app.staging / protocol.LOADED).read_text()
    batch = stage_batch(app.staging, [broken_v2], HealthCheck(app.url, 200, 5000, "Counter"))
    status = status_of_batch(app, batch)
    assert status.result == "failed", status
    assert status.error.startswith(f"health check failed: GET {app.url} answered 500, not 200"), status.error
    assert "undone in the running image" in status.error and "undo incomplete" not in status.error
    assert status.failed_package == "" and "health" in status.timings_ms
    assert page_heading(app) == "Counter v1"  # undone: the running image serves v1 again
    assert sha256(app.image) == image  # not saved
    assert (app.staging / protocol.LOADED).read_text() == record
    assert (app.staging / protocol.FAILED / batch / broken_v2.name).is_file()


def test_a_missing_body_text_fails_the_check(app, versions):
    image = sha256(app.image)
    batch = stage_batch(app.staging, [versions[1]], HealthCheck(app.url, 200, 5000, "pong"))
    status = status_of_batch(app, batch)
    assert status.result == "failed" and "answered 200 without 'pong'" in status.error, status
    assert page_heading(app) == "Counter v1" and sha256(app.image) == image


def test_a_refused_connection_and_a_silent_server_fail_the_check(app, versions):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    batch = stage_batch(app.staging, [versions[1]], HealthCheck(f"http://127.0.0.1:{port}/ping", 200, 5000))
    status = status_of_batch(app, batch)
    assert status.result == "failed" and "refused" in status.error.lower(), status
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts, never answers
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ping"
        batch = stage_batch(app.staging, [versions[1]], HealthCheck(url, 200, 300))
        status = status_of_batch(app, batch)
    finally:
        silent.close()
    assert status.result == "failed" and f"GET {url}: no answer within 300 ms" in status.error, status
    assert page_heading(app) == "Counter v1"


def test_a_good_v2_passes_and_is_saved(app, versions):
    image = sha256(app.image)
    batch = stage_batch(app.staging, [versions[1]], HealthCheck(app.url, 200, 5000, "Counter v2"))
    status = status_of_batch(app, batch)
    assert status.result == "ok", status
    assert "health" in status.timings_ms
    assert page_heading(app) == "Counter v2"
    assert sha256(app.image) != image  # saved
    assert LoadedRecord.parse((app.staging / protocol.LOADED).read_text()).packages["Counter-App"].version == \
        "Counter-App-demo.2"


def test_push_with_an_environment_carries_its_health_check(app, broken_v2, versions, tmp_path):
    """hotload.toml's [env.NAME.health] goes into the manifest: the broken page is undone (exit 1), and a loader
    that cannot check health gets nothing (exit 3)."""
    (tmp_path / "hotload.toml").write_text(
        f'[env.live]\ntargets = ["{app.staging}"]\n[env.live.health]\nurl = "{app.url}"\nbody = "Counter"\ntimeout = 5\n'
        f'[env.plain]\ntargets = ["{tmp_path / "plain"}"]\n[env.plain.health]\nurl = "{app.url}"\n')
    image = sha256(app.image)
    result = run_hotload("push", broken_v2, "--env", "live", "--wait", "--allow-downgrade", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "health check failed" in result.stdout and "answered 500" in result.stdout
    assert sha256(app.image) == image
    from fake_loader import FakeLoader  # beats, but speaks no health

    plain = FakeLoader(tmp_path / "plain", interval=0.05).start()
    try:
        refused = run_hotload("push", versions[1], "--env", "plain", cwd=tmp_path)
    finally:
        plain.stop()
    assert refused.returncode == 3 and "does not check health" in refused.stderr, refused.stdout + refused.stderr
    assert not list((tmp_path / "plain").glob("2*"))  # nothing uploaded
