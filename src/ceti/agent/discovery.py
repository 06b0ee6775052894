"""What this machine offers: CPUs, memory, disk (psutil) and NVIDIA GPUs (NVML).

GPUs come from NVML, or from a recorded NVML description (an "inventory file") that replaces the query.
Tests, the bench and providers who want to simulate a machine use recorded files; the ones shipped with
the package live in `ceti/agent/recorded_gpus/` (see `recorded_inventories()`).

A machine without an NVIDIA driver is an ordinary CPU node: NVML failing is not an error, it is logged
once per process (not on every heartbeat) and the node reports no GPUs.

CPU and memory are what this process may actually use: inside a container (cgroup v1 or v2 limits, CPU
affinity) that is less than the host has, and a scheduler that believed the host numbers would overbook.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from ceti.agent.gpu_names import normalize_gpu_model
from ceti.spec.node import GPUInfo, NodeInfo

logger = logging.getLogger("ceti.agent")

MIB = 1024 * 1024


class RecordedGPU(BaseModel):
    """One GPU as NVML describes it."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(..., ge=0, le=255)
    name: str = Field(..., min_length=1, max_length=256)  # nvmlDeviceGetName
    memory_total_bytes: int = Field(..., ge=0)  # nvmlDeviceGetMemoryInfo(...).total
    uuid: str = Field("", max_length=128)  # nvmlDeviceGetUUID
    pci_bus_id: str = Field("", max_length=64)  # nvmlDeviceGetPciInfo(...).busId


class GPUInventory(BaseModel):
    """A machine's GPUs as NVML describes them: what `nvml_inventory()` returns and inventory files hold."""

    model_config = ConfigDict(extra="forbid")

    driver_version: str = Field(..., min_length=1, max_length=64)  # nvmlSystemGetDriverVersion
    gpus: list[RecordedGPU] = Field(default_factory=list, max_length=64)
    description: str = Field("", max_length=1000, description="where the recording came from")


def discover(
    region: str = "local",
    price_per_gpu_hour: float = 0.0,
    price_per_cpu_hour: float = 0.0,
    inventory_file: Path | None = None,
    disk_path: Path | None = None,
) -> NodeInfo:
    """Describe this machine. `disk_path` is the agent's data directory: its filesystem's free space is the
    disk jobs can use (default: the current directory). `inventory_file` replaces the NVML query."""
    inventory = load_inventory(inventory_file) if inventory_file is not None else nvml_inventory()
    gpus = gpus_of(inventory) if inventory is not None else []
    return NodeInfo(
        hostname=(socket.gethostname() or "localhost")[:255],
        cpus=usable_cpus(),
        memory_mib=usable_memory_mib(),
        disk_mib=free_disk_mib(disk_path if disk_path is not None else Path.cwd()),
        gpus=gpus,
        gpu_driver=inventory.driver_version if inventory is not None else None,
        region=region,
        price_per_gpu_hour=price_per_gpu_hour,
        price_per_cpu_hour=price_per_cpu_hour,
        os=f"{platform.system()} {platform.release()} {platform.machine()}".strip()[:128],
        agent_version=_agent_version(),
    )


# --- GPUs -------------------------------------------------------------------------------------------------


def gpus_of(inventory: GPUInventory) -> list[GPUInfo]:
    out = []
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        vram_mib = gpu.memory_total_bytes // MIB
        out.append(
            GPUInfo(
                index=gpu.index,
                model=normalize_gpu_model(gpu.name, vram_mib),
                name=gpu.name,
                vram_mib=vram_mib,
                uuid=gpu.uuid,
            )
        )
    return out


def load_inventory(path: Path) -> GPUInventory:
    """Read a recorded NVML description; a malformed file raises (a provider's typo must not look like 'no GPUs')."""
    return GPUInventory.model_validate_json(Path(path).read_text())


