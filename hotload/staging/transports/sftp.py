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
from typing import Dict, List, Optional

from collections import deque

import paramiko
from paramiko.sftp import (
    CMD_ATTRS, CMD_CLOSE, CMD_DATA, CMD_FSTAT, CMD_HANDLE, CMD_LSTAT, CMD_MKDIR, CMD_NAME, CMD_OPEN, CMD_OPENDIR, CMD_READ,
    CMD_READDIR, CMD_REMOVE, CMD_RENAME, CMD_SETSTAT, CMD_STATUS, CMD_WRITE, SFTP_EOF, SFTP_FLAG_CREATE, SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE, int64,
)
from paramiko.sftp_attr import SFTPAttributes

from hotload.errors import TargetError
from hotload.staging.protocol import TEMP_PREFIX
from hotload.staging.transports.base import (
    FILE, FOLDER, Probe, Probed, Progress, Transport, copy_blocks, describe_os_error, translating_errors,
)
from hotload.staging.transports.local import kind_of_mode

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
#: write requests in flight (about 1 MiB) before waiting for the oldest acknowledgement, near the server.
#: Measured with benchmarks/upload.py on loopback: more in flight was slower (the sender then
#: stalls on the server's channel window and competes with paramiko's reader thread).
MAX_OUTSTANDING = 16
#: ... and at a distance (a round trip of FAR_ROUND_TRIP or more, measured on the first open): about
#: 2 MiB, what OpenSSH's sftp keeps in flight (64 requests of 32 KiB) and the window of OpenSSH's channel
FAR_OUTSTANDING = 32
FAR_ROUND_TRIP = 0.003
#: files opened ahead of the one being written, so that an open costs no round trip of its own
OPEN_AHEAD = 64
#: bytes per SSH_FXP_READ (OpenSSH's sftp-server answers at most 256 KiB; 32 KiB is what every server takes)
READ_SIZE = 32 * 1024
#: how long the staging directory seen as a folder by a `probe` is taken as still there by `ensure_directory`
PROBED_ROOT_SECONDS = 10.0
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


def _no_delay(transport: Optional[paramiko.Transport]):
    """Send each packet at once (TCP_NODELAY): requests sent together without waiting for an answer would
    otherwise wait for the acknowledgement of the first (Nagle), which the other side may delay by up to
    40 ms, a round trip's worth."""
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _open_sftp(client: paramiko.SSHClient) -> paramiko.SFTPClient:
    """SFTP on a new session channel, its subsystem request and SFTP's init sent together, as OpenSSH's sftp
    does: paramiko's `open_sftp` waits for the answer to the request first, a round trip more. A refused
    request closes the channel, which the init then meets as the end of the stream (an SSHException)."""
    channel = client.get_transport().open_session()
    if not (hasattr(channel, "_event_pending") and hasattr(channel.transport, "_send_user_message")):
        channel.invoke_subsystem("sftp")
        return paramiko.SFTPClient(channel)
    request = paramiko.Message()
    request.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    request.add_int(channel.remote_chanid)
    request.add_string("subsystem")
    request.add_boolean(True)
    request.add_string("sftp")
    channel._event_pending()  # the answer sets the channel's event, which nobody waits for
    channel.transport._send_user_message(request)
    return paramiko.SFTPClient(channel)


def _has_private_write_calls(sftp) -> bool:
    """Whether this paramiko has the private calls the fast upload uses (paramiko 3.5 to 5 have them)."""
    return hasattr(sftp, "_async_request") and hasattr(sftp, "_read_response")


