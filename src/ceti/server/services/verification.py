"""Proof of hardware against the store: when to challenge a node, its two answers, and the verdict on the node.

The verifier (`ceti.verify.verifier`) is pure; this module keeps its session in the `verifications` table, so
any replica can take the next step and nothing lives in a process's memory. Time is always the server's clock.

When a node is challenged: at its first heartbeat (no verdict yet), after any change of its claimed hardware
(the fingerprint of its GPUs, cores and memory differs from the one its verdict was given for), and again after
a random gap (exponential, with a configurable mean: a provider cannot predict the next check). Never while
work holds what the challenge needs (any of its GPUs, or, on a CPU node, the machine): then it waits for a later
heartbeat. The challenge travels in the heartbeat answer (`verify`) until the roots arrive; the clock runs from
the heartbeat that first carried it, so a lost answer cannot buy time.

Each answer is a compare-and-set on the row's state: a replayed answer, or two replicas racing on one, finds
the state already moved and is refused. A session nobody answers is closed as `failed` at a later heartbeat.

Scheduling reads the result from the node row: the feature "verified" only while the verdict is `verified` for
the current claim, and a node found `mismatch` is offered at no more than the reference price of the model it
really is (`offered_price_per_gpu_hour`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable
from dataclasses import asdict
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import String, cast, select, update
from sqlalchemy.orm import Session

from ceti.server.errors import Conflict, Forbidden, NotFound
from ceti.server.services.events import record
from ceti.server.services.tokens import Principal
from ceti.server.settings import Settings, VerifySettings
from ceti.spec import AllocationState, NodeInfo
from ceti.store import models as m
from ceti.verify import verifier
from ceti.verify.catalog import CPU_MODEL, load_catalog
from ceti.verify.challenge import MIB, ClaimedHardware, VerifyPolicy
from ceti.verify.uuids import uuid_flags

log = logging.getLogger("ceti.server.verification")
ACTIVE = {s.value for s in AllocationState if s.active}
EXPIRY_GRACE_S = 5.0  # an answer in flight at the deadline still gets the verifier's own, clearer verdict
_rng = random.SystemRandom()


# --- what is claimed, and how it is challenged ------------------------------------------------------------


def fingerprint(info: NodeInfo | dict[str, Any]) -> str:
    """The claimed hardware a verdict is for: GPUs (model, VRAM, UUID), cores and memory; not prices or names."""
    i = info if isinstance(info, NodeInfo) else NodeInfo.model_validate(info)
    doc = {
        "gpus": [[g.index, g.model, g.vram_mib, g.uuid] for g in sorted(i.gpus, key=lambda g: g.index)],
        "cpus": i.cpus,
        "memory_mib": i.memory_mib,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def policy_of(vs: VerifySettings) -> VerifyPolicy:
    """The protocol's knobs from the server's settings; stored with each session so a change of settings never
    alters a challenge already sent."""
    if vs.budget_mib > 0:
        budget = vs.budget_mib * MIB
        return VerifyPolicy(rows_per_pass=vs.rows_per_pass, overhead_s=vs.overhead_s, max_matrix_bytes=budget,
                            max_fill_bytes=budget, cpu_budget_mib=vs.budget_mib,
                            chunk_bytes=min(64 * MIB, max(MIB, budget // 16)))
    return VerifyPolicy(rows_per_pass=vs.rows_per_pass, overhead_s=vs.overhead_s)


def claim_of(info: NodeInfo) -> ClaimedHardware:
    return ClaimedHardware(gpus=tuple(info.gpus), cpus=info.cpus, memory_mib=info.memory_mib)


# --- the heartbeat's side ---------------------------------------------------------------------------------


def on_claim(s: Session, node: m.Node, now: float) -> None:
    """After registration: a verdict given for other hardware than the node now claims no longer holds."""
    if node.verdict is not None and node.verdict_fingerprint != fingerprint(node.info):
        record(s, "verification", now, f"claimed hardware changed: verdict {node.verdict} no longer holds",
               node_id=node.id)
        node.verdict = None
        node.model_estimate = None


def desired(s: Session, node: m.Node, live: Iterable[m.Allocation], settings: Settings, now: float
            ) -> dict[str, Any] | None:
    """The challenge this heartbeat answer carries, if any: the open one until its roots arrive, or a new one
    when one is due and nothing holds what it needs."""
    vs = settings.verify
    if not vs.enabled:
        return None
    on_claim(s, node, now)
    if node.verify_challenge_id is not None:
        row = s.get(m.Verification, node.verify_challenge_id)
        if row is not None and row.state != "done":
            if _expired(row, now):
                _expire(s, node, row, settings, now)
                return None
            return row.session["challenge"] if row.state == "issued" else None
        node.verify_challenge_id = None
    if node.verdict is not None and node.next_verify_at is not None and now < node.next_verify_at:
        return None
    if _busy(node, live):
        return None  # waits for the work to end; the next heartbeat looks again
    row = issue(s, node, settings, now)
    return row.session["challenge"] if row.state == "issued" else None


def _busy(node: m.Node, live: Iterable[m.Allocation]) -> bool:
    has_gpus = bool((node.info or {}).get("gpus"))
    for a in live:
        if a.state in ACTIVE and (not has_gpus or a.gpu_indices or a.gpu_share_milli):
            return True
    return False


def issue(s: Session, node: m.Node, settings: Settings, now: float) -> m.Verification:
    """A fresh challenge for the node's current claim, stored as its open session."""
    info = NodeInfo.model_validate(node.info)
    policy = policy_of(settings.verify)
    flags = uuid_flags(node.id, info.gpus, node.pinned_gpu_uuids or [], _uuid_owners(s, node.id, (g.uuid for g in info.gpus if g.uuid))) if info.gpus else []
    for _ in range(8):  # 128-bit ids do not collide; the loop only makes "never reused" a checked fact
        session = verifier.issue(node.id, claim_of(info), now, policy, load_catalog(), uuid_flags=flags)
        if s.get(m.Verification, session.challenge.challenge_id) is None:
            break
    else:  # pragma: no cover - would take a broken random source
        raise RuntimeError("cannot draw a fresh challenge id")
    row = m.Verification(
        id=session.challenge.challenge_id, node_id=node.id, state="issued", fingerprint=fingerprint(info),
        session=session.model_dump(mode="json"), policy=asdict(policy), issued_at=now, reason="",
    )
    lanes = len(session.challenge.lanes)
    record(s, "verification", now, f"challenge {row.id} issued ({lanes} lane{'s' * (lanes != 1)})", node_id=node.id)
    v = session.verdict
    if v is not None:  # a claim the table cannot judge fails at once
        row.state, row.done_at, row.verdict, row.reason, row.evidence = "done", now, v.verdict, v.reason, v.evidence
        s.add(row)
        _finish(s, node, row, session, settings, now)
        return row
    s.add(row)
    node.verify_challenge_id = row.id
    return row


