"""No policy over-commits CPU, memory or a GPU, and every GPU task lands on a model its gpu_spec allows."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceti.fabric.placement import ClusterState, PodRequest, TargetWorkload, TaskClass, make_policy
from ceti.fabric.placement.registry import policy_names

MODELS = ["T4", "P100", "V100M32"]

node_st = st.tuples(
    st.integers(1_000, 64_000),  # cpu
    st.integers(1_000, 64_000),  # memory
    st.integers(0, 8),  # gpus
    st.sampled_from(MODELS),
)
pod_st = st.tuples(
    st.integers(0, 20_000),
    st.integers(0, 20_000),
    st.sampled_from(
        [(0, 0), (1, 1000), (2, 1000), (4, 1000), (8, 1000), (1, 100), (1, 250), (1, 500), (1, 810)]
    ),
    st.sets(st.sampled_from(MODELS), max_size=2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.lists(node_st, min_size=1, max_size=5), pods=st.lists(pod_st, min_size=1, max_size=25))
def test_no_policy_over_commits_or_ignores_gpu_spec(nodes, pods) -> None:
    workload = TargetWorkload(
        (TaskClass(2_000, 1000, 1), TaskClass(1_000, 500, 1, "T4"), TaskClass(4_000, 0, 0)), (0.5, 0.3, 0.2)
    )
    for name in policy_names():
        state = ClusterState.build(
            names=[f"n{i}" for i in range(len(nodes))],
            cpu_milli=[n[0] for n in nodes],
            memory_mib=[n[1] for n in nodes],
            gpu_models=[n[3] for n in nodes],
            gpu_free_milli=[[1000] * n[2] for n in nodes],
        )
        policy = make_policy(name, workload)
        rng = np.random.default_rng(0)
        for cpu, mem, (count, milli), spec in pods:
            mask = state.model_mask(spec) if count and spec else None
            pod = PodRequest(cpu, mem, count, milli, mask)
            feasible_before = state.feasible(pod).any()
            choice = policy.place(state, pod, rng)
            assert (choice is not None) == feasible_before, name
            if choice is None:
                continue
            node, gpus = choice
            assert len(set(gpus)) == len(gpus) == count
            assert state.cpu_free[node] >= cpu and state.memory_free[node] >= mem
            for g in gpus:
                assert 0 <= g < state.gpu_count[node] and state.gpu_free[node, g] >= milli
            if count and spec:
                assert state.models[state.model_idx[node]] in spec
            state.allocate(node, pod, gpus)
            assert (state.cpu_free >= 0).all() and (state.memory_free >= 0).all()
            assert ((state.gpu_free >= 0) & (state.gpu_free <= 1000)).all()
