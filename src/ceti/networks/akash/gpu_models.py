"""Akash GPU model names ("h100", "rtx4090", "rtxa6000", "a100" with ram "80Gi") to the fabric's model names.

Akash providers advertise lower-case model names from their own GPU database and tenants ask for them
in the SDL, optionally with a memory size and an interface. The fabric schedules on normalised names
("H100-80GB", "A100-40GB", "RTX4090", "T4"): families sold in several memory sizes carry a "-<N>GB"
suffix. A tenant who names such a family without `ram` accepts every size, so the request widens to all
of them. Unknown names are kept, upper-cased, so a new card still matches a provider that calls it the same.
"""

from __future__ import annotations

import re

# family -> marketed memory sizes in GB (several sizes -> the fabric name carries the size)
_SIZED: dict[str, tuple[int, ...]] = {
    "gb200": (186, 192),
    "gh200": (96, 144),
    "b200": (180, 192),
    "h100": (80, 94),
    "a100": (40, 80),
    "a800": (40, 80),
    "v100": (16, 32),
    "p100": (12, 16),
}
_SINGLE = {
    "b100", "h200", "h800", "h20", "l40s", "l40", "l20", "l4", "a40", "a30", "a16", "a10g", "a10", "a2",
    "t4", "v100s", "p40", "p4", "k80", "m60", "mi300x", "mi250",
}
# workstation cards Akash names without the "rtx" prefix
_WORKSTATION = re.compile(r"^a(2000|4000|4500|5000|5500|6000)(ada)?$")
_CONSUMER = re.compile(r"^(rtx|gtx|titan)[-_ ]?(a?\d{3,4}|rtx|v|xp|x)?[-_ ]?(ti|super|ada|d)?$")
_SIZE_SUFFIX = re.compile(r"^(.*?)[-_ ]?(\d{1,4})gb?$")
_MODIFIERS = {"ti": "Ti", "super": "Super", "ada": "Ada", "d": "D"}


def fabric_gpu_models(akash_model: str, ram_gib: int | None = None) -> list[str]:
    """The fabric model names an Akash `model` (with optional `ram`) admits; a list because a family named
    without a size admits every size."""
    name = akash_model.strip().lower()
    size_in_name = None
    match = _SIZE_SUFFIX.match(name)
    if match and match.group(1) in _SIZED:
        name, size_in_name = match.group(1), int(match.group(2))
    if name in _SIZED:
        size = size_in_name or ram_gib
        if size:
            return [f"{name.upper()}-{size}GB"]
        return [f"{name.upper()}-{gb}GB" for gb in _SIZED[name]]
    if name in _SINGLE:
        return [name.upper()]
    work = _WORKSTATION.match(name)
    if work:
        return [f"RTXA{work.group(1)}" + ("Ada" if work.group(2) else "")]
    consumer = _CONSUMER.match(name)
    if consumer:
        kind, number, modifier = consumer.group(1), consumer.group(2) or "", consumer.group(3)
        suffix = _MODIFIERS.get(modifier or "", "")
        if kind == "titan":
            return [f"Titan{number.upper()}{suffix}"]
        return [f"{kind.upper()}{number.upper()}{suffix}"]
    return [re.sub(r"[^A-Z0-9.+-]", "", name.upper()) or name]
