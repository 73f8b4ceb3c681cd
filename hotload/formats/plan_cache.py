"""Reading a batch for a plan, with a per-user cache of what planning reads of each `.mcz`.

    >>> reader = PlanReader()                  # loads the cache, when there is one
    >>> packages, problems = reader.read_all(paths)
    >>> reader.save()                          # writes it back when something changed

What planning reads of a package (`mcz.PlanFacts`) depends only on the file's bytes, so the cache
is keyed by the file's size and SHA-256: a copied, moved or touched file still hits, and any edit
misses. Every file is still opened, checked (kind, size limit) and hashed on every run; only the
unzipping and reading of its members is saved. Packages that cannot be read are never cached.

The cache is one file, `$XDG_CACHE_HOME/hotload/plan-facts.json` (`~/.cache/hotload/...` when
XDG_CACHE_HOME is unset or relative); HOTLOAD_NO_CACHE=1 turns it off. It never fails a command:
a cache that cannot be read, is damaged (its checksum does not match) or was written by another
format or under other limits is ignored, and one that cannot be written is not written.

Large batches of packages not in the cache are read by worker processes (forked, one per
processor, at most 4) when the machine has more than one processor and the process has one thread.
"""

import hashlib
import json
import os
import sys
import time
from itertools import chain
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from hotload.errors import PackageError
from hotload.limits import limits
from hotload.formats.mcz import PlanFacts, PlannedPackage, _check_suffix, _read_file, plan_facts_of

#: bump when PlanFacts or what the readers answer changes: older caches are then ignored
FORMAT = 2
FILE_NAME = "plan-facts.json"
#: entries kept; the ones used longest ago go first
MAX_ENTRIES = 20_000
#: a cache file larger than this is ignored (about 8,000 times the facts of a large package)
MAX_FILE_BYTES = 256 * 1024 * 1024
#: packages to read before worker processes are worth their start (a fork costs a few ms)
PARALLEL_MIN = 64
MAX_WORKERS = 4


def cache_file() -> Optional[Path]:
    """Where the cache lives, or None when it is turned off or there is no home folder."""
    if os.environ.get("HOTLOAD_NO_CACHE", "") not in ("", "0"):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative path is ignored
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "hotload" / FILE_NAME


def facts_to_json(facts: PlanFacts) -> list:
    """[name, version, dependencies, class names, superclasses, traits, extended... ] as flat lists."""
    return [
        facts.name,
        facts.version,
        list(facts.dependencies),
        [name for name, _, _ in facts.classes],
        [superclass for _, superclass, _ in facts.classes],
        [list(traits) for _, _, traits in facts.classes],
        [name for name, _ in facts.methods],
        [count for _, count in facts.methods],
    ]


_STR = {str}
_STR_OR_NONE = {str, type(None)}
_LIST = {list}
_INT = {int}


def facts_from_json(value) -> Optional[PlanFacts]:
    """PlanFacts from a cache entry, or None when it is not exactly the shape facts_to_json writes."""
    if type(value) is not list or len(value) != 8 or set(map(type, value[2:])) - _LIST:
        return None
    name, version, dependencies, names, superclasses, traits, method_names, counts = value
    if type(name) is not str or type(version) is not str:
        return None
    if len(superclasses) != len(names) or len(traits) != len(names) or len(counts) != len(method_names):
        return None
    if (
        set(map(type, dependencies)) - _STR
        or set(map(type, names)) - _STR
        or set(map(type, superclasses)) - _STR_OR_NONE
        or set(map(type, traits)) - _LIST
        or set(map(type, chain.from_iterable(traits))) - _STR
        or set(map(type, method_names)) - _STR
        or set(map(type, counts)) - _INT
        or (counts and min(counts) < 1)
    ):
        return None
    return PlanFacts(
        name,
        version,
        tuple(dependencies),
        tuple(zip(names, superclasses, map(tuple, traits))),
        tuple(zip(method_names, counts)),
    )


