"""The server's side of the protocol as a state machine: issue -> roots -> rows -> verdict.

Every step is a pure function of the session, the answer and `now_s` (the server's clock, injected), and returns
a new session; the session serialises to JSON (`model_dump`) so any server replica can take the next step.
Randomness (seeds, the rows and chunks picked) is injected too, and comes from `secrets` by default.

Order matters: the rows and chunks to check are picked only once the roots are in, so an agent cannot know them
while it computes. Time is only ever the server's: from issuing the challenge to receiving the roots.

A verdict is never `verified` by default: anything malformed, late, unknown, replayed, oversized or outside the
table is `failed`, with the reason and the evidence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ceti.verify.catalog import CPU_MODEL, Catalog, load_catalog
from ceti.verify.challenge import Challenge, ClaimedHardware, Lane, VerifyPolicy, issue_challenge
from ceti.verify.compute import PASS_TAG
from ceti.verify.identify import cpu_timing, gpu_timing, identify_lane
from ceti.verify.merkle import leaf_digest, verify_proof
from ceti.verify.prng import (
    STREAM_A,
    STREAM_B,
    STREAM_FILL,
    VALUE_OFFSET,
    VALUES_PER_WORD,
    fill_chunk,
    matrix_panel,
    matrix_rows,
    stream_key,
    words,
)

VerdictKind = Literal["verified", "mismatch", "failed"]
_HEX64 = r"^[0-9a-f]{64}$"


class Verdict(BaseModel):
    verdict: VerdictKind
    model_estimate: str | None = None
    seconds: float | None = None
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)


# --- answers (what the agent may send; anything else is malformed) ----------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LaneRoots(_Strict):
    lane: int = Field(..., ge=0, le=255)
    roots: dict[Literal["fp32", "fp16"], str] = Field(..., max_length=2)


class RootsAnswer(_Strict):
    challenge_id: str = Field(..., max_length=64)
    lanes: list[LaneRoots] = Field(default_factory=list, max_length=256)
    error: str | None = Field(None, max_length=1000)


class RowProof(_Strict):
    row: int = Field(..., ge=0)
    data: str
    path: list[str] = Field(..., max_length=64)


class ChunkDigest(_Strict):
    chunk: int = Field(..., ge=0)
    digest: str = Field(..., max_length=64)


class LaneRows(_Strict):
    lane: int = Field(..., ge=0, le=255)
    rows: dict[Literal["fp32", "fp16"], list[RowProof]] = Field(default_factory=dict)
    chunks: list[ChunkDigest] = Field(default_factory=list, max_length=1024)


class RowsAnswer(_Strict):
    challenge_id: str = Field(..., max_length=64)
    lanes: list[LaneRows] = Field(default_factory=list, max_length=256)


# --- the session ------------------------------------------------------------------------------------------


class Session(BaseModel):
    """Everything the server knows about one challenge; stored between steps."""

    state: Literal["issued", "awaiting_rows", "done"]
    challenge: Challenge
    issued_at_s: float
    cpus: int = 1
    uuid_flags: list[str] = Field(default_factory=list)
    roots_at_s: float | None = None
    roots: dict[int, dict[str, str]] = Field(default_factory=dict)
    row_request: dict[str, Any] | None = None
    # per lane, the columns of each returned row the server recomputes; picked with the rows, never sent out
    check_columns: dict[int, list[int]] = Field(default_factory=dict)
    verdict: Verdict | None = None


def lane_timing(lane: Lane, cpus: int, catalog: Catalog, policy: VerifyPolicy):
    if lane.claimed_model.lower() == CPU_MODEL:
        return cpu_timing(lane, cpus, catalog, policy)
    rows = catalog.for_claim(lane.claimed_model)
    if not rows:
        return cpu_timing(lane, 1, catalog, policy)  # only sets a deadline; the verdict is failed anyway
    return max((gpu_timing(lane, r, catalog, policy) for r in rows), key=lambda t: t.expected_s)


def issue(
    node_id: str,
    claim: ClaimedHardware,
    now_s: float,
    policy: VerifyPolicy | None = None,
    catalog: Catalog | None = None,
    randbits: Callable[[int], int] = secrets.randbits,
    uuid_flags: Sequence[str] = (),
) -> Session:
    """Step 1. Send `session.challenge` to the agent unless `session.verdict` is already set (a claimed model
    outside the table fails at once: there is nothing to measure it against)."""
    policy = policy or VerifyPolicy()
    catalog = catalog or load_catalog()
    challenge = issue_challenge(
        node_id, claim, catalog, policy, lambda ln: lane_timing(ln, claim.cpus, catalog, policy).expected_s,
        randbits,
    )
    session = Session(state="issued", challenge=challenge, issued_at_s=now_s, cpus=claim.cpus,
                      uuid_flags=list(uuid_flags))
    unknown = sorted({ln.claimed_model for ln in challenge.lanes if not catalog.knows(ln.claimed_model)})
    if unknown:
        return _done(session, _failed(session, f"claimed model not in the table: {', '.join(unknown)}"))
    return session


def accept_roots(
    session: Session,
    answer: Any,
    now_s: float,
    policy: VerifyPolicy | None = None,
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> Session:
    """Step 2. Record the roots with the server's time, then (only now) pick rows and chunks to check."""
    policy = policy or VerifyPolicy()
    if session.state != "issued":
        return session
    elapsed = now_s - session.issued_at_s
    parsed, problem = _parse(answer, RootsAnswer, policy.max_answer_bytes)
    if parsed is None:
        return _done(session, _failed(session, problem, seconds=elapsed))
    if parsed.challenge_id != session.challenge.challenge_id:
        return _done(session, _failed(session, "answer is for another challenge", seconds=elapsed))
    if elapsed > session.challenge.deadline_s:
        return _done(session, _failed(session, f"timeout: roots after {elapsed:.3f} s, deadline "
                                               f"{session.challenge.deadline_s:.3f} s", seconds=elapsed))
    if parsed.error is not None:
        return _done(session, _failed(session, f"the agent could not run the challenge: {parsed.error}",
                                      seconds=elapsed))
    roots: dict[int, dict[str, str]] = {}
    lanes = {ln.lane: ln for ln in session.challenge.lanes}
    for lr in parsed.lanes:
        lane = lanes.get(lr.lane)
        if lane is None or lr.lane in roots or set(lr.roots) != set(lane.passes):
            return _done(session, _failed(session, f"malformed roots for lane {lr.lane}", seconds=elapsed))
        if not all(_is_hex64(r) for r in lr.roots.values()):
            return _done(session, _failed(session, f"malformed root in lane {lr.lane}", seconds=elapsed))
        roots[lr.lane] = dict(lr.roots)
    if set(roots) != set(lanes):
        return _done(session, _failed(session, "roots missing for some lanes", seconds=elapsed))
    request = {"challenge_id": session.challenge.challenge_id, "lanes": []}
    columns: dict[int, list[int]] = {}
    for lane in session.challenge.lanes:
        request["lanes"].append({
            "lane": lane.lane,
            "rows": {p: _pick(lane.n, policy.rows_per_pass, randbelow) for p in lane.passes},
            "chunks": _pick(lane.chunk_count, policy.chunks_checked, randbelow),
        })
        if 0 < policy.columns_checked < lane.n:
            columns[lane.lane] = _pick(lane.n, policy.columns_checked, randbelow)
    return session.model_copy(update={"state": "awaiting_rows", "roots_at_s": now_s, "roots": roots,
                                      "row_request": request, "check_columns": columns})


