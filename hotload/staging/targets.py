"""Where a push goes: a local path, `sftp://[user@]host[:port]/path` or `[user@]host:path`.
A target that cannot be parsed is bad input (InputError, exit 2).

    >>> parse_target("sftp://deploy@app1:2222/srv/app/staging")
    Target(path='/srv/app/staging', host='app1', user='deploy', port=2222)
    >>> parse_target("app1:staging").path     # relative to the login directory
    'staging'
"""

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

from hotload.errors import InputError

_SCP_STYLE = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]):(?P<path>.*)$")


@dataclass(frozen=True)
class Target:
    path: str
    host: Optional[str] = None
    user: Optional[str] = None
    port: Optional[int] = None

    @property
    def is_local(self) -> bool:
        return self.host is None

    def __str__(self) -> str:
        if self.is_local:
            return self.path
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        if not self.path.startswith("/"):
            return f"{user}{self.host}:{self.path}"
        return f"sftp://{user}{self.host}{port}{self.path}"


def parse_target(text: str) -> Target:
    if not text or not text.strip():
        raise InputError("empty target: give a directory, sftp://[user@]host[:port]/path or host:path")
    if text.startswith("sftp://"):
        parts = urlsplit(text)
        if not parts.hostname:
            raise InputError(f"target {text!r} has no host: write sftp://[user@]host[:port]/path")
        try:
            port = parts.port
        except ValueError:
            raise InputError(f"target {text!r} has a bad port number") from None
        path = unquote(parts.path)
        if not path or path == "/":
            raise InputError(f"target {text!r} has no staging directory path after the host")
        return Target(path=path, host=parts.hostname, user=unquote(parts.username) if parts.username else None, port=port)
    if "://" in text:
        raise InputError(f"target {text!r}: only sftp:// URLs are supported")
    match = _SCP_STYLE.match(text)
    if match and not text.startswith(("/", ".", "~")):
        path = match.group("path")
        if not path:
            raise InputError(f"target {text!r} has no staging directory path after ':'")
        return Target(path=path, host=match.group("host").strip("[]"), user=match.group("user"))
    return Target(path=text)
