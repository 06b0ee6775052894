"""Akash quantities: CPU units ("0.5", "100m", 2) and byte sizes ("512Mi", "1.5G", "1Gi").

Akash counts memory and storage in bytes with both decimal (k, M, G, T, P, E) and binary (Ki, Mi, Gi, ...)
suffixes, and CPU in thousandths of a vCPU. The fabric counts MiB and millicores, so everything is parsed to
exact integers here and rounded up only when converted to MiB (a job never gets less than it asked for).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpPeE]i?)?[bB]?\s*$")
_FACTOR = {
    "": 1,
    "k": 1000,
    "ki": 1024,
    "m": 1000**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gi": 1024**3,
    "t": 1000**4,
    "ti": 1024**4,
    "p": 1000**5,
    "pi": 1024**5,
    "e": 1000**6,
    "ei": 1024**6,
}
_CPU = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m?)\s*$")
MIB = 1024 * 1024


def parse_bytes(value: object) -> int:
    """Bytes in a size such as "512Mi", "1.5G", "1Gi" or a bare integer count of bytes."""
    if isinstance(value, bool) or value is None:
        raise ValueError("expected a size such as '512Mi' or '1Gi'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("a size must be a finite, non-negative number")
        return math.ceil(value)
    if not isinstance(value, str):
        raise ValueError("expected a size such as '512Mi' or '1Gi'")  # noqa: TRY004 - pydantic reports ValueError
    match = _BYTES.match(value)
    if not match:
        raise ValueError(f"cannot read size {value!r}: use a number with k, Ki, M, Mi, G, Gi, T, Ti, ...")
    number = Decimal(match.group(1))
    unit = (match.group(2) or "").lower()
    return math.ceil(number * _FACTOR[unit])


def parse_cpu_milli(value: object) -> int:
    """Thousandths of a vCPU: 1 -> 1000, 0.5 -> 500, "100m" -> 100. Must be above zero."""
    if isinstance(value, bool) or value is None:
        raise ValueError("expected CPU units such as 1, 0.5 or '100m'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("CPU units must be finite")
        milli = Decimal(str(value)) * 1000
    elif isinstance(value, str):
        match = _CPU.match(value)
        if not match:
            raise ValueError(f"cannot read CPU units {value!r}: use a number such as 0.5 or millicores such as '500m'")
        try:
            number = Decimal(match.group(1))
        except InvalidOperation:  # pragma: no cover - the pattern only lets digits through
            raise ValueError(f"cannot read CPU units {value!r}") from None
        milli = number if match.group(2) else number * 1000
    else:
        raise ValueError("expected CPU units such as 1, 0.5 or '100m'")  # noqa: TRY004 - pydantic reports ValueError
    if milli <= 0:
        raise ValueError("CPU units must be above zero")
    if milli != milli.to_integral_value():
        raise ValueError(f"CPU units {value!r} are finer than one millicore")
    return int(milli)


def bytes_to_mib(size: int) -> int:
    """Whole MiB, rounded up."""
    return -(-size // MIB)
