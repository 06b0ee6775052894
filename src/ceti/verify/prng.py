"""Counter-based PRNG for the challenge matrices: any single entry can be computed alone.

The server checks a handful of rows of C = A·B, so it must be able to regenerate any row of A and any panel of B
without replaying a sequential generator. Each 64-bit word is SplitMix64's finaliser applied to
`key + (counter + 1) * gamma` (a Weyl sequence), which is what SplitMix64 itself does; a word depends only on
(key, counter), so word `i` costs the same as word `0`, on NumPy and on CuPy alike.

Value range, and why it is so small: every matrix entry is one of {-1.5, -0.5, 0.5, 1.5} (two bits of a word,
32 entries per word). These are exact in FP16, BF16 and TF32, every product is a multiple of 0.25 with
|product| <= 2.25, so a dot product over m terms is a multiple of 0.25 bounded by 2.25·m: exact in FP32
accumulation (in any order, on any hardware) while 4·2.25·m < 2**24, i.e. m < 1.86 million. FP32 results are
therefore bit-identical across GPUs, CPUs and the server's NumPy. The entries have mean 0 and variance 1.25, so
an entry of C has standard deviation 1.25·sqrt(m) (about 770 for m = 380 000): far inside FP16's range (65 504),
and FP16 outputs differ from the exact value only by FP16 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

BITS_PER_VALUE = 2
VALUES_PER_WORD = 64 // BITS_PER_VALUE  # 32
VALUE_OFFSET = 1.5  # field f in {0, 1, 2, 3} -> f - 1.5
MAX_EXACT_INNER_DIM = 1_860_000  # 4 * 2.25 * m < 2**24

# Stream tags keep A, B and the memory fill of one seed independent.
STREAM_A = 1
STREAM_B = 2
STREAM_FILL = 3


def mix64_int(x: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference the array version must match)."""
    x &= MASK64
    x ^= x >> 30
    x = (x * _M1) & MASK64
    x ^= x >> 27
    x = (x * _M2) & MASK64
    x ^= x >> 31
    return x


def stream_key(seed: int, stream: int, lane: int = 0) -> int:
    """The key of one stream (A, B or fill) of one lane under a seed."""
    return mix64_int(mix64_int(seed ^ (stream * GAMMA)) + lane * GAMMA + stream)


def word_at(key: int, counter: int) -> int:
    """Word `counter` of a stream, alone."""
    return mix64_int(key + (counter + 1) * GAMMA)


def value_at(key: int, index: int) -> float:
    """Entry `index` of a stream (row-major index into a matrix), alone."""
    word = word_at(key, index // VALUES_PER_WORD)
    field = (word >> (BITS_PER_VALUE * (index % VALUES_PER_WORD))) & 3
    return field - VALUE_OFFSET


def _mix64(x: Any, xp: Any) -> Any:
    u = xp.uint64
    x = x ^ (x >> u(30))
    x = x * u(_M1)
    x = x ^ (x >> u(27))
    x = x * u(_M2)
    return x ^ (x >> u(31))


def words(key: int, counters: Any, xp: Any = np) -> Any:
    """Words at an array of counters (uint64), vectorised: NumPy on the server, CuPy on a GPU."""
    u = xp.uint64
    c = xp.asarray(counters, dtype=u)
    return _mix64(u(key) + (c + u(1)) * u(GAMMA), xp)


def unpack(word_array: Any, xp: Any = np, dtype: Any = np.float32) -> Any:
    """Split each word into its 32 entries (last axis grows by 32), as floats in {-1.5, -0.5, 0.5, 1.5}."""
    u = xp.uint64
    shifts = xp.arange(0, 64, BITS_PER_VALUE, dtype=u)
    fields = (word_array[..., None] >> shifts) & u(3)
    out = fields.astype(dtype)
    out -= VALUE_OFFSET
    return out.reshape(*word_array.shape[:-1], word_array.shape[-1] * VALUES_PER_WORD)


def matrix_panel(
    key: int, cols: int, row0: int, row_count: int, xp: Any = np, dtype: Any = np.float32
) -> Any:
    """Rows [row0, row0 + row_count) of a row-major matrix with `cols` columns (a multiple of 32)."""
    if cols % VALUES_PER_WORD:
        raise ValueError(f"cols must be a multiple of {VALUES_PER_WORD}")
    words_per_row = cols // VALUES_PER_WORD
    first = row0 * words_per_row
    counters = xp.arange(first, first + row_count * words_per_row, dtype=xp.uint64)
    w = words(key, counters, xp).reshape(row_count, words_per_row)
    return unpack(w, xp, dtype)


def matrix_rows(key: int, cols: int, rows: list[int], dtype: Any = np.float32) -> np.ndarray:
    """Arbitrary rows of a row-major matrix, stacked (the server's view of a few rows of A)."""
    return np.concatenate([matrix_panel(key, cols, r, 1, np, dtype) for r in rows]) if rows else np.zeros(
        (0, cols), dtype
    )


def fill_chunk(key: int, chunk_index: int, chunk_bytes: int, xp: Any = np) -> Any:
    """Chunk `chunk_index` of the memory fill: `chunk_bytes / 8` consecutive words of the fill stream."""
    if chunk_bytes % 8:
        raise ValueError("chunk_bytes must be a multiple of 8")
    per_chunk = chunk_bytes // 8
    first = chunk_index * per_chunk
    return words(key, xp.arange(first, first + per_chunk, dtype=xp.uint64), xp)
