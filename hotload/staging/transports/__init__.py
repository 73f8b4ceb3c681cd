"""Transports: where a staging directory lives. See `base.Transport`."""

from hotload.staging.transports.base import Transport
from hotload.staging.transports.local import LocalTransport

__all__ = ["Transport", "LocalTransport", "open_transport"]


def open_transport(target, connect_timeout: float = 15.0) -> Transport:
    """Open the transport for a parsed `hotload.staging.targets.Target`."""
    if target.is_local:
        return LocalTransport(target.path)
    from hotload.staging.transports.sftp import SftpTransport

    return SftpTransport.connect(target, timeout=connect_timeout)
