"""The vocabulary shared by the CLI, SDK, server, agent and fabric."""

from ceti.spec.job import (
    Engine,
    GPURequest,
    JobSpec,
    JobSpecError,
    Placement,
    Resources,
    RetryOn,
    RetryPolicy,
    check_relative_path,
    load_job_spec_yaml,
    parse_job_spec,
)
from ceti.spec.node import GPUInfo, NodeInfo
from ceti.spec.states import AllocationState, JobState

__all__ = [
    "AllocationState",
    "Engine",
    "GPUInfo",
    "GPURequest",
    "JobSpec",
    "JobSpecError",
    "JobState",
    "NodeInfo",
    "Placement",
    "Resources",
    "RetryOn",
    "RetryPolicy",
    "check_relative_path",
    "load_job_spec_yaml",
    "parse_job_spec",
]
