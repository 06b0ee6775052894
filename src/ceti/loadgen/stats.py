"""Latency statistics: exact percentiles over every sample (a run has at most a few hundred thousand)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default).

    None for no values. `values` need not be sorted."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class Latency:
    """Count, errors and latencies (ms) of one kind of request. Failed requests count as errors, and their
    latency is kept apart so a fast refusal never flatters the percentiles."""

    name: str
    samples_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    # when each request was sent (monotonic seconds; None where the caller did not say), to split a run into
    # the fleet's join and the steady state after it
    sent_at: list[float | None] = field(default_factory=list)
    error_at: list[float | None] = field(default_factory=list)

    def ok(self, ms: float, sent_at: float | None = None) -> None:
        self.samples_ms.append(ms)
        self.sent_at.append(sent_at)

    def error(self, kind: str, sent_at: float | None = None) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        self.error_at.append(sent_at)

    @property
    def count(self) -> int:
        return len(self.samples_ms) + self.errors

    def since(self, start: float) -> Latency:
        """The requests sent at or after `start` (monotonic seconds)."""
        part = Latency(self.name)
        for ms, at in zip(self.samples_ms, self.sent_at):
            if at is not None and at >= start:
                part.ok(ms, at)
        part.errors = sum(1 for at in self.error_at if at is not None and at >= start)
        return part

    def summary(self) -> dict[str, Any]:
        s = self.samples_ms
        ordered = sorted(s)
        return {
            "count": self.count,
            "errors": self.errors,
            "p50_ms": _r(percentile(ordered, 50)),
            "p95_ms": _r(percentile(ordered, 95)),
            "p99_ms": _r(percentile(ordered, 99)),
            "max_ms": _r(ordered[-1] if ordered else None),
            **({"error_kinds": dict(self.error_kinds)} if self.error_kinds else {}),
        }
