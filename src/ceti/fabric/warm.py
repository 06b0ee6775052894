"""Compile the round's kernels ahead of the first round (`python -m ceti.fabric.warm`, run by `make install`).

The compiled loops (`kernels`) are built on first use and cached on disk beside the package; building them
takes several seconds, which would otherwise fall on the first scheduling round of a fresh install; loading
them from that cache still takes a quarter of a second, which the server's scheduler pays when it starts
(`SchedulerLoop.warm`) rather than in its first round, and `ceti bench fabric` before its timed rounds. One small
round that goes through every kernel (flow packing of single tasks and gangs, the spill of both, kinds pinned
to nodes, bids, GPU shares, model and VRAM constraints, pre-emption) builds them all.
"""

from __future__ import annotations

import time

from ceti.fabric.model import GPU, Allocation, Demand, Job, Node, Snapshot
from ceti.fabric.schedule import schedule


def warm_snapshot() -> Snapshot:
    """A few nodes and jobs that reach every compiled path of a round."""
    nodes = tuple(
        Node(
            f"warm-{i}",
            32_000,
            131_072,
            tuple(
                GPU(g, "T4" if i % 2 else "A10", 16_384 if i % 2 else 24_576)
                for g in range(4 if i < 6 else 0)
            ),
            region="r1" if i < 4 else "r2",
            price_per_gpu_hour=0.5 + 0.1 * i,
            price_per_cpu_hour=0.01,
            reliability=0.999,
        )
        for i in range(8)
    )
    running = (
        Allocation("a0", "j-run", "warm-0", 8_000, 16_384, (0, 1), 0, priority=10, interruptible=True),
        Allocation("a1", "j-run2", "warm-1", 4_000, 8_192, (0,), 500, priority=10, interruptible=True),
    )
    whole = Demand(4_000, 16_384, 1)
    jobs = [
        Job("w-whole", whole, 0),
        Job("w-share", Demand(2_000, 4_096, 1, 300), 1),
        Job("w-cpu", Demand(8_000, 8_192), 2),
        Job("w-gang", Demand(4_000, 8_192, 1), 3, gang_size=2),
        Job("w-bid", whole, 4, bid_per_hour=2.0),
        Job("w-model", Demand(4_000, 8_192, 1, gpu_models=frozenset({"T4"}), min_vram_mib=8_192), 5),
        Job("w-pinned", Demand(2_000, 4_096, 1, node_ids=frozenset({"warm-2"})), 6),
        Job("w-pinned-gang", Demand(1_000, 1_024), 7, gang_size=2, priority=50),
        Job("w-long", whole, 8, expected_duration_h=12.0, speed_by_model={"A10": 1.5}),
    ]
    # more work than room, so the flow leaves some to the spill and to pre-emption
    jobs += [Job(f"w-fill-{i}", Demand(12_000, 32_768, 2), 9 + i, priority=90) for i in range(8)]
    jobs += [Job(f"w-gang-fill-{i}", Demand(6_000, 16_384, 1), 30 + i, gang_size=3) for i in range(4)]
    pinned = Job(
        "w-pinned-gang2", Demand(1_000, 1_024, node_ids=frozenset({"warm-6", "warm-7"})), 40, gang_size=2
    )
    return Snapshot(nodes, running, (*jobs, pinned))


def warm_up() -> float:
    """Run the warm round through the class flow; returns the seconds it took (compiling, or loading the cache)."""
    start = time.perf_counter()
    schedule(warm_snapshot(), "flow")
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"scheduler kernels ready in {warm_up():.1f} s")
