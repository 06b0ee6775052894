"""The warm-up round that builds the compiled loops at install time reaches the paths a real round takes."""

from __future__ import annotations

from ceti.fabric import schedule
from ceti.fabric.warm import warm_snapshot, warm_up


def test_the_warm_round_starts_every_kind_of_task_and_preempts() -> None:
    d = schedule(warm_snapshot(), "flow")
    started = {s.job_id for s in d.starts}
    # single whole GPUs, a share, CPU only, a gang, a bid, a model and VRAM constraint, jobs pinned to nodes
    assert {"w-whole", "w-share", "w-cpu", "w-gang", "w-bid", "w-model", "w-pinned-gang2"} <= started
    assert any(s.gpu_share_milli for s in d.starts) and any(s.task_index == 1 for s in d.starts)
    assert d.preemptions and d.waiting  # more work than room: the spill and pre-emption ran too
    assert warm_up() >= 0.0
