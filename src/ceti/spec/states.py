"""Life-cycle states of jobs and allocations, shared by server, agent and CLI."""

from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    pending = "pending"  # waiting for a place
    starting = "starting"  # placed on a node; its agent has not confirmed the start yet
    running = "running"  # its agent runs it
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    unschedulable = "unschedulable"  # no node of the network could ever take it

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled, JobState.unschedulable)


class AllocationState(str, enum.Enum):
    assigned = "assigned"  # written by the scheduler; the agent has not confirmed it yet
    running = "running"
    stopping = "stopping"  # the server wants it stopped (cancel, pre-emption); the agent has not confirmed
    exited = "exited"  # the process ended on its own; exit_code says how
    stopped = "stopped"  # stopped on the server's request
    lost = "lost"  # its node was declared lost

    @property
    def active(self) -> bool:
        return self in (AllocationState.assigned, AllocationState.running, AllocationState.stopping)
