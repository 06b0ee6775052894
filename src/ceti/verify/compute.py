"""The agent's side of the challenge: generate A and B from the seeds, compute C = A·B, commit to C's rows.

Two backends give the same results: NumPy (CPU nodes, tests, the server's own checks) and CuPy on NVIDIA GPUs
(the `gpu` extra), imported lazily and chosen automatically when a GPU is present. FP32 results are exact on
both (see `prng`); the FP16 pass multiplies FP16 operands on the GPU's tensor cores, while NumPy, which has no
FP16 GEMM, rounds its exact FP32 product to FP16: the value an FP32-accumulating tensor core produces.

The agent keeps C on the host and the memory fill on the device until the server has asked for rows and
chunks: those are picked only after the roots arrive, so nothing can be computed lazily for them in time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ceti.verify import gpu_streams
from ceti.verify.challenge import Challenge, Lane
from ceti.verify.merkle import MerkleTree, leaf_digest_parts
from ceti.verify.prng import STREAM_A, STREAM_B, STREAM_FILL, fill_chunk, matrix_panel, stream_key

PASS_TAG = {"fp32": b"f32", "fp16": b"f16"}
PASS_DTYPE = {"fp32": np.float32, "fp16": np.float16}
_PANEL_VALUES = 1 << 22  # values generated per panel: bounds the uint64 temporaries (32 MiB)


class ChallengeTooLarge(RuntimeError):
    """The machine cannot hold what the challenge asks for (an honest answer: the server records `failed`)."""


@dataclass
class LaneResult:
    lane: Lane
    c_rows: dict[str, np.ndarray]  # pass -> C on the host
    trees: dict[str, MerkleTree]
    fill: list[Any] = field(default_factory=list)  # chunks, resident on the device
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, for the provider's eyes


@dataclass
class AgentRun:
    """What the agent keeps between answering roots and answering rows."""

    challenge: Challenge
    backend: str
    lanes: list[LaneResult] = field(default_factory=list)
    error: str | None = None


def select_backend(preference: str = "auto") -> str:
    """"cupy" when asked for or, on "auto", when CuPy imports and sees a GPU; otherwise "numpy"."""
    if preference == "numpy":
        return "numpy"
    try:
        os.environ.setdefault("CUPY_TF32", "1")  # FP32 GEMM on TF32 tensor cores: exact for our entries
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy"
    except Exception:
        if preference == "cupy":
            raise
    return "numpy"


def _xp(backend: str) -> Any:
    if backend == "cupy":
        import cupy  # type: ignore[import-not-found]

        return cupy
    return np


def generate_matrix(key: int, rows: int, cols: int, xp: Any = np, dtype: Any = np.float32) -> Any:
    """A whole row-major matrix of the stream: one fused kernel on a GPU, else panel by panel to bound
    temporary memory."""
    if xp is not np:
        fused = gpu_streams.matrix(xp, key, rows, cols, dtype)
        if fused is not None:
            return fused
    out = xp.empty((rows, cols), dtype=dtype)
    step = max(1, _PANEL_VALUES // cols)
    for r0 in range(0, rows, step):
        count = min(step, rows - r0)
        out[r0 : r0 + count] = matrix_panel(key, cols, r0, count, xp, dtype)
    return out


def _fill_chunk(key: int, chunk_index: int, chunk_bytes: int, xp: Any) -> Any:
    if xp is not np:
        fused = gpu_streams.fill_words(xp, key, chunk_index, chunk_bytes)
        if fused is not None:
            return fused
    return fill_chunk(key, chunk_index, chunk_bytes, xp)


def row_leaves(c: np.ndarray, pass_name: str, threads: int | None = None) -> list[bytes]:
    """Leaf digests of every row of C (hashlib releases the GIL, so threads hash in parallel)."""
    tag = PASS_TAG[pass_name]
    rows = np.ascontiguousarray(c.astype(c.dtype.newbyteorder("<"), copy=False))
    workers = threads or min(32, os.cpu_count() or 1)
    # the row is hashed in place (no copy of its bytes), so the threads spend their time in SHA-256 without the GIL
    if workers == 1 or len(rows) < 256:
        return [leaf_digest_parts(i, tag, rows[i].data) for i in range(len(rows))]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: leaf_digest_parts(i, tag, rows[i].data), range(len(rows))))


def lane_bytes(lane: Lane) -> int:
    """Peak bytes a lane holds: A, B, C in FP32 plus the memory fill (C leaves the device before the fill)."""
    return 4 * (2 * lane.n * lane.m + lane.n * lane.n) + lane.chunk_bytes * lane.chunk_count


def _check_host_memory(challenge: Challenge, have: int) -> None:
    need = sum(lane_bytes(lane) for lane in challenge.lanes)
    if need > 0.9 * have:
        raise ChallengeTooLarge(
            f"the challenge needs {need // 2**20} MiB and this machine has {have // 2**20} MiB available"
        )


def _run_lane(lane: Lane, nonce: int, backend: str) -> LaneResult:
    """One GPU's (or the CPU's) work. On a GPU the FP16 operands are generated afresh after the FP32 ones are
    freed: converting A and B would hold both precisions at once, half again the FP32 matrices, which a
    challenge sized to the card's VRAM does not leave."""
    xp = _xp(backend)
    phases: dict[str, float] = {}
    clock = _PhaseClock(phases, xp if backend == "cupy" else None)
    device = None
    if backend == "cupy":
        device = xp.cuda.Device(lane.gpu_index or 0)
        device.__enter__()
        xp.zeros(1)  # the device's context starts here, not inside the first phase
        clock.lap("start")
    try:
        key_a, key_b = stream_key(lane.seed_int, STREAM_A), stream_key(lane.seed_int, STREAM_B)
        a = generate_matrix(key_a, lane.n, lane.m, xp)
        b = generate_matrix(key_b, lane.m, lane.n, xp)
        clock.lap("generate")
        c_rows: dict[str, np.ndarray] = {}
        c32 = a @ b
        clock.lap("gemm_fp32")
        c_rows["fp32"] = c32.get() if backend == "cupy" else c32
        del c32
        clock.lap("copy")
        if "fp16" in lane.passes:
            if backend == "cupy":
                del a, b
                a = generate_matrix(key_a, lane.n, lane.m, xp, xp.float16)
                b = generate_matrix(key_b, lane.m, lane.n, xp, xp.float16)
                clock.lap("generate")
                c16 = a @ b
                clock.lap("gemm_fp16")
                c_rows["fp16"] = c16.get()
                del c16
                clock.lap("copy")
            else:
                c_rows["fp16"] = c_rows["fp32"].astype(np.float16)
        del a, b
        trees = {p: MerkleTree(row_leaves(c_rows[p], p)) for p in lane.passes}
        clock.lap("hash")
        key = stream_key(nonce, STREAM_FILL, lane.lane)
        fill = [_fill_chunk(key, j, lane.chunk_bytes, xp) for j in range(lane.chunk_count)]
        clock.lap("fill")
        return LaneResult(lane=lane, c_rows=c_rows, trees=trees, fill=fill, phases=phases)
    finally:
        if device is not None:
            device.__exit__(None, None, None)


