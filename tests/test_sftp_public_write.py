"""The SFTP upload without paramiko's private calls (`_async_request`, `_read_response`), against the real sshd.

hotload's fast upload sends SSH_FXP_WRITE requests itself through those private calls. A paramiko
without them gets paramiko's public pipelined `SFTPFile.write` instead; these tests hide the two calls
from the transport's client (the files it opens are still paramiko's own) and push through it.
"""

import hashlib
import os

import pytest

from helpers import shop_packages
from hotload.staging import protocol
from hotload.formats.mcz import read_mcz
from hotload.formats.plan import LoadPlan
from hotload.staging.push import Pusher
from hotload.staging.targets import parse_target
from hotload.staging.transports import open_transport
from hotload.staging.transports import sftp as sftp_module

PRIVATE = ("_async_request", "_read_response")


class PublicOnly:
    """An SFTPClient seen without the private calls; records whether anything asked for them."""

    def __init__(self, client):
        self._client = client
        self.asked = []

    def __getattr__(self, name):
        if name in PRIVATE:
            self.asked.append(name)
            raise AttributeError(name)
        return getattr(self._client, name)


def test_the_installed_paramiko_has_the_private_calls(ssh_home, tmp_path):
    """The fast path is the one in use; if a paramiko release drops these calls, this says so."""
    with open_transport(parse_target(ssh_home.url(tmp_path / "staging"))) as transport:
        assert sftp_module._has_private_write_calls(transport.sftp)
        assert not sftp_module._has_private_write_calls(PublicOnly(transport.sftp))


@pytest.mark.parametrize("size", [0, 1, sftp_module.CHUNK - 1, 3 * sftp_module.CHUNK + 12345])
def test_upload_through_the_public_write(ssh_home, tmp_path, size):
    staging = tmp_path / "staging"
    local = tmp_path / "data.bin"
    data = os.urandom(size)
    local.write_bytes(data)
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        transport.ensure_directory()
        hidden = PublicOnly(transport.sftp)
        transport.sftp = hidden
        progress = []
        transport.upload(str(local), "copy.bin", progress.append)
        assert hidden.asked  # the feature test looked and took the public path
        assert (staging / "copy.bin").read_bytes() == data
        assert sum(progress) == size
        assert all(0 < step <= sftp_module.CHUNK for step in progress)


def test_push_through_the_public_write(ssh_home, tmp_path):
    paths = shop_packages(tmp_path / "src")
    staging = tmp_path / "staging"
    with open_transport(parse_target(ssh_home.url(staging))) as transport:
        transport.sftp = PublicOnly(transport.sftp)
        result = Pusher(transport).push(LoadPlan.build([read_mcz(p) for p in paths]))
    folder = staging / result.batch
    manifest = protocol.Manifest.parse((folder / protocol.MANIFEST).read_text())
    assert sorted(entry.version for entry in manifest.entries) == ["Shop-Core-tester.1", "Shop-Web-tester.1"]
    for path in paths:
        assert hashlib.sha256((folder / path.name).read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    assert result.batch in (staging / protocol.TRIGGER).read_text()
