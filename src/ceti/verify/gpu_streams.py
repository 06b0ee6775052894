"""The challenge's streams generated on an NVIDIA GPU by one fused CuPy kernel each.

`prng` builds a matrix panel by panel from array operations (a dozen kernels per 4 Mi values, with uint64
temporaries); on an H200 that took 5.7 s of a 18 s full-VRAM challenge, launch-bound, and the timing gate is
meant to time the matrix products, not Python. Here each entry is computed from its index in a single kernel,
with the same SplitMix64 arithmetic, so the values are bit-identical to `prng` (checked against NumPy on first
use in every process; on any difference or compile failure the agent falls back to the panel path and logs why).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ceti.verify.prng import _M1, _M2, GAMMA, VALUES_PER_WORD, matrix_panel, words

log = logging.getLogger("ceti.verify")

_MIX = f"""
    x ^= x >> 30; x *= {_M1:#x}ULL;
    x ^= x >> 27; x *= {_M2:#x}ULL;
    x ^= x >> 31;
"""
_MATRIX_BODY = f"""
    unsigned long long idx = first + (unsigned long long)i;
    unsigned long long x = key + (idx / {VALUES_PER_WORD}ULL + 1ULL) * {GAMMA:#x}ULL;
    {_MIX}
    unsigned int f = (unsigned int)((x >> (2ULL * (idx % {VALUES_PER_WORD}ULL))) & 3ULL);
    out = (T)((float)f - 1.5f);
"""
_WORDS_BODY = f"""
    unsigned long long x = key + (first + (unsigned long long)i + 1ULL) * {GAMMA:#x}ULL;
    {_MIX}
    out = x;
"""
# elements per launch: far below 2**31, so the kernel's index never needs 64 bits of its own
_LAUNCH_VALUES = 1 << 28

_lock = threading.Lock()
_kernels: tuple[Any, Any] | None = None
_usable: bool | None = None


def _compile(cupy: Any) -> tuple[Any, Any]:
    matrix = cupy.ElementwiseKernel("uint64 key, uint64 first", "T out", _MATRIX_BODY, "ceti_challenge_matrix")
    stream = cupy.ElementwiseKernel("uint64 key, uint64 first", "uint64 out", _WORDS_BODY, "ceti_challenge_words")
    return matrix, stream


def _self_check(cupy: Any, kernels: tuple[Any, Any]) -> str | None:
    """None when the kernels reproduce NumPy's streams exactly (an offset past 2**32 and both dtypes)."""
    key, rows, cols, row0 = 0xD1B54A32D192ED03, 3, 96, (1 << 32) // 96 + 5
    for dtype in (np.float32, np.float16):
        out = cupy.empty((rows, cols), dtype=dtype)
        kernels[0](np.uint64(key), np.uint64(row0 * cols), out)
        if not np.array_equal(out.get(), matrix_panel(key, cols, row0, rows, np, dtype)):
            return f"matrix values differ from the reference ({np.dtype(dtype).name})"
    got = cupy.empty(64, dtype=cupy.uint64)
    kernels[1](np.uint64(key), np.uint64(1 << 33), got)
    if not np.array_equal(got.get(), words(key, np.arange(1 << 33, (1 << 33) + 64, dtype=np.uint64))):
        return "fill words differ from the reference"
    return None


def fused_kernels(cupy: Any) -> tuple[Any, Any] | None:
    """The two kernels, compiled and checked once per process; None when they cannot be trusted here."""
    global _kernels, _usable
    with _lock:
        if _usable is None:
            try:
                kernels = _compile(cupy)
                problem = _self_check(cupy, kernels)
            except Exception as exc:  # noqa: BLE001 - no compiler, an old driver: the panel path still works
                kernels, problem = None, f"{type(exc).__name__}: {exc}"
            _usable = problem is None
            _kernels = kernels if _usable else None
            if problem:
                log.warning("fused challenge kernels unusable, generating panel by panel: %s", problem)
        return _kernels


def matrix(cupy: Any, key: int, rows: int, cols: int, dtype: Any) -> Any | None:
    """A whole matrix of the stream on the current device, or None when the fused path is unusable."""
    kernels = fused_kernels(cupy)
    if kernels is None:
        return None
    out = cupy.empty((rows, cols), dtype=dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _LAUNCH_VALUES):
        part = flat[start : start + _LAUNCH_VALUES]
        kernels[0](np.uint64(key), np.uint64(start), part)
    return out


def fill_words(cupy: Any, key: int, chunk_index: int, chunk_bytes: int) -> Any | None:
    """Chunk `chunk_index` of the memory fill (as `prng.fill_chunk`), or None when the fused path is unusable."""
    kernels = fused_kernels(cupy)
    if kernels is None:
        return None
    per_chunk = chunk_bytes // 8
    out = cupy.empty(per_chunk, dtype=cupy.uint64)
    kernels[1](np.uint64(key), np.uint64(chunk_index * per_chunk), out)
    return out
