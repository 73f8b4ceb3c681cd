"""The staging-directory protocol, version 2 (docs/protocol.md), client side.

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

from hotload import __version__
from hotload.errors import InputError, ProtocolError

VERSION = 2

MANIFEST = "manifest"
TRIGGER = "load"
LOCK = "lock"
HEARTBEAT = "heartbeat"
STATUS = "status"
HISTORY = "history.log"
FAILED = "failed"
CONFLICT = "conflict"
JOURNAL = "journal"
LOADED = "loaded"
PACKAGES = "packages"
KEPT = "kept"  # kept/<batch>/: a loaded batch's manifest and the state after it, for rollback
TEMP_PREFIX = ".hotload-tmp-"

STALE_LOCK_SECONDS = 600
#: a standing-by loader rewrites `conflict` every poll; an older one is from a loader since stopped
CONFLICT_FRESH_SECONDS = 30
MAX_NAME_BYTES = 200

_DIGITS = re.compile(r"^[0-9]{1,18}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PACKAGE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.mcz$")
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_BATCH_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


class VersionMismatch(ProtocolError):
    """A record of another protocol version; `found` is its version text."""

    def __init__(self, kind: str, found: str):
        self.kind = kind
        self.found = found
        super().__init__(
            f"the {kind} file is protocol version {found}, this client speaks version {VERSION}; "
            "update hotload on one side so both speak the same version"
        )


def check_package_file_name(name: str) -> str:
    """Answer `name` if it is a safe package file name, else raise InputError (exit 2)."""
    problem = None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        problem = "contains a control character"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif ".." in name:
        problem = "contains '..'"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:  # a name listed from undecodable bytes
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    elif not _PACKAGE_FILE.match(name):
        problem = "must be letters, digits, '.', '_', '+' or '-', start with a letter or digit and end in .mcz"
    if problem:
        raise InputError(f"package file name {name!r} {problem}; rename the file")
    return name


def is_unloadable_package_name(name: str) -> bool:
    """A package name an `unload` line may carry: the characters of a package file name, at most 200 bytes."""
    return bool(_PACKAGE_NAME.fullmatch(name)) and ".." not in name and len(name) <= MAX_NAME_BYTES


def is_batch_id(name: str) -> bool:
    return bool(_BATCH_ID.fullmatch(name))  # not match: its `$` also matches before a final newline


def check_batch_id(batch: str) -> str:
    if not is_batch_id(batch):
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


def temp_folder(batch: str) -> str:
    """Where a batch is uploaded before it is published as `<batch>/`."""
    return f"{TEMP_PREFIX}{batch}"


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
        raise VersionMismatch(kind, header[1])
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


_HEALTH_URL = re.compile(r"^http://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[\x21-\x7e]*)?$")


@dataclass(frozen=True)
class HealthCheck:
    """The manifest's `health` row: after the install and before the save the loader GETs `url` (as seen from the
    server) and needs `status` and, when given, `body` in the answer within `timeout_ms`; else it undoes the
    batch and saves nothing."""

    url: str
    status: int = 200
    timeout_ms: int = 10000
    body: str = ""

    def row(self) -> Tuple:
        return ("health", self.check().url, self.status, self.timeout_ms, self.body)

    def check(self) -> "HealthCheck":
        if len(self.url) > 2000 or not _HEALTH_URL.match(self.url):
            raise InputError(f"health check URL {self.url!r} must be http://host[:port]/path (the loader speaks plain HTTP)")
        if not 100 <= self.status <= 599 or not 1 <= self.timeout_ms <= 600000:
            raise InputError("health check: status must be 100 to 599 and the timeout 1 ms to 600 s")
        return self

    @classmethod
    def from_row(cls, row: List[str]) -> "HealthCheck":
        if len(row) not in (4, 5) or not re.match(r"^[0-9]{3}$", row[2]) or not re.match(r"^[0-9]{1,6}$", row[3]):
            raise ProtocolError(f"bad health line in manifest: {' '.join(row)!r}")
        try:
            return cls(row[1], int(row[2]), int(row[3]), row[4] if len(row) == 5 else "").check()
        except InputError as error:
            raise ProtocolError(f"bad health line in manifest: {error}") from None


@dataclass
class Manifest:
    batch: str
    created: float
    holder: str
    entries: List[ManifestEntry]
    client: str = f"hotload {__version__}"
    health: Optional[HealthCheck] = None
    #: (package, version) pairs the loader unloads before it installs the entries (a rollback's)
    unloads: List[Tuple[str, str]] = field(default_factory=list)

    @classmethod
    def new(cls, entries: List[ManifestEntry], batch: Optional[str] = None, health: Optional[HealthCheck] = None,
            unloads: Optional[List[Tuple[str, str]]] = None) -> "Manifest":
        now = time.time()
        return cls(batch or new_batch_id(now), now, holder_name(), entries, health=health, unloads=list(unloads or []))

    def render(self) -> str:
        rows = [
            ("batch", check_batch_id(self.batch)),
            ("created", int(self.created), iso(self.created)),
            ("client", self.client, self.holder),
        ]
        for entry in self.entries:
            check_package_file_name(entry.file)
            rows.append(("package", entry.position, entry.file, entry.size, entry.sha256, entry.version))
        for package, version in self.unloads:
            rows.append(("unload", package, version))
        if self.health is not None:
            rows.append(self.health.row())
        return render_record("manifest", rows)

    @classmethod
    def parse(cls, text: str) -> "Manifest":
        fields: Dict[str, List[str]] = {}
        entries, unloads = [], []
        health = None
        for row in parse_record(text, "manifest"):
            if row[0] == "end":
                raise ProtocolError("the manifest has text after an 'end' line")
            if row[0] == "health":
                if health is not None:
                    raise ProtocolError("the manifest has two health lines")
                health = HealthCheck.from_row(row)
                continue
            if row[0] == "unload":
                if len(row) != 3 or not is_unloadable_package_name(row[1]) or not row[2]:
                    raise ProtocolError(f"bad unload line in manifest: {' '.join(row)!r}")
                unloads.append((row[1], row[2]))
                continue
            if row[0] == "package":
                if len(row) != 6 or not _DIGITS.match(row[1]) or not _DIGITS.match(row[3]) or not _SHA256.match(row[4]):
                    raise ProtocolError(f"bad package line in manifest: {' '.join(row)!r}")
                try:
                    name = check_package_file_name(row[2])
                except InputError as error:
                    raise ProtocolError(str(error)) from None
                entries.append(ManifestEntry(int(row[1]), name, int(row[3]), row[4], row[5]))
            else:
                fields[row[0]] = row[1:]
        if not entries and not unloads:
            raise ProtocolError("the manifest names no package and nothing to unload")
        if len({package for package, _ in unloads}) != len(unloads):
            raise ProtocolError("the manifest unloads a package twice")
        entries.sort(key=lambda entry: entry.position)
        if [e.position for e in entries] != list(range(1, len(entries) + 1)):
            raise ProtocolError("manifest positions must run 1, 2, 3, ... with no gap")
        if len({e.file for e in entries}) != len(entries):
            raise ProtocolError("the manifest names a file twice")
        batch = check_batch_id((fields.get("batch") or [""])[0])
        created_text = (fields.get("created") or ["0"])[0]
        created = float(created_text) if _DIGITS.match(created_text) else 0.0
        client = fields.get("client") or ["", ""]
        return cls(batch, created, client[1] if len(client) > 1 else "", entries, client[0], health, unloads)


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
            int(pid_text) if _DIGITS.match(pid_text) else 0,
            (fields.get("batch") or ["?"])[0],
            _number((fields.get("created") or ["0"])[0]),
        )

    @property
    def host(self) -> str:
        return self.holder.rpartition("@")[2]

    def holder_is_dead(self) -> bool:
        """True only when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by someone else
            return False
        return False


