"""Parsing of human quantities ("4Gi", "90m", "1h") into the integer units the fabric uses."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[KMGT]B?|B)?\s*$", re.IGNORECASE)
_SIZE_MIB = {
    None: 1.0,  # a bare number is already MiB
    "b": 1 / (1024 * 1024),
    "k": 1000 / (1024 * 1024),
    "kb": 1000 / (1024 * 1024),
    "ki": 1 / 1024,
    "m": 1000**2 / 1024**2,
    "mb": 1000**2 / 1024**2,
    "mi": 1.0,
    "g": 1000**3 / 1024**2,
    "gb": 1000**3 / 1024**2,
    "gi": 1024.0,
    "t": 1000**4 / 1024**2,
    "tb": 1000**4 / 1024**2,
    "ti": 1024.0**2,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_S = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size_mib(value: float | str) -> int:
    """A size in MiB. Numbers are MiB; strings may carry a unit (Ki, Mi, Gi, Ti, or decimal K, M, G, T)."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number or a string such as '4Gi'")  # noqa: TRY004 -- for pydantic
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"cannot read size {value!r}: use MiB or a unit such as '512Mi', '4Gi'")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * _SIZE_MIB[unit.lower() if unit else None])


def parse_duration_s(value: float | str) -> int:
    """A duration in seconds. Numbers are seconds; strings may end in s, m, h or d."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number or a string such as '90m'")  # noqa: TRY004 -- pydantic
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"cannot read duration {value!r}: use seconds or a unit such as '90m', '2h'")
    unit = match.group(2)
    return int(float(match.group(1)) * _DURATION_S[unit.lower() if unit else None])
