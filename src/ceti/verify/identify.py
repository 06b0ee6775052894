"""Which model the server's own timing and the reported VRAM fit: the timing gate and model identification.

Expected seconds for a lane on a model = arithmetic at (datasheet peak × efficiency) for each pass, plus
allowances the agent's GPU does not control: hashing C's rows on the agent's CPU, copying C off the device,
and a fixed network/start-up overhead. The slack multiplies the arithmetic only, so the allowances give a
slower card no extra room in proportion.

The gate, per lane:
- slower than slack × arithmetic + allowances: the card is slower than the claim (`mismatch`);
- faster than `fast_margin` × the time at 100 % of the best exact peak (no allowances): faster than the claimed
  card could be, so it is another card (`mismatch`); a provider may under-claim only within the table's figures;
- otherwise the timing fits.

Known limit: the entries are exact in FP16, so a card may run the FP32 pass on its FP16 tensor cores (twice
its TF32 rate). The gate rates the FP32 pass at TF32, so such a card gains up to 2× there; across generations
(A100 FP16 312 vs H100 TF32 495 TFLOPS) that stays outside the slack, within a generation it is covered by
VRAM. Measured factors from real GPUs should replace `efficiency` and tighten `timing_slack`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ceti.verify.catalog import CPU_MODEL, Catalog, GPUModel
from ceti.verify.challenge import Lane, VerifyPolicy, lane_work


@dataclass(frozen=True)
class LaneTiming:
    compute_s: float  # arithmetic at peak × efficiency
    allowance_s: float  # hashing, copy, overhead
    fastest_s: float  # arithmetic at 100 % of the best exact peak

    @property
    def expected_s(self) -> float:
        return self.compute_s + self.allowance_s

    def upper_s(self, policy: VerifyPolicy) -> float:
        return self.compute_s * policy.timing_slack + self.allowance_s


def allowance_s(lane: Lane, policy: VerifyPolicy, on_device: bool) -> float:
    work = lane_work(lane.n, lane.m, lane.passes)
    copy = work["c_bytes"] / policy.device_to_host_bytes_per_s if on_device else 0.0
    generate = gpu_generated_bytes(lane) / policy.gpu_generate_bytes_per_s if on_device else 0.0
    return work["c_bytes"] / policy.agent_hash_bytes_per_s + copy + generate + policy.overhead_s


def gpu_generated_bytes(lane: Lane) -> float:
    """Bytes a GPU writes before it can answer: A and B in FP32, again in FP16 for the tensor pass (generated
    afresh, see compute), and the memory fill."""
    ab = 2.0 * lane.n * lane.m
    return ab * 4 + (ab * 2 if "fp16" in lane.passes else 0.0) + lane.chunk_bytes * lane.chunk_count


def gpu_timing(lane: Lane, model: GPUModel, catalog: Catalog, policy: VerifyPolicy) -> LaneTiming:
    flops = lane_work(lane.n, lane.m, lane.passes)["flops_per_pass"]
    rates = {"fp32": model.fp32_pass_tflops, "fp16": model.fp16_tflops}
    compute = sum(flops / (rates[p] * 1e12 * catalog.efficiency) for p in lane.passes)
    best = max(model.fp16_tflops, model.fp32_pass_tflops) if model.tensor_cores else model.fp32_pass_tflops
    fastest = sum(flops / (best * 1e12) for _ in lane.passes)
    return LaneTiming(compute, allowance_s(lane, policy, on_device=True), fastest)


def cpu_timing(lane: Lane, cpus: int, catalog: Catalog, policy: VerifyPolicy) -> LaneTiming:
    """A CPU lane: FP32 GEMM at the floor rate per claimed core; there is no 'too fast' for a CPU."""
    flops = lane_work(lane.n, lane.m, lane.passes)["flops_per_pass"] * len(lane.passes)
    compute = flops / (max(1, cpus) * catalog.cpu_gflops_per_core_floor * 1e9)
    generated = 4 * 2 * lane.n * lane.m + lane.chunk_bytes * lane.chunk_count
    generate_s = generated / policy.cpu_generate_bytes_per_s
    return LaneTiming(compute, allowance_s(lane, policy, on_device=False) + generate_s, 0.0)


def vram_fits(model: GPUModel, vram_mib: int, policy: VerifyPolicy) -> bool:
    return abs(vram_mib - model.vram_mib) <= policy.vram_tolerance * model.vram_mib


@dataclass(frozen=True)
class LaneFit:
    """How one lane's evidence compares with its claim, and which model it fits best."""

    claimed_fits: bool
    model_estimate: str
    reason: str
    evidence: dict