# -- the trigger ------------------------------------------------------------------------------


def render_trigger(batch: str) -> str:
    return render_record("trigger", [("batch", check_batch_id(batch))])


def parse_trigger(text: str) -> Optional[str]:
    """The batch a trigger names, or None for a save-only (empty) trigger."""
    if not text.strip():
        return None
    # the first batch row with a value, as the loader's HLRecord>>at: reads it
    batches = [row[1] for row in parse_record(text, "trigger") if row[0] == "batch" and len(row) > 1]
    return check_batch_id(batches[0] if batches else "")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if value == value and abs(value) < 1e12 else 0.0  # no NaN, no infinities


# -- what the loader writes -------------------------------------------------------------


@dataclass
class Heartbeat:
    time: float
    dialect: str = ""
    priority: str = ""
    interval_ms: int = 2000
    image: str = ""
    id: str = ""
    problems: List[str] = field(default_factory=list)
    features: List[str] = field(default_factory=list)  # what this loader can do beyond protocol 2: "health"

    @classmethod
    def parse(cls, text: str) -> "Heartbeat":
        rows = parse_record(text, "heartbeat")
        fields = {row[0]: row[1:] for row in rows}
        beat = _number((fields.get("time") or [""])[0])
        if not beat:
            raise ProtocolError("the heartbeat has no time line")
        loader = fields.get("loader") or []
        values = {part.split(" ", 1)[0]: part.split(" ", 1)[-1] for part in loader[1:]}
        interval = values.get("interval", "2000")
        return cls(
            beat,
            loader[0] if loader else "",
            values.get("priority", ""),
            int(interval) if _DIGITS.match(interval) else 2000,
            values.get("image", ""),
            (fields.get("id") or [""])[0],
            [row[1] for row in rows if row[0] == "problem" and len(row) > 1],
            [feature for row in rows if row[0] == "features" for feature in row[1:]],
        )

    def max_age(self) -> float:
        return max(3 * self.interval_ms / 1000.0, 10.0)


