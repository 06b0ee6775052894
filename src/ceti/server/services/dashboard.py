"""What the web dashboard and /metrics show, read from the store with a few cheap queries.

Two views of who may see what, the same as the REST API's:
- an admin token sees everything;
- a project token sees its own project's jobs (and the network's nodes and aggregate use, never another project's
  job ids, names or logs: another project's work on a GPU shows only as "developer work");
- a provider token sees its own nodes and no jobs.

What a GPU is doing is read from the job's spec: a job whose environment sets `FABRIC_NETWORK` (e.g.
`FABRIC_NETWORK: bittensor`) is work for that decentralized network; any other job is developer work; a GPU with no
live allocation is idle. The network adapters will set the variable when they submit work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ceti.networks.base import NETWORK_ENV
from ceti.server.errors import Forbidden, NotFound
from ceti.server.services import jobs as jobs_svc
from ceti.server.services.reliability import node_reliability
from ceti.server.services.tokens import Principal
from ceti.spec import AllocationState, JobState
from ceti.store import models as m

KNOWN_NETWORKS = ("bittensor", "akash", "render")
DEVELOPER, IDLE, OTHER_NETWORK = "developer", "idle", "other-network"
ACTIVE = [s.value for s in AllocationState if s.active]
UNPLACED = "unplaced"


def work_kind(network: str | None) -> str:
    """'developer', or the network a job works for (one of KNOWN_NETWORKS, else 'other-network')."""
    if not network or not network.strip():
        return DEVELOPER
    name = network.strip().lower()
    return name if name in KNOWN_NETWORKS else OTHER_NETWORK


def _network_of_job():
    # the JSON path reads one value of the spec in the database, so a scrape never loads job specs
    return m.Job.spec["env"][NETWORK_ENV].as_string()


# -- regions -----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def region_coordinates() -> dict[str, dict[str, Any]]:
    """Region name -> {lat, lon, label}, from the data file shipped with the dashboard."""
    text = resources.files("ceti.server.dashboard").joinpath("regions.json").read_text()
    return {k.lower(): v for k, v in json.loads(text)["regions"].items()}


def place_region(region: str) -> dict[str, Any]:
    """Coordinates of a region: its own entry, else that of its name without a zone suffix, else unplaced."""
    table = region_coordinates()
    key = region.lower()
    candidates = [key, re.sub(r"(?<=\d)[a-z]$", "", key), re.sub(r"-\d+[a-z]?$", "", key)]
    for c in candidates:
        if c in table:
            hit = table[c]
            return {"lat": hit["lat"], "lon": hit["lon"], "label": hit.get("label", region), "placed": True}
    return {"lat": None, "lon": None, "label": region, "placed": False}


# -- GPUs and what they do ---------------------------------------------------------------------------


@dataclass
class GpuUse:
    node_id: str
    node_state: str
    region: str
    model: str
    index: int
    use: str  # idle | developer | a network's name
    job_id: str | None = None
    project_id: str | None = None


def gpu_uses(s: Session, node_ids: set[str] | None = None) -> list[GpuUse]:
    """Every GPU of every node (or of `node_ids`), with the work on it now."""
    q = select(m.Node.id, m.Node.state, m.Node.region, m.Node.info)
    if node_ids is not None:
        q = q.where(m.Node.id.in_(node_ids))
    nodes = s.execute(q).all()
    busy: dict[tuple[str, int], tuple[str, str, str]] = {}
    aq = (select(m.Allocation.node_id, m.Allocation.gpu_indices, m.Allocation.job_id, m.Job.project_id,
                 _network_of_job())
          .join(m.Job, m.Job.id == m.Allocation.job_id).where(m.Allocation.state.in_(ACTIVE)))
    if node_ids is not None:
        aq = aq.where(m.Allocation.node_id.in_(node_ids))
    for node_id, indices, job_id, project_id, network in s.execute(aq):
        for i in indices or []:
            busy[(node_id, int(i))] = (work_kind(network), job_id, project_id)
    out = []
    for node_id, state, region, info in nodes:
        for g in (info or {}).get("gpus", []):
            use, job_id, project_id = busy.get((node_id, int(g["index"])), (IDLE, None, None))
            out.append(GpuUse(node_id, state, region, g["model"], int(g["index"]), use, job_id, project_id))
    return out


def _use_counts(uses: list[GpuUse]) -> dict[str, int]:
    counts = {DEVELOPER: 0, IDLE: 0}
    for u in uses:
        counts[u.use] = counts.get(u.use, 0) + 1
    return counts


def _visible_node_filter(who: Principal):
    return m.Node.provider_id == who.provider_id if who.kind == "provider" else None


def _nodes_query(who: Principal):
    q = select(m.Node)
    cond = _visible_node_filter(who)
    return q.where(cond) if cond is not None else q


def _jobs_visible(who: Principal) -> bool:
    return who.is_admin or who.kind == "project"


def _job_scope(q, who: Principal):
    if who.kind == "project":
        return q.where(m.Job.project_id == who.project_id)
    if not who.is_admin:
        raise Forbidden("provider tokens see nodes, not jobs")
    return q


# -- overview ----------------------------------------------------------------------------------------


def overview(s: Session, who: Principal, now: float) -> dict[str, Any]:
    nodes = list(s.scalars(_nodes_query(who).order_by(m.Node.registered_at)))
    node_ids = {n.id for n in nodes}
    uses = gpu_uses(s, node_ids) if nodes else []
    regions: dict[str, dict[str, Any]] = {}
    for n in nodes:
        r = regions.setdefault(n.region, {"region": n.region, **place_region(n.region), "online": 0, "lost": 0,
                                          "gpus": 0, "nodes": []})
        r["online" if n.state == "online" else "lost"] += 1
        r["gpus"] += len((n.info or {}).get("gpus", []))
        r["nodes"].append(n.hostname)
    models: dict[str, dict[str, Any]] = {}
    for u in uses:
        row = models.setdefault(u.model, {"model": u.model, "total": 0, "uses": {}})
        row["total"] += 1
        row["uses"][u.use] = row["uses"].get(u.use, 0) + 1
    jobs = None
    if _jobs_visible(who):
        q = _job_scope(select(m.Job.state, func.count()).group_by(m.Job.state), who)
        jobs = {state: n for state, n in s.execute(q)}
    online = sum(1 for n in nodes if n.state == "online")
    return {
        "viewer": viewer(who),
        "nodes_online": online,
        "nodes_lost": len(nodes) - online,
        "gpus_total": len(uses),
        "cpus_total": sum(int((n.info or {}).get("cpus", 0)) for n in nodes if n.state == "online"),
        "regions": sorted(regions.values(), key=lambda r: r["region"]),
        "gpus_by_model": sorted(models.values(), key=lambda r: (-r["total"], r["model"])),
        "gpu_use": _use_counts(uses),
        "jobs_by_state": jobs,
        "networks": list(KNOWN_NETWORKS),
        "utilization": utilization_series(s, now, node_ids, total_gpus=len(uses)),
        "now": now,
    }


def viewer(who: Principal) -> dict[str, Any]:
    return {"kind": who.kind, "project_id": who.project_id, "provider_id": who.provider_id}


def utilization_series(s: Session, now: float, node_ids: set[str], total_gpus: int,
                       window_s: float = 1800.0, points: int = 60) -> list[dict[str, Any]]:
    """Busy GPUs at evenly spaced moments of the last `window_s`, from the allocations' start and end times.

    The store keeps when each allocation started and ended, so the history survives restarts and is the same on
    every replica. The total is today's GPU count (the store keeps no history of nodes joining and leaving).
    """
    if not node_ids:
        return []
    start = now - window_s
    a = m.Allocation
    rows = s.execute(
        select(a.node_id, a.gpu_indices, a.gpu_share_milli, a.started_at, a.ended_at, _network_of_job())
        .join(m.Job, m.Job.id == a.job_id)
        .where(a.started_at.is_not(None), a.started_at <= now, (a.ended_at.is_(None)) | (a.ended_at >= start))
    ).all()
    step = window_s / (points - 1)
    times = [start + i * step for i in range(points)]
    series = [{"at": t, "developer": 0.0, "network": 0.0, "total": total_gpus} for t in times]
    for node_id, indices, share, started, ended, network in rows:
        if node_id not in node_ids:
            continue
        gpus = len(indices or [])
        if gpus == 1 and share:
            gpus = share / 1000.0
        if not gpus:
            continue
        key = "developer" if work_kind(network) == DEVELOPER else "network"
        end = ended if ended is not None else now
        first = max(0, int((started - start + step - 1e-9) // step))
        for i in range(first, points):
            if times[i] > end:
                break
            series[i][key] += gpus
    return series


# -- jobs --------------------------------------------------------------------------------------------


def _node_terms(s: Session, node_ids: set[str]) -> dict[str, dict[str, Any]]:
    if not node_ids:
        return {}
    rows = s.execute(select(m.Node.id, m.Node.hostname, m.Node.region, m.Node.info).where(m.Node.id.in_(node_ids)))
    return {nid: {"hostname": h, "region": r, "info": info or {}} for nid, h, r, info in rows}


def _runtime_s(alloc: m.Allocation, now: float) -> float:
    if alloc.started_at is None:
        return 0.0
    if alloc.wall_s is not None:
        return alloc.wall_s
    return max(0.0, (alloc.ended_at or now) - alloc.started_at)


def _cost(alloc: m.Allocation, terms: dict[str, Any] | None, now: float) -> float:
    """What the attempt costs at its node's ask (no ledger yet: an estimate, not a charge)."""
    if not terms:
        return 0.0
    info = terms["info"]
    gpus = len(alloc.gpu_indices or [])
    if gpus == 1 and alloc.gpu_share_milli:
        gpus = alloc.gpu_share_milli / 1000.0
    hours = _runtime_s(alloc, now) / 3600.0
    return hours * (gpus * float(info.get("price_per_gpu_hour", 0.0))
                    + alloc.cpu_milli / 1000.0 * float(info.get("price_per_cpu_hour", 0.0)))


