"""Asking the loader to save its image now (a save-only trigger), and waiting for the save's history line.

    >>> result = ImageSave(transport).run(wait=True, timeout=120)
    >>> result.result, result.size_before, result.size_after
    ('saved', 61234176, 48213504)

The trigger is written as a push writes its own: a temporary file renamed to `load` only when there is
none (`rename_exclusive`), so a batch's trigger is never replaced. An empty `load` already there is a
save the loader has not taken yet: this one waits for it instead of writing another. The loader tidies
the image first (Seaside's expired sessions, garbage) and appends `saved` or `failed` to history.log,
with the image file's size before and after; with `wait`, that line is the result.
"""

import re
import secrets
import time
from dataclasses import dataclass
from typing import List, Optional

from hotload.staging import protocol
from hotload.errors import BatchFailed, TargetError, WaitTimeout
from hotload.staging.protocol import HistoryEntry
from hotload.staging.status import require_loader
from hotload.staging.transports.base import FILE, Transport

_SIZES = re.compile(r" (\d+|nil) -> (\d+|nil) bytes$")
SAVE_FAILED_EXIT = BatchFailed.exit_code


@dataclass
class SaveResult:
    target: str
    result: str  # requested (no wait), saved, failed
    detail: str = ""
    size_before: Optional[int] = None
    size_after: Optional[int] = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return SAVE_FAILED_EXIT if self.result == "failed" else 0

    def to_json(self) -> dict:
        return {
            "target": self.target, "result": self.result, "detail": self.detail, "size_before": self.size_before,
            "size_after": self.size_after, "seconds": round(self.seconds, 3),
        }


class ImageSave:
    """Writes a save-only trigger at one staging directory and, with `wait`, follows it to its history line."""

    def __init__(self, transport: Transport, poll: float = 0.2):
        self.transport = transport
        self.poll = poll

    def run(self, wait: bool = False, timeout: float = 120.0) -> SaveResult:
        started = time.monotonic()
        if wait:
            require_loader(self.transport)
        seen = self._history_lines()[-1:]
        self._put_trigger(started + timeout)
        if not wait:
            return SaveResult(self.transport.description, "requested", seconds=time.monotonic() - started)
        entry = self._wait_for_save(seen, started + timeout)
        before, after = self._sizes(entry.detail)
        return SaveResult(self.transport.description, entry.result, entry.detail, before, after, time.monotonic() - started)

    def _history_lines(self) -> List[str]:
        """The last lines of history.log (a long one is read from its end)."""
        data = self.transport.read(protocol.HISTORY, limit=256 << 10, tail=True) or b""
        return data.decode("utf-8", "replace").splitlines()

    def _put_trigger(self, deadline: float):
        """An empty `load`, never over another trigger: a batch's is waited for (the loader takes one at a time)."""
        temporary = protocol.temp_name(protocol.new_batch_id(), "save-" + secrets.token_hex(3))
        self.transport.write(temporary, b"")
        try:
            while not self.transport.rename_exclusive(temporary, protocol.TRIGGER):
                kind = self.transport.kind(protocol.TRIGGER)
                if kind not in (None, FILE):
                    raise TargetError(
                        f"{protocol.TRIGGER} in {self.transport.description} is a {kind}, not a trigger file; "
                        "remove it by hand, then save again")
                if kind == FILE and not (self.transport.read(protocol.TRIGGER, 4096) or b"").strip():
                    return  # a save the loader has not taken yet: it is this save too
                if time.monotonic() >= deadline:
                    raise WaitTimeout(f"another trigger in {self.transport.description} was not taken in time; "
                                      "check the loader with `hotload status`")
                time.sleep(self.poll)
        finally:
            if self.transport.kind(temporary) == FILE:
                self.transport.remove(temporary)

    def _wait_for_save(self, last: List[str], deadline: float) -> HistoryEntry:
        """The first save line (`-` for the batch) appended after `last`, the line that ended history.log before
        the trigger (matched by its text: the end of a long history.log moves as lines are appended)."""
        while True:
            lines = self._history_lines()
            if last and last[0] in lines:
                lines = lines[len(lines) - lines[::-1].index(last[0]):]
            for line in lines:
                entry = HistoryEntry.parse(line)
                if entry is not None and entry.batch == "-" and entry.result in ("saved", "failed"):
                    return entry
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"the loader at {self.transport.description} did not save within the timeout; "
                    "check it with `hotload status`")
            time.sleep(self.poll)

    @staticmethod
    def _sizes(detail: str):
        match = _SIZES.search(detail)
        if not match:
            return None, None
        return tuple(None if value == "nil" else int(value) for value in match.groups())