def _uuid_owners(s: Session, node_id: str, uuids: Iterable[str]) -> dict[str, str]:
    """UUID -> node for those of `uuids` that another online node reports. The text search in SQL keeps this
    to the few rows that can match: a network's first minutes challenge every node, and reading every node's
    hardware for each would cost the square of the network's size."""
    owners: dict[str, str] = {}
    info_text = cast(m.Node.info, String)
    for uuid in sorted(set(uuids)):
        rows = s.execute(select(m.Node.id, m.Node.info).where(
            m.Node.state == "online", m.Node.id != node_id, info_text.contains(uuid, autoescape=True),
        ).order_by(m.Node.id))
        for other_id, info in rows:
            if any(g.get("uuid") == uuid for g in (info or {}).get("gpus", [])):
                owners.setdefault(uuid, other_id)
    return owners


def _expired(row: m.Verification, now: float) -> bool:
    if row.state == "issued":
        return now > row.issued_at + row.session["challenge"]["deadline_s"] + EXPIRY_GRACE_S
    rows_timeout = float(row.policy.get("rows_timeout_s", VerifyPolicy().rows_timeout_s))
    return row.roots_at is not None and now > row.roots_at + rows_timeout + EXPIRY_GRACE_S


def _expire(s: Session, node: m.Node, row: m.Verification, settings: Settings, now: float) -> None:
    session = verifier.Session.model_validate(row.session)
    waited = "roots" if row.state == "issued" else "rows"
    reason = f"timeout: no {waited} within the deadline"
    seconds = now - session.issued_at_s if row.state == "issued" else None
    verdict = verifier.Verdict(verdict="failed", seconds=seconds, reason=reason,
                               evidence={"challenge_id": row.id, "node_id": node.id, "state": row.state})
    session = session.model_copy(update={"state": "done", "verdict": verdict})
    if _store_step(s, row, row.state, session, now):
        _finish(s, node, row, session, settings, now)


