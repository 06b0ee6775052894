"""The fabric's view of the world: plain, immutable values built from a snapshot of the store or a trace.

Units are integers where the fabric does arithmetic: milli-CPU, MiB, milli-GPU (1000 = one whole GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

WHOLE_GPU_MILLI = 1000
SHARED_GPU_LISTS = 4096  # distinct GPU lists `shared_gpus` keeps (a fleet has a few hundred makes)


@dataclass(frozen=True, slots=True)
class GPU:
    index: int
    model: str
    vram_mib: int = 0


_gpu_lists: dict[tuple[tuple[int, str, int], ...], tuple[GPU, ...]] = {}


def shared_gpus(specs: Iterable[tuple[int, str, int]]) -> tuple[GPU, ...]:
    """A node's GPUs from their (index, model, VRAM MiB), one tuple object per distinct list: nodes of one make
    share it, and a round reads each distinct list once (`classes.NodeTable`). The values are immutable, so
    sharing them changes nothing else."""
    key = tuple(specs)
    got = _gpu_lists.get(key)
    if got is None:
        if len(_gpu_lists) >= SHARED_GPU_LISTS:
            _gpu_lists.clear()
        got = _gpu_lists[key] = tuple(GPU(i, m, v) for i, m, v in key)
    return got


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    cpu_milli: int
    memory_mib: int
    gpus: tuple[GPU, ...] = ()
    region: str = ""
    disk_mib: int = 0
    price_per_gpu_hour: float = 0.0
    price_per_cpu_hour: float = 0.0
    # probability that an hour of work placed here finishes (observed; see fabric.reliability): a job of d
    # hours finishes with about reliability ** d
    reliability: float = 1.0
    schedulable: bool = True  # False while draining or lost: keeps its running work, takes no new
    # what the node offers beyond its resources, e.g. "container" (an engine that runs images), "verified"
    features: frozenset[str] = frozenset()
    # the LAN or data centre the node is in: nodes that share a (non-empty) label reach each other, so a job that
    # spans nodes is placed within one label; "" = the node reaches no other
    network: str = ""


@dataclass(frozen=True, slots=True)
class Demand:
    """What one task of a job needs from one node.

    GPUs: `gpu_count` whole GPUs, or, when `gpu_share_milli` is set, a share of a single GPU
    (the trace's GPU sharing: 0 < share < 1000 with gpu_count == 1).
    """

    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_share_milli: int = 0  # 0 = whole GPUs
    gpu_models: frozenset[str] = frozenset()  # empty = any model
    min_vram_mib: int = 0
    disk_mib: int = 0
    regions: frozenset[str] = frozenset()  # empty = any region
    node_ids: frozenset[str] = frozenset()  # empty = any node
    features: frozenset[str] = frozenset()  # node features the task needs, all of them

    @property
    def gpu_milli_per_gpu(self) -> int:
        return self.gpu_share_milli if self.gpu_share_milli else WHOLE_GPU_MILLI

    @property
    def gpu_milli_total(self) -> int:
        return self.gpu_count * self.gpu_milli_per_gpu


@dataclass(frozen=True, slots=True)
class Job:
    """A pending job. `order` is its place in the queue (submission order; a retried job keeps it)."""

    id: str
    demand: Demand
    order: int
    priority: int = 50
    gang_size: int = 1  # tasks placed all together or not at all
    bid_per_hour: float | None = None
    interruptible: bool = False
    # relative speed of this job on each GPU model (1.0 = reference); unknown models count as 1.0
    speed_by_model: Mapping[str, float] = field(default_factory=dict)
    # hours of work a node failure would throw away (its max duration); None = unknown, weighed as one hour
    expected_duration_h: float | None = None
    # a multi-node job (Ray): every task of the gang on a node of its own, all on one network label, and (unless
    # `mixed_gpu_models`) all GPUs of the gang of one model
    one_per_node: bool = False
    mixed_gpu_models: bool = False


@dataclass(frozen=True, slots=True)
class Allocation:
    """Work that holds resources on a node now."""

    id: str
    job_id: str
    node_id: str
    cpu_milli: int
    memory_mib: int
    gpu_indices: tuple[int, ...] = ()
    gpu_share_milli: int = 0  # 0 = the listed GPUs are held whole
    priority: int = 50
    interruptible: bool = False
    value_per_hour: float = 0.0
    lost_work_hours: float = 0.0  # work thrown away if pre-empted now (since its last checkpoint)
    disk_mib: int = 0
    # the GPU models its job may use (empty = any, or not known): the per-task placement learns from running
    # work which models the workload asks for (per_task.learnt_workload)
    gpu_models: frozenset[str] = frozenset()

    @property
    def gpu_milli_per_gpu(self) -> int:
        return self.gpu_share_milli if self.gpu_share_milli else WHOLE_GPU_MILLI


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scheduling round may look at. `now` is passed in: the fabric has no clock."""

    nodes: tuple[Node, ...]
    running: tuple[Allocation, ...] = ()
    pending: tuple[Job, ...] = ()
    now: float = 0.0
    # the jobs that arrived lately, whatever became of them (each job's demand and its number of tasks): the mix of
    # work to come, which per-task placement's fragmentation measure targets (per_task.learnt_workload); empty =
    # learn it from the work running and pending
    arrivals: tuple[tuple[Demand, int], ...] = ()
