"""The whole protocol on this machine's CPU: an honest node verifies, cheats and bad input are refused."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import random

import numpy as np
import pytest

from ceti.spec.node import GPUInfo
from ceti.verify.challenge import ClaimedHardware, VerifyPolicy
from ceti.verify.compute import PASS_TAG, AgentRun, roots_answer, row_leaves, rows_answer, run_challenge
from ceti.verify.merkle import MerkleTree
from ceti.verify.uuids import uuid_flags
from ceti.verify.verifier import Verdict, Verifier, catch_probability

MIB = 1024 * 1024
POLICY = VerifyPolicy(cpu_budget_mib=2, max_matrix_bytes=2 * MIB, max_fill_bytes=MIB, chunk_bytes=64 * 1024,
                      overhead_s=0.05)
H100 = GPUInfo(index=0, model="H100-80GB", name="NVIDIA H100 80GB HBM3", vram_mib=81559, uuid="GPU-aaa")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _verifier(clock: FakeClock | None = None, seed: int = 1) -> Verifier:
    rng = random.Random(seed)
    return Verifier(POLICY, clock=clock, randbits=rng.getrandbits, randbelow=rng.randrange)


def _cpu_round(v: Verifier, clock: FakeClock | None = None, compute_s: float = 0.01):
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    run = run_challenge(session.challenge, backend="numpy")
    if clock is not None:
        clock.now += compute_s
    after = v.receive_roots(roots_answer(run))
    assert not isinstance(after, Verdict) and after.row_request is not None
    return session, run, after


def test_honest_cpu_node_verifies_with_the_real_clock() -> None:
    # a tiny challenge is dominated by fixed costs (thread start-up, a busy test machine): room for those
    v = Verifier(dataclasses.replace(POLICY, overhead_s=1.0))
    _, run, after = _cpu_round(v)
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "verified", verdict.reason
    assert verdict.model_estimate == "cpu"
    json.dumps(verdict.model_dump())  # the evidence is JSON-able


def test_cpu_node_claiming_h100_is_never_verified() -> None:
    v = Verifier(POLICY)
    session = v.issue("node-1", ClaimedHardware(gpus=(H100,)))
    run = run_challenge(session.challenge, backend="numpy")
    after = v.receive_roots(roots_answer(run))
    verdict = after if isinstance(after, Verdict) else after.verdict or v.receive_rows(
        rows_answer(run, after.row_request))
    assert verdict.verdict in ("mismatch", "failed")
    # slower than the card allows (a mismatch: it is a CPU), or, when this busy machine happened to be quick
    # enough for the tiny capped challenge, refused because the challenge covered too little of the VRAM
    assert verdict.model_estimate == "cpu" or "less than 90%" in verdict.reason, verdict.reason


def test_rows_are_picked_only_after_the_roots() -> None:
    v = _verifier()
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    assert session.row_request is None
    assert "rows" not in json.dumps(session.challenge.model_dump())


def test_seeds_are_fresh_and_64_bit() -> None:
    v = Verifier(POLICY)
    seeds = [v.issue(f"n{i}", ClaimedHardware(gpus=(H100, H100.model_copy(update={"index": 1}))))
             .challenge.lanes for i in range(20)]
    flat = [lane.seed for lanes in seeds for lane in lanes]
    assert len(set(flat)) == len(flat)
    assert all(len(s) == 16 for s in flat)


def test_colliding_randomness_is_drawn_again() -> None:
    values = iter([5, 6, 7] * 2 + list(range(100, 200)))
    v = Verifier(POLICY, randbits=lambda bits: next(values))
    first = v.issue("a", ClaimedHardware(cpus=1))
    second = v.issue("b", ClaimedHardware(cpus=1))
    assert first.challenge.lanes[0].seed != second.challenge.lanes[0].seed


def test_wrong_root_is_caught() -> None:
    v = _verifier()
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    run = run_challenge(session.challenge, backend="numpy")
    roots = roots_answer(run)
    roots["lanes"][0]["roots"]["fp32"] = "0" * 64
    after = v.receive_roots(roots)
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed" and "Merkle" in verdict.reason


def test_wrong_rows_committed_consistently_are_caught() -> None:
    """A node that builds an honest-looking tree over a wrong C (e.g. a cheap approximation)."""
    v = _verifier()
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    run = run_challenge(session.challenge, backend="numpy")
    lane = run.lanes[0]
    wrong = lane.c_rows["fp32"].copy()
    wrong += 0.25  # every value off by one product's worth
    lane.c_rows["fp32"] = wrong
    lane.trees["fp32"] = MerkleTree(row_leaves(wrong, "fp32"))
    after = v.receive_roots(roots_answer(run))
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed" and "values wrong" in verdict.reason


def test_forged_path_and_flipped_bit_are_caught() -> None:
    for tamper in ("path", "bit"):
        v = _verifier()
        _, run, after = _cpu_round(v)
        answer = rows_answer(run, after.row_request)
        proof = answer["lanes"][0]["rows"]["fp32"][0]
        if tamper == "path":
            proof["path"][0] = "f" * 64
        else:
            raw = bytearray(base64.b64decode(proof["data"]))
            raw[5] ^= 0x01
            proof["data"] = base64.b64encode(bytes(raw)).decode()
        verdict = v.receive_rows(answer)
        assert verdict.verdict == "failed" and "Merkle" in verdict.reason


def test_partial_computation_is_caught() -> None:
    """Half the rows computed, the rest garbage: caught unless every picked row is a computed one."""
    v = _verifier(seed=4)
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    run = run_challenge(session.challenge, backend="numpy")
    c = run.lanes[0].c_rows["fp32"]
    c[c.shape[0] // 2 :] = 0.0
    run.lanes[0].trees["fp32"] = MerkleTree(row_leaves(c, "fp32"))
    after = v.receive_roots(roots_answer(run))
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed"


def test_wrong_memory_digest_is_caught() -> None:
    v = _verifier()
    _, run, after = _cpu_round(v)
    answer = rows_answer(run, after.row_request)
    answer["lanes"][0]["chunks"][0]["digest"] = "0" * 64
    verdict = v.receive_rows(answer)
    assert verdict.verdict == "failed" and "memory" in verdict.reason


def test_replayed_and_unknown_answers_are_refused() -> None:
    clock = FakeClock()  # the verdict must not hang on how busy this machine is
    v = _verifier(clock)
    _, run, after = _cpu_round(v, clock)
    rows = rows_answer(run, after.row_request)
    assert v.receive_rows(rows).verdict == "verified"
    assert v.receive_rows(rows).reason.startswith("replayed")
    assert v.receive_roots(roots_answer(run)).reason.startswith("replayed")
    # an answer to an old challenge sent for a new one
    v.issue("node-1", ClaimedHardware(cpus=2))
    assert v.receive_roots(roots_answer(run)).verdict == "failed"
    assert v.receive_roots({"challenge_id": "f" * 32, "lanes": []}).reason == "unknown challenge id"
    assert v.receive_roots(b"\xff not json").reason == "unknown challenge id"


def test_roots_after_the_deadline_are_a_timeout() -> None:
    clock = FakeClock()
    v = _verifier(clock)
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    run = run_challenge(session.challenge, backend="numpy")
    clock.now += session.challenge.deadline_s + 1
    after = v.receive_roots(roots_answer(run))
    assert after.verdict.verdict == "failed" and "timeout" in after.verdict.reason


def test_rows_after_the_row_timeout_are_a_timeout() -> None:
    clock = FakeClock()
    v = _verifier(clock)
    _, run, after = _cpu_round(v, clock)
    clock.now += POLICY.rows_timeout_s + 1
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed" and "too late" in verdict.reason


def test_slow_node_is_a_mismatch_not_verified() -> None:
    """Computing the rows on demand after the fact takes time: a claimed GPU too slow for its model."""
    clock = FakeClock()
    v = Verifier(VerifyPolicy(max_matrix_bytes=2 * MIB, max_fill_bytes=MIB, chunk_bytes=64 * 1024,
                              overhead_s=0.0), clock=clock)
    session = v.issue("node-1", ClaimedHardware(gpus=(H100,)))
    run = run_challenge(session.challenge, backend="numpy")
    clock.now += session.challenge.deadline_s / 2
    after = v.receive_roots(roots_answer(run))
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "mismatch" and "slower" in verdict.reason


@pytest.mark.parametrize("answer", [
    None, 42, [], "{", {"challenge_id": 5}, {"lanes": "x"},
    {"challenge_id": "x", "lanes": [{"lane": 0, "roots": {"fp32": "zz"}}], "extra": 1},
])
def test_malformed_roots_are_failed_not_a_crash(answer) -> None:
    v = _verifier()
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    if isinstance(answer, dict) and answer.get("challenge_id") == "x":
        answer["challenge_id"] = session.challenge.challenge_id
    result = v.receive_roots(answer)
    verdict = result if isinstance(result, Verdict) else result.verdict
    assert verdict is not None and verdict.verdict == "failed"


def test_malformed_and_oversized_rows_are_failed() -> None:
    for kind in ("oversized", "bad_base64", "missing_rows", "short_row"):
        v = _verifier()
        _, run, after = _cpu_round(v)
        answer = rows_answer(run, after.row_request)
        proofs = answer["lanes"][0]["rows"]["fp32"]
        if kind == "oversized":
            proofs[0]["data"] = "A" * (64 * MIB)
        elif kind == "bad_base64":
            proofs[0]["data"] = "!!!"
        elif kind == "missing_rows":
            proofs.pop()
        else:
            proofs[0]["data"] = base64.b64encode(b"\x00" * 8).decode()
        verdict = v.receive_rows(answer)
        assert verdict.verdict == "failed", kind


def test_agent_that_cannot_hold_the_challenge_fails() -> None:
    v = Verifier(VerifyPolicy())  # full size: 90 % of 80 GB
    session = v.issue("node-1", ClaimedHardware(gpus=(H100,)))
    # the host memory is stated, not read: on a machine with more than the challenge needs, it would run
    run = run_challenge(session.challenge, backend="numpy", available_bytes=8 * 1024 * MIB)
    assert run.error is not None
    after = v.receive_roots(roots_answer(run))
    assert after.verdict.verdict == "failed" and "could not run" in after.verdict.reason


def test_claimed_model_outside_the_table_fails_at_once() -> None:
    v = _verifier()
    gpu = H100.model_copy(update={"model": "Z9000"})
    session = v.issue("node-1", ClaimedHardware(gpus=(gpu,)))
    assert session.verdict is not None and session.verdict.verdict == "failed"
    assert "not in the table" in session.verdict.reason


def test_full_size_challenge_fills_the_claimed_vram() -> None:
    v = Verifier(VerifyPolicy())
    lane = v.issue("n", ClaimedHardware(gpus=(H100,))).challenge.lanes[0]
    vram = H100.vram_mib * MIB
    assert 0.75 * vram <= 4 * (2 * lane.n * lane.m + lane.n**2) <= 0.85 * vram
    assert lane.chunk_count * lane.chunk_bytes >= 0.9 * vram
    assert lane.passes == ["fp32", "fp16"]


def test_flagged_uuid_is_never_verified() -> None:
    rng = random.Random(2)
    v = Verifier(POLICY, randbits=rng.getrandbits, randbelow=rng.randrange)
    session = v.issue("node-1", ClaimedHardware(cpus=2), uuid_flags=["UUID GPU-aaa is also reported by node-2"])
    run = run_challenge(session.challenge, backend="numpy")
    after = v.receive_roots(roots_answer(run))
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed" and "UUID" in verdict.reason


def test_uuid_pinning_flags() -> None:
    g0 = GPUInfo(index=0, model="T4", vram_mib=15360, uuid="GPU-1")
    g1 = GPUInfo(index=1, model="T4", vram_mib=15360, uuid="GPU-2")
    assert uuid_flags("n1", [g0, g1], ["GPU-1", "GPU-2"], {"GPU-1": "n1"}) == []
    assert uuid_flags("n1", [g0, g1], [], {}) == []
    assert any("changed" in f for f in uuid_flags("n1", [g0, g1.model_copy(update={"uuid": "GPU-9"})],
                                                   ["GPU-1", "GPU-2"], {}))
    assert any("node n2" in f for f in uuid_flags("n1", [g0], [], {"GPU-1": "n2"}))
    assert any("twice" in f for f in uuid_flags("n1", [g0, g1.model_copy(update={"uuid": "GPU-1"})], [], {}))
    assert any("no UUID" in f for f in uuid_flags("n1", [g0.model_copy(update={"uuid": ""})], [], {}))


def test_catch_probability_formula() -> None:
    assert catch_probability(8, 0.5) == pytest.approx(1 - 0.5**8)
    assert catch_probability(8, 1.0) == 0.0
    assert catch_probability(1, 0.0) == 1.0
    assert catch_probability(2, 0.5, n_rows=4) == pytest.approx(1 - (2 / 4) * (1 / 3))
    assert catch_probability(8, 0.9, n_rows=10**6) == pytest.approx(1 - 0.9**8, rel=1e-3)


def test_catch_probability_matches_experiment_with_small_k() -> None:
    """k = 2 rows of 16, half computed: theory 1 - (8/16)(7/15) = 0.767; the verifier's own row picks agree."""
    rng = random.Random(11)
    from ceti.verify.verifier import _pick

    n, k, computed = 16, 2, set(range(8))
    trials = 3000
    caught = sum(any(r not in computed for r in _pick(n, k, rng.randrange)) for _ in range(trials))
    assert caught / trials == pytest.approx(catch_probability(k, 0.5, n_rows=n), abs=0.03)


