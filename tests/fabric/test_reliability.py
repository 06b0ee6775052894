"""The reliability score (pure) and how the fabric uses it: long jobs avoid flaky nodes, short ones may not."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ceti.fabric import Demand, Job, Node, Snapshot, schedule
from ceti.fabric.classes import horizon_of
from ceti.fabric.reliability import (
    CLEAN,
    NODE,
    PRIOR_FAILURES,
    PRIOR_UP_H,
    Attempt,
    assess,
    beta_cdf,
    beta_moment,
    beta_quantile,
)

H = 3600.0
NOW = 30 * 86400.0


def flapping(period_s: float, down_s: float, hours: float, now: float = NOW) -> list[tuple[float, str]]:
    """Online, with a drop of `down_s` every `period_s`, for the last `hours`."""
    t = now - hours * H
    out = [(t, "online")]
    while True:
        t += period_s - down_s
        if t >= now:
            return out
        out.append((t, "lost"))
        t += down_s
        if t >= now:
            return out
        out.append((t, "online"))


# ------------------------------------------------------------------ the model


def test_a_node_with_no_history_has_the_prior() -> None:
    r = assess([], [], None, NOW)
    assert r.score == pytest.approx(PRIOR_UP_H / (PRIOR_UP_H + PRIOR_FAILURES))
    assert r.exposure_h == 0 and r.failures == 0 and r.observations == 0
    assert 0 < r.low < r.score


def test_a_flapping_node_scores_below_a_steady_one() -> None:
    steady = assess([(NOW - 48 * H, "online")], [], "verified", NOW)
    flaky = assess(flapping(300, 60, 48), [], "verified", NOW)
    assert flaky.drops > 500 and steady.drops == 0
    assert flaky.score < 0.2 and steady.score > 0.99
    assert flaky.low < flaky.score and steady.low < steady.score
    assert steady.uptime["24h"] == 1.0 and flaky.uptime["24h"] == pytest.approx(0.8, abs=0.01)
    # a long job on the flaky node almost surely dies; a short one usually finishes
    assert flaky.p_finish(24) < 1e-6 and flaky.p_finish(1 / 60) > 0.9
    assert steady.p_finish(24) > 0.7


def test_p_finish_falls_with_length_and_one_hour_is_the_score() -> None:
    r = assess(flapping(7200, 300, 72), [], None, NOW)
    assert r.p_finish(0) == 1.0
    assert r.p_finish(1) == pytest.approx(r.score)
    values = [r.p_finish(d) for d in (0.1, 1, 4, 24, 168)]
    assert values == sorted(values, reverse=True)
    assert all(r.p_finish_low(d) <= r.p_finish(d) for d in (1, 4, 24))


def test_only_the_node_is_blamed_and_a_drop_is_counted_once() -> None:
    ups = [(NOW - 10 * H, "online"), (NOW - 5 * H, "lost"), (NOW - 5 * H + 600, "online")]
    at_drop = Attempt(NOW - 6 * H, NOW - 5 * H + 30, NODE)  # declared lost with its node
    alone = Attempt(NOW - 3 * H, NOW - 2 * H, NODE)  # the node ended it without a drop
    own_failure = Attempt(NOW - 9 * H, NOW - 8 * H, CLEAN)  # exited non-zero: the job's doing
    r = assess(ups, [at_drop, alone, own_failure], None, NOW)
    assert r.drops == 1 and r.node_ended == 2 and r.completed == 1
    assert r.failures == 2


def test_a_longer_outage_scores_lower() -> None:
    def outage(minutes: float) -> float:
        return assess([(NOW - 24 * H, "online"), (NOW - 12 * H, "lost"), (NOW - 12 * H + minutes * 60, "online")],
                      [], None, NOW).score

    assert outage(5) > outage(60) > outage(600)


def test_a_bad_verdict_lowers_trust() -> None:
    ups = [(NOW - 24 * H, "online")]
    good, mismatch, failed = (assess(ups, [], v, NOW).score for v in ("verified", "mismatch", "failed"))
    assert failed < mismatch < good
    assert assess(ups, [], None, NOW).score == good


def test_completed_work_counts_as_up_time_where_heartbeats_say_nothing() -> None:
    runs = [Attempt(NOW - (k + 1) * H, NOW - k * H, CLEAN) for k in range(10)]
    r = assess([], runs, None, NOW)
    assert r.exposure_h == pytest.approx(10) and r.completed == 10
    assert r.score > assess([], [], None, NOW).score


def test_the_window_forgets_old_trouble() -> None:
    old_trouble = flapping(300, 60, 24, now=NOW - 10 * 86400) + [(NOW - 10 * 86400, "online")]
    r = assess(old_trouble, [], None, NOW, window_s=7 * 86400)
    assert r.drops == 0 and r.exposure_h == pytest.approx(7 * 24)


def test_it_is_json() -> None:
    r = assess(flapping(600, 60, 12), [Attempt(NOW - H, NOW - 60, CLEAN)], "mismatch", NOW)
    doc = json.loads(json.dumps(r.as_json()))
    assert doc["score"] == r.score and doc["low"] == r.low and doc["verdict"] == "mismatch"
    assert set(doc["uptime"]) >= {"1h", "24h", "window"}


@pytest.mark.parametrize("a,b", [(1, 1), (2, 1), (1, 2), (24, 0.5), (200, 3), (0.7, 40)])
def test_beta_helpers_against_closed_forms_and_integration(a: float, b: float) -> None:
    for q in (0.01, 0.05, 0.5, 0.95):
        x = beta_quantile(q, a, b)
        assert beta_cdf(x, a, b) == pytest.approx(q, abs=1e-9)
    if (a, b) == (2, 1):
        assert beta_quantile(0.05, a, b) == pytest.approx(math.sqrt(0.05))
    # E[r**d] by a midpoint rule on the density
    n = 200_000
    norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    xs = [(i + 0.5) / n for i in range(n)]
    dens = [math.exp(norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x)) for x in xs]
    for d in (1, 3.5):
        numeric = sum(p * x**d for p, x in zip(dens, xs, strict=True)) / n
        assert beta_moment(a, b, d) == pytest.approx(numeric, rel=2e-2, abs=1e-4)


# ------------------------------------------------------------------ properties

times = st.floats(min_value=0, max_value=14 * 86400, allow_nan=False)
histories = st.lists(st.tuples(times, st.sampled_from(["online", "lost"])), max_size=30)
attempt_lists = st.lists(
    st.builds(
        lambda s, length, by: Attempt(NOW - s, min(NOW - s + length, NOW), by),
        times,
        st.floats(min_value=0, max_value=86400),
        st.sampled_from([CLEAN, NODE]),
    ),
    max_size=20,
)
verdicts = st.sampled_from([None, "verified", "mismatch", "failed"])
windows = st.sampled_from([3600.0, 86400.0, 7 * 86400.0])


def _hist(h: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(NOW - t, s) for t, s in h]


@settings(max_examples=150, deadline=None)
@given(histories, attempt_lists, verdicts, windows)
def test_score_is_a_probability(h, attempts, verdict, window) -> None:
    r = assess(_hist(h), attempts, verdict, NOW, window)
    assert 0.0 <= r.low <= r.score <= 1.0
    assert 0.0 <= r.p_finish(5) <= r.p_finish(1) <= 1.0
    json.dumps(r.as_json())


@settings(max_examples=150, deadline=None)
@given(histories, attempt_lists, verdicts, windows, times, st.floats(min_value=0, max_value=86400))
def test_more_node_caused_ends_never_raise_it(h, attempts, verdict, window, ago, length) -> None:
    before = assess(_hist(h), attempts, verdict, NOW, window)
    extra = Attempt(NOW - ago, min(NOW - ago + length, NOW), NODE)
    after = assess(_hist(h), [*attempts, extra], verdict, NOW, window)
    assert after.score <= before.score
    assert after.p_finish(8) <= before.p_finish(8)


@settings(max_examples=150, deadline=None)
@given(histories, attempt_lists, verdicts, windows, times, st.floats(min_value=1, max_value=86400))
def test_more_lost_time_never_raises_it(h, attempts, verdict, window, ago, down_s) -> None:
    """An outage cut into the history: the node goes down at `ago` and resumes `down_s` later whatever state
    it had (unknown: it stays down until its next recorded change)."""
    hist = _hist(h)
    drop_at = NOW - ago
    assume(not any(drop_at <= t <= drop_at + down_s for t, _ in hist))
    before = assess(hist, attempts, verdict, NOW, window)
    earlier = [s for t, s in sorted(hist) if t < drop_at]
    cut = [*hist, (drop_at, "lost")]
    if earlier:
        cut.append((drop_at + down_s, earlier[-1]))
    after = assess(cut, attempts, verdict, NOW, window)
    assert after.score <= before.score + 1e-12


@settings(max_examples=150, deadline=None)
@given(histories, attempt_lists, verdicts, windows, times, st.floats(min_value=0, max_value=86400))
def test_more_clean_completions_never_lower_it(h, attempts, verdict, window, ago, length) -> None:
    before = assess(_hist(h), attempts, verdict, NOW, window)
    extra = Attempt(NOW - ago, min(NOW - ago + length, NOW), CLEAN)
    after = assess(_hist(h), [*attempts, extra], verdict, NOW, window)
    # equal up to rounding where the extra attempt changes nothing (p_finish goes through exp and log)
    assert after.score >= before.score - 1e-12
    assert after.p_finish(8) >= before.p_finish(8) - 1e-12


# ------------------------------------------------------------------ the fabric uses it


def gpu_node(name: str, reliability: float, price: float) -> Node:
    from ceti.fabric.model import GPU

    return Node(name, 8000, 32768, gpus=(GPU(0, "A100", 40960),), price_per_gpu_hour=price, reliability=reliability)


def gpu_job(name: str, order: int, hours: float | None) -> Job:
    return Job(name, Demand(1000, 1024, gpu_count=1), order, expected_duration_h=hours)


def placed(nodes, jobs) -> dict[str, str]:
    return {s.job_id: s.node_id for s in schedule(Snapshot(nodes=tuple(nodes), pending=tuple(jobs))).starts}


STEADY = gpu_node("steady", 0.998, price=2.0)
FLAKY = gpu_node("flaky", 0.9, price=1.0)  # cheaper, fails about once in ten hours


def test_a_long_job_goes_to_the_steady_node_a_short_one_to_the_cheap_flaky_one() -> None:
    assert placed([STEADY, FLAKY], [gpu_job("long", 1, 48)]) == {"long": "steady"}
    assert placed([STEADY, FLAKY], [gpu_job("short", 1, 0.1)]) == {"short": "flaky"}
    # both at once: each where it is worth most, whatever the queue order
    for order in ((1, 2), (2, 1)):
        jobs = [gpu_job("long", order[0], 48), gpu_job("short", order[1], 0.1)]
        assert placed([STEADY, FLAKY], jobs) == {"long": "steady", "short": "flaky"}


def test_nodes_that_differ_only_in_reliability_split_by_duration() -> None:
    steady = gpu_node("a-steady", 0.999, price=1.0)
    flaky = gpu_node("b-flaky", 0.8, price=1.0)
    assert placed([flaky, steady], [gpu_job("long", 1, 24)]) == {"long": "a-steady"}
    many = [gpu_node(f"f{i}", 0.8, 1.0) for i in range(4)] + [gpu_node(f"s{i}", 0.999, 1.0) for i in range(2)]
    jobs = [gpu_job(f"short{i}", i, 0.05) for i in range(4)] + [gpu_job(f"long{i}", 10 + i, 24) for i in range(2)]
    got = placed(many, jobs)
    assert {got["long0"], got["long1"]} == {"s0", "s1"}
    assert len(got) == 6


def test_a_job_without_a_duration_weighs_as_one_hour() -> None:
    assert horizon_of(None) == 1.0 and horizon_of(0) == 1.0
    assert horizon_of(1.2) == 1.0 and horizon_of(24) == 32.0 and horizon_of(0.1) == 0.125
    assert horizon_of(1e9) == 4096.0 and horizon_of(1e-9) == 1 / 64
    # the old behaviour is kept: a reliable node is preferred at equal asks
    assert placed([gpu_node("x-flaky", 0.8, 1.0), gpu_node("y-solid", 0.99, 1.0)], [gpu_job("j", 1, None)]) == {
        "j": "y-solid"
    }