# --- the answers ------------------------------------------------------------------------------------------


def accept_roots(s: Session, who: Principal, challenge_id: str, answer: Any, settings: Settings, now: float
                 ) -> dict[str, Any]:
    row, node = _open_row(s, who, challenge_id, "issued")
    session = verifier.accept_roots(verifier.Session.model_validate(row.session), answer, now, _policy(row))
    if not _store_step(s, row, "issued", session, now):
        raise Conflict("replayed answer: the challenge is no longer open")
    if session.verdict is not None:
        _finish(s, node, row, session, settings, now)
    return step_out(row, session)


def accept_rows(s: Session, who: Principal, challenge_id: str, answer: Any, settings: Settings, now: float
                ) -> dict[str, Any]:
    row, node = _open_row(s, who, challenge_id, "roots")
    session = verifier.accept_rows(verifier.Session.model_validate(row.session), answer, now, _policy(row),
                                   load_catalog())
    if session.verdict is None:  # cannot happen for a session awaiting rows; never let it pass as verified
        session = session.model_copy(update={"state": "done", "verdict": verifier.Verdict(
            verdict="failed", reason="the verifier gave no verdict")})
    if not _store_step(s, row, "roots", session, now):
        raise Conflict("replayed answer: the challenge is no longer open")
    _finish(s, node, row, session, settings, now)
    return step_out(row, session)


def _open_row(s: Session, who: Principal, challenge_id: str, state: str) -> tuple[m.Verification, m.Node]:
    if who.kind != "provider" or not who.provider_id:
        raise Forbidden("only the provider token of the node can answer its challenge")
    row = s.get(m.Verification, challenge_id) if len(challenge_id) <= 64 else None
    if row is None:
        raise NotFound(f"unknown challenge id {challenge_id[:64]}")
    node = s.get(m.Node, row.node_id)
    if node is None or node.provider_id != who.provider_id:
        raise Forbidden("a provider may answer only its own nodes' challenges")
    if row.state != state:
        expected = {"issued": "roots", "roots": "rows"}[state]
        if row.state == "done":
            raise Conflict(f"the challenge is no longer open (verdict {row.verdict}: {row.reason})")
        raise Conflict(f"this challenge is not waiting for {expected} (state {row.state})")
    return row, node


def _policy(row: m.Verification) -> VerifyPolicy:
    return VerifyPolicy(**row.policy)


