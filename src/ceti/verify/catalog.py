"""The table of GPU models the timing gate compares against, loaded from `data/gpu_models.json`.

Each figure in the file carries its source. A claim may name a catalog id ("H100-80GB-SXM") or the fabric's
model name ("H100-80GB", what discovery reports), which can stand for several variants: a claim is confirmed when
any of them fits. "cpu" is not a row of figures: a CPU node is timed against its claimed cores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

CPU_MODEL = "cpu"


@dataclass(frozen=True)
class GPUModel:
    id: str
    fabric_model: str
    nvml_names: tuple[str, ...]
    vram_mib: int
    fp32_tflops: float
    tf32_tflops: float
    fp16_tflops: float
    tensor_cores: bool
    source: str

    @property
    def fp32_pass_tflops(self) -> float:
        """The best exact rate for the FP32 pass (TF32 where the card has it: the entries are TF32-exact)."""
        return max(self.fp32_tflops, self.tf32_tflops)


@dataclass(frozen=True)
class Catalog:
    models: tuple[GPUModel, ...]
    efficiency: float
    efficiency_source: str
    cpu_gflops_per_core_floor: float

    def by_id(self, model_id: str) -> GPUModel | None:
        for m in self.models:
            if m.id.lower() == model_id.lower():
                return m
        return None

    def for_claim(self, claimed: str) -> list[GPUModel]:
        """Catalog rows a claimed model name stands for; [] when the table does not know it."""
        exact = self.by_id(claimed)
        if exact is not None:
            return [exact]
        return [m for m in self.models if m.fabric_model.lower() == claimed.lower()]

    def knows(self, claimed: str) -> bool:
        return claimed.lower() == CPU_MODEL or bool(self.for_claim(claimed))


def catalog_from_dict(doc: dict) -> Catalog:
    models = tuple(
        GPUModel(
            id=m["id"],
            fabric_model=m["fabric_model"],
            nvml_names=tuple(m["nvml_names"]),
            vram_mib=int(m["vram_mib"]),
            fp32_tflops=float(m["fp32_tflops"]),
            tf32_tflops=float(m["tf32_tflops"]),
            fp16_tflops=float(m["fp16_tflops"]),
            tensor_cores=bool(m["tensor_cores"]),
            source=m["source"],
        )
        for m in doc["models"]
    )
    return Catalog(
        models=models,
        efficiency=float(doc["efficiency"]["value"]),
        efficiency_source=doc["efficiency"]["source"],
        cpu_gflops_per_core_floor=float(doc["cpu"]["gflops_per_core_floor"]),
    )


@cache
def load_catalog() -> Catalog:
    """The shipped table (read once per process)."""
    text = (resources.files("ceti.verify") / "data" / "gpu_models.json").read_text()
    return catalog_from_dict(json.loads(text))
