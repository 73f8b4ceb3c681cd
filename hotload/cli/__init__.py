"""The command line: it parses options, reads hotload.toml and prints; the work is done in the other packages."""

from hotload.cli.commands import main

__all__ = ["main"]
