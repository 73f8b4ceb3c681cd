"""The staging-directory protocol, version 1 (docs/protocol.md), client side.

    >>> manifest = Manifest.new([ManifestEntry(1, "A-jd.1.mcz", 10, "ab" * 32, "A-jd.1")])
    >>> Manifest.parse(manifest.render()).entries[0].file
    'A-jd.1.mcz'

Every record is TAB-separated lines: a `hotload-<kind>` header with the
protocol version, fields, and a closing `end` line.
"""

import getpass
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import __version__
from .errors import ProtocolError

VERSION = 1

MANIFEST = "manifest"
TRIGGER = "load"
LOCK = "lock"
HEARTBEAT = "heartbeat"
STATUS = "status"
HISTORY = "history.log"
FAILED = "failed"
TEMP_PREFIX = ".hotload-tmp-"

STALE_LOCK_SECONDS = 600
MAX_NAME_BYTES = 200

_PACKAGE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.mcz$")
_BATCH_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


def check_package_file_name(name: str) -> str:
    """Answer `name` if it is a safe package file name, else raise ProtocolError."""
    problem = None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        problem = "contains a control character"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif ".." in name:
        problem = "contains '..'"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    elif not _PACKAGE_FILE.match(name):
        problem = "must be letters, digits, '.', '_', '+' or '-', start with a letter or digit and end in .mcz"
    if problem:
        raise ProtocolError(f"package file name {name!r} {problem}; rename the file")
    return name


def check_batch_id(batch: str) -> str:
    if not _BATCH_ID.match(batch):
        raise ProtocolError(f"batch id {batch!r} is not of the form YYYYMMDDTHHMMSSZ-xxxxxx")
    return batch