def accept_rows(
    session: Session,
    answer: Any,
    now_s: float,
    policy: VerifyPolicy | None = None,
    catalog: Catalog | None = None,
) -> Session:
    """Step 3. Check the rows (recomputed from the seeds), their paths, the chunk digests; give the verdict."""
    policy = policy or VerifyPolicy()
    catalog = catalog or load_catalog()
    if session.state != "awaiting_rows" or session.roots_at_s is None or session.row_request is None:
        return session
    seconds = session.roots_at_s - session.issued_at_s
    if now_s - session.roots_at_s > policy.rows_timeout_s:
        return _done(session, _failed(session, "timeout: rows came too late", seconds=seconds))
    limit = _rows_answer_limit(session, policy)
    parsed, problem = _parse(answer, RowsAnswer, limit)
    if parsed is None:
        return _done(session, _failed(session, problem, seconds=seconds))
    if parsed.challenge_id != session.challenge.challenge_id:
        return _done(session, _failed(session, "answer is for another challenge", seconds=seconds))
    answered = {lr.lane: lr for lr in parsed.lanes}
    lane_evidence: list[dict] = []
    failures: list[str] = []
    fits = []
    for lane, ask in zip(session.challenge.lanes, session.row_request["lanes"], strict=True):
        got = answered.get(lane.lane)
        if got is None:
            failures.append(f"lane {lane.lane}: no answer")
            continue
        failures += check_lane_rows(lane, session.roots[lane.lane], ask, got, policy,
                                    session.check_columns.get(lane.lane))
        failures += check_lane_chunks(lane, session.challenge.memory_nonce_int, ask, got)
        fit = identify_lane(lane, seconds, catalog, policy, session.cpus)
        fits.append(fit)
        lane_evidence.append({"lane": lane.lane, "gpu_index": lane.gpu_index, "uuid": lane.uuid,
                              "claimed_model": lane.claimed_model, "fit": fit.reason,
                              "model_estimate": fit.model_estimate, **fit.evidence})
    evidence = {"lanes": lane_evidence, "uuid_flags": list(session.uuid_flags)}
    if failures:
        return _done(session, _failed(session, "; ".join(failures[:5]), seconds=seconds, evidence=evidence,
                                      estimate=fits[0].model_estimate if fits else None))
    if session.uuid_flags:
        return _done(session, _failed(session, "GPU UUID flagged: " + "; ".join(session.uuid_flags),
                                      seconds=seconds, evidence=evidence, estimate=fits[0].model_estimate))
    misfits = [f for f in fits if not f.claimed_fits]
    short = [lane for lane in session.challenge.lanes if _coverage_short(lane, policy)]
    if short and not misfits:
        lane = short[0]
        return _done(session, _failed(
            session, f"lane {lane.lane}: the challenge filled less than {policy.min_vram_coverage:.0%} of the "
            f"{lane.claimed_vram_mib} MiB claimed (capped by the server's budget), too little to confirm "
            f"{lane.claimed_model}", seconds=seconds, evidence=evidence, estimate=None))
    if misfits:
        v = Verdict(verdict="mismatch", model_estimate=misfits[0].model_estimate, seconds=seconds,
                    reason=misfits[0].reason, evidence=_evidence(session, evidence))
    else:
        v = Verdict(verdict="verified", model_estimate=fits[0].model_estimate, seconds=seconds,
                    reason=fits[0].reason, evidence=_evidence(session, evidence))
    return _done(session, v)