def identify_lane(
    lane: Lane, measured_s: float, catalog: Catalog, policy: VerifyPolicy, cpus: int = 1
) -> LaneFit:
    """Pure: the claim, the server-measured seconds and the VRAM reported for the lane -> a fit."""
    work = lane_work(lane.n, lane.m, lane.passes)
    evidence: dict = {"measured_s": round(measured_s, 6), "n": lane.n, "m": lane.m, "passes": list(lane.passes)}
    if lane.claimed_model.lower() == CPU_MODEL:
        t = cpu_timing(lane, cpus, catalog, policy)
        compute_s = max(measured_s - t.allowance_s, 1e-9)
        gflops = work["flops_per_pass"] * len(lane.passes) / compute_s / 1e9
        evidence.update(expected_s=round(t.expected_s, 6), upper_s=round(t.upper_s(policy), 6),
                        measured_gflops=round(gflops, 3), claimed_cpus=cpus)
        if measured_s > t.upper_s(policy):
            return LaneFit(False, CPU_MODEL, f"slower than {cpus} cores at the floor rate", evidence)
        return LaneFit(True, CPU_MODEL, "timing fits the claimed cores", evidence)

    claimed_rows = catalog.for_claim(lane.claimed_model)
    # Which models the timing fits (any VRAM), and which the reported VRAM fits.
    fits = []
    for model in catalog.models:
        t = gpu_timing(lane, model, catalog, policy)
        if t.fastest_s * policy.fast_margin <= measured_s <= t.upper_s(policy):
            fits.append((abs(math.log(max(measured_s, 1e-12) / t.expected_s)), model, t))
    fits.sort(key=lambda f: f[0])
    by_vram = [m for m in catalog.models if vram_fits(m, lane.claimed_vram_mib, policy)]
    evidence["timing_fits"] = [f[1].id for f in fits]
    evidence["vram_fits"] = [m.id for m in by_vram]
    evidence["claimed_vram_mib"] = lane.claimed_vram_mib
    for model in claimed_rows:
        t = gpu_timing(lane, model, catalog, policy)
        evidence.setdefault("expected_s", {})[model.id] = round(t.expected_s, 6)
        evidence.setdefault("window_s", {})[model.id] = [round(t.fastest_s * policy.fast_margin, 6),
                                                          round(t.upper_s(policy), 6)]

    good = [f for f in fits if f[1] in claimed_rows and f[1] in by_vram]
    if good:
        return LaneFit(True, good[0][1].id, "timing and VRAM fit the claimed model", evidence)
    both = [f[1].id for f in fits if f[1] in by_vram]
    if both:
        estimate = both[0]
    elif fits:
        estimate = fits[0][1].id
    else:
        slowest_upper = min(gpu_timing(lane, m, catalog, policy).upper_s(policy) for m in catalog.models)
        estimate = CPU_MODEL if measured_s > slowest_upper else "unknown"
    claimed_ids = {m.id for m in claimed_rows}
    if not any(m in by_vram for m in claimed_rows):
        reason = f"reported VRAM {lane.claimed_vram_mib} MiB does not fit {lane.claimed_model}"
    elif not any(f[1].id in claimed_ids for f in fits):
        t = gpu_timing(lane, claimed_rows[0], catalog, policy)
        side = "slower" if measured_s > t.upper_s(policy) else "faster"
        reason = f"{measured_s:.3f} s is {side} than {lane.claimed_model} allows"
    else:
        reason = "timing and VRAM fit different models"
    return LaneFit(False, estimate, reason, evidence)