class _PhaseClock:
    """Seconds per phase of a lane (summed when a phase repeats); on a GPU each lap waits for the device first,
    so the time lands on the phase that queued the work."""

    def __init__(self, phases: dict[str, float], cupy: Any | None):
        self._phases, self._cupy = phases, cupy
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self._cupy is not None:
            self._cupy.cuda.Device().synchronize()
        now = time.perf_counter()
        self._phases[name] = round(self._phases.get(name, 0.0) + now - self._last, 6)
        self._last = now


def run_challenge(
    challenge: Challenge | dict, backend: str = "auto", available_bytes: int | None = None
) -> AgentRun:
    """Do the work and keep the results; never raises for a challenge the machine cannot hold.

    `available_bytes` is the host memory the caller measured (the agent asks the OS): a NumPy challenge that
    would not fit in it is answered with an error instead of being attempted. None = do not check."""
    ch = challenge if isinstance(challenge, Challenge) else Challenge.model_validate(challenge)
    chosen = select_backend(backend)
    run = AgentRun(challenge=ch, backend=chosen)
    try:
        if chosen == "numpy":
            if available_bytes is not None:
                _check_host_memory(ch, available_bytes)
            run.lanes = [_run_lane(lane, ch.memory_nonce_int, chosen) for lane in ch.lanes]
        else:
            with ThreadPoolExecutor(len(ch.lanes)) as pool:  # one thread per GPU: lanes run side by side
                run.lanes = list(pool.map(lambda ln: _run_lane(ln, ch.memory_nonce_int, chosen), ch.lanes))
    except (ChallengeTooLarge, MemoryError) as exc:
        run.error = str(exc) or "out of memory"
        run.lanes = []
    return run


def roots_answer(run: AgentRun) -> dict:
    """The first answer: one Merkle root per lane and pass (or the reason the work could not be done)."""
    if run.error is not None:
        return {"challenge_id": run.challenge.challenge_id, "error": run.error[:500]}
    return {
        "challenge_id": run.challenge.challenge_id,
        "lanes": [
            {"lane": r.lane.lane, "roots": {p: t.root.hex() for p, t in r.trees.items()}} for r in run.lanes
        ],
    }


def rows_answer(run: AgentRun, request: dict) -> dict:
    """The second answer: the rows and chunk digests the server picked, with Merkle paths."""
    by_lane = {r.lane.lane: r for r in run.lanes}
    lanes_out = []
    for ask in request.get("lanes", []):
        result = by_lane[ask["lane"]]
        rows_out: dict[str, list[dict]] = {}
        for pass_name, indexes in ask.get("rows", {}).items():
            c = result.c_rows[pass_name]
            tree = result.trees[pass_name]
            rows_out[pass_name] = [
                {
                    "row": i,
                    "data": base64.b64encode(np.ascontiguousarray(c[i]).tobytes()).decode(),
                    "path": [h.hex() for h in tree.proof(i)],
                }
                for i in indexes
            ]
        chunks_out = []
        for j in ask.get("chunks", []):
            chunk = result.fill[j]
            data = chunk.get() if run.backend == "cupy" else chunk
            chunks_out.append({"chunk": j, "digest": hashlib.sha256(data.tobytes()).hexdigest()})
        lanes_out.append({"lane": ask["lane"], "rows": rows_out, "chunks": chunks_out})
    return {"challenge_id": run.challenge.challenge_id, "lanes": lanes_out}
