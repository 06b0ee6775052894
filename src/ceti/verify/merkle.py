"""SHA-256 Merkle tree over the rows of C, with inclusion proofs.

A leaf commits to the row bytes exactly as the agent produced them (little-endian float32 or float16), not to a
canonical form. The server never predicts the root: it only checks that the rows it asks for hash to the
committed root and that their values are within tolerance of its own recomputation. So hardware that rounds
FP16 differently still verifies, and no rounding grid can put an honest value on the wrong side of a boundary.

Leaves and inner nodes are hashed with different prefix bytes (0x00, 0x01) and a leaf includes its row index, so
an inner node cannot pose as a leaf and a row cannot be moved. On a level with an odd count the last node is
promoted unchanged (never paired with itself), which avoids the duplicated-leaf ambiguity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

DIGEST_BYTES = 32
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_digest(index: int, payload: bytes) -> bytes:
    """The digest of leaf `index` over `payload` (a pass tag and the row's bytes)."""
    return hashlib.sha256(_LEAF + index.to_bytes(8, "little") + payload).digest()


def leaf_digest_parts(index: int, tag: bytes, row: memoryview | bytes) -> bytes:
    """`leaf_digest(index, tag + row)` without joining the bytes: a row of C is hashed where it lies."""
    h = hashlib.sha256(_LEAF + index.to_bytes(8, "little") + tag)
    h.update(row)
    return h.digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


class MerkleTree:
    """All levels of the tree, kept so the agent can answer proofs for rows picked later."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            level = self.levels[-1]
            up = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    @property
    def leaf_count(self) -> int:
        return len(self.levels[0])

    def proof(self, index: int) -> list[bytes]:
        """Sibling digests from the leaf up; promoted levels contribute nothing."""
        if not 0 <= index < self.leaf_count:
            raise IndexError(index)
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return path


def verify_proof(root: bytes, index: int, leaf_count: int, leaf: bytes, path: Sequence[bytes]) -> bool:
    """True when `leaf` sits at `index` of a tree of `leaf_count` leaves with this root. Never raises."""
    if not 0 <= index < leaf_count or len(leaf) != DIGEST_BYTES:
        return False
    digest, width, used = leaf, leaf_count, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used >= len(path) or len(path[used]) != DIGEST_BYTES:
                return False
            digest = _node(path[used], digest) if index & 1 else _node(digest, path[used])
            used += 1
        index //= 2
        width = (width + 1) // 2
    return used == len(path) and digest == root