class _Bytes:
    """bytes read like a file, for `upload_many`."""

    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def read(self, size: int) -> bytes:
        block = self.data[self.offset:self.offset + size]
        self.offset += len(block)
        return bytes(block)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Replies:
    """Requests sent without waiting: paramiko hands each reply to `_async_response` (so none is dropped
    unread, as paramiko drops the replies of requests nobody waits for), and `wait` raises an error reply
    where it is waited for. A wait that finds nothing received yet counts in the transport's `waits`."""

    def __init__(self, transport: "SftpTransport"):
        self.transport = transport
        self.sftp = transport.sftp
        self.replies = {}
        self.names = {}  # request number -> the file it is about, for the error message
        self.failed: Optional[str] = None

    def send(self, kind: int, *args, name: str = "") -> int:
        number = self.sftp._async_request(self, kind, *args)
        self.names[number] = name
        return number

    def _async_response(self, kind, message, number):
        self.replies[number] = (kind, message)

    def arrived(self, number: int) -> bool:
        return number in self.replies

    def raw(self, number: int):
        """(kind, message) of the reply to `number`, waiting for it if it has not come yet."""
        blocked = False
        while number not in self.replies:
            blocked = blocked or not self.sftp.sock.recv_ready()
            self.sftp._read_response()
        self.transport.waits += blocked
        self.names.pop(number, None)
        return self.replies.pop(number)

    def wait(self, number: int):
        """The reply to `number`; an error status raises (OSError, FileNotFoundError, ...)."""
        name = self.names.get(number, "")
        kind, message = self.raw(number)
        if kind == CMD_STATUS:
            try:
                self.sftp._convert_status(message)
            except (OSError, EOFError):
                self.failed = name
                raise
        return kind, message

    def handle(self, number: int) -> bytes:
        kind, message = self.wait(number)
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError("Expected handle")
        return message.get_binary()

    def close(self, handle: bytes):
        """Close without waiting: nothing the caller needs depends on the answer, and the server handles
        every later request after it."""
        self.send(CMD_CLOSE, handle)


