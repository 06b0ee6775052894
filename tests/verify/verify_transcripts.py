"""Recorded challenge transcripts (synthetic) and their replay through the pure verifier.

No GPU was at hand when these were recorded, so each transcript is built from the table's figures: the rows,
roots and proofs are real (computed with the NumPy path from the recorded seeds), the NVML description follows
the card's real NVML names and sizes, and the server-side seconds are the table's expected time for that card.
Every file says so in its "synthetic" field. Regenerate with `python tests/verify/verify_transcripts.py`.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ceti.spec.node import GPUInfo
from ceti.verify.catalog import load_catalog
from ceti.verify.challenge import ClaimedHardware, VerifyPolicy
from ceti.verify.compute import roots_answer, rows_answer, run_challenge
from ceti.verify.identify import gpu_timing
from ceti.verify.verifier import Session, Verdict, accept_roots, accept_rows, issue

DATA = Path(__file__).parent / "data"
MIB = 1024 * 1024

# Small sizes keep the files and the replay fast; allowances are set so the arithmetic dominates, as it does at
# full size on a real card.
TRANSCRIPT_POLICY = VerifyPolicy(
    max_matrix_bytes=MIB, max_fill_bytes=MIB, chunk_bytes=64 * 1024, overhead_s=0.0,
    agent_hash_bytes_per_s=1e15, device_to_host_bytes_per_s=1e15, gpu_generate_bytes_per_s=1e15,
)
SYNTHETIC_NOTE = (
    "SYNTHETIC: no GPU was available when this was recorded. Rows, roots and proofs are real (NumPy path); "
    "the NVML description follows the card's real names and sizes; the seconds are the table's expected time."
)
_UUIDS = {
    "H100-80GB-SXM": "GPU-5a1c7b2e-90d4-4c6f-8e21-3b7d9f0a6c11",
    "H100-80GB-PCIe": "GPU-0b2e4d6f-8a1c-4e3b-9d5f-7c2a6e8b0d13",
    "H200": "GPU-7e9a1c3b-5d7f-4a2c-8e4b-6f1d3a5c7e15",
    "A100-80GB": "GPU-2c4e6a8b-0d2f-4b1c-a3e5-9f7b1d3c5e17",
    "A100-40GB": "GPU-f099ef01-12cf-4962-95b2-9faf8e82b225",
    "L40S": "GPU-4d6f8b0c-2e4a-4c3d-b5f7-1a9c3e5d7f19",
    "A10": "GPU-6f8b0d2e-4a6c-4d5e-c7a9-3b1e5f7a9b21",
    "A10G": "GPU-8b0d2f4a-6c8e-4e7f-d9b1-5d3a7b9c1d23",
    "L4": "GPU-0d2f4b6c-8e0a-4f9a-e1c3-7f5c9d1e3f25",
    "T4": "GPU-6289194e-c3d5-4f48-83e8-98498bb1d8d3",
    "V100-16GB": "GPU-2f4b6d8e-0a2c-4a1b-f3e5-9b7e1f3a5b27",
    "V100-32GB": "GPU-4b6d8f0a-2c4e-4b3c-a5f7-1d9a3b5c7d29",
    "P100-16GB": "GPU-6d8f0b2c-4e6a-4c5d-b7a9-3f1c5d7e9f31",
    "RTX4090": "GPU-e1c4f580-5f15-45e5-8c35-61e401e788fe",
    "RTX3090": "GPU-8f0b2d4e-6a8c-4d7e-c9b1-5a3e7f9a1b33",
}


def record(model_id: str, seed: int) -> dict[str, Any]:
    catalog = load_catalog()
    model = catalog.by_id(model_id)
    assert model is not None
    rng = random.Random(seed)
    gpu = GPUInfo(index=0, model=model.fabric_model, name=model.nvml_names[0], vram_mib=model.vram_mib,
                  uuid=_UUIDS[model_id])
    session = issue(f"node-{model_id.lower()}", ClaimedHardware(gpus=(gpu,)), 0.0, TRANSCRIPT_POLICY, catalog,
                    randbits=rng.getrandbits)
    run = run_challenge(session.challenge, backend="numpy")
    roots = roots_answer(run)
    seconds = gpu_timing(session.challenge.lanes[0], model, catalog, TRANSCRIPT_POLICY).expected_s
    after = accept_roots(session, roots, seconds, TRANSCRIPT_POLICY, randbelow=rng.randrange)
    assert after.row_request is not None
    return {
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "model": model_id,
        "nvml": {
            "description": f"1x {model.nvml_names[0]}, NVML fields as the driver reports them (synthetic)",
            "driver_version": "550.54.14",
            "gpus": [{"index": 0, "name": model.nvml_names[0], "memory_total_bytes": model.vram_mib * MIB,
                      "uuid": gpu.uuid, "pci_bus_id": "00000000:01:00.0"}],
        },
        "policy": asdict(TRANSCRIPT_POLICY),
        "challenge": session.challenge.model_dump(),
        "roots_after_s": seconds,
        "roots": roots,
        "row_request": after.row_request,
        "rows_after_s": seconds + 0.05,
        "rows": rows_answer(run, after.row_request),
    }


def load(model_id: str) -> dict[str, Any]:
    return json.loads((DATA / f"transcript-{model_id}.json").read_text())


def replay(t: dict[str, Any], uuid_flags: list[str] | None = None) -> Verdict:
    """The verdict the server gives this transcript (the recorded row request stands in for the random pick)."""
    policy = VerifyPolicy(**t["policy"])
    session = Session(state="issued", challenge=t["challenge"], issued_at_s=0.0, uuid_flags=uuid_flags or [])
    session = accept_roots(session, t["roots"], t["roots_after_s"], policy)
    if session.verdict is not None:
        return session.verdict
    session = session.model_copy(update={"row_request": t["row_request"]})
    session = accept_rows(session, t["rows"], t["rows_after_s"], policy)
    assert session.verdict is not None
    return session.verdict


def tampered(t: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(t)


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    for i, model_id in enumerate(_UUIDS):
        path = DATA / f"transcript-{model_id}.json"
        path.write_text(json.dumps(record(model_id, 1000 + i), indent=1) + "\n")
        print(path, path.stat().st_size)
