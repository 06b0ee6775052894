"""What an SDL becomes in the fabric: one job per service replica, with what a `JobSpec` cannot hold yet.

An Akash service is a container: an image, its entrypoint overridden by `command`/`args`, ports exposed to
the world or to other services, and a price ceiling per block in the denom the SDL names. `AkashJob` carries
all of that beside the fabric resources; `to_job_spec()` gives the `JobSpec` the scheduler places: the image (run
by a node's container engine, so only nodes with one take it), the command if the SDL overrides the entrypoint,
and the network tag. Exposed ports and volumes stay on `AkashJob` until the fabric can give them.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from ceti.networks.akash.gpu_models import fabric_gpu_models
from ceti.networks.akash.sdl import ComputeProfile, Sdl
from ceti.networks.akash.units import bytes_to_mib
from ceti.networks.base import NETWORK_ENV
from ceti.spec.job import JobSpec

_FABRIC_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GIB = 1024**3


class PortExpose(BaseModel):
    model_config = ConfigDict(frozen=True)

    port: int
    external_port: int
    proto: str
    global_: bool = Field(False, alias="global")
    services: list[str] = Field(default_factory=list, description="services of the deployment allowed in")
    hosts: list[str] = Field(default_factory=list)
    ip_endpoint: str | None = None


class Volume(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    size_mib: int
    persistent: bool = False
    storage_class: str | None = None
    mount: str | None = None
    read_only: bool = False


class GpuNeed(BaseModel):
    model_config = ConfigDict(frozen=True)

    units: int = 0
    akash_models: list[str] = Field(default_factory=list, description="as written: 'h100', 'a100/ram/80Gi'")
    models: list[str] = Field(default_factory=list, description="fabric names; empty = any NVIDIA GPU")
    min_vram_mib: int = 0
    interfaces: list[str] = Field(default_factory=list)


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu_milli: int
    memory_mib: int
    storage: list[Volume]
    gpu: GpuNeed

    @property
    def disk_mib(self) -> int:
        return sum(v.size_mib for v in self.storage if v.storage_class != "ram")


class MaxPrice(BaseModel):
    model_config = ConfigDict(frozen=True)

    denom: str
    amount: Decimal = Field(..., description="per block, for one replica")


class AkashJob(BaseModel):
    """One replica of one service, as the fabric runs it."""

    model_config = ConfigDict(frozen=True)

    name: str
    service: str
    placement: str
    profile: str
    replica: int
    count: int
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    expose: list[PortExpose]
    resources: Resources
    placement_attributes: dict[str, str]
    signed_by_all_of: list[str]
    signed_by_any_of: list[str]
    max_price: MaxPrice

    def to_job_spec(self, *, priority: int = 10, interruptible: bool = True) -> JobSpec:
        """The fabric job for this replica. Environment names the fabric cannot take (dots, dashes, the
        reserved CETI_ prefix) stay in `env` here and are left out of the JobSpec."""
        env = {k: v for k, v in self.env.items() if _FABRIC_ENV_NAME.match(k) and not k.startswith("CETI_")}
        env[NETWORK_ENV] = "akash"
        argv = [*self.command, *self.args]
        gpu = self.resources.gpu
        return JobSpec.model_validate({
            "image": self.image,
            "name": self.name,
            "command": argv,
            "env": env,
            "resources": {
                "cpus": self.resources.cpu_milli / 1000,
                "memory": self.resources.memory_mib,
                "disk": self.resources.disk_mib,
                "gpus": {"count": gpu.units, "models": gpu.models, "min_vram_mib": gpu.min_vram_mib},
            },
            "priority": priority,
            "interruptible": interruptible,
        })


def gpu_need(profile: ComputeProfile) -> GpuNeed:
    gpu = profile.resources.gpu
    if gpu.units == 0 or gpu.attributes is None:
        return GpuNeed()
    akash_models: list[str] = []
    models: list[str] = []
    rams: list[int] = []
    interfaces: list[str] = []
    any_model = not gpu.attributes.vendor.nvidia
    for entry in gpu.attributes.vendor.nvidia:
        ram_gib = round(entry.ram / GIB) if entry.ram else None
        if entry.ram:
            rams.append(bytes_to_mib(entry.ram))
        else:
            rams.append(0)
        if entry.interface:
            interfaces.append(entry.interface)
        if not entry.model or entry.model == "*":
            any_model = True
            akash_models.append("*")
            continue
        written = entry.model + (f"/ram/{ram_gib}Gi" if ram_gib else "")
        akash_models.append(written + (f"/interface/{entry.interface}" if entry.interface else ""))
        for model in fabric_gpu_models(entry.model, ram_gib):
            if model not in models:
                models.append(model)
    return GpuNeed(
        units=gpu.units,
        akash_models=akash_models,
        models=[] if any_model else models,
        min_vram_mib=min(rams) if rams else 0,
        interfaces=sorted(set(interfaces)),
    )


def sdl_jobs(sdl: Sdl) -> list[AkashJob]:
    """Every replica the SDL deploys, in a stable order (service, placement, replica)."""
    jobs: list[AkashJob] = []
    for svc in sorted(sdl.deployment):
        service = sdl.services[svc]
        for pl in sorted(sdl.deployment[svc]):
            entry = sdl.deployment[svc][pl]
            profile = sdl.compute[entry.profile]
            placement = sdl.placement[pl]
            price = placement.pricing[entry.profile]
            volumes = []
            for volume in profile.resources.storage:
                mount = service.params.storage.get(volume.name)
                volumes.append(Volume(
                    name=volume.name,
                    size_mib=bytes_to_mib(volume.size),
                    persistent=volume.attributes.persistent,
                    storage_class=volume.attributes.storage_class,
                    mount=mount.mount if mount else None,
                    read_only=mount.read_only if mount else False,
                ))
            resources = Resources(
                cpu_milli=profile.resources.cpu.milli,
                memory_mib=bytes_to_mib(profile.resources.memory.size),
                storage=volumes,
                gpu=gpu_need(profile),
            )
            expose = [
                PortExpose(
                    port=e.port,
                    external_port=e.external_port,
                    proto=e.proto,
                    **{"global": e.is_global},
                    services=[to.service for to in e.to if to.service],
                    hosts=list(e.accept),
                    ip_endpoint=next((to.ip for to in e.to if to.ip), None),
                )
                for e in service.expose
            ]
            for replica in range(entry.count):
                name = svc if entry.count == 1 else f"{svc}-{replica}"
                if len(sdl.deployment[svc]) > 1:
                    name = f"{name}.{pl}"
                jobs.append(AkashJob(
                    name=_job_name(name),
                    service=svc,
                    placement=pl,
                    profile=entry.profile,
                    replica=replica,
                    count=entry.count,
                    image=service.image,
                    command=list(service.command),
                    args=list(service.args),
                    env=service.env_dict,
                    expose=expose,
                    resources=resources,
                    placement_attributes=dict(placement.attributes),
                    signed_by_all_of=list(placement.signed_by.all_of),
                    signed_by_any_of=list(placement.signed_by.any_of),
                    max_price=MaxPrice(denom=price.denom, amount=price.amount),
                ))
    return jobs


def _job_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9._-]", "-", name).lstrip("._-") or "service"
    return cleaned[:63]
