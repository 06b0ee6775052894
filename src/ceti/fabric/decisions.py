"""What a scheduling round decides. The caller (server or simulator) applies them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Start(NamedTuple):
    """One task of a job starts on a node. A named tuple, not a dataclass: a 100k-job round makes about as
    many, and a tuple is made in a third of the time."""

    job_id: str
    node_id: str
    gpu_indices: tuple[int, ...] = ()
    gpu_share_milli: int = 0  # 0 = whole GPUs
    task_index: int = 0  # which task of a gang


@dataclass(frozen=True, slots=True)
class Preempt:
    allocation_id: str
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """The job can never run on the network as it is now (no node could hold it even if empty)."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """The job fits somewhere in principle but not now."""

    job_id: str
    reason: str


@dataclass(slots=True)
class Decisions:
    starts: list[Start] = field(default_factory=list)
    preemptions: list[Preempt] = field(default_factory=list)
    unschedulable: list[Unschedulable] = field(default_factory=list)
    waiting: list[Wait] = field(default_factory=list)