def test_fp16_pass_verifies_with_rounded_values() -> None:
    """An H100-shaped lane computed on the CPU: the FP16 rows are the rounded exact product and pass."""
    v = Verifier(VerifyPolicy(max_matrix_bytes=MIB, max_fill_bytes=MIB, chunk_bytes=64 * 1024,
                              overhead_s=1e6, min_vram_coverage=0.0))  # only the values are checked here
    session = v.issue("node-1", ClaimedHardware(gpus=(H100,)))
    run: AgentRun = run_challenge(session.challenge, backend="numpy")
    after = v.receive_roots(roots_answer(run))
    answer = rows_answer(run, after.row_request)
    assert answer["lanes"][0]["rows"]["fp16"]
    verdict = v.receive_rows(copy.deepcopy(answer))
    assert "values wrong" not in verdict.reason and verdict.verdict != "failed"
    # an FP16 row off by more than the tolerance fails
    lane = run.lanes[0]
    c = lane.c_rows["fp16"].astype(np.float32)
    c += 64.0
    lane.c_rows["fp16"] = c.astype(np.float16)
    lane.trees["fp16"] = MerkleTree(row_leaves(lane.c_rows["fp16"], "fp16"))
    v2 = Verifier(v.policy)
    s2 = v2.issue("node-1", ClaimedHardware(gpus=(H100,)))
    assert PASS_TAG["fp16"] == b"f16" and s2.challenge.lanes[0].passes == ["fp32", "fp16"]


