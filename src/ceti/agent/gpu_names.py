"""Turn the name a driver reports into the short model name the fabric schedules on.

A developer asks for "H100" or "A100-80GB"; NVML says "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe" or
"NVIDIA A100-SXM4-40GB". Form factor (SXM, PCIe) and memory technology (HBM3) do not matter to a job;
memory size does, so families sold with more than one size get a "-<N>GB" suffix. The size comes from the
name when the name says it, otherwise from the VRAM NVML reports (an H100 PCIe has no size in its name).

Unknown cards fall back to the name with vendor words removed, so a new card still gets a stable,
readable model before someone adds it to the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GPUFamily:
    pattern: re.Pattern[str]  # matched against the upper-cased driver name
    model: str
    sizes_gb: tuple[int, ...] = ()  # marketed memory sizes; a suffix is added when there are several


def _family(pattern: str, model: str, *sizes_gb: int) -> GPUFamily:
    return GPUFamily(re.compile(pattern), model, sizes_gb)


# First match wins. Word boundaries keep "A10" from matching "A100" and "H200" from matching "GH200".
FAMILIES: tuple[GPUFamily, ...] = (
    _family(r"\bGB200\b", "GB200", 186, 192),
    _family(r"\bGH200\b", "GH200", 96, 144),
    _family(r"\bB200\b", "B200", 180, 192),
    _family(r"\bB100\b", "B100"),
    _family(r"\bH200\b", "H200"),
    _family(r"\bH100\b", "H100", 80, 94),
    _family(r"\bH800\b", "H800", 80),
    _family(r"\bH20\b", "H20"),
    _family(r"\bA100\b", "A100", 40, 80),
    _family(r"\bA800\b", "A800", 40, 80),
    _family(r"\bL40S\b", "L40S"),
    _family(r"\bL40\b", "L40"),
    _family(r"\bL20\b", "L20"),
    _family(r"\bL4\b", "L4"),
    _family(r"\bA40\b", "A40"),
    _family(r"\bA30\b", "A30"),
    _family(r"\bA16\b", "A16"),
    _family(r"\bA10G\b", "A10G"),
    _family(r"\bA10\b", "A10"),
    _family(r"\bA2\b", "A2"),
    _family(r"\bT4\b", "T4"),
    _family(r"\bV100S\b", "V100S"),
    _family(r"\bV100\b", "V100", 16, 32),
    _family(r"\bP100\b", "P100", 12, 16),
    _family(r"\bP40\b", "P40"),
    _family(r"\bP4\b", "P4"),
    _family(r"\bK80\b", "K80"),
    _family(r"\bM60\b", "M60"),
)

# GeForce, RTX workstation and Quadro cards: "RTX" / "GTX" + number + modifiers, e.g. "RTX4090", "RTXA6000",
# "RTX6000Ada", "RTX3080Ti".
_CONSUMER = re.compile(r"\b(RTX|GTX|TITAN)\s*(A?\d{3,4}|RTX|V|XP|X)?\b(.*)")
_MODIFIERS = {"TI": "Ti", "SUPER": "Super", "ADA": "Ada", "D": "D", "SFF": "SFF", "LAPTOP": "Laptop"}

_SIZE_IN_NAME = re.compile(r"(\d{1,4})\s*GB\b")
_NOISE_WORDS = {"NVIDIA", "TESLA", "GEFORCE", "QUADRO", "GPU", "GENERATION"}
_NOISE_PARTS = re.compile(r"^(PCIE|SXM\d*|HBM\d*E?|\d{1,4}GB)$")

UNKNOWN_MODEL = "unknown"


def normalize_gpu_model(name: str, vram_mib: int | None = None) -> str:
    """The fabric's model name for a driver-reported GPU name, e.g. "NVIDIA H100 80GB HBM3" -> "H100-80GB"."""
    upper = " ".join(name.upper().replace("_", " ").split())
    if not upper:
        return UNKNOWN_MODEL
    for family in FAMILIES:
        if family.pattern.search(upper):
            return _with_size(family, upper, vram_mib)
    consumer = _CONSUMER.search(upper)
    if consumer:
        kind, number, rest = consumer.group(1), consumer.group(2) or "", consumer.group(3)
        modifiers = "".join(_MODIFIERS.get(word, "") for word in re.split(r"[\s-]+", rest))
        return f"{kind}{number}{modifiers}" if kind != "TITAN" else f"Titan{number}{modifiers}"
    return _fallback(upper)


def _with_size(family: GPUFamily, upper: str, vram_mib: int | None) -> str:
    if len(family.sizes_gb) < 2:
        return family.model
    # A size in the name counts only when it is one of the family's: "GH200 480GB" names the superchip's
    # combined memory, not the GPU's.
    named = [int(gb) for gb in _SIZE_IN_NAME.findall(upper) if int(gb) in family.sizes_gb]
    if named:
        return f"{family.model}-{named[0]}GB"
    if vram_mib:
        # Cards report a little less than the marketed size (an 80 GB H100 reports 81559 MiB, about 79.6 GiB):
        # the nearest marketed size is the one.
        gib = vram_mib / 1024
        size = min(family.sizes_gb, key=lambda gb: abs(gb - gib))
        return f"{family.model}-{size}GB"
    return family.model


def _fallback(upper: str) -> str:
    words = [
        w for w in re.split(r"[\s-]+", upper) if w and w not in _NOISE_WORDS and not _NOISE_PARTS.match(w)
    ]
    model = "-".join(re.sub(r"[^A-Z0-9.]", "", w) for w in words).strip("-")
    model = re.sub(r"-{2,}", "-", model)
    if not model:
        return UNKNOWN_MODEL
    named = _SIZE_IN_NAME.search(upper)
    if named:
        model = f"{model}-{int(named.group(1))}GB"
    return model[:128]
