"""A staging directory on a server, over SFTP (paramiko).

    >>> staging = SftpTransport.connect(parse_target("app1:/srv/app/staging"))

`app1` resolves through ~/.ssh/config (HostName, User, Port, IdentityFile,
ProxyCommand, UserKnownHostsFile). Keys come from ssh-agent and key files.
Host keys must already be in known_hosts: an unknown or changed key is refused.
"""

import logging
import os
import posixpath
import select
import signal
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import List, Optional

from collections import deque

import paramiko
from paramiko.sftp import CMD_WRITE, int64

from ..errors import TargetError
from ..protocol import TEMP_PREFIX
from .base import FOLDER, Progress, Transport, translating_errors
from .local import kind_of_mode

# paramiko logs a lost connection (with a traceback) from its reader thread; the user gets one line from us.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

#: seconds without any answer from the server before the connection counts as lost
IO_TIMEOUT = 60.0
WINDOW = 64 * 1024 * 1024
MAX_PACKET = 32 * 1024
CHUNK = 256 * 1024
#: SSH packets per SFTP write request (see `_write_request_size`): about 64 KiB
PACKETS_PER_WRITE = 2
#: write requests in flight (about 1 MiB) before waiting for the oldest acknowledgement.
#: Measured with benchmarks/upload.py: more in flight was slower (the sender then
#: stalls on the server's channel window and competes with paramiko's reader thread).
MAX_OUTSTANDING = 16
#: AES-GCM first: one pass in C for cipher and integrity, no separate HMAC in Python
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        fingerprint = key.fingerprint
        host, _, port = hostname.strip("[").partition("]:")
        scan = f"ssh-keyscan -p {port} {host}" if port else f"ssh-keyscan {hostname}"
        raise TargetError(
            f"the host key of {hostname} is not in known_hosts ({key.get_name()} {fingerprint}); "
            f"check that fingerprint with the server's administrator, then trust it with "
            f"`{scan} >> ~/.ssh/known_hosts` or by connecting once with `ssh`"
        )


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand never notices that its command has exited: it spins on the end of the
    command's output and the push hangs. This one answers b"" there, which paramiko reads as a lost
    connection."""

    def recv(self, size):
        try:
            if self.timeout is not None:
                ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
                if not ready:
                    raise socket.timeout()
            return os.read(self.process.stdout.fileno(), size)
        except socket.timeout:
            raise
        except OSError as error:
            raise paramiko.ProxyCommandFailure(" ".join(self.cmd), error.strerror)

    def close(self):
        try:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _ssh_config(host: str) -> dict:
    path = Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return {"hostname": host}
    try:
        return paramiko.SSHConfig.from_path(str(path)).lookup(host)
    except Exception as error:  # paramiko raises several kinds for a bad config
        raise TargetError(f"cannot read {path}: {error}") from None


def _transport(sock, **options) -> paramiko.Transport:
    transport = paramiko.Transport(sock, default_window_size=WINDOW, default_max_packet_size=MAX_PACKET, **options)
    security = transport.get_security_options()
    supported = tuple(security.ciphers)
    first = tuple(name for name in PREFERRED_CIPHERS if name in supported)
    security.ciphers = first + tuple(name for name in supported if name not in first)
    return transport


def _has_private_write_calls(sftp) -> bool:
    """Whether this paramiko has the private calls the fast upload uses (paramiko 3.5 to 5 have them)."""
    return hasattr(sftp, "_async_request") and hasattr(sftp, "_read_response")


def _write_request_size(channel: paramiko.Channel, handle: bytes) -> int:
    """Data bytes per SSH_FXP_WRITE so that each request fills whole SSH packets.

    paramiko sends at most `out_max_packet_size - 64` bytes per channel packet; a
    32 KiB write plus its header would take two packets, the second one tiny.
    """
    per_packet = channel.out_max_packet_size - 64
    header = 4 + 1 + 4 + 4 + len(handle) + 8 + 4  # length, type, id, handle, offset, data length
    return max(1024, PACKETS_PER_WRITE * per_packet - header)


class SftpTransport(Transport):
    connection_errors = (OSError, EOFError, paramiko.SSHException)

    def __init__(
        self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient, root: str, description: str,
        io_timeout: float = IO_TIMEOUT,
    ):
        self.client = client
        self.sftp = sftp
        self.root = root
        self.description = description
        self.io_timeout = io_timeout

    @classmethod
    def connect(cls, target, timeout: float = 15.0, io_timeout: float = IO_TIMEOUT) -> "SftpTransport":
        config = _ssh_config(target.host)
        hostname = config.get("hostname", target.host)
        port = target.port or int(config.get("port", 22))
        user = target.user or config.get("user") or None
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RefuseUnknownHost())
        known = [Path("~/.ssh/known_hosts").expanduser()]
        for entry in (config.get("userknownhostsfile") or "").split():
            known.append(Path(entry).expanduser())
        for path in known:
            if path.is_file():
                client.get_host_keys().load(str(path))
        try:
            proxy = _ProxyCommand(config["proxycommand"]) if config.get("proxycommand") else None
        except (OSError, ValueError) as error:
            raise TargetError(f"cannot run the ProxyCommand for {target.host} from ~/.ssh/config: {error}") from None
        keys = [str(Path(p).expanduser()) for p in config.get("identityfile", [])]
        keys = [p for p in keys if os.path.exists(p)]
        where = f"{user + '@' if user else ''}{hostname}:{port}"
        try:
            client.connect(
                hostname,
                port=port,
                username=user,
                key_filename=keys or None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=True,
                look_for_keys=not keys,
                sock=proxy,
                transport_factory=_transport,
            )
        except TargetError:
            client.close()
            raise
        except paramiko.BadHostKeyException as error:
            client.close()
            name = f"[{hostname}]:{port}" if port != 22 else hostname
            raise TargetError(
                f"the host key of {name} has CHANGED since it was stored in known_hosts "
                f"(now {error.key.get_name()} {error.key.fingerprint}); this may be an attack. "
                f"If the server was really re-keyed, remove the old key with `ssh-keygen -R '{name}'` "
                "and trust the new one after checking its fingerprint"
            ) from None
        except paramiko.AuthenticationException as error:
            client.close()
            raise TargetError(
                f"cannot log in to {where}: {error}; load a key into ssh-agent or set IdentityFile "
                "in ~/.ssh/config, and check the user name"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as error:
            client.close()
            raise TargetError(f"cannot connect to {where}: {error}; check the host, port and that sshd runs") from None
        try:
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(io_timeout)  # a stalled connection fails instead of hanging
            root = target.path if target.path.startswith("/") else posixpath.join(sftp.normalize("."), target.path)
        except (paramiko.SSHException, OSError, EOFError) as error:
            client.close()
            raise TargetError(
                f"logged in to {where} but cannot start SFTP: {error}; enable it in sshd_config "
                "(Subsystem sftp internal-sftp)"
            ) from None
        user_part = f"{user}@" if user else ""
        return cls(client, sftp, root, f"sftp://{user_part}{hostname}:{port}{root}", io_timeout)

    def _connection_lost(self, error: BaseException):
        transport = self.client.get_transport()
        if isinstance(error, socket.timeout):
            reason = f"the server did not answer for {self.io_timeout:.0f} s"
        elif isinstance(error, (EOFError, paramiko.SSHException)) or transport is None or not transport.is_active():
            detail = str(error).strip().rstrip(":").strip() or type(error).__name__
            reason = f"the connection was lost ({detail})"
        else:
            return None
        self.lost = (
            f"{reason}; nothing was triggered for an unfinished batch. Check the network and push again "
            "(the next push removes what this one left)"
        )
        try:
            self.client.close()  # later operations fail at once instead of waiting again
        except Exception:  # noqa: BLE001 - closing what is already broken
            pass
        return self.lost

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    @translating_errors
    def ensure_directory(self) -> bool:
        try:
            mode = self.sftp.lstat(self.root).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            if not stat.S_ISDIR(mode):
                raise TargetError(f"{self.description} is a {kind_of_mode(mode)}, not a folder; give a staging directory")
            return False
        missing = []
        path = self.root
        while path not in ("/", ""):
            try:
                self.sftp.stat(path)
                break
            except FileNotFoundError:
                missing.append(path)
                path = posixpath.dirname(path)
        for directory in reversed(missing):
            self.sftp.mkdir(directory, mode=0o700)
            self.sftp.chmod(directory, 0o700)
        return True

    @translating_errors
    def make_folder(self, name: str) -> None:
        kind = self.kind(name)
        if kind is None:
            self.sftp.mkdir(self._path(name), mode=0o700)
        elif kind != FOLDER:
            raise TargetError(f"{name} in {self.description} is a {kind}, not a folder; remove it by hand")

    @translating_errors
    def root_kind(self) -> Optional[str]:
        try:
            return kind_of_mode(self.sftp.lstat(self.root).st_mode)
        except FileNotFoundError:
            return None

    @translating_errors
    def kind(self, name: str) -> Optional[str]:
        try:
            return kind_of_mode(self.sftp.lstat(self._path(name)).st_mode)
        except FileNotFoundError:
            return None

    @translating_errors
    def list_names(self, folder: str = "") -> List[str]:
        try:
            return sorted(self.sftp.listdir(self._path(folder) if folder else self.root))
        except FileNotFoundError:
            return []

    @translating_errors
    def _read_file(self, name: str, limit: int, tail: bool = False) -> bytes:
        with self.sftp.open(self._path(name), "rb") as handle:
            size = handle.stat().st_size
            if size > limit:
                if not tail:
                    raise self._too_large(name, limit)  # not read at all
                handle.seek(size - limit)
            handle.prefetch(size)  # prefetches from the current position to `size`
            return handle.read(limit if tail else limit + 1)

    @translating_errors
    def write(self, name: str, data: bytes) -> None:
        with self.sftp.open(self._path(name), "wb") as handle:
            handle.set_pipelined(True)
            handle.write(data)

    @translating_errors
    def upload(self, local_path: str, name: str, progress: Progress = None) -> None:
        """Pipelined writes: up to MAX_OUTSTANDING requests in flight, acknowledgements read oldest first.

        (paramiko's own pipelined SFTPFile.write waits for every outstanding reply each
        time more than 100 are queued, which empties the pipe.) With a paramiko that lacks
        the private calls this needs, the upload goes through its public pipelined write.
        """
        sftp = self.sftp
        with open(local_path, "rb") as source, sftp.open(self._path(name), "wb") as handle:
            try:
                if _has_private_write_calls(sftp):
                    self._upload_pipelined(source, handle, progress)
                else:
                    self._upload_public(source, handle, progress)
            except (socket.timeout, EOFError, paramiko.SSHException):
                # Drop the connection now: closing the handle would otherwise wait for the server once more.
                self.client.close()
                raise

    def _upload_pipelined(self, source, handle: paramiko.SFTPFile, progress: Progress) -> None:
        sftp = self.sftp
        size = _write_request_size(sftp.sock, handle.handle)
        pending = deque()
        offset = 0
        try:
            while True:
                block = source.read(size)
                if not block:
                    break
                pending.append(sftp._async_request(type(None), CMD_WRITE, handle.handle, int64(offset), block))
                offset += len(block)
                if len(pending) > MAX_OUTSTANDING:
                    sftp._read_response(pending.popleft())  # raises on an error status
                if progress:
                    progress(len(block))
            while pending:
                sftp._read_response(pending.popleft())
        finally:
            # Replies still owed are read and dropped by the next request on this connection.
            pending.clear()

    @staticmethod
    def _upload_public(source, handle: paramiko.SFTPFile, progress: Progress) -> None:
        """paramiko's public write, pipelined: closing the file (the caller's `with`) waits for every
        acknowledgement and raises on an error status."""
        handle.set_pipelined(True)
        while True:
            block = source.read(CHUNK)
            if not block:
                break
            handle.write(block)
            if progress:
                progress(len(block))

    @translating_errors
    def rename_replacing(self, source: str, target: str) -> None:
        self.sftp.posix_rename(self._path(source), self._path(target))

    @translating_errors
    def rename_exclusive(self, source: str, target: str) -> bool:
        # Plain SSH_FXP_RENAME: OpenSSH's sftp-server uses link(2) for files and refuses an
        # existing target for folders, so it never replaces `target`.
        try:
            self.sftp.rename(self._path(source), self._path(target))
            return True
        except OSError:
            if self.kind(target) is None:
                raise
            return False

    @translating_errors
    def _unlink(self, name: str) -> None:
        self.sftp.remove(self._path(name))

    @translating_errors
    def _rmdir(self, name: str) -> None:
        self.sftp.rmdir(self._path(name))

    @translating_errors
    def mtime(self, name: str) -> Optional[float]:
        try:
            return float(self.sftp.lstat(self._path(name)).st_mtime)
        except FileNotFoundError:
            return None

    def now(self) -> float:
        for _ in range(3):
            probe = f"{TEMP_PREFIX}clock-{uuid.uuid4().hex[:8]}"
            try:
                self.write(probe, b"")
            except TargetError:
                if self.lost:
                    raise
                return time.time()  # no write access (e.g. `hotload status` by a read-only user): our clock
            try:
                stamp = self.mtime(probe)
            finally:
                self.remove(probe)
            if stamp is not None:
                return stamp
            # A push's clean-up removed the probe between our write and our read: write another.
        return time.time()

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        finally:
            self.client.close()