def _gpu_label(alloc: m.Allocation | None, terms: dict[str, Any] | None) -> str:
    if alloc is None or not alloc.gpu_indices or not terms:
        return ""
    by_index = {int(g["index"]): g["model"] for g in terms["info"].get("gpus", [])}
    models = [by_index.get(int(i), "?") for i in alloc.gpu_indices]
    first = models[0]
    share = f" ({alloc.gpu_share_milli / 10:.0f}%)" if alloc.gpu_share_milli else ""
    return f"{len(models)}x {first}{share}" if len(set(models)) == 1 else ", ".join(models)


def _job_row(job: m.Job, allocs: list[m.Allocation], terms: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
    live = [a for a in allocs if a.state in ACTIVE]
    last = (live or allocs or [None])[-1]
    t = terms.get(last.node_id) if last is not None else None
    return {
        "id": job.id,
        "name": job.name,
        "project_id": job.project_id,
        "state": job.state,
        "reason": job.reason,
        "priority": job.priority,
        "kind": work_kind(((job.spec or {}).get("env") or {}).get(NETWORK_ENV)),
        "node_id": last.node_id if last is not None else None,
        "hostname": t["hostname"] if t else None,
        "region": t["region"] if t else None,
        "gpu": _gpu_label(last, t),
        "runtime_s": sum(_runtime_s(a, now) for a in allocs),
        "cost_estimate": round(sum(_cost(a, terms.get(a.node_id), now) for a in allocs), 6),
        "attempts": job.attempts,
        "exit_code": job.exit_code,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def job_rows(s: Session, who: Principal, state: str | None, limit: int, now: float) -> list[dict[str, Any]]:
    q = _job_scope(select(m.Job).order_by(m.Job.created_at.desc()).limit(limit), who)
    if state:
        q = q.where(m.Job.state == state)
    jobs = list(s.scalars(q))
    allocs: dict[str, list[m.Allocation]] = {j.id: [] for j in jobs}
    if jobs:
        for a in s.scalars(select(m.Allocation).where(m.Allocation.job_id.in_(list(allocs)))
                           .order_by(m.Allocation.created_at)):
            allocs[a.job_id].append(a)
    terms = _node_terms(s, {a.node_id for rows in allocs.values() for a in rows})
    return [_job_row(j, allocs[j.id], terms, now) for j in jobs]


def job_detail(s: Session, who: Principal, job_id: str, now: float) -> dict[str, Any]:
    if not _jobs_visible(who):
        raise Forbidden("provider tokens see nodes, not jobs")
    job = jobs_svc.get_visible(s, who, job_id)
    allocs = jobs_svc.allocations_of(s, job.id)
    terms = _node_terms(s, {a.node_id for a in allocs})
    out = _job_row(job, allocs, terms, now)
    spec = dict(job.spec or {})
    spec.pop("files", None)  # file bodies can be large; the page shows their names
    out["spec"] = {**spec, "files": sorted((job.spec or {}).get("files", {}))}
    out["allocations"] = [{
        "id": a.id, "node_id": a.node_id, "hostname": terms.get(a.node_id, {}).get("hostname"),
        "attempt": a.attempt, "state": a.state, "gpu": _gpu_label(a, terms.get(a.node_id)),
        "started_at": a.started_at, "ended_at": a.ended_at, "exit_code": a.exit_code, "stop_reason": a.stop_reason,
        "runtime_s": _runtime_s(a, now), "cost_estimate": round(_cost(a, terms.get(a.node_id), now), 6),
    } for a in allocs]
    out["events"] = [{
        "id": e.id, "at": e.at, "kind": e.kind, "from_state": e.from_state, "to_state": e.to_state,
        "reason": e.reason, "node_id": e.node_id,
    } for e in s.scalars(select(m.Event).where(m.Event.job_id == job.id).order_by(m.Event.id))]
    out["log_bytes"], out["log_truncated"] = job.log_bytes, job.log_truncated
    out["finished"] = JobState(job.state).finished
    return out


def job_logs(s: Session, who: Principal, job_id: str, after_id: int, limit: int) -> dict[str, Any]:
    if not _jobs_visible(who):
        raise Forbidden("provider tokens see nodes, not jobs")
    job, chunks = jobs_svc.logs_of(s, who, job_id, after_id, limit)
    return {
        "chunks": [{"id": c.id, "stream": c.stream, "data": c.data} for c in chunks],
        "next_after_id": chunks[-1].id if chunks else after_id,
        "truncated": job.log_truncated,
        "finished": JobState(job.state).finished,
    }


# -- nodes -------------------------------------------------------------------------------------------


NOT_MEASURED = "not measured yet"


def node_earnings_usd(s: Session, node_ids: list[str]) -> dict[str, float]:
    """Provider credits per node from the ledger (one grouped query)."""
    if not node_ids:
        return {}
    rows = s.execute(
        select(m.LedgerEntry.node_id, func.sum(m.LedgerEntry.amount_micro))
        .join(m.LedgerAccount, m.LedgerAccount.id == m.LedgerEntry.account_id)
        .where(m.LedgerAccount.kind == "provider", m.LedgerEntry.node_id.in_(node_ids))
        .group_by(m.LedgerEntry.node_id)
    )
    return {node_id: int(total or 0) / 1_000_000 for node_id, total in rows}


def _node_row(n: m.Node, uses: list[GpuUse], active: int, now: float, reliability: float | None = None,
              earnings_usd: float = 0.0) -> dict[str, Any]:
    info = n.info or {}
    models: dict[str, int] = {}
    for g in info.get("gpus", []):
        models[g["model"]] = models.get(g["model"], 0) + 1
    return {
        "id": n.id, "hostname": n.hostname, "region": n.region, "state": n.state,
        "cpus": info.get("cpus", 0), "memory_mib": info.get("memory_mib", 0), "disk_mib": info.get("disk_mib", 0),
        "gpus": ", ".join(f"{c}x {mdl}" for mdl, c in sorted(models.items())),
        "gpu_count": len(info.get("gpus", [])),
        "gpu_use": _use_counts(uses),
        "price_per_gpu_hour": info.get("price_per_gpu_hour", 0.0),
        "price_per_cpu_hour": info.get("price_per_cpu_hour", 0.0),
        "heartbeat_age_s": max(0.0, now - n.last_heartbeat_at),
        "registered_at": n.registered_at,
        "active_allocations": active,
        "reliability": NOT_MEASURED if reliability is None else round(reliability, 4),  # per hour of work
        "earnings": round(earnings_usd, 6),  # USD the ledger credited the provider for work on this node
    }


def node_rows(s: Session, who: Principal, now: float) -> list[dict[str, Any]]:
    nodes = list(s.scalars(_nodes_query(who).order_by(m.Node.registered_at)))
    if not nodes:
        return []
    ids = {n.id for n in nodes}
    uses: dict[str, list[GpuUse]] = {}
    for u in gpu_uses(s, ids):
        uses.setdefault(u.node_id, []).append(u)
    counts = dict(s.execute(select(m.Allocation.node_id, func.count()).where(
        m.Allocation.state.in_(ACTIVE), m.Allocation.node_id.in_(ids)).group_by(m.Allocation.node_id)).all())
    scores = node_reliability(s, now, node_ids=list(ids))
    earned = node_earnings_usd(s, [n.id for n in nodes])
    return [_node_row(n, uses.get(n.id, []), counts.get(n.id, 0), now, _score(scores, n.id), earned.get(n.id, 0.0))
            for n in nodes]


def _score(scores: dict, node_id: str) -> float | None:
    r = scores.get(node_id)
    return None if r is None else r.score


def node_detail(s: Session, who: Principal, node_id: str, now: float) -> dict[str, Any]:
    n = s.get(m.Node, node_id)
    if n is None:
        raise NotFound(f"no node {node_id}")
    if who.kind == "provider" and n.provider_id != who.provider_id:
        raise NotFound(f"no node {node_id}")
    uses = gpu_uses(s, {n.id})
    live = list(s.execute(select(m.Allocation, m.Job).join(m.Job, m.Job.id == m.Allocation.job_id)
                          .where(m.Allocation.node_id == n.id, m.Allocation.state.in_(ACTIVE))
                          .order_by(m.Allocation.created_at)).all())
    out = _node_row(n, uses, len(live), now, _score(node_reliability(s, now, node_ids=[n.id]), n.id),
                    node_earnings_usd(s, [n.id]).get(n.id, 0.0))
    info = n.info or {}
    out["hardware"] = {
        "cpus": info.get("cpus"), "memory_mib": info.get("memory_mib"), "disk_mib": info.get("disk_mib"),
        "gpu_driver": info.get("gpu_driver"), "os": info.get("os", ""), "agent_version": info.get("agent_version", ""),
        "gpus": [{"index": g["index"], "model": g["model"], "vram_mib": g["vram_mib"]} for g in info.get("gpus", [])],
    }
    out["gpu_detail"] = [{"index": u.index, "model": u.model, "use": u.use,
                          "job_id": u.job_id if _may_see_job(who, u.project_id) else None} for u in uses]
    out["current_work"] = []
    for a, job in live:
        visible = _may_see_job(who, job.project_id)
        out["current_work"].append({
            "allocation_id": a.id if visible else None, "job_id": job.id if visible else None,
            "name": job.name if visible else "(another project's job)", "state": a.state,
            "kind": work_kind(((job.spec or {}).get("env") or {}).get(NETWORK_ENV)),
            "gpu_indices": list(a.gpu_indices or []), "started_at": a.started_at,
        })
    out["events"] = [{"at": e.at, "kind": e.kind, "from_state": e.from_state, "to_state": e.to_state,
                      "reason": e.reason}
                     for e in s.scalars(select(m.Event).where(m.Event.node_id == n.id, m.Event.job_id.is_(None))
                                        .order_by(m.Event.id.desc()).limit(50))]
    return out


def _may_see_job(who: Principal, project_id: str | None) -> bool:
    return who.is_admin or (who.kind == "project" and project_id is not None and project_id == who.project_id)


# -- scheduler ---------------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def scheduler_view(s: Session, who: Principal, loop: Any, now: float, window_s: float = 3600.0,
                   buckets: int = 60) -> dict[str, Any]:
    recent = list(getattr(loop, "recent_round_s", []))[-300:]
    ordered = sorted(recent)
    pending: list[dict[str, Any]] = []
    preemptions: list[dict[str, Any]] = []
    if _jobs_visible(who):
        q = _job_scope(select(m.Job.reason, func.count()).where(m.Job.state == JobState.pending.value)
                       .group_by(m.Job.reason), who)
        pending = sorted(({"reason": r or "waiting for the next scheduling round", "jobs": n}
                          for r, n in s.execute(q)), key=lambda r: -r["jobs"])
        start = now - window_s
        step = window_s / buckets
        counts = [0] * buckets
        eq = select(m.Event.at).where(m.Event.kind == "preempted", m.Event.at >= start)
        if who.kind == "project":
            eq = eq.join(m.Job, m.Job.id == m.Event.job_id).where(m.Job.project_id == who.project_id)
        for (at,) in s.execute(eq):
            counts[min(buckets - 1, int((at - start) // step))] += 1
        preemptions = [{"at": start + (i + 1) * step, "count": c} for i, c in enumerate(counts)]
    return {
        "rounds": getattr(loop, "rounds", 0),
        "last_round_at": getattr(loop, "last_round_at", None),
        "last_round_s": getattr(loop, "last_round_s", None),
        "last_error": getattr(loop, "last_error", None) if who.is_admin else None,
        "recent_round_s": recent,
        "p50_s": _percentile(ordered, 0.5),
        "p95_s": _percentile(ordered, 0.95),
        "max_s": ordered[-1] if ordered else None,
        "pending_by_reason": pending,
        "preemptions": preemptions,
        "preemptions_in_window": sum(p["count"] for p in preemptions),
        "jobs_visible": _jobs_visible(who),
    }
