"""The pure scheduling core: snapshot in, decisions out. No I/O, no clock, no database."""

from ceti.fabric.baseline_scan import schedule_first_fit
from ceti.fabric.decisions import Decisions, Preempt, Start, Unschedulable, Wait
from ceti.fabric.model import GPU, WHOLE_GPU_MILLI, Allocation, Demand, Job, Node, Snapshot, shared_gpus
from ceti.fabric.schedule import never_fits_reason, queue_order, schedule

__all__ = [
    "GPU",
    "WHOLE_GPU_MILLI",
    "Allocation",
    "Decisions",
    "Demand",
    "Job",
    "Node",
    "Preempt",
    "Snapshot",
    "Start",
    "Unschedulable",
    "Wait",
    "never_fits_reason",
    "queue_order",
    "schedule",
    "schedule_first_fit",
    "shared_gpus",
]