def _coverage_short(lane: Lane, policy: VerifyPolicy) -> bool:
    """A GPU lane whose memory fill covered less of its claimed VRAM than the policy demands."""
    if lane.gpu_index is None or lane.claimed_vram_mib <= 0:
        return False
    filled = lane.chunk_count * lane.chunk_bytes
    return filled < policy.min_vram_coverage * lane.claimed_vram_mib * 2**20


# --- checks -----------------------------------------------------------------------------------------------


def exact_rows(lane: Lane, rows: Sequence[int], panel_bytes: int = 64 * 2**20) -> np.ndarray:
    """Rows of C = A·B computed exactly (float64) from the seed, streaming B in panels of whole rows: the
    server holds k rows of A and one panel of B, never all of B. Panels of B's rows (not columns) are
    contiguous runs of PRNG words, the cheapest to generate; the memory bound is the same."""
    rows = list(rows)
    a = matrix_rows(stream_key(lane.seed_int, STREAM_A), lane.m, rows, np.float64)
    kb = stream_key(lane.seed_int, STREAM_B)
    out = np.zeros((len(rows), lane.n))
    step = max(1, panel_bytes // (lane.n * 8 * 3))  # float64 panel plus its uint64 temporaries
    for k0 in range(0, lane.m, step):
        count = min(step, lane.m - k0)
        out += a[:, k0 : k0 + count] @ matrix_panel(kb, lane.n, k0, count, np, np.float64)
    return out


def exact_entries(lane: Lane, rows: Sequence[int], columns: Sequence[int], panel_bytes: int = 64 * 2**20
                  ) -> np.ndarray:
    """Entries C[rows, columns] computed exactly (float64): the rows of A times only those columns of B.

    A whole row of C needs all of B (n·m entries: 15 billion on a full H200 challenge, half a minute of NumPy
    or more); a column of B is m entries, so a few dozen columns cost a fraction of a second."""
    rows, cols = list(rows), np.asarray(columns, dtype=np.uint64)
    a = matrix_rows(stream_key(lane.seed_int, STREAM_A), lane.m, rows, np.float64)
    kb = stream_key(lane.seed_int, STREAM_B)
    out = np.zeros((len(rows), len(cols)))
    step = max(1, panel_bytes // (max(1, len(cols)) * 8 * 4))  # the index, word and value temporaries
    per_word, n = np.uint64(VALUES_PER_WORD), np.uint64(lane.n)
    for k0 in range(0, lane.m, step):
        count = min(step, lane.m - k0)
        index = np.arange(k0, k0 + count, dtype=np.uint64)[:, None] * n + cols[None, :]
        fields = (words(kb, index // per_word) >> (np.uint64(2) * (index % per_word))) & np.uint64(3)
        out += a[:, k0 : k0 + count] @ (fields.astype(np.float64) - VALUE_OFFSET)
    return out


def fp16_tolerance(exact: np.ndarray, m: int) -> np.ndarray:
    """FP16 rounding of the result (2 ulps) plus 2 ulps at the scale of a typical partial sum (1.25·sqrt(m)),
    which covers accumulators that round partial sums to FP16 (split-K reductions)."""

    def ulp(x: np.ndarray | float) -> np.ndarray:
        x = np.maximum(np.abs(x), 2.0**-14)
        return 2.0 ** (np.floor(np.log2(x)) - 10)

    return 2 * ulp(exact) + 2 * ulp(1.25 * np.sqrt(m))


def check_lane_rows(lane: Lane, roots: Mapping[str, str], ask: Mapping, got: LaneRows, policy: VerifyPolicy,
                    columns: Sequence[int] | None = None) -> list[str]:
    """Problems with a lane's rows: wrong set, bad encoding, bad path, values off the exact product.

    Every returned row must lead to its committed root; its values are recomputed at `columns` (picked after the
    roots, unknown to the agent), or all of them when None. An agent that faked a share f of C is caught with
    probability 1 - (1 - f)^(rows x columns): faking enough of C to save real time cannot pass."""
    problems: list[str] = []
    wanted_all = sorted({r for p in lane.passes for r in ask["rows"][p]})
    if columns:
        cols = np.asarray(sorted(columns), dtype=np.int64)
        computed = exact_entries(lane, wanted_all, cols, policy.row_panel_bytes)
    else:
        cols = np.arange(lane.n)
        computed = exact_rows(lane, wanted_all, policy.row_panel_bytes)
    exact = dict(zip(wanted_all, computed, strict=True))
    for p in lane.passes:
        wanted = list(ask["rows"][p])
        proofs = got.rows.get(p, [])
        if sorted(x.row for x in proofs) != sorted(wanted):
            problems.append(f"lane {lane.lane} {p}: rows answered are not the rows asked")
            continue
        dtype = np.dtype("<f4") if p == "fp32" else np.dtype("<f2")
        root = bytes.fromhex(roots[p])
        for proof in proofs:
            try:
                raw = base64.b64decode(proof.data, validate=True)
                path = [bytes.fromhex(h) for h in proof.path]
            except (binascii.Error, ValueError):
                problems.append(f"lane {lane.lane} {p} row {proof.row}: malformed encoding")
                continue
            if len(raw) != lane.n * dtype.itemsize:
                problems.append(f"lane {lane.lane} {p} row {proof.row}: wrong length")
                continue
            leaf = leaf_digest(proof.row, PASS_TAG[p] + raw)
            if not verify_proof(root, proof.row, lane.n, leaf, path):
                problems.append(f"lane {lane.lane} {p} row {proof.row}: Merkle path does not lead to the root")
                continue
            values = np.frombuffer(raw, dtype=dtype)[cols].astype(np.float64)
            want = exact[proof.row]
            if not np.all(np.isfinite(values)):
                problems.append(f"lane {lane.lane} {p} row {proof.row}: non-finite values")
                continue
            # FP32: the product is exact on any hardware (see prng), so any difference is a wrong row.
            tol = 0.0 if p == "fp32" else fp16_tolerance(want, lane.m)
            bad = int(np.count_nonzero(np.abs(values - want) > tol))
            if bad:
                problems.append(f"lane {lane.lane} {p} row {proof.row}: {bad} of {len(cols)} checked values wrong")
    return problems


def check_lane_chunks(lane: Lane, nonce: int, ask: Mapping, got: LaneRows) -> list[str]:
    """Problems with the memory-fill digests of the chunks picked after the roots arrived."""
    answered = {c.chunk: c.digest for c in got.chunks}
    if sorted(answered) != sorted(ask["chunks"]) or len(answered) != len(got.chunks):
        return [f"lane {lane.lane}: chunks answered are not the chunks asked"]
    key = stream_key(nonce, STREAM_FILL, lane.lane)
    problems = []
    for j in ask["chunks"]:
        want = hashlib.sha256(fill_chunk(key, j, lane.chunk_bytes).tobytes()).hexdigest()
        if answered[j] != want:
            problems.append(f"lane {lane.lane} chunk {j}: wrong memory digest")
    return problems


def catch_probability(k_rows: int, fraction_computed: float, n_rows: int | None = None) -> float:
    """Chance that k rows picked at random (without replacement) hit at least one row an agent did not
    compute, when it computed only `fraction_computed` of n rows: 1 - C(f·n, k) / C(n, k), or 1 - f**k for
    large n. With k = 8 a node that computed half the rows is caught 99.6 % of the time per pass and GPU."""
    f = min(max(fraction_computed, 0.0), 1.0)
    if n_rows is None:
        return 1.0 - f**k_rows
    good = round(f * n_rows)
    if k_rows > n_rows:
        return 0.0 if good >= n_rows else 1.0
    p_all_good = 1.0
    for i in range(k_rows):
        p_all_good *= max(good - i, 0) / (n_rows - i)
    return 1.0 - p_all_good


# --- helpers ----------------------------------------------------------------------------------------------


def _pick(population: int, k: int, randbelow: Callable[[int], int]) -> list[int]:
    k = min(k, population)
    chosen: set[int] = set()
    while len(chosen) < k:
        chosen.add(randbelow(population))
    return sorted(chosen)


def _is_hex64(s: str) -> bool:
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def _rows_answer_limit(session: Session, policy: VerifyPolicy) -> int:
    total = 4096
    for lane in session.challenge.lanes:
        per_row = lane.n * 4 * 4 // 3 + 70 * 64 + 200
        total += len(lane.passes) * policy.rows_per_pass * per_row + 200 * policy.chunks_checked
    return min(policy.max_answer_bytes, 2 * total)


def _parse(answer: Any, model: type[BaseModel], limit: int) -> tuple[Any, str]:
    try:
        if isinstance(answer, (bytes, str)):
            if len(answer) > limit:
                return None, f"answer too large: {len(answer)} bytes, limit {limit}"
            return model.model_validate_json(answer), ""
        if not isinstance(answer, Mapping):
            return None, "malformed answer: not a JSON object"
        size = len(json.dumps(answer, default=str))
        if size > limit:
            return None, f"answer too large: {size} bytes, limit {limit}"
        return model.model_validate(answer), ""
    except (ValidationError, ValueError, TypeError) as exc:
        return None, f"malformed answer: {str(exc).splitlines()[0][:200]}"


def _evidence(session: Session, extra: dict) -> dict:
    ch = session.challenge
    return {
        "challenge_id": ch.challenge_id,
        "node_id": ch.node_id,
        "deadline_s": ch.deadline_s,
        "roots": {str(k): v for k, v in session.roots.items()},
        "row_request": session.row_request,
        **extra,
    }


def _failed(session: Session, reason: str, seconds: float | None = None, evidence: dict | None = None,
            estimate: str | None = None) -> Verdict:
    return Verdict(verdict="failed", model_estimate=estimate, seconds=seconds, reason=reason,
                   evidence=_evidence(session, evidence or {}))


def _done(session: Session, verdict: Verdict) -> Session:
    return session.model_copy(update={"state": "done", "verdict": verdict})


class Verifier:
    """The state machine with an in-memory table of sessions and an injectable clock.

    The server keeps sessions in its database instead (they are JSON); this class is what tests, the local
    `ceti verify run` and a single-process server use. It refuses answers to unknown or finished challenges
    (a replay) and never hands out the same seed twice.
    """

    def __init__(
        self,
        policy: VerifyPolicy | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] | None = None,
        randbits: Callable[[int], int] = secrets.randbits,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        import time

        self.policy = policy or VerifyPolicy()
        self.catalog = catalog or load_catalog()
        self.clock = clock or time.monotonic
        self._randbits = randbits
        self._randbelow = randbelow
        self.sessions: dict[str, Session] = {}
        self._seeds_used: set[str] = set()

    def issue(self, node_id: str, claim: ClaimedHardware, uuid_flags: Sequence[str] = ()) -> Session:
        while True:
            session = issue(node_id, claim, self.clock(), self.policy, self.catalog, self._randbits, uuid_flags)
            seeds = {ln.seed for ln in session.challenge.lanes} | {session.challenge.memory_nonce}
            fresh = session.challenge.challenge_id not in self.sessions and not (seeds & self._seeds_used)
            if fresh and len(seeds) == len(session.challenge.lanes) + 1:
                break
        self._seeds_used |= seeds
        self.sessions[session.challenge.challenge_id] = session
        return session

    def _lookup(self, answer: Any, state: str) -> tuple[Session | None, Verdict | None]:
        cid = _challenge_id_of(answer)
        session = self.sessions.get(cid) if cid else None
        if session is None:
            return None, Verdict(verdict="failed", reason="unknown challenge id", evidence={"challenge_id": cid})
        if session.state != state:
            return None, Verdict(verdict="failed", reason="replayed answer: the challenge is no longer open",
                                 evidence={"challenge_id": cid, "state": session.state})
        return session, None

    def receive_roots(self, answer: Any) -> Session | Verdict:
        """The session (send `session.row_request`, or read `session.verdict`), or a verdict on a stray answer."""
        session, refusal = self._lookup(answer, "issued")
        if refusal is not None:
            return refusal
        assert session is not None
        session = accept_roots(session, answer, self.clock(), self.policy, self._randbelow)
        self.sessions[session.challenge.challenge_id] = session
        return session

    def receive_rows(self, answer: Any) -> Verdict:
        session, refusal = self._lookup(answer, "awaiting_rows")
        if refusal is not None:
            return refusal
        assert session is not None
        session = accept_rows(session, answer, self.clock(), self.policy, self.catalog)
        self.sessions[session.challenge.challenge_id] = session
        assert session.verdict is not None
        return session.verdict


def _challenge_id_of(answer: Any) -> str | None:
    try:
        if isinstance(answer, (bytes, str)):
            if len(answer) > 256 * 2**20:
                return None
            answer = json.loads(answer)
        cid = answer.get("challenge_id") if isinstance(answer, Mapping) else None
        return cid if isinstance(cid, str) and len(cid) <= 64 else None
    except (ValueError, TypeError):
        return None