class _Ahead:
    """A small file written or read ahead of its turn (`SftpTransport.write_ahead`, `read_ahead`): one
    step at a time, each sent behind the requests of whatever the transport does meanwhile.

    Writing: open, then (with the data) write and close. Reading: lstat, then open only a regular file
    (an open of a FIFO could hang the server), then size and contents, the close not waited for."""

    def __init__(self, transport: "SftpTransport", name: str, data: Optional[bytes], reading: bool, folder: bool = False,
                 listing: bool = False):
        self.transport = transport
        self.folder = folder
        self.listing = listing
        self.replies = _Replies(transport)
        self.name = name
        self.data = data
        self.reading = reading
        self.waiting: List[int] = []  # the requests of the current step
        self.step = "queued"
        self.sent_in = 0  # the transport's batch its current step was sent with
        self.handle: Optional[bytes] = None
        self.kind: Optional[str] = None
        self.result: Optional[bytes] = None
        self.error: Optional[BaseException] = None

    def _send(self, kind: int, *args) -> int:
        number = self.replies.send(kind, *args, name=self.name)
        self.waiting.append(number)
        self.sent_in = self.transport._batches
        return number

    def advance(self, block: bool = False) -> bool:
        """Take the next steps whose answers are here (all of them, waiting, with `block`); True when done.
        Answers to requests sent before the transport's last batch are waited for: they come before that
        batch's (the server answers in order), so waiting for them costs no round trip."""
        transport = self.transport
        path = transport._remote(transport._path(self.name))
        while self.step != "done":
            if self.step == "queued":
                if self.listing:
                    self._send(CMD_OPENDIR, transport._remote(transport._path(self.name) if self.name else transport.root))
                    self.step = "open"
                elif self.folder:
                    attributes = SFTPAttributes()
                    attributes.st_mode = 0o700
                    self._send(CMD_MKDIR, path, attributes)
                    self.step = "writing"  # done once answered
                elif self.reading:
                    self._send(CMD_LSTAT, path)
                    self.step = "lstat"
                else:
                    flags = SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC | SFTP_FLAG_WRITE
                    self._send(CMD_OPEN, path, flags, SFTPAttributes())
                    self.step = "open"
                continue
            due = self.sent_in < transport._batches
            if not block and not due and not all(self.replies.arrived(n) for n in self.waiting):
                return False
            numbers, self.waiting = self.waiting, []
            try:
                if self.step == "lstat":
                    _, message = self.replies.wait(numbers[0])
                    self.kind = kind_of_mode(SFTPAttributes._from_msg(message).st_mode)
                    if self.kind != FILE:
                        self.step = "done"
                        continue
                    self._send(CMD_OPEN, path, SFTP_FLAG_READ, SFTPAttributes())
                    self.step = "opening"
                elif self.step == "opening":
                    self.handle = self.replies.handle(numbers[0])
                    self._send(CMD_FSTAT, self.handle)
                    self._send(CMD_READ, self.handle, int64(0), READ_SIZE)
                    self.replies.close(self.handle)
                    self.step = "reading"
                elif self.step == "reading":
                    _, message = self.replies.wait(numbers[0])
                    size = SFTPAttributes._from_msg(message).st_size or 0
                    kind, message = self.replies.raw(numbers[1])
                    data = message.get_string() if kind == CMD_DATA else b""
                    if size >= READ_SIZE or len(data) != size:
                        self.error = LookupError("larger than one read, or changing")  # read it the usual way
                    self.result = data
                    self.step = "done"
                elif self.step == "open":
                    self.handle = self.replies.handle(numbers[0])
                    if self.data is None:
                        self.step = "opened"
                        return True
                    self.write(self.data)
                elif self.step == "writing":
                    for number in numbers:
                        self.replies.wait(number)
                    self.step = "done"
                elif self.step == "opened":
                    return True
            except FileNotFoundError as error:
                self.kind, self.error, self.step = None, error, "done"
            except (OSError, paramiko.SFTPError) as error:
                if isinstance(error, socket.timeout):
                    raise
                self.error, self.step = error, "done"
        return True

    def write(self, data: bytes):
        """Send `data` and the close on the handle opened ahead (the answers are waited for in `advance`)."""
        self.data = data
        for offset in range(0, len(data), READ_SIZE):
            self._send(CMD_WRITE, self.handle, int64(offset), data[offset:offset + READ_SIZE])
        self._send(CMD_CLOSE, self.handle)
        self.step = "writing"

    def abandon(self):
        """Close a handle still open, without waiting."""
        if self.handle is not None and self.step in ("open", "opened"):
            self.replies.close(self.handle)
        self.step = "done"


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
        #: blocking waits for a reply from the server (each one a round trip at a distance); see `_count_waits`
        self.waits = 0
        #: the round trip measured on the last upload's first open, in seconds
        self.round_trip: Optional[float] = None
        #: files written or read ahead (`write_ahead`, `read_ahead`), by name
        self._aheads: Dict[str, _Ahead] = {}
        self._batches = 0  # requests sent then waited for, counted by `_advance`
        #: a file that the last operation read whole (so a regular file), for a `remove` right after it
        self._just_read: Optional[str] = None
        #: the staging directory was seen as a folder by the last `probe`: (its mode then, when)
        self._probed_root: Optional[tuple] = None
        self._count_waits()

    def _count_waits(self):
        """Count paramiko's own waits for one reply (its synchronous requests) in `waits`."""
        read = getattr(self.sftp, "_read_response", None)
        if read is None:
            return

        def counting(waitfor=None):
            if waitfor is not None:
                self.waits += 1  # the reply to a request just sent: never there yet
            return read(waitfor)

        self.sftp._read_response = counting

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
        _no_delay(client.get_transport())
        try:
            sftp = _open_sftp(client)
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

    # -- requests sent together ----------------------------------------------------------

    def _pipelining(self) -> bool:
        return _has_private_write_calls(self.sftp)

    def _advance(self, waiting: bool = True):
        """Called once requests have been sent: the steps of the files written or read ahead whose answers
        are here go out now, in the same round trip. `waiting`: the caller waits for an answer next, so the
        answers to the aheads' earlier requests, which come first, may be waited for."""
        if waiting:
            self._batches += 1
        if not self._aheads:
            return
        sock = self.sftp.sock
        while sock.recv_ready():
            self.sftp._read_response()
        for ahead in list(self._aheads.values()):
            ahead.advance()

    def _call(self, kind: int, *args):
        """One request, the aheads' next steps behind it, then its answer (an error status raises)."""
        self._just_read = None
        replies = _Replies(self)
        number = replies.send(kind, *args)
        self._advance()
        return replies.wait(number)

    def _lstat(self, name: str) -> SFTPAttributes:
        if not self._pipelining():
            return self.sftp.lstat(self._path(name))
        kind, message = self._call(CMD_LSTAT, self._remote(self._path(name)))
        if kind != CMD_ATTRS:
            raise paramiko.SFTPError("Expected attributes")
        return SFTPAttributes._from_msg(message)

    def write_ahead(self, name: str, data: Optional[bytes] = None) -> None:
        if self._pipelining() and not self.lost and name not in self._aheads:
            self._aheads[name] = _Ahead(self, name, data, reading=False)

    def list_ahead(self, folder: str = "") -> None:
        if self._pipelining() and not self.lost and ("/list", folder) not in self._aheads:
            self._aheads[("/list", folder)] = _Ahead(self, folder, None, reading=False, listing=True)

    def make_folder_ahead(self, name: str) -> None:
        if self._pipelining() and not self.lost and name not in self._aheads:
            self._aheads[name] = _Ahead(self, name, None, reading=False, folder=True)

    def read_ahead(self, name: str) -> None:
        if self._pipelining() and not self.lost and name not in self._aheads:
            self._aheads[name] = _Ahead(self, name, None, reading=True)

    def discard_ahead(self, remove: bool = False) -> None:
        aheads, self._aheads = list(self._aheads.values()), {}
        for ahead in aheads:
            try:
                ahead.abandon()
            except self.connection_errors:
                pass  # the connection is going or gone: what went wrong is reported by whoever called
        if remove and not self.lost:
            for ahead in aheads:
                if not ahead.reading and not ahead.folder and not ahead.listing and ahead.step != "queued":
                    try:
                        self.remove(ahead.name)
                    except (TargetError, OSError):
                        pass  # the next push's clean-up removes it

    def _take_ahead(self, name, reading: bool, folder: bool = False) -> Optional[_Ahead]:
        ahead = self._aheads.get(name)
        if ahead is None or ahead.reading != reading or ahead.folder != folder:
            return None
        if ahead.step == "queued":  # never sent: nothing to take over
            del self._aheads[name]
            return None
        return self._aheads.pop(name)

    @translating_errors
    def probe(self, limits: Dict[str, int], make_root: bool = False) -> Probe:
        """mkdir (with `make_root`) and every lstat together, then the opens of the regular files together,
        then their sizes and first blocks together (a larger file is then read as `read` does)."""
        if not self._pipelining():
            return super().probe(limits, make_root)
        self._just_read = None
        replies = _Replies(self)
        attributes = SFTPAttributes()
        attributes.st_mode = 0o700
        made = replies.send(CMD_MKDIR, self._remote(self.root), attributes) if make_root else None
        root_number = replies.send(CMD_LSTAT, self._remote(self.root))
        numbers = {name: replies.send(CMD_LSTAT, self._remote(self._path(name))) for name in limits}
        self._advance()
        made_it = False
        if made is not None:
            try:
                replies.wait(made)
                made_it = True
            except OSError as error:
                if isinstance(error, socket.timeout):
                    raise  # otherwise it was there already, or its parent is missing: the lstat says which
        root, mode = self._attributes(replies, root_number)
        files = {name: Probed(self._attributes(replies, number)[0]) for name, number in numbers.items()}
        if root == FOLDER:
            self._probed_root = (mode, time.monotonic())
            self._made_by_probe = made_it
        opens = {}
        for name, probed in files.items():
            if probed.kind == FILE:
                opens[name] = replies.send(CMD_OPEN, self._remote(self._path(name)), SFTP_FLAG_READ, SFTPAttributes())
            elif probed.kind is not None:
                probed.error = self._not_a_file(name, probed.kind)
        if opens:
            self._advance()
        reads = {}
        for name, number in opens.items():
            try:
                handle = replies.handle(number)
            except FileNotFoundError:
                files[name].kind = None
                continue
            except OSError as error:
                if isinstance(error, socket.timeout):
                    raise
                files[name].error = TargetError(f"read {name} at {self.description} failed: {describe_os_error(error)}")
                continue
            reads[name] = (handle, replies.send(CMD_FSTAT, handle), replies.send(CMD_READ, handle, int64(0), READ_SIZE))
            replies.close(handle)
        if reads:
            self._advance()
        for name, (handle, size_number, read_number) in reads.items():
            probed = files[name]
            _, message = replies.wait(size_number)
            size = SFTPAttributes._from_msg(message).st_size or 0
            kind, message = replies.raw(read_number)
            data = message.get_string() if kind == CMD_DATA else b""
            if size > limits[name]:
                probed.error = self._too_large(name, limits[name])
            elif size < READ_SIZE and len(data) == size:
                probed.data = data
            else:  # larger than one read, or changing: the usual way
                try:
                    probed.data = self.read(name, limits[name])
                    probed.kind = FILE if probed.data is not None else None
                except TargetError as error:
                    if self.lost:
                        raise
                    probed.error = error
        return Probe(root, files)

    @staticmethod
    def _attributes(replies: _Replies, number: int):
        """(kind, mode) from the answer to an lstat; (None, None) when missing."""
        kind, message = replies.raw(number)
        if kind == CMD_ATTRS:
            mode = SFTPAttributes._from_msg(message).st_mode
            return kind_of_mode(mode), mode
        code = message.get_int()
        if code == paramiko.sftp.SFTP_NO_SUCH_FILE:
            return None, None
        message.rewind()
        message.get_int()
        replies.sftp._convert_status(message)
        raise paramiko.SFTPError("Expected attributes")

    def _not_a_file(self, name: str, kind: str) -> TargetError:
        return TargetError(
            f"{name} in {self.description} is a {kind}, not a file; hotload did not write it, "
            "so it is left alone: remove it by hand"
        )

    @translating_errors
    def ensure_directory(self) -> bool:
        probed, self._probed_root = self._probed_root, None
        made = self._take_made_by_probe()
        if made or (probed is not None and time.monotonic() - probed[1] < PROBED_ROOT_SECONDS):
            # seen as a folder by the probe just before this push (which may have made it): no lstat again
            if made and stat.S_IMODE(probed[0]) != 0o700:
                self.sftp.chmod(self.root, 0o700)  # a umask took bits of 0700 away
            return made
        try:
            mode = self.sftp.lstat(self.root).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            if not stat.S_ISDIR(mode):
                raise TargetError(f"{self.description} is a {kind_of_mode(mode)}, not a folder; give a staging directory")
            return False
        if _has_private_write_calls(self.sftp) and self._make_root_pipelined():
            return True
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

    def _make_root_pipelined(self) -> bool:
        """mkdir and chmod of the staging directory in one round trip; False when its parent is missing too."""
        replies = _Replies(self)
        attributes = SFTPAttributes()
        attributes.st_mode = 0o700
        made = replies.send(CMD_MKDIR, self._remote(self.root), attributes)
        changed = replies.send(CMD_SETSTAT, self._remote(self.root), attributes)
        try:
            replies.wait(made)
        except FileNotFoundError:
            replies.raw(changed)  # failed as well: nothing was made
            return False
        except OSError:
            replies.raw(changed)
            raise
        replies.wait(changed)
        return True

    @translating_errors
    def make_folder(self, name: str) -> None:
        # mkdir first, lstat only when it fails: the folder is new on every push, so this is one round trip
        ahead = self._take_ahead(name, reading=False, folder=True)
        if ahead is not None:
            ahead.advance(block=True)
            if ahead.error is None:
                return  # made by the mkdir sent ahead
        try:
            if self._pipelining():
                attributes = SFTPAttributes()
                attributes.st_mode = 0o700
                self._call(CMD_MKDIR, self._remote(self._path(name)), attributes)
            else:
                self.sftp.mkdir(self._path(name), mode=0o700)
            return
        except OSError as error:
            if isinstance(error, socket.timeout):
                raise
            refused = error
        kind = self.kind(name)
        if kind is None:
            raise refused
        if kind != FOLDER:
            raise TargetError(f"{name} in {self.description} is a {kind}, not a folder; remove it by hand")

    @translating_errors
    def root_kind(self) -> Optional[str]:
        try:
            return kind_of_mode(self.sftp.lstat(self.root).st_mode)
        except FileNotFoundError:
            return None

    @translating_errors
    def kind(self, name: str) -> Optional[str]:
        self._just_read = None
        ahead = self._aheads.get(name)
        if ahead is not None and ahead.reading and ahead.step != "queued":
            ahead.advance(block=True)  # the steps not taken yet (none when its requests went out in time)
            if ahead.error is None or isinstance(ahead.error, FileNotFoundError):
                if ahead.kind != FILE or ahead.error is not None:
                    del self._aheads[name]
                return ahead.kind  # `_read_file` takes the contents
            del self._aheads[name]  # read it the usual way
        try:
            return kind_of_mode(self._lstat(name).st_mode)
        except FileNotFoundError:
            return None

    @translating_errors
    def list_names(self, folder: str = "") -> List[str]:
        self._just_read = None
        path = self._path(folder) if folder else self.root
        try:
            if not _has_private_write_calls(self.sftp):
                return sorted(self.sftp.listdir(path))
            return sorted(self._list_pipelined(path, folder))
        except FileNotFoundError:
            return []

    def _list_pipelined(self, path: str, folder: str) -> List[str]:
        """opendir, then two readdirs at a time and a close nobody waits for: two round trips for a
        folder of up to two replies' worth of names (OpenSSH's sftp-server sends 100 a reply); one when
        the opendir went ahead (`list_ahead`). What is read ahead goes out behind the first readdirs; when
        the listing needs more, it is read again after it (the listing comes first)."""
        replies = _Replies(self)
        ahead = self._take_ahead(("/list", folder), reading=False)
        handle = None
        if ahead is not None:
            ahead.advance(block=True)
            if ahead.error is None:
                handle, replies = ahead.handle, ahead.replies
            elif isinstance(ahead.error, FileNotFoundError):
                raise ahead.error
        if handle is None:
            handle = replies.handle(replies.send(CMD_OPENDIR, self._remote(path)))
        names = []
        rounds = 0
        try:
            done = False
            while not done:
                numbers = [replies.send(CMD_READDIR, handle) for _ in range(2)]
                rounds += 1
                if rounds == 1:
                    self._advance()
                elif rounds == 2:
                    for name in [n for n, a in self._aheads.items() if a.reading]:
                        self._aheads.pop(name).abandon()  # read before the whole listing: read again after it
                for number in numbers:
                    kind, message = replies.raw(number)
                    if kind == CMD_STATUS:
                        code = message.get_int()
                        if code == SFTP_EOF:
                            done = True
                            continue
                        message.rewind()
                        message.get_int()  # the request number
                        self.sftp._convert_status(message)
                    if kind != CMD_NAME:
                        raise paramiko.SFTPError("Expected name response")
                    for _ in range(message.get_int()):
                        filename = message.get_text()
                        message.get_text()  # the long name
                        SFTPAttributes._from_msg(message)
                        if filename not in (".", ".."):
                            names.append(filename)
        finally:
            replies.close(handle)
        return names

    def _remote(self, path: str) -> bytes:
        adjust = getattr(self.sftp, "_adjust_cwd", None)
        return adjust(path) if adjust else path.encode()

    @translating_errors
    def _read_file(self, name: str, limit: int, tail: bool = False) -> bytes:
        if not _has_private_write_calls(self.sftp):
            return self._read_file_public(name, limit, tail)
        ahead = self._take_ahead(name, reading=True)
        if ahead is not None:
            ahead.advance(block=True)
            if ahead.error is None and ahead.kind == FILE and len(ahead.result) <= limit:
                self._just_read = name
                return ahead.result
            if isinstance(ahead.error, FileNotFoundError):
                raise ahead.error
        self._just_read = None
        data = self._read_file_pipelined(name, limit, tail)
        self._just_read = name
        return data

    def _read_file_pipelined(self, name: str, limit: int, tail: bool = False) -> bytes:
        replies = _Replies(self)
        handle = replies.handle(replies.send(CMD_OPEN, self._remote(self._path(name)), SFTP_FLAG_READ, SFTPAttributes()))
        try:
            # the size and the first block in one round trip; the rest (a large file) pipelined
            size_number = replies.send(CMD_FSTAT, handle)
            first = None if tail else replies.send(CMD_READ, handle, int64(0), READ_SIZE)
            _, message = replies.wait(size_number)
            size = SFTPAttributes._from_msg(message).st_size or 0
            if size > limit and not tail:
                raise self._too_large(name, limit)  # not read at all
            start = max(0, size - limit) if tail else 0
            wanted = limit if tail else limit + 1
            end = start + min(wanted, size + 1 - start)  # one byte past the size: a file that grew shows
            data = bytearray()
            offset = start
            numbers = deque()
            if first is not None:
                numbers.append((first, 0))
                offset = READ_SIZE
            at_end = False
            while numbers or (offset < end and not at_end):
                while offset < end and not at_end and len(numbers) < MAX_OUTSTANDING:
                    numbers.append((replies.send(CMD_READ, handle, int64(offset), min(READ_SIZE, end - offset)), offset))
                    offset += READ_SIZE
                number, where = numbers.popleft()
                kind, message = replies.raw(number)
                if kind == CMD_STATUS:
                    code = message.get_int()
                    if code != SFTP_EOF:
                        message.rewind()
                        message.get_int()
                        self.sftp._convert_status(message)
                    at_end = True
                    continue
                if kind != CMD_DATA:
                    raise paramiko.SFTPError("Expected data")
                block = message.get_string()
                if at_end or where != start + len(data):
                    continue  # after the end, or after a short read (then the file shrank: what came is enough)
                data += block
                if len(block) < min(READ_SIZE, end - where):
                    at_end = True
            return bytes(data[:wanted])
        finally:
            replies.close(handle)

    def _read_file_public(self, name: str, limit: int, tail: bool = False) -> bytes:
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
        if not _has_private_write_calls(self.sftp):
            with self.sftp.open(self._path(name), "wb") as handle:
                handle.set_pipelined(True)
                handle.write(data)
            return
        self._just_read = None
        ahead = self._take_ahead(name, reading=False)
        if ahead is not None:
            ahead.advance(block=True)  # the open, and the writing when it was given the data ahead
            if ahead.error is None and ahead.data is None:
                ahead.write(data)
                self._advance()
                ahead.advance(block=True)
            if ahead.error is None and ahead.data == data:
                return  # written and closed, every answer OK
            if isinstance(ahead.error, (socket.timeout, EOFError, paramiko.SSHException)):
                raise ahead.error
            # an error answer (e.g. a folder it was opened in was missing): write it the usual way
        self._upload_many([(data, name)], None, None)

    @translating_errors
    def upload(self, local_path: str, name: str, progress: Progress = None) -> None:
        """Pipelined writes, acknowledgements read oldest first (see `upload_many`).

        (paramiko's own pipelined SFTPFile.write waits for every outstanding reply each
        time more than 100 are queued, which empties the pipe.) With a paramiko that lacks
        the private calls this needs, the upload goes through its public pipelined write.
        """
        if not _has_private_write_calls(self.sftp):
            with open(local_path, "rb") as source, self.sftp.open(self._path(name), "wb") as handle:
                try:
                    self._upload_public(source, handle, progress)
                except (socket.timeout, EOFError, paramiko.SSHException):
                    # Drop the connection now: closing the handle would otherwise wait for the server once more.
                    self.client.close()
                    raise
            return
        self._upload_many([(local_path, name)], (lambda _, sent: progress(sent)) if progress else None, None)

    def upload_many(self, items, progress=None, on_file=None) -> None:
        """Every (local path or bytes, name) of `items`, in order, pipelined across files: the opens go
        OPEN_AHEAD files ahead, the closes are not waited for one by one, the writes keep a window in
        flight (MAX_OUTSTANDING, or FAR_OUTSTANDING when the round trip is long). Returns only when every
        write and every close has been answered OK; the first error reply raises a TargetError naming
        its file (and nothing more is sent)."""
        if not _has_private_write_calls(self.sftp):
            return super().upload_many(items, progress, on_file)
        if self.lost:
            raise TargetError(self.lost)
        current = items[0][1] if items else ""
        try:
            self._upload_many(items, progress, on_file)
        except self.connection_errors as error:
            failed = getattr(error, "_hotload_name", None) or current
            detail = self._connection_lost(error) or describe_os_error(error)
            raise TargetError(f"upload {failed} at {self.description} failed: {detail}") from None

    def _upload_many(self, items, progress, on_file) -> None:
        self._just_read = None
        sftp = self.sftp
        replies = _Replies(self)
        flags = SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC | SFTP_FLAG_WRITE
        opens = deque()  # (request number, index) of the opens sent ahead
        writes = deque()  # request numbers of writes in flight, oldest first
        closes = []
        window = MAX_OUTSTANDING
        next_open = 0
        current = ""
        try:
            for index, (source, name) in enumerate(items):
                current = name
                while next_open < len(items) and next_open <= index + OPEN_AHEAD:
                    target = items[next_open][1]
                    opens.append(replies.send(CMD_OPEN, self._remote(self._path(target)), flags, SFTPAttributes(), name=target))
                    next_open += 1
                if on_file:
                    on_file(name)
                self._advance(waiting=index == 0)  # the first handle is waited for next; later ones are here
                started = time.monotonic()
                handle = replies.handle(opens.popleft())
                if index == 0:
                    self.round_trip = time.monotonic() - started
                    if self.round_trip >= FAR_ROUND_TRIP:
                        window = FAR_OUTSTANDING
                size = _write_request_size(sftp.sock, handle)
                offset = 0
                with (open(source, "rb") if not isinstance(source, (bytes, bytearray)) else _Bytes(source)) as reader:
                    while True:
                        block = reader.read(size)
                        if not block:
                            break
                        writes.append(replies.send(CMD_WRITE, handle, int64(offset), block, name=name))
                        offset += len(block)
                        while len(writes) > window:
                            replies.wait(writes.popleft())  # raises on an error status
                        if progress:
                            progress(name, len(block))
                closes.append(replies.send(CMD_CLOSE, handle, name=name))
                self._advance(waiting=False)
            self._advance()
            current = ""
            while writes:
                replies.wait(writes.popleft())
            for number in closes:
                replies.wait(number)  # a close can fail too (e.g. a full disk noticed at the flush)
        except (socket.timeout, EOFError, paramiko.SSHException):
            # Drop the connection now: the clean-up would otherwise wait for the server once more.
            self.client.close()
            raise
        except OSError as error:
            error._hotload_name = replies.failed or current
            raise
        # Replies still owed after an error are read and kept by `replies`, unread, when the next request
        # on this connection waits: the clean-up's requests are handled after these by the server.

    @staticmethod
    def _upload_public(source, handle: paramiko.SFTPFile, progress: Progress) -> None:
        """paramiko's public write, pipelined: closing the file (the caller's `with`) waits for every
        acknowledgement and raises on an error status."""
        handle.set_pipelined(True)
        copy_blocks(source, handle.write, CHUNK, progress)

    @translating_errors
    def rename_replacing(self, source: str, target: str) -> None:
        self._just_read = None
        self.sftp.posix_rename(self._path(source), self._path(target))

    @translating_errors
    def rename_exclusive(self, source: str, target: str) -> bool:
        # Plain SSH_FXP_RENAME: OpenSSH's sftp-server uses link(2) for files and refuses an
        # existing target for folders, so it never replaces `target`.
        try:
            if self._pipelining():
                self._call(CMD_RENAME, self._remote(self._path(source)), self._remote(self._path(target)))
            else:
                self.sftp.rename(self._path(source), self._path(target))
            return True
        except OSError:
            if self.kind(target) is None:
                raise
            return False

    def remove(self, name: str) -> bool:
        """As `Transport.remove`; right after `read` read `name` whole (a regular file then, e.g. the lock
        read back to check it is this push's), without another lstat."""
        if self._just_read == name and not self.lost:
            self._just_read = None
            try:
                self._unlink(name)
            except FileNotFoundError:
                pass
            return True
        return super().remove(name)

    @translating_errors
    def _unlink(self, name: str) -> None:
        if self._pipelining():
            self._call(CMD_REMOVE, self._remote(self._path(name)))
        else:
            self.sftp.remove(self._path(name))

    @translating_errors
    def _rmdir(self, name: str) -> None:
        self._just_read = None
        self.sftp.rmdir(self._path(name))

    @translating_errors
    def mtime(self, name: str) -> Optional[float]:
        try:
            return float(self._lstat(name).st_mtime)
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
