"""Etoys 5.0: requests during a load. The baked image serves a minimal HTTP/1.0 responder at
`userBackgroundPriority` (benchmarks/loader_etoys.py) while a 200-method package loads; a client
requesting as fast as it can sees no failed request, and then the new version's page. No timing asserts:
the figures are benchmarks/loader_etoys.py's (docs/benchmarks.md).
"""

import sys
from pathlib import Path

import pytest

from hotload.pack import Packer
from hotload.squeak import Squeak, SqueakError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from loader_etoys import PACKAGE, EtoysServer, load_under_requests  # noqa: E402


def _missing():
    try:
        Squeak().base_image()
        return None
    except SqueakError as error:
        return str(error)


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no Squeak VM or Etoys image: {MISSING}")


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
