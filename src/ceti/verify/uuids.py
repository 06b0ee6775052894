"""GPU UUID pinning: a node's GPUs keep their NVML UUIDs, and no UUID is on two nodes at once.

A provider who swaps a verified card for a cheaper one, or reports the same card from two machines (to be paid
twice), shows up here. The function only flags; the verifier never returns `verified` for a flagged node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ceti.spec.node import GPUInfo


def uuid_flags(
    node_id: str,
    gpus: Sequence[GPUInfo],
    pinned_uuids: Sequence[str],
    uuid_owners: Mapping[str, str],
) -> list[str]:
    """Reasons to distrust a node's GPU identities; [] when none.

    `pinned_uuids`: the UUIDs this node had when it was last verified ([] for a new node: nothing to compare).
    `uuid_owners`: UUID -> node id for the GPUs other nodes currently report.
    """
    flags: list[str] = []
    now = [g.uuid for g in gpus]
    if any(not u for u in now):
        flags.append("a GPU reports no UUID")
    seen: set[str] = set()
    for u in now:
        if u and u in seen:
            flags.append(f"UUID {u} reported twice on this node")
        seen.add(u)
    for u in sorted(seen - {""}):
        owner = uuid_owners.get(u)
        if owner is not None and owner != node_id:
            flags.append(f"UUID {u} is also reported by node {owner}")
    if pinned_uuids:
        gone = sorted(set(pinned_uuids) - seen)
        new = sorted(seen - set(pinned_uuids) - {""})
        if gone or new:
            flags.append(f"GPU UUIDs changed since pinning: gone {gone}, new {new}")
    return flags
