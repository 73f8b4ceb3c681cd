"""The in-image loader's Smalltalk sources, shipped with the Python package.

    >>> [p.name for p in loader_files("gst")]
    ['Hotload-Platform.st', 'Hotload-Reader.st', 'Hotload-Batch.st', 'Hotload-Applier.st', 'Hotload-Loader.st', 'Hotload-GST.st']
    >>> selftest_file().name
    'Hotload-SelfTest.st'

The self-test of the platform facade ships with them (tests/test_selftest.py files it in after the
loader) but is not part of any dialect's loader: install-loader never files it in.
"""

from pathlib import Path
from typing import List

from hotload.errors import HotloadError

#: the dialect-independent loader, in file-in order: the facade, the reader, the batch and protocol, the applier,
#: the loader
CORE = ("Hotload-Platform.st", "Hotload-Reader.st", "Hotload-Batch.st", "Hotload-Applier.st", "Hotload-Loader.st")

DIALECTS = {
    "gst": CORE + ("Hotload-GST.st",),
    "pharo": CORE + ("Hotload-Monticello.st", "Hotload-Pharo.st"),
    "squeak": CORE + ("Hotload-Monticello.st", "Hotload-Squeak.st"),
}

SELFTEST = "Hotload-SelfTest.st"


def sources_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # hotload/
    for candidate in (package / "loader_sources", package.parent / "smalltalk"):
        if (candidate / CORE[0]).is_file():
            return candidate
    raise HotloadError("the loader's Smalltalk sources are missing from this installation; reinstall hotload")


def loader_files(dialect: str) -> List[Path]:
    if dialect not in DIALECTS:
        raise HotloadError(f"unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    folder = sources_dir()
    return [folder / name for name in DIALECTS[dialect]]


def selftest_file() -> Path:
    """HLPlatformSelfTest: file it in after loader_files(dialect) to check a dialect's HLPlatform."""
    return sources_dir() / SELFTEST


def st_string(text: str) -> str:
    """A Smalltalk string literal."""
    return "'" + str(text).replace("'", "''") + "'"