def recorded_inventories() -> dict[str, Path]:
    """The recorded inventories shipped with the package, by file stem (e.g. "8xH100-80GB-SXM")."""
    folder = resources.files("ceti.agent") / "recorded_gpus"
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".json")}


def nvml_gpus() -> list[GPUInfo]:
    """This machine's GPUs through NVML; [] when there is no NVIDIA driver (the reason is logged once)."""
    inventory = nvml_inventory()
    return gpus_of(inventory) if inventory is not None else []


_nvml_log_lock = threading.Lock()
_nvml_logged: set[str] = set()


def _log_once(key: str, level: int, message: str, *args: Any) -> None:
    with _nvml_log_lock:
        if key in _nvml_logged:
            return
        _nvml_logged.add(key)
    logger.log(level, message, *args)


def nvml_inventory() -> GPUInventory | None:
    """Query NVML. None when NVML cannot be used at all; a GPU that fails on its own is skipped and logged.

    The result has the shape of an inventory file, so `nvml_inventory().model_dump_json(indent=2)` records
    a machine for tests and simulation.
    """
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency; a broken install is still not fatal
        _log_once("import", logging.WARNING, "no GPUs: nvidia-ml-py cannot be imported (%s)", exc)
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        # LibraryNotFound / DriverNotLoaded is the normal CPU-only machine; anything else is a broken driver.
        normal = isinstance(exc, (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded))
        _log_once(
            "init",
            logging.INFO if normal else logging.WARNING,
            "no GPUs: NVML is not available (%s)",
            exc,
        )
        return None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                gpus.append(
                    RecordedGPU(
                        index=index,
                        name=_text(pynvml.nvmlDeviceGetName(handle)),
                        memory_total_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                        pci_bus_id=_text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
                    )
                )
            except pynvml.NVMLError as exc:  # e.g. a GPU that fell off the bus: report the others
                _log_once(f"gpu{index}", logging.WARNING, "GPU %d left out: NVML error %s", index, exc)
        return GPUInventory(driver_version=driver, gpus=gpus, description="nvml")
    except pynvml.NVMLError as exc:
        _log_once("query", logging.WARNING, "no GPUs: NVML query failed (%s)", exc)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- CPU, memory, disk ------------------------------------------------------------------------------------


def usable_cpus() -> int:
    """Logical CPUs this process may run on: the least of the host count, the affinity mask and a cgroup quota."""
    counts = [psutil.cpu_count(logical=True) or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        counts.append(max(1, math.ceil(quota)))
    return max(1, min(counts))


def usable_memory_mib() -> int:
    total = psutil.virtual_memory().total
    limit = _cgroup_memory_limit()
    if limit is not None and 0 < limit < total:
        total = limit
    return max(1, total // MIB)


def free_disk_mib(path: Path) -> int:
    """Free space of the filesystem holding `path` (or its nearest existing parent: the data dir may not exist yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return psutil.disk_usage(str(path)).free // MIB


_CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 cpu.max or v1 cfs_quota/period); None when unlimited."""
    try:
        v2 = _read(_CGROUP / "cpu.max")
        if v2:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period and int(period) > 0:
                return int(quota) / int(period)
            return None
        quota_us = _read(_CGROUP / "cpu" / "cpu.cfs_quota_us")
        period_us = _read(_CGROUP / "cpu" / "cpu.cfs_period_us")
        if quota_us and period_us and int(quota_us) > 0 and int(period_us) > 0:
            return int(quota_us) / int(period_us)
    except ValueError:
        pass
    return None


def _cgroup_memory_limit() -> int | None:
    """Bytes allowed by the cgroup memory limit; None when unlimited (v1 reports 'unlimited' as a huge number)."""
    for path in (_CGROUP / "memory.max", _CGROUP / "memory" / "memory.limit_in_bytes"):
        text = _read(path)
        if text and text != "max":
            try:
                return int(text)
            except ValueError:
                return None
    return None


def _agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ceti")[:64]
    except PackageNotFoundError:  # running from a source tree
        return ""
