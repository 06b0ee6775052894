"""The counter PRNG (any index alone, same on every path) and the Merkle tree (proofs verify, forgeries do not)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceti.verify.merkle import MerkleTree, leaf_digest, verify_proof
from ceti.verify.prng import (
    STREAM_A,
    STREAM_B,
    fill_chunk,
    matrix_panel,
    matrix_rows,
    stream_key,
    value_at,
    word_at,
    words,
)

seeds = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, counter=st.integers(min_value=0, max_value=2**40))
def test_word_alone_equals_vectorised(seed: int, counter: int) -> None:
    key = stream_key(seed, STREAM_B)
    assert int(words(key, [counter])[0]) == word_at(key, counter)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, row=st.integers(min_value=0, max_value=50), col=st.integers(min_value=0, max_value=127))
def test_matrix_entry_alone_equals_panel(seed: int, row: int, col: int) -> None:
    key = stream_key(seed, STREAM_A)
    panel = matrix_panel(key, 128, row, 1)
    assert panel[0, col] == value_at(key, row * 128 + col)
    assert np.array_equal(matrix_rows(key, 128, [row]), panel)


def test_values_are_the_four_fp16_exact_levels_and_balanced() -> None:
    v = matrix_panel(stream_key(7, STREAM_A), 1024, 0, 64)
    assert set(np.unique(v)) == {-1.5, -0.5, 0.5, 1.5}
    assert np.array_equal(v.astype(np.float16).astype(np.float32), v)
    assert abs(float(v.mean())) < 0.05


def test_streams_and_seeds_are_independent() -> None:
    assert stream_key(1, STREAM_A) != stream_key(1, STREAM_B) != stream_key(2, STREAM_B)
    assert not np.array_equal(fill_chunk(stream_key(1, 3, 0), 0, 64), fill_chunk(stream_key(1, 3, 1), 0, 64))


def test_fp32_product_is_exact() -> None:
    """The reason the FP32 pass needs no tolerance: float32 BLAS equals the float64 product exactly."""
    a = matrix_panel(stream_key(3, STREAM_A), 4096, 0, 64)
    b = matrix_panel(stream_key(3, STREAM_B), 64, 0, 4096)
    assert np.array_equal((a @ b).astype(np.float64), a.astype(np.float64) @ b.astype(np.float64))


@settings(max_examples=40, deadline=None)
@given(count=st.integers(min_value=1, max_value=70), data=st.data())
def test_every_proof_verifies_and_forgeries_fail(count: int, data: st.DataObject) -> None:
    leaves = [leaf_digest(i, bytes([i % 256]) * 8) for i in range(count)]
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(min_value=0, max_value=count - 1))
    path = tree.proof(i)
    assert verify_proof(tree.root, i, count, leaves[i], path)
    assert not verify_proof(tree.root, i, count, leaf_digest(i, b"other"), path)
    if count > 1:
        assert not verify_proof(tree.root, (i + 1) % count, count, leaves[i], path)
        forged = [bytes(32)] + path[1:] if path else [bytes(32)]
        assert not verify_proof(tree.root, i, count, leaves[i], forged)
    assert not verify_proof(tree.root, i, count, leaves[i], [*path, bytes(32)])


@settings(max_examples=40, deadline=None)
@given(index=st.integers(-5, 100), count=st.integers(0, 64),
       path=st.lists(st.binary(min_size=0, max_size=40), max_size=10))
def test_verify_proof_never_raises(index: int, count: int, path: list[bytes]) -> None:
    assert verify_proof(bytes(32), index, count, bytes(32), path) in (True, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rows_are_hashed_in_place_with_the_same_leaves(dtype) -> None:
    from ceti.verify.compute import row_leaves
    from ceti.verify.merkle import leaf_digest_parts

    c = (np.arange(300 * 64, dtype=np.float64).reshape(300, 64) * 0.25 - 7).astype(dtype)
    joined = [leaf_digest(i, b"f32" + c[i].tobytes()) for i in range(len(c))]
    assert [leaf_digest_parts(i, b"f32", c[i].data) for i in range(len(c))] == joined
    assert row_leaves(c, "fp32", threads=4) == joined == row_leaves(c, "fp32", threads=1)
