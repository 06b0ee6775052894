"""Recorded (synthetic) transcripts map to their models; tampered copies are refused. The CLI on this machine."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner
from verify_transcripts import _UUIDS, load, replay

from ceti.cli.verify import app
from ceti.verify.catalog import load_catalog
from ceti.verify.uuids import uuid_flags

MODELS = list(_UUIDS)


def test_catalog_covers_the_required_models_with_sources() -> None:
    catalog = load_catalog()
    for model_id in [*MODELS]:
        m = catalog.by_id(model_id)
        assert m is not None and m.source.startswith("https://") and m.fp32_tflops > 0 and m.vram_mib > 0
    assert catalog.knows("cpu") and catalog.knows("H100-80GB") and not catalog.knows("Z9000")
    assert 0 < catalog.efficiency <= 1


@pytest.mark.parametrize("model_id", MODELS)
def test_transcript_maps_to_its_model(model_id: str) -> None:
    t = load(model_id)
    assert t["synthetic"] is True and "SYNTHETIC" in t["note"]
    verdict = replay(t)
    assert verdict.verdict == "verified", verdict.reason
    assert verdict.model_estimate == model_id


@pytest.mark.parametrize("model_id", ["H100-80GB-SXM", "A100-80GB", "T4", "RTX4090"])
def test_tampered_transcripts_are_refused(model_id: str) -> None:
    # renamed card: a slower card's recording presented as an H100
    renamed = load("A100-80GB")
    renamed["challenge"]["lanes"][0]["claimed_model"] = "H100-80GB"
    assert replay(renamed).verdict == "mismatch"
    assert replay(renamed).model_estimate == "A100-80GB"

    short = load(model_id)
    short["challenge"]["lanes"][0]["claimed_vram_mib"] = int(short["challenge"]["lanes"][0]["claimed_vram_mib"] * 0.7)
    assert replay(short).verdict == "mismatch" and "VRAM" in replay(short).reason

    slow = load(model_id)
    slow["roots_after_s"] *= 5
    slow["rows_after_s"] = slow["roots_after_s"] + 0.05
    assert replay(slow).verdict in ("mismatch", "failed")

    flipped = load(model_id)
    proof = flipped["rows"]["lanes"][0]["rows"]["fp32"][0]
    raw = bytearray(base64.b64decode(proof["data"]))
    raw[0] ^= 0x80
    proof["data"] = base64.b64encode(bytes(raw)).decode()
    assert replay(flipped).verdict == "failed"

    replayed = load(model_id)  # the answer to an earlier challenge (its nonce and id) for a new one
    other = load("L4" if model_id != "L4" else "T4")
    replayed["roots"]["challenge_id"] = other["challenge"]["challenge_id"]
    assert replay(replayed).verdict == "failed"

    t = load(model_id)
    gpu = t["nvml"]["gpus"][0]
    from ceti.spec.node import GPUInfo

    flags = uuid_flags("node-x", [GPUInfo(index=0, model=model_id, vram_mib=gpu["memory_total_bytes"] >> 20,
                                          uuid=gpu["uuid"])], [], {gpu["uuid"]: "node-y"})
    assert flags and replay(t, uuid_flags=flags).verdict == "failed"


def test_cli_cpu_verifies_and_h100_does_not() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["run", "--claimed-model", "cpu", "--json", "--budget-mib", "8"])
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.output)
    assert set(out) == {"verdict", "model_estimate", "seconds", "reason", "phases"}
    assert {"generate", "gemm_fp32", "hash", "fill"} <= set(out["phases"])
    h100 = json.loads(runner.invoke(app, ["run", "--claimed-model", "H100-80GB", "--json", "--budget-mib", "8"]).output)
    assert h100["verdict"] in ("mismatch", "failed")
    unknown = json.loads(runner.invoke(app, ["run", "--claimed-model", "Z9000", "--json"]).output)
    assert unknown["verdict"] == "failed" and "not in the table" in unknown["reason"]
    table = runner.invoke(app, ["run", "--claimed-model", "cpu", "--budget-mib", "8"])
    assert table.exit_code == 0 and "verdict" in table.output