def _store_step(s: Session, row: m.Verification, from_state: str, session: verifier.Session, now: float) -> bool:
    """Write the next step only if the row is still where this step found it (replicas, replays)."""
    state = {"issued": "issued", "awaiting_rows": "roots", "done": "done"}[session.state]
    values: dict[str, Any] = {"state": state, "session": session.model_dump(mode="json")}
    if state == "roots":
        values["roots_at"] = now
    v = session.verdict
    if v is not None:
        values.update(done_at=now, verdict=v.verdict, model_estimate=v.model_estimate, seconds=v.seconds,
                      reason=v.reason[:4000], evidence=v.evidence)
    s.flush()
    done = s.execute(update(m.Verification).where(m.Verification.id == row.id, m.Verification.state == from_state)
                     .values(**values).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        return False
    s.refresh(row)
    return True


def _finish(s: Session, node: m.Node, row: m.Verification, session: verifier.Session, settings: Settings,
            now: float) -> None:
    """The verdict onto the node (if it is still for the hardware the node claims) and the next check's time."""
    v = session.verdict
    assert v is not None
    if node.verify_challenge_id == row.id:
        node.verify_challenge_id = None
    current = row.fingerprint == fingerprint(node.info)
    if current:
        node.verdict, node.model_estimate, node.verdict_at = v.verdict, v.model_estimate, now
        node.verdict_fingerprint = row.fingerprint
        if v.verdict == "verified":
            node.pinned_gpu_uuids = [ln.uuid for ln in session.challenge.lanes if ln.gpu_index is not None]
    vs = settings.verify
    gap = _rng.expovariate(1.0 / max(vs.mean_interval_s, 1.0))
    if v.verdict == "failed":
        gap = min(gap, vs.retry_after_failed_s)
    node.next_verify_at = now + gap
    estimate = f", model estimate {v.model_estimate}" if v.model_estimate else ""
    stale = "" if current else " (for hardware the node no longer claims)"
    record(s, "verification", now, f"{v.verdict}{estimate}: {v.reason}"[:2000] + stale, node_id=node.id)
    log.info("node %s verification %s: %s%s", node.id, row.id, v.verdict, estimate)


def step_out(row: m.Verification, session: verifier.Session) -> dict[str, Any]:
    v = session.verdict
    return {
        "challenge_id": row.id,
        "state": row.state,
        "row_request": session.row_request if row.state == "roots" else None,
        "verdict": None if v is None else {"verdict": v.verdict, "model_estimate": v.model_estimate,
                                            "seconds": v.seconds, "reason": v.reason},
    }


# --- reads ------------------------------------------------------------------------------------------------


def node_verifications(s: Session, who: Principal, node_id: str, limit: int = 20) -> list[m.Verification]:
    node = s.get(m.Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id}")
    if not who.is_admin and not (who.kind == "provider" and who.provider_id == node.provider_id):
        raise Forbidden("only an admin or the node's provider may see its verifications")
    q = (select(m.Verification).where(m.Verification.node_id == node_id)
         .order_by(m.Verification.issued_at.desc()).limit(max(1, min(limit, 500))))
    return list(s.scalars(q))


# --- prices -----------------------------------------------------------------------------------------------


@cache
def reference_prices() -> tuple[dict[str, float], float]:
    """Reference price per GPU-hour per model of the verify table, and the price for a node whose GPUs are
    its CPU (`data/gpu_prices.json`, each figure with its source)."""
    doc = json.loads((resources.files("ceti.server") / "data" / "gpu_prices.json").read_text())
    prices = {k.lower(): float(v["price_per_gpu_hour"]) for k, v in doc["models"].items()}
    return prices, float(doc["cpu"]["price_per_gpu_hour"])


def offered_price_per_gpu_hour(ask: float, verdict: str | None, model_estimate: str | None) -> float:
    """A node found `mismatch` is offered at the price of the model it really is, never above its ask; a model
    the table has no price for (an estimate of "unknown") gets the cheapest reference."""
    if verdict != "mismatch":
        return ask
    prices, cpu_price = reference_prices()
    estimate = (model_estimate or "").lower()
    if estimate == CPU_MODEL:
        return min(ask, cpu_price)
    return min(ask, prices.get(estimate, min(prices.values())))
