"""How far to trust a node: a Beta posterior over "an hour of work placed here finishes".

Pure: plain inputs in, a small JSON-able value out; no I/O and no clock (`now` is a parameter).

The evidence, all inside one rolling window (default seven days):

* exposure: hours the node is known to have been up, the union of its online stretches (from its
  (time, online|lost) transitions) and the runs of attempts that ended for reasons of their own;
* failures: each drop (a transition from online to lost) is one failure: work placed there would have died.
  Attempts the node ended (declared lost with it) are the same failures seen from the work's side, so they
  count only where they show more failure moments (ends grouped by two-minute slots) than there are drops,
  as where a node's state changes were not recorded. An attempt that exits non-zero is the job's doing,
  never the node's;
* the proof of hardware: a `failed` verdict counts as two more failures, a `mismatch` as one (a node that
  misstates its hardware has earned less trust, even at the corrected price).

Each hour of exposure is one success and each failure one failure of a Bernoulli trial "this hour of work
survives", so the posterior is Beta(a0 + exposure_h, b0 + failures). The prior Beta(a0=24, b0=0.5) says a
stranger is expected to fail about once in two days until it shows otherwise, and a day of its own history
weighs as much as that belief. The score is the posterior mean r; a job of d hours finishes with
probability E[r**d] (the failures are taken as a constant-rate process, so hours are independent);
`low` is the 5% quantile of r, a conservative per-hour figure for display and caution.

Moves the right way by construction: more exposure only raises a, more failures only raise b.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

PRIOR_UP_H = 24.0  # a0: pseudo-hours of clean exposure a new node starts with
PRIOR_FAILURES = 0.5  # b0: pseudo-failures a new node starts with
VERDICT_FAILURES = {"failed": 2.0, "mismatch": 1.0}
FAILURE_SLOT_S = 120.0  # node-caused attempt ends in one slot are one failure (a node takes all its work down)
DEFAULT_WINDOW_S = 7 * 86400.0
UPTIME_WINDOWS_S = (("1h", 3600.0), ("24h", 86400.0), ("7d", 7 * 86400.0))
CREDIBLE_MASS = 0.05  # `low` is this quantile of the posterior

ONLINE, LOST = "online", "lost"
CLEAN, NODE = "clean", "node"  # how an attempt ended: by the job's own doing, or by the node


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt that has ended: when it ran and whether the node ended it."""

    started_at: float | None
    ended_at: float
    ended_by: str  # CLEAN | NODE


@dataclass(frozen=True)
class Reliability:
    """A node's score with its uncertainty and the evidence behind it."""

    score: float  # posterior mean probability that an hour of work placed here finishes
    alpha: float
    beta: float
    exposure_h: float
    failures: float  # drops, node-caused ends not at a drop, verdict penalty
    drops: int
    node_ended: int  # attempts the node ended
    completed: int  # attempts that ended by the job's own doing
    verdict: str | None
    window_s: float
    uptime: dict[str, float | None] = field(default_factory=dict)  # fraction of known time online

    @cached_property
    def low(self) -> float:
        """The 5% quantile of the per-hour probability (computed on first use: the scheduler needs only the
        score, and a quantile costs a root search)."""
        return beta_quantile(CREDIBLE_MASS, self.alpha, self.beta)

    @property
    def observations(self) -> float:
        """Hours and failures seen, beyond the prior."""
        return self.exposure_h + self.failures

    def p_finish(self, duration_h: float) -> float:
        """Probability that a job of `duration_h` hours placed here finishes: E[r**d] under the posterior."""
        return beta_moment(self.alpha, self.beta, duration_h)

    def p_finish_low(self, duration_h: float) -> float:
        """A cautious figure for the same: the 5% quantile of r, to the power of the duration."""
        return self.low ** max(duration_h, 0.0)

    def as_json(self) -> dict:
        out = asdict(self)
        out["low"] = self.low
        out["observations"] = self.observations
        return out


def beta_moment(a: float, b: float, d: float) -> float:
    """E[r**d] for r ~ Beta(a, b), d >= 0."""
    if d <= 0:
        return 1.0
    return math.exp(math.lgamma(a + d) - math.lgamma(a) + math.lgamma(a + b) - math.lgamma(a + b + d))