@dataclass
class Conflict:
    """Written by a loader that stands by because another live loader polls the same directory."""

    time: float
    loader_id: str
    image: str
    active_id: str
    active_image: str

    @classmethod
    def parse(cls, text: str) -> "Conflict":
        fields = {row[0]: row[1:] for row in parse_record(text, "conflict")}
        loader = (fields.get("loader") or []) + ["", ""]
        active = (fields.get("active") or []) + ["", ""]
        return cls(_number((fields.get("time") or [""])[0]), loader[0], loader[1], active[0], active[1])

    def describe(self) -> str:
        return (
            f"two images poll this staging directory: {self.active_image or '?'} (loader {self.active_id}, acting) "
            f"and {self.image or '?'} (loader {self.loader_id}, standing by); stop one of them or give each "
            "its own staging directory"
        )


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
    notes: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    _TEXT_FIELDS = {"batch": "batch", "result": "result", "failed-package": "failed_package", "error": "error"}
    _LIST_FIELDS = {"loaded": "loaded", "stack": "stack", "note": "notes", "problem": "problems"}

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
            elif key == "timing" and len(values) == 2 and _DIGITS.match(values[1]):
                status.timings_ms[values[0]] = int(values[1])
            elif key in ("started", "finished"):
                setattr(status, key, _number(value))
        if status.result not in ("ok", "failed"):
            raise ProtocolError(f"the status has an unknown result {status.result!r}")
        return status

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    @property
    def paused_ms(self) -> Optional[int]:
        """How long requests waited for the install: it runs above the web server (the save pauses them too)."""
        return self.timings_ms.get("install")


@dataclass(frozen=True)
class LoadedPackage:
    """One package the image runs because hotload loaded it: a `package` row of the loaded record."""

    package: str
    version: str
    file: str
    size: int
    sha256: str
    batch: str
    loaded_at: float
    #: "added" (hotload brought the package into the image), "replaced" (the image had code of it before
    #: hotload first loaded it), or "unknown" (a loader that did not record it)
    origin: str = "unknown"

    def to_json(self) -> dict:
        return {
            "package": self.package, "version": self.version, "file": self.file, "size": self.size,
            "sha256": self.sha256, "batch": self.batch, "loaded_at": iso(self.loaded_at), "origin": self.origin,
        }


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class LoadedRecord:
    """`loaded`: every package the image runs because hotload loaded it, written by the loader from the image."""

    image: str
    packages: Dict[str, LoadedPackage] = field(default_factory=dict)
    loader_id: str = ""  # the heartbeat id of the loader that wrote it: another id means a record of an earlier start
    kept_at: float = 0.0  # in kept/<batch>/loaded: when the loader kept it (the state after that batch)

    @classmethod
    def parse(cls, text: str) -> "LoadedRecord":
        record = cls(image="")
        for row in parse_record(text, LOADED):
            if row[0] == "image" and len(row) > 1:
                record.image = row[1]
            elif row[0] == "id" and len(row) > 1:
                record.loader_id = row[1]
            elif row[0] == "kept" and len(row) > 1:
                record.kept_at = _number(row[1])
            elif row[0] == "package":
                package = cls._package(row)
                record.packages[package.package] = package
        return record

    @staticmethod
    def _package(row: List[str]) -> LoadedPackage:
        if len(row) < 9:
            raise ProtocolError(f"the loaded record has a package line with {len(row) - 1} fields, not 8")
        _, package, version, file, size, sha256, batch, seconds = row[:8]
        if not package or not version:
            raise ProtocolError("the loaded record has a package line without a package or version name")
        try:
            check_package_file_name(file)
        except InputError as error:
            raise ProtocolError(f"the loaded record's line for {package}: {error}") from None
        if not _DIGITS.match(size) or not _SHA256.match(sha256) or not is_batch_id(batch):
            raise ProtocolError(f"the loaded record's line for {package} has a bad size, SHA-256 or batch id")
        origin = row[9] if len(row) > 9 and row[9] in ("added", "replaced") else "unknown"
        return LoadedPackage(package, version, file, int(size), sha256, batch, _number(seconds), origin)

    def to_json(self) -> dict:
        return {"image": self.image, "loader_id": self.loader_id,
                "packages": [self.packages[name].to_json() for name in sorted(self.packages)]}


HISTORY_RESULTS = ("ok", "failed", "saved", "rejected")


@dataclass(frozen=True)
class HistoryEntry:
    """One line of history.log: `<epoch> <iso time> <batch or -> <result> <detail>`."""

    time: float
    batch: str
    result: str
    detail: str

    @classmethod
    def parse(cls, line: str) -> Optional["HistoryEntry"]:
        """The entry, or None for a line that is not one (history.log is only appended to, never trusted)."""
        fields = line.split("\t", 4)
        if len(fields) < 4 or not _DIGITS.match(fields[0]) or fields[3] not in HISTORY_RESULTS:
            return None
        batch = fields[2] if fields[2] == "-" or is_batch_id(fields[2]) else None
        if batch is None and not fields[2].startswith("invalid-"):
            return None
        return cls(float(fields[0]), fields[2], fields[3], fields[4] if len(fields) > 4 else "")

    def to_json(self) -> dict:
        return {"time": iso(self.time), "batch": self.batch, "result": self.result, "detail": self.detail}
