"""Etoys 5.0: requests during a load. The baked image serves a minimal HTTP/1.0 responder at
`userBackgroundPriority` (benchmarks/loader_etoys.py) while a 200-method package loads; a client
requesting as fast as it can sees no failed request, and then the new version's page. No timing asserts:
the figures are benchmarks/loader_etoys.py's (docs/benchmarks.md).
"""

import hashlib
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ETOYS_MISSING, NEEDS_ETOYS
from helpers import stage_batch, status_of_batch  # noqa: E402
from hotload.staging import protocol
from hotload.formats.pack import Packer
from hotload.staging.protocol import HealthCheck

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from loader_etoys import PACKAGE, EtoysServer, bench_package, load_under_requests  # noqa: E402


MISSING = ETOYS_MISSING
pytestmark = NEEDS_ETOYS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    etoys = EtoysServer(tmp_path_factory.mktemp("etoys-requests"))
    etoys.bake()
    etoys.start()
    yield etoys
    etoys.stop()


def test_no_request_fails_during_a_200_method_load(server, tmp_path):
    packer = Packer(author="requests", package_name=PACKAGE)
    for number in (1, 2):  # a new package, then a new version of it
        row = load_under_requests(server, tmp_path, packer, number, classes=2, methods=100, settle=1.0)
        assert row["methods"] == 201
        assert row["during"] > 0, row
        assert row["failed"] == 0, (row["failures"], server.tail())
        assert row["total"] is not None, "the client never saw the new version's page"
    assert server.process.poll() is None


def test_the_health_gate_on_etoys(server, tmp_path):
    """A health line in the manifest: a check that passes saves the batch; one that fails (the page lacks the
    expected text) rolls the batch back with Monticello's rollback and saves nothing."""
    assert "features\thealth" in (server.staging / protocol.HEARTBEAT).read_text()
    packer = Packer(author="health", package_name=PACKAGE)
    good = bench_package(tmp_path, packer, "Counter etoys healthy", 1, 5, 3).path
    batch = stage_batch(server.staging, [good], HealthCheck(server.url, 200, 10000, "Counter etoys healthy"))
    status = status_of_batch(server, batch, timeout=120)
    assert status.result == "ok" and "health" in status.timings_ms, status
    image = hashlib.sha256(server.image.read_bytes()).hexdigest()
    bad = bench_package(tmp_path, packer, "Counter etoys unhealthy", 1, 5, 4).path
    batch = stage_batch(server.staging, [bad], HealthCheck(server.url, 200, 10000, "never on the page"))
    status = status_of_batch(server, batch, timeout=120)
    assert status.result == "failed" and "health check failed" in status.error, status
    assert "answered 200 without 'never on the page'" in status.error and "undo incomplete" not in status.error
    with urllib.request.urlopen(server.url, timeout=10) as page:
        assert "Counter etoys healthy" in page.read().decode()  # rolled back to the saved version
    assert hashlib.sha256(server.image.read_bytes()).hexdigest() == image
