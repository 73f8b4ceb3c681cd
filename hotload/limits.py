"""Resource limits shared with the loader (docs/protocol.md, "Limits").

    >>> limits().max_member_bytes
    67108864

The client's limits can be raised with environment variables (in MiB):
HOTLOAD_MAX_MCZ_MB and HOTLOAD_MAX_MEMBER_MB.
"""

import os
from dataclasses import dataclass

from hotload.errors import InputError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_manifest_bytes: int = 1 * MIB
    max_packages: int = 1000
    max_mcz_bytes: int = 64 * MIB
    max_member_bytes: int = 64 * MIB
    max_batch_bytes: int = 512 * MIB
    max_trigger_bytes: int = 4096


_VARIABLES = {"max_mcz_bytes": "HOTLOAD_MAX_MCZ_MB", "max_member_bytes": "HOTLOAD_MAX_MEMBER_MB"}


def limits() -> Limits:
    """The defaults, with the environment's overrides."""
    values = {}
    for field_name, variable in _VARIABLES.items():
        text = os.environ.get(variable)
        if text is None:
            continue
        if not text.isdigit() or int(text) == 0:
            raise InputError(f"{variable}={text!r} is not a whole number of MiB; set it to e.g. 128")
        values[field_name] = int(text) * MIB
    return Limits(**values)


def how_to_raise(field_name: str) -> str:
    variable = _VARIABLES.get(field_name)
    return f"set {variable} (MiB) to raise it" if variable else "this limit is part of the protocol"