def _cont_frac(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            step = c * d
            f *= step
        if abs(step - 1.0) < 1e-14:
            break
    return f


def beta_cdf(x: float, a: float, b: float) -> float:
    """P(r <= x) for r ~ Beta(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return min(max(front * _cont_frac(a, b, x) / a, 0.0), 1.0)
    return min(max(1.0 - front * _cont_frac(b, a, 1.0 - x) / b, 0.0), 1.0)


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with P(r <= x) = q: Newton steps from the mean, kept inside a shrinking bracket (bisection
    whenever a step would leave it), so it always converges."""
    lo, hi = 0.0, 1.0
    x = a / (a + b)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    for _ in range(100):
        f = beta_cdf(x, a, b) - q
        if f < 0:
            lo = x
        else:
            hi = x
        if hi - lo < 1e-13:
            break
        dens = math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x)) if 0 < x < 1 else 0.0
        nxt = x - f / dens if dens > 0 else -1.0
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - x) < 1e-13 * max(x, 1e-300):
            x = nxt
            break
        x = nxt
    return x


def online_intervals(
    transitions: Iterable[tuple[float, str]], start: float, now: float
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], int]:
    """(online stretches, lost stretches, drops) inside [start, now].

    Transitions may begin before the window: the last one before `start` gives the state at its start.
    Before the first transition the node's state is unknown, which counts as neither.
    """
    ups: list[tuple[float, float]] = []
    downs: list[tuple[float, float]] = []
    drops = 0
    state: str | None = None
    since = start
    for at, to in sorted(transitions):
        at = min(at, now)
        if to not in (ONLINE, LOST):
            continue
        if at >= start and state == ONLINE and to == LOST:
            drops += 1
        if state is not None and at > since:
            (ups if state == ONLINE else downs).append((max(since, start), at))
        state, since = to, max(at, start)
    if state is not None and now > since:
        (ups if state == ONLINE else downs).append((since, now))
    return [iv for iv in ups if iv[1] > iv[0]], [iv for iv in downs if iv[1] > iv[0]], drops


def _union_length(intervals: Iterable[tuple[float, float]]) -> float:
    total = 0.0
    end = -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def uptime(transitions: Sequence[tuple[float, str]], now: float, window_s: float) -> float | None:
    """Fraction of the known time in the last `window_s` the node was online (None: nothing known)."""
    ups, downs, _ = online_intervals(transitions, now - window_s, now)
    up = sum(b - a for a, b in ups)
    known = up + sum(b - a for a, b in downs)
    return up / known if known > 0 else None


def assess(
    transitions: Sequence[tuple[float, str]],
    attempts: Sequence[Attempt],
    verdict: str | None,
    now: float,
    window_s: float = DEFAULT_WINDOW_S,
    prior: tuple[float, float] = (PRIOR_UP_H, PRIOR_FAILURES),
) -> Reliability:
    """Score one node from its transitions (time, "online"|"lost"), ended attempts and proof-of-hardware
    verdict, over the `window_s` before `now`."""
    start = now - window_s
    ups, _, drops = online_intervals(transitions, start, now)
    spans = list(ups)
    completed = node_ended = 0
    slots: set[int] = set()
    for t in attempts:
        if t.ended_at < start or t.ended_at > now:
            continue
        if t.ended_by == NODE:
            node_ended += 1
            slots.add(math.floor(t.ended_at / FAILURE_SLOT_S))
        else:
            completed += 1
            if t.started_at is not None and t.ended_at > t.started_at:
                spans.append((max(t.started_at, start), t.ended_at))
    exposure_h = _union_length(spans) / 3600.0
    # max, not a sum: both sides see the same failures, and either may only raise the count
    failures = max(drops, len(slots)) + VERDICT_FAILURES.get(verdict or "", 0.0)
    a = prior[0] + exposure_h
    b = prior[1] + failures
    score = a / (a + b)
    return Reliability(
        score=score,
        alpha=a,
        beta=b,
        exposure_h=exposure_h,
        failures=failures,
        drops=drops,
        node_ended=node_ended,
        completed=completed,
        verdict=verdict,
        window_s=window_s,
        uptime={name: uptime(transitions, now, w) for name, w in UPTIME_WINDOWS_S if w <= window_s}
        | {"window": uptime(transitions, now, window_s)},
    )