def test_a_capped_challenge_never_verifies_a_gpu_even_when_the_timing_fits() -> None:
    """A challenge capped far below the claimed VRAM is done in microseconds by anything: timing that fits the
    claimed card then proves nothing, so the verdict is `failed`, never `verified`."""
    from ceti.verify.catalog import load_catalog
    from ceti.verify.identify import gpu_timing

    clock = FakeClock()
    v = _verifier(clock)
    session = v.issue("node-1", ClaimedHardware(gpus=(H100,)))
    run = run_challenge(session.challenge, backend="numpy")
    catalog = load_catalog()
    lane = session.challenge.lanes[0]
    clock.now += gpu_timing(lane, catalog.for_claim("H100-80GB")[0], catalog, POLICY).expected_s  # a perfect fit
    after = v.receive_roots(roots_answer(run))
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed" and "less than 90%" in verdict.reason, verdict.reason


def test_a_challenge_larger_than_the_memory_the_caller_measured_is_answered_with_an_error() -> None:
    v = _verifier()
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    run = run_challenge(session.challenge, backend="numpy", available_bytes=1024)
    assert run.error is not None and "MiB available" in run.error and not run.lanes
    assert "error" in roots_answer(run)


def test_rows_are_checked_at_columns_the_agent_never_sees() -> None:
    from ceti.verify.verifier import exact_entries, exact_rows

    policy = VerifyPolicy(cpu_budget_mib=2, max_matrix_bytes=2 * MIB, max_fill_bytes=MIB, chunk_bytes=64 * 1024,
                          overhead_s=0.05, columns_checked=16)
    clock = FakeClock()
    rng = random.Random(3)
    v = Verifier(policy, clock=clock, randbits=rng.getrandbits, randbelow=rng.randrange)
    session = v.issue("node-1", ClaimedHardware(cpus=2))
    lane = session.challenge.lanes[0]
    assert lane.n > 16
    cols = [0, 5, lane.n - 1]
    assert np.array_equal(exact_entries(lane, [1, 7], cols, panel_bytes=4096),
                          exact_rows(lane, [1, 7])[:, cols])

    run = run_challenge(session.challenge, backend="numpy")
    wrong = run.lanes[0].c_rows["fp32"].copy()
    wrong[:, ::2] += 0.25  # half of C faked: saves real work, so it must not pass
    run.lanes[0].c_rows["fp32"] = wrong
    run.lanes[0].trees["fp32"] = MerkleTree(row_leaves(wrong, "fp32"))
    clock.now += 0.01
    after = v.receive_roots(roots_answer(run))
    assert "check_columns" not in json.dumps(after.row_request) and len(after.check_columns[0]) == 16
    verdict = v.receive_rows(rows_answer(run, after.row_request))
    assert verdict.verdict == "failed" and "of 16 checked values wrong" in verdict.reason
