"""The project file `hotload.toml`: named environments, each a list of targets with its settings.

    >>> config = ProjectConfig.find()                    # hotload.toml here or in a parent folder, or None
    >>> prod = config.environment("prod")
    >>> prod.targets, prod.value("canary"), prod.origin("canary")
    (['deploy@app1:/srv/app/staging', ...], 1, 'hotload.toml:12')

A file:

    [defaults]                 # optional; every environment inherits these
    poll_timeout = 120

    [env.prod]
    targets = ["deploy@app1:/srv/app/staging", "deploy@app2:/srv/app/staging"]
    canary = 1
    parallel = 2

    [env.prod.health]          # optional: checked after the install, before the save
    url = "http://127.0.0.1:8080/app/ping"
    status = 200
    body = "pong"

An unknown key or a bad value is a ConfigError (exit 2) naming the file, the line and the key.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the same parser, as a package
    import tomli as tomllib

from hotload.errors import InputError
from hotload.staging.targets import parse_target

FILE_NAME = "hotload.toml"


class ConfigError(InputError):
    """A project file that cannot be used: the message starts with `<file>:<line>:`."""


def _whole(low: int, high: int) -> Callable[[Any], Optional[str]]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high}"
        return None
    return check


def _seconds(value) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
        return "must be a number of seconds above 0 and at most 86400"
    return None


def _health_seconds(value) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.001 <= value <= 600:
        return "must be a number of seconds from 0.001 to 600"
    return None


def _text(value) -> Optional[str]:
    return None if isinstance(value, str) else "must be a string"


def _url(value) -> Optional[str]:
    """The loader GETs it from inside the image, over plain HTTP (protocol.HealthCheck has the exact rule)."""
    from hotload.staging.protocol import HealthCheck

    if not isinstance(value, str):
        return "must be an http://host[:port]/path URL, as seen from the server"
    try:
        HealthCheck(value).check()
    except InputError:
        return "must be an http://host[:port]/path URL, as seen from the server (the loader speaks plain HTTP)"
    return None


def _targets(value) -> Optional[str]:
    if not isinstance(value, list) or not value or not all(isinstance(each, str) and each.strip() for each in value):
        return "must be a non-empty list of targets (strings such as \"deploy@app1:/srv/app/staging\")"
    if len(set(value)) != len(value):
        return "names a target twice"
    for each in value:
        try:
            parse_target(each)
        except InputError as error:
            return str(error)
    return None


#: setting -> (default, check). `health.*` settings exist only when a [health] table is given.
SETTINGS: Dict[str, Tuple[Any, Callable[[Any], Optional[str]]]] = {
    "targets": (None, _targets),
    "poll_timeout": (120, _seconds),
    "canary": (1, _whole(1, 1000)),
    "parallel": (1, _whole(1, 64)),
}
HEALTH_SETTINGS: Dict[str, Tuple[Any, Callable[[Any], Optional[str]]]] = {
    "url": (None, _url),
    "status": (200, _whole(100, 599)),
    "body": ("", _text),
    "timeout": (10, _health_seconds),
}


@dataclass(frozen=True)
class Setting:
    value: Any
    origin: str  # "hotload.toml:12", "hotload.toml:3 (defaults)" or "default"


@dataclass
class Environment:
    name: str
    settings: Dict[str, Setting] = field(default_factory=dict)

    @property
    def targets(self) -> List[str]:
        return list(self.settings["targets"].value)

    def value(self, key: str):
        setting = self.settings.get(key)
        return setting.value if setting else None

    def origin(self, key: str) -> Optional[str]:
        setting = self.settings.get(key)
        return setting.origin if setting else None

    @property
    def health(self) -> Optional[Dict[str, Any]]:
        if "health.url" not in self.settings:
            return None
        return {key: self.value(f"health.{key}") for key in HEALTH_SETTINGS}

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "settings": {key: {"value": s.value, "from": s.origin} for key, s in sorted(self.settings.items())},
        }


@dataclass
class ProjectConfig:
    path: Path
    environments: Dict[str, Environment]

    @classmethod
    def find(cls, start: Optional[Path] = None) -> Optional["ProjectConfig"]:
        """The hotload.toml of `start` (default: the working directory) or of its nearest parent, or None."""
        folder = Path(start or Path.cwd()).resolve()
        for candidate in (folder, *folder.parents):
            path = candidate / FILE_NAME
            if path.is_file():
                return cls.load(path)
        return None

    @classmethod
    def load(cls, path: Path) -> "ProjectConfig":
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror}); check the file's permissions") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}:1: not UTF-8 text; save it as UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            line = re.search(r"line (\d+)", str(error))
            where = f"{path}:{line.group(1)}" if line else str(path)
            message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(error))
            raise ConfigError(f"{where}: not valid TOML ({message}); fix the syntax") from None
        return _Reader(path, text).read(data)

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(f"{self.path}: no environment {name!r} (environments: {known}); add [env.{name}]")
        return self.environments[name]

    def to_json(self) -> dict:
        return {"file": str(self.path), "environments": [self.environments[n].to_json() for n in sorted(self.environments)]}


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


class _Reader:
    """Checks the parsed TOML against SETTINGS; finds each key's line for the messages."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = self._key_lines(text)

    @staticmethod
    def _key_lines(text: str) -> Dict[Tuple[str, ...], int]:
        lines: Dict[Tuple[str, ...], int] = {}
        table: Tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = tuple(part.strip().strip('"\'') for part in header.group(1).split("."))
                for end in range(1, len(table) + 1):
                    lines.setdefault(table[:end], number)
                continue
            key = _KEY.match(line)
            if key:
                lines.setdefault(table + tuple(part.strip() for part in key.group(1).split(".")), number)
        return lines

    def where(self, *keys: str) -> str:
        for end in range(len(keys), 0, -1):
            if keys[:end] in self.lines:
                return f"{self.path.name}:{self.lines[keys[:end]]}"
        return self.path.name

    def fail(self, keys: Tuple[str, ...], problem: str):
        raise ConfigError(f"{self.path.parent / self.where(*keys)}: {'.'.join(keys)}: {problem}")

    def read(self, data: dict) -> ProjectConfig:
        for key in data:
            if key not in ("defaults", "env"):
                self.fail((key,), "unknown key (known: defaults, env)")
        defaults = self._table(data.get("defaults", {}), ("defaults",))
        envs = self._table(data.get("env", {}), ("env",))
        if not envs:
            self.fail(("env",), "no environment: add one, e.g. [env.prod] with targets = [...]")
        environments = {name: self._environment(name, self._table(body, ("env", name)), defaults) for name, body in envs.items()}
        return ProjectConfig(self.path, environments)

    def _table(self, value, keys) -> dict:
        if not isinstance(value, dict):
            self.fail(keys, "must be a table")
        return value

    def _environment(self, name: str, body: dict, defaults: dict) -> Environment:
        environment = Environment(name)
        for key, (default, _) in SETTINGS.items():
            if key in body:
                environment.settings[key] = Setting(body[key], self.where("env", name, key))
            elif key in defaults:
                environment.settings[key] = Setting(defaults[key], f"{self.where('defaults', key)} (defaults)")
            elif default is not None:
                environment.settings[key] = Setting(default, "default")
        self._check(body, ("env", name), SETTINGS, extra=("health",))
        self._check(defaults, ("defaults",), SETTINGS, extra=("health",))
        if "targets" not in environment.settings:
            self.fail(("env", name), "has no targets: add targets = [\"user@host:/path/to/staging\"]")
        self._check_values(environment, ("env", name))
        health = body.get("health", defaults.get("health"))
        if health is not None:
            origin_keys = ("env", name, "health") if "health" in body else ("defaults", "health")
            health = self._table(health, origin_keys)
            self._check(health, origin_keys, HEALTH_SETTINGS)
            if "url" not in health:
                self.fail(origin_keys, "has no url: add url = \"http://127.0.0.1:8080/ping\"")
            for key, (default, check) in HEALTH_SETTINGS.items():
                value = health.get(key, default)
                problem = check(value)
                if problem:
                    self.fail(origin_keys + (key,), f"{problem}, not {value!r}")
                where = self.where(*origin_keys, key) if key in health else "default"
                environment.settings[f"health.{key}"] = Setting(value, where)
        canary = environment.value("canary")
        if canary > len(environment.targets):
            keys = ("env", name, "canary") if "canary" in body else ("defaults", "canary")
            self.fail(keys, f"is {canary}, more than the {len(environment.targets)} target(s) of env.{name}")
        return environment

    def _check(self, table: dict, keys, known: dict, extra=()):
        for key in table:
            if key not in known and key not in extra:
                self.fail(keys + (key,), f"unknown key (known: {', '.join(sorted([*known, *extra]))})")

    def _check_values(self, environment: Environment, keys):
        for key, setting in environment.settings.items():
            problem = SETTINGS[key][1](setting.value)
            if problem:
                origin = keys + (key,) if not setting.origin.endswith("(defaults)") else ("defaults", key)
                self.fail(origin, f"{problem}, not {setting.value!r}")