class PlanReader:
    """Reads packages for a plan (mcz.read_planned's checks and errors), through the cache."""

    def __init__(self, path: Optional[Path] = None, workers: Optional[int] = None, use_cache: bool = True):
        self.path = None if not use_cache else cache_file() if path is None else path
        self.limit = limits()
        self.today = int(time.time() // 86400)  # days since 1970
        self.entries: Dict[str, list] = {}  # "size:sha256" -> [day last used, facts as JSON]
        self.changed = False
        self.hits = self.misses = 0
        self.workers = _worker_count() if workers is None else workers
        if self.path is not None:
            self.entries = self._load()

    def _header(self, checksum: str) -> dict:
        return {"format": FORMAT, "max_member_bytes": self.limit.max_member_bytes, "sha256": checksum}

    def _load(self) -> Dict[str, list]:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except (OSError, ValueError):
            return {}
        return parse_cache(data, self._header(""))

    def read(self, path) -> PlannedPackage:
        """One package; raises PackageError as read_mcz does."""
        packages, problems = self.read_all([path])
        if problems:
            raise problems[0]
        return packages[0]

    def read_all(self, paths: Sequence) -> Tuple[List[PlannedPackage], List[PackageError]]:
        """Every package that reads, in order, and the PackageError of every one that does not."""
        results: List[Union[PlannedPackage, PackageError, None]] = [None] * len(paths)
        missing = []  # (position, path, data, key)
        for position, path in enumerate(paths):
            path = Path(path)
            try:
                _check_suffix(path)
                data = _read_file(path, self.limit.max_mcz_bytes)
            except PackageError as error:
                results[position] = error
                continue
            key = f"{len(data)}:{hashlib.sha256(data).hexdigest()}" if self.path is not None else ""
            entry = self.entries.get(key)
            facts = facts_from_json(entry[1]) if isinstance(entry, list) and len(entry) == 2 else None
            if facts is None:
                missing.append((position, path, data, key))
                continue
            self.hits += 1
            if entry[0] != self.today:
                entry[0] = self.today
                self.changed = True
            results[position] = PlannedPackage(path, len(data), facts)
        self.misses += len(missing)
        for (position, path, data, key), facts in zip(missing, self._facts_of(missing)):
            if facts is None:  # an error, or a worker that failed: read here, raising read_mcz's error
                try:
                    facts = plan_facts_of(path, data, self.limit.max_member_bytes)
                except PackageError as error:
                    results[position] = error
                    continue
            results[position] = PlannedPackage(path, len(data), facts)
            if self.path is not None:
                self.entries[key] = [self.today, facts_to_json(facts)]
                self.changed = True
        packages = [result for result in results if isinstance(result, PlannedPackage)]
        problems = [result for result in results if isinstance(result, PackageError)]
        return packages, problems

    def _facts_of(self, missing) -> List[Optional[PlanFacts]]:
        jobs = [(path, data) for _, path, data, _ in missing]
        if self.workers > 1 and len(jobs) >= PARALLEL_MIN and _may_fork():
            return _read_in_workers(jobs, self.workers, self.limit.max_member_bytes)
        return [_facts_or_none(path, data, self.limit.max_member_bytes) for path, data in jobs]

    def save(self) -> bool:
        """Writes the cache when something changed; answers whether it was written. Never raises."""
        if self.path is None or not self.changed:
            return False
        entries = self.entries
        if len(entries) > MAX_ENTRIES:
            newest = sorted(entries.items(), key=lambda item: item[1][0] if isinstance(item[1], list) else 0)
            entries = dict(newest[-MAX_ENTRIES:])
        temporary = None
        try:
            body = json.dumps(entries, separators=(",", ":")).encode("utf-8")
            header = json.dumps(self._header(hashlib.sha256(body).hexdigest())).encode("utf-8")
            import tempfile

            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=".plan-facts-", suffix=".tmp", dir=self.path.parent)
            with open(descriptor, "wb") as handle:
                handle.write(header + b"\n" + body)
            os.replace(temporary, self.path)
            temporary = None
            self.changed = False
            return True
        except Exception:  # noqa: BLE001 - a cache that cannot be written is simply not written
            return False
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass


def parse_cache(data: bytes, expected_header: dict) -> Dict[str, list]:
    """The entries of a cache file's bytes; {} for anything but an intact file of this format and limits."""
    try:
        if len(data) > MAX_FILE_BYTES:
            return {}
        header_line, newline, body = data.partition(b"\n")
        if not newline:
            return {}
        header = json.loads(header_line)
        if not isinstance(header, dict) or set(header) != set(expected_header):
            return {}
        if any(header[key] != expected_header[key] for key in expected_header if key != "sha256"):
            return {}
        if header["sha256"] != hashlib.sha256(body).hexdigest():
            return {}
        entries = json.loads(body)
    except (ValueError, TypeError, RecursionError, MemoryError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _facts_or_none(path: Path, data: bytes, max_member_bytes: int) -> Optional[PlanFacts]:
    try:
        return plan_facts_of(path, data, max_member_bytes)
    except PackageError:
        return None


def _may_fork() -> bool:
    """Only a process with one thread forks: a child of a threaded one may inherit a lock another thread held."""
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def _worker_count() -> int:
    if not hasattr(os, "fork"):
        return 1
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(available, MAX_WORKERS))


def _read_in_workers(jobs, workers: int, max_member_bytes: int) -> List[Optional[PlanFacts]]:
    """Facts of every job, None where reading failed; this process reads one share and forked children
    the others, each answering through a pipe. A share no child could be started for, or whose child
    failed, is read by this process."""
    import pickle

    shares = [list(range(start, len(jobs), workers)) for start in range(workers)]
    children = []  # [pid, read end, share]
    results: List[Optional[PlanFacts]] = [None] * len(jobs)
    own = list(shares[0])
    try:
        for share in shares[1:]:
            try:
                read_end, write_end = os.pipe()
            except OSError:
                own.extend(share)
                continue
            try:
                pid = os.fork()
            except OSError:  # no more processes: this one reads the share
                os.close(read_end)
                os.close(write_end)
                own.extend(share)
                continue
            if pid == 0:  # the child: read its share, send the facts, leave without any clean-up of the parent's
                status = 1
                try:
                    os.close(read_end)
                    answer = pickle.dumps([_facts_or_none(*jobs[i], max_member_bytes) for i in share], pickle.HIGHEST_PROTOCOL)
                    with open(write_end, "wb") as pipe:
                        pipe.write(answer)
                    status = 0
                finally:
                    os._exit(status)
            os.close(write_end)
            children.append([pid, read_end, share])
        for i in own:
            results[i] = _facts_or_none(*jobs[i], max_member_bytes)
        while children:
            pid, read_end, share = children[0]
            try:
                with open(read_end, "rb") as pipe:
                    answer = pipe.read()
            except OSError:
                answer = b""
            children[0][1] = None  # closed
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = -1
            children.pop(0)
            facts = None
            if status == 0:
                try:
                    facts = pickle.loads(answer)
                except Exception:  # noqa: BLE001 - a child's bad answer: its share is read here
                    facts = None
            if isinstance(facts, list) and len(facts) == len(share):
                for i, value in zip(share, facts):
                    results[i] = value if isinstance(value, PlanFacts) else None
            else:
                for i in share:
                    results[i] = _facts_or_none(*jobs[i], max_member_bytes)
    finally:
        for pid, read_end, _ in children:  # interrupted: the children go too
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
            if read_end is not None:
                try:
                    os.close(read_end)
                except OSError:
                    pass
    return results
