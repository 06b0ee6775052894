"""What an agent reports about its machine."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GPUInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(..., ge=0, le=255)
    model: str = Field(..., min_length=1, max_length=128, description="normalised model, e.g. 'A100-80GB'")
    name: str = Field("", max_length=256, description="the name the driver reports")
    vram_mib: int = Field(..., ge=0, le=10_000_000)
    uuid: str = Field("", max_length=128)


class NodeInfo(BaseModel):
    """Discovered hardware plus the provider's terms for this node."""

    model_config = ConfigDict(extra="forbid")

    hostname: str = Field(..., min_length=1, max_length=255)
    cpus: int = Field(..., ge=1, le=100_000)
    memory_mib: int = Field(..., ge=1, le=1_000_000_000)
    disk_mib: int = Field(0, ge=0, le=10_000_000_000)
    gpus: list[GPUInfo] = Field(default_factory=list, max_length=64)
    gpu_driver: str | None = Field(None, max_length=64)
    region: str = Field("local", min_length=1, max_length=64)
    price_per_gpu_hour: float = Field(0.0, ge=0, le=100_000)
    price_per_cpu_hour: float = Field(0.0, ge=0, le=100_000)
    os: str = Field("", max_length=128)
    agent_version: str = Field("", max_length=64)
    networks: list[str] = Field(
        default_factory=list, max_length=16,
        description="decentralized networks whose work may fill this node when no developer pays for it")
    network_floor_usd_per_hour: float = Field(
        0.0, ge=0, le=100_000, description="no network work on this node for less than this, USD per hour")
    container_engines: list[str] = Field(
        default_factory=list, max_length=4,
        description="engines that ran a test container at agent start, e.g. ['podman']; empty = processes only")
