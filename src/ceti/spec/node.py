"""What an agent reports about its machine."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    network_label: str = Field(
        "", max_length=64, pattern=r"^([a-zA-Z0-9][a-zA-Z0-9._-]*)?$",
        description="the LAN or data centre this node is in: nodes with the same label reach each other, and a "
        "multi-node job is placed within one label; empty = this node joins no multi-node job")
    network_address: str = Field(
        "", max_length=64,
        description="this node's address on its network label, where a multi-node job's engine (Ray) listens; "
        "never all interfaces")
    gang_port_min: int = Field(47000, ge=1024, le=65535, description="first port multi-node jobs may use here")
    gang_port_max: int = Field(47999, ge=1024, le=65535, description="last port multi-node jobs may use here")

    @field_validator("network_address")
    @classmethod
    def _address(cls, address: str) -> str:
        if not address:
            return address
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address") from None
        if ip.is_unspecified:
            raise ValueError("a multi-node engine must not listen on every interface; give this node's address")
        return str(ip)

    @model_validator(mode="after")
    def _label_needs_address(self) -> NodeInfo:
        if self.network_label and not self.network_address:
            raise ValueError("a node with a network label needs its address on that network (network_address)")
        if self.gang_port_max < self.gang_port_min:
            raise ValueError("gang_port_max is below gang_port_min")
        return self
