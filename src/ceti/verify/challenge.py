"""What the server issues: per claimed GPU a fresh 64-bit seed and a matrix shape that fills the VRAM, plus a
memory-fill nonce and a deadline.

Shape: A is n×m, B is m×n, C is n×n with m = depth·n. A deeper product does more arithmetic per byte of C the
agent must hash and send, so the timing measures the GPU and less the agent's CPU; the sizes are chosen so
that A, B and C in FP32 take `matrix_fill_fraction` of the claimed VRAM. A CPU node (no GPUs claimed) gets one
lane sized from `cpu_budget_mib`, so tests and small machines stay small.

Everything here is pure: randomness comes from the injected `randbits` (default `secrets.randbits`), time is the
`now_s` the caller passes.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ceti.spec.node import GPUInfo
from ceti.verify.catalog import CPU_MODEL, Catalog
from ceti.verify.prng import MAX_EXACT_INNER_DIM

MIB = 1024 * 1024
ALIGN = 128  # n and m are multiples of 128: whole PRNG words per row and GPU-friendly tiles
PROTOCOL = 1

Pass = Literal["fp32", "fp16"]


@dataclass(frozen=True)
class VerifyPolicy:
    """Knobs of the protocol. Defaults are for real nodes; tests and `ceti verify run` shrink the sizes."""

    rows_per_pass: int = 8  # k rows checked per GPU and pass, picked after the roots arrive
    chunks_checked: int = 4  # memory-fill chunks checked per GPU
    columns_checked: int = 64  # entries recomputed per returned row (all of them when the row is this short)
    depth: int = 16  # m = depth · n on GPUs
    cpu_depth: int = 2
    matrix_fill_fraction: float = 0.85  # share of claimed VRAM that A, B, C (FP32) take
    memory_fill_fraction: float = 0.90  # share of claimed VRAM the memory fill takes
    chunk_bytes: int = 64 * MIB
    max_matrix_bytes: int | None = None  # cap on A+B+C (tests, local runs)
    max_fill_bytes: int | None = None  # cap on the memory fill (tests, local runs)
    # A GPU is `verified` only when the memory fill covered this share of the VRAM it claims: a challenge capped
    # smaller is so quick that any machine, a CPU included, finishes it inside the claimed model's time window.
    min_vram_coverage: float = 0.90
    cpu_budget_mib: int = 256  # A+B+C and the fill on a CPU node
    timing_slack: float = 1.5  # the compute part may take this much longer than expected
    fast_margin: float = 0.9  # faster than 0.9 × the peak-rate time is faster than the claimed card
    # Allowances, set below what a full-VRAM challenge on an H200 (16-core VM) measured: C's rows hashed at
    # 1.9 GB/s, copied off the GPU at 3.4 GB/s (pageable memory), streams generated at 510 GB/s (fused kernels)
    agent_hash_bytes_per_s: float = 1.5e9  # hashing C's rows on the agent's CPU
    device_to_host_bytes_per_s: float = 3e9  # copying C off the GPU
    gpu_generate_bytes_per_s: float = 2e11  # generating A, B (both precisions) and the memory fill on the GPU
    overhead_s: float = 2.0  # network round trip and agent start-up
    cpu_generate_bytes_per_s: float = 2e8  # allowance on a CPU node for generating A, B and the fill
    deadline_factor: float = 20.0  # answers later than this × expected are a timeout, not a mismatch
    vram_tolerance: float = 0.05  # reported VRAM may differ from the table by this share
    max_answer_bytes: int = 64 * MIB
    rows_timeout_s: float = 30.0  # the rows must follow the request within this (they are already computed)
    row_panel_bytes: int = 64 * MIB  # the server streams B in panels of this size while checking rows


class Lane(BaseModel):
    """The work for one GPU (or for the CPU of a CPU node)."""

    model_config = ConfigDict(extra="forbid")

    lane: int = Field(..., ge=0, le=255)
    gpu_index: int | None = Field(None, ge=0, le=255)
    uuid: str = Field("", max_length=128)
    claimed_model: str = Field(..., max_length=128)
    claimed_vram_mib: int = Field(0, ge=0)
    seed: str = Field(..., pattern=r"^[0-9a-f]{16,64}$")  # hex: JSON numbers lose bits above 2**53
    n: int = Field(..., ge=ALIGN)
    m: int = Field(..., ge=ALIGN)
    passes: list[Pass]
    chunk_bytes: int = Field(..., ge=8)
    chunk_count: int = Field(..., ge=1)

    @property
    def seed_int(self) -> int:
        return int(self.seed, 16)


class Challenge(BaseModel):
    """What the server sends: everything the agent needs, nothing it may choose."""

    model_config = ConfigDict(extra="forbid")

    protocol: int = PROTOCOL
    challenge_id: str = Field(..., pattern=r"^[0-9a-f]{32}$")
    node_id: str = Field(..., max_length=128)
    memory_nonce: str = Field(..., pattern=r"^[0-9a-f]{16,64}$")
    lanes: list[Lane]
    deadline_s: float = Field(..., gt=0, description="seconds from issue the roots must arrive within")

    @property
    def memory_nonce_int(self) -> int:
        return int(self.memory_nonce, 16)


@dataclass(frozen=True)
class ClaimedHardware:
    """What a node says it has: its GPUs as discovery reported them, and its cores (for a CPU node)."""

    gpus: tuple[GPUInfo, ...] = ()
    cpus: int = 1
    memory_mib: int = 0


def matrix_shape(budget_bytes: int, depth: int, itemsize: int = 4) -> tuple[int, int]:
    """(n, m) with m = depth·n, both multiples of 128, such that A, B, C take at most `budget_bytes`."""
    n = math.isqrt(max(0, budget_bytes) // (itemsize * (2 * depth + 1)))
    n = max(ALIGN, n // ALIGN * ALIGN)
    m = min(depth * n, MAX_EXACT_INNER_DIM // ALIGN * ALIGN)
    return n, m


def lane_work(n: int, m: int, passes: Sequence[str]) -> dict[str, float]:
    """FLOPs per pass and bytes of C that are hashed and copied off the device."""
    flops = 2.0 * n * n * m
    itemsize = {"fp32": 4, "fp16": 2}
    return {
        "flops_per_pass": flops,
        "c_bytes": float(sum(n * n * itemsize[p] for p in passes)),
    }


def issue_challenge(
    node_id: str,
    claim: ClaimedHardware,
    catalog: Catalog,
    policy: VerifyPolicy,
    expected_s: Callable[[Lane], float],
    randbits: Callable[[int], int] = secrets.randbits,
) -> Challenge:
    """A fresh challenge. `expected_s` gives the expected seconds of a lane (from `identify`), which sets the
    deadline. Claimed models the table does not know still get a lane (sized from the claimed VRAM) so the
    verdict can say so; they can never be verified."""
    lanes: list[Lane] = []
    if claim.gpus:
        for i, gpu in enumerate(sorted(claim.gpus, key=lambda g: g.index)):
            rows = catalog.for_claim(gpu.model)
            vram_bytes = gpu.vram_mib * MIB
            matrix_budget = int(vram_bytes * policy.matrix_fill_fraction)
            fill_budget = int(vram_bytes * policy.memory_fill_fraction)
            if policy.max_matrix_bytes is not None:
                matrix_budget = min(matrix_budget, policy.max_matrix_bytes)
            if policy.max_fill_bytes is not None:
                fill_budget = min(fill_budget, policy.max_fill_bytes)
            n, m = matrix_shape(matrix_budget, policy.depth)
            tensor = any(r.tensor_cores for r in rows)
            lanes.append(
                _lane(i, gpu.index, gpu.uuid, gpu.model, gpu.vram_mib, n, m, tensor, fill_budget, policy, randbits)
            )
    else:
        budget = policy.cpu_budget_mib * MIB
        n, m = matrix_shape(budget, policy.cpu_depth)
        lanes.append(_lane(0, None, "", CPU_MODEL, 0, n, m, False, budget, policy, randbits))
    challenge = Challenge(
        challenge_id=f"{randbits(128):032x}",
        node_id=node_id,
        memory_nonce=f"{randbits(64):016x}",
        lanes=lanes,
        deadline_s=1.0,
    )
    deadline = max(expected_s(lane) for lane in lanes) * policy.deadline_factor + policy.overhead_s
    return challenge.model_copy(update={"deadline_s": deadline})


def _lane(
    lane: int,
    gpu_index: int | None,
    uuid: str,
    model: str,
    vram_mib: int,
    n: int,
    m: int,
    tensor: bool,
    fill_budget: int,
    policy: VerifyPolicy,
    randbits: Callable[[int], int],
) -> Lane:
    chunk_bytes = policy.chunk_bytes
    return Lane(
        lane=lane,
        gpu_index=gpu_index,
        uuid=uuid,
        claimed_model=model,
        claimed_vram_mib=vram_mib,
        seed=f"{randbits(64):016x}",
        n=n,
        m=m,
        passes=["fp32", "fp16"] if tensor else ["fp32"],
        chunk_bytes=chunk_bytes,
        chunk_count=max(1, math.ceil(fill_budget / chunk_bytes)),
    )