def new_batch_id(now: Optional[float] = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def holder_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def temp_name(batch: str, name: str) -> str:
    return f"{TEMP_PREFIX}{batch}-{name}"


def _clean(value: str) -> str:
    return re.sub(r"[\t\r\n]", " ", str(value))


# -- generic record reading ---------------------------------------------------------


def parse_record(text: str, kind: str) -> List[List[str]]:
    """Split a record into its field lines, checking header, version and the `end` line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ProtocolError(f"the {kind} file is empty")
    header = lines[0].split("\t")
    if len(header) != 2 or header[0] != f"hotload-{kind}":
        raise ProtocolError(f"the {kind} file does not start with 'hotload-{kind}<TAB>version'")
    if header[1] != str(VERSION):
        raise ProtocolError(
            f"the {kind} file is protocol version {header[1]}, this client speaks version {VERSION}; "
            "update hotload on one side so both speak the same version"
        )
    if lines[-1] != "end":
        raise ProtocolError(f"the {kind} file is truncated (no 'end' line)")
    return [line.split("\t") for line in lines[1:-1]]


def render_record(kind: str, rows: List[Tuple]) -> str:
    body = "".join("\t".join(_clean(value) for value in row) + "\n" for row in rows)
    return f"hotload-{kind}\t{VERSION}\n{body}end\n"


# -- manifest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    position: int
    file: str
    size: int
    sha256: str
    version: str


@dataclass
class Manifest:
    batch: str
    created: float
    holder: str
    entries: List[ManifestEntry]
    client: str = f"hotload {__version__}"

    @classmethod
    def new(cls, entries: List[ManifestEntry], batch: Optional[str] = None) -> "Manifest":
        now = time.time()
        return cls(batch or new_batch_id(now), now, holder_name(), entries)

    def render(self) -> str:
        rows = [
            ("batch", check_batch_id(self.batch)),
            ("created", int(self.created), iso(self.created)),
            ("client", self.client, self.holder),
        ]
        for entry in self.entries:
            check_package_file_name(entry.file)
            rows.append(("package", entry.position, entry.file, entry.size, entry.sha256, entry.version))
        return render_record("manifest", rows)

    @classmethod
    def parse(cls, text: str) -> "Manifest":
        fields: Dict[str, List[str]] = {}
        entries = []
        for row in parse_record(text, "manifest"):
            if row[0] == "package":
                if len(row) != 6 or not row[1].isdigit() or not row[3].isdigit():
                    raise ProtocolError(f"bad package line in manifest: {' '.join(row)!r}")
                entries.append(ManifestEntry(int(row[1]), check_package_file_name(row[2]), int(row[3]), row[4], row[5]))
            else:
                fields[row[0]] = row[1:]
        if [e.position for e in entries] != list(range(1, len(entries) + 1)):
            raise ProtocolError("manifest positions must run 1, 2, 3, ... with no gap")
        batch = check_batch_id((fields.get("batch") or [""])[0])
        created = float((fields.get("created") or ["0"])[0])
        client = fields.get("client") or ["", ""]
        return cls(batch, created, client[1] if len(client) > 1 else "", entries, client[0])


# -- lock -----------------------------------------------------------------------------------


@dataclass
class LockRecord:
    holder: str
    pid: int
    batch: str
    created: float

    @classmethod
    def new(cls, batch: str) -> "LockRecord":
        return cls(holder_name(), os.getpid(), batch, time.time())

    def render(self) -> str:
        return render_record(
            "lock",
            [
                ("holder", self.holder, f"pid {self.pid}"),
                ("batch", self.batch),
                ("created", int(self.created), iso(self.created)),
            ],
        )

    @classmethod
    def parse(cls, text: str) -> "LockRecord":
        fields = {row[0]: row[1:] for row in parse_record(text, "lock")}
        holder = fields.get("holder") or ["?", "pid 0"]
        pid_text = holder[1].split()[-1] if len(holder) > 1 else "0"
        return cls(
            holder[0],
            int(pid_text) if pid_text.isdigit() else 0,
            (fields.get("batch") or ["?"])[0],
            float((fields.get("created") or ["0"])[0]),
        )


# -- what the loader writes -------------------------------------------------------------


@dataclass
class Heartbeat:
    time: float
    dialect: str = ""
    priority: str = ""
    interval_ms: int = 2000
    image: str = ""

    @classmethod
    def parse(cls, text: str) -> "Heartbeat":
        fields = {row[0]: row[1:] for row in parse_record(text, "heartbeat")}
        try:
            beat = float(fields["time"][0])
        except (KeyError, IndexError, ValueError):
            raise ProtocolError("the heartbeat has no time line") from None
        loader = fields.get("loader") or []
        values = {part.split(" ", 1)[0]: part.split(" ", 1)[-1] for part in loader[1:]}
        interval = values.get("interval", "2000")
        return cls(
            beat,
            loader[0] if loader else "",
            values.get("priority", ""),
            int(interval) if interval.isdigit() else 2000,
            values.get("image", ""),
        )

    def max_age(self) -> float:
        return max(3 * self.interval_ms / 1000.0, 10.0)


@dataclass
class Status:
    batch: str
    result: str
    loaded: List[str] = field(default_factory=list)
    failed_package: str = ""
    error: str = ""
    stack: List[str] = field(default_factory=list)
    timings_ms: Dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    _TEXT_FIELDS = {"batch": "batch", "result": "result", "failed-package": "failed_package", "error": "error"}
    _LIST_FIELDS = {"loaded": "loaded", "stack": "stack"}

    @classmethod
    def parse(cls, text: str) -> "Status":
        status = cls(batch="", result="")
        for row in parse_record(text, "status"):
            key, values = row[0], row[1:]
            value = values[0] if values else ""
            if key in cls._TEXT_FIELDS:
                setattr(status, cls._TEXT_FIELDS[key], value)
            elif key in cls._LIST_FIELDS:
                getattr(status, cls._LIST_FIELDS[key]).append(value)
            elif key == "timing" and len(values) == 2 and values[1].isdigit():
                status.timings_ms[values[0]] = int(values[1])
            elif key in ("started", "finished") and value.replace(".", "", 1).isdigit():
                setattr(status, key, float(value))
        if status.result not in ("ok", "failed"):
            raise ProtocolError(f"the status has an unknown result {status.result!r}")
        return status

    @property
    def ok(self) -> bool:
        return self.result == "ok"
