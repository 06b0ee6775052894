"""One scheduling round against the store: housekeeping, snapshot, the pure fabric, and one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session, defer

from ceti import fabric
from ceti.fabric.per_task import ARRIVAL_WINDOW
from ceti.server.services.claims import lock_rows
from ceti.server.services.events import record, set_job_state
from ceti.server.services.gangs import GangPorts
from ceti.server.services.reliability import scores as reliability_scores
from ceti.server.services.tokens import new_id
from ceti.server.services.verification import offered_price_per_gpu_hour
from ceti.server.settings import Settings
from ceti.spec import AllocationState, JobSpec, JobState, NodeInfo
from ceti.store import models as m

log = logging.getLogger("ceti.server.scheduler")
ACTIVE = [s.value for s in AllocationState if s.active]


@dataclass
class RoundReport:
    timed_out: int = 0
    started: int = 0
    preempted: int = 0
    unschedulable: int = 0
    waiting: int = 0
    pending_reasons: dict[str, int] = field(default_factory=dict)


def enforce_max_duration(s: Session, now: float) -> int:
    count = 0
    # only jobs that set a limit, read in SQL: most running work has none, and parsing every spec each round costs
    limit_col = m.Job.spec["max_duration"].as_float()
    rows = s.execute(
        select(m.Allocation.id, m.Allocation.node_id, m.Allocation.started_at, limit_col)
        .join(m.Job, m.Job.id == m.Allocation.job_id).where(
            m.Allocation.state == AllocationState.running.value,
            m.Allocation.started_at.is_not(None),
            limit_col.is_not(None),
        )
    ).all()
    overdue = [(alloc_id, node_id, limit) for alloc_id, node_id, started_at, limit in rows
               if limit and now - started_at > limit]
    # a sweeper may declare one of these nodes lost meanwhile: lock them (as the round does), then read afresh
    lock_rows(s, m.Node, {node_id for _, node_id, _ in overdue})
    for alloc_id, _, limit in overdue:
        alloc = s.get(m.Allocation, alloc_id, populate_existing=True)
        job = s.get(m.Job, alloc.job_id)
        limit = int(limit) if float(limit).is_integer() else limit
        if alloc.state == AllocationState.running.value:
            alloc.state = AllocationState.stopping.value
            alloc.stop_reason = f"exceeded max_duration of {limit}s"
            record(s, "allocation_stopping", now, alloc.stop_reason, job_id=job.id, allocation_id=alloc.id)
            count += 1
    return count


def _model_matches(requested: str, model: str) -> bool:
    r, n = requested.upper(), model.upper()
    return n == r or n.startswith(r + "-")


def allowed_models(requested: Sequence[str] | None, known_models: AbstractSet[str]) -> frozenset[str]:
    """The network's GPU models a request names; empty = any. "A100" means every A100 variant the network has
    ("A100-40GB", "A100-80GB"); a name no node has yet stays as written."""
    if not requested:
        return frozenset()
    matched = {k for k in known_models for r in requested if _model_matches(r, k)}
    return frozenset(matched or requested)


def demand_of(spec: JobSpec, known_models: set[str], verification: bool = True) -> fabric.Demand:
    g = spec.resources.gpus
    models = allowed_models(g.models, known_models)
    share = g.milli if (g.milli is not None and g.count <= 1 and g.milli < 1000) else 0
    count = g.count if g.count else (1 if g.milli else 0)
    return fabric.Demand(
        cpu_milli=spec.resources.cpu_milli,
        memory_mib=spec.resources.memory_mib,
        gpu_count=count,
        gpu_share_milli=share,
        gpu_models=models,
        min_vram_mib=g.min_vram_mib,
        disk_mib=spec.resources.disk_mib,
        regions=frozenset(spec.placement.regions),
        node_ids=frozenset(spec.placement.nodes),
        features=required_features(spec, verification),
    )


def required_features(spec: JobSpec, verification: bool = True) -> frozenset[str]:
    """Node features a job needs: an engine for an image; proof of hardware when it pays (unless it says not).
    A server that runs no proof of hardware (`verification` off) has nothing to require."""
    needs = set()
    if spec.image:
        needs.add("container")
    if not verification:
        return frozenset(needs)
    verified = spec.placement.verified
    if verified is None:
        verified = spec.max_price_per_hour is not None
    if verified:
        needs.add("verified")
    return frozenset(needs)


def node_of(node_id: str, info_json: dict | NodeInfo, state: str, verdict: str | None = None,
            model_estimate: str | None = None, reliability: float = 1.0) -> fabric.Node:
    """`verdict` is the node's proof of hardware for its current claim (a change of claim clears it);
    `reliability` its score (services/reliability.py)."""
    info = info_json if isinstance(info_json, NodeInfo) else NodeInfo.model_validate(info_json)
    features = {"container"} if info.container_engines else set()
    if verdict == "verified":
        features.add("verified")
    return fabric.Node(
        id=node_id,
        cpu_milli=info.cpus * 1000,
        memory_mib=info.memory_mib,
        gpus=fabric.shared_gpus((g.index, g.model, g.vram_mib) for g in info.gpus),
        region=info.region,
        disk_mib=info.disk_mib,
        price_per_gpu_hour=offered_price_per_gpu_hour(info.price_per_gpu_hour, verdict, model_estimate),
        price_per_cpu_hour=info.price_per_cpu_hour,
        reliability=reliability,
        schedulable=state == "online",
        features=frozenset(features),
        network=info.network_label,
    )


RELIABILITY_REFRESH_S = 30.0


class PendingCache:
    """What the scheduling loop keeps across rounds so a round reads and parses only what changed: what each
    pending job asks of the fabric (a spec never changes after submit; a change in the network's GPU models,
    which widens "A100" to its variants, parses it again), each node as the fabric sees it, each live
    allocation, and the reliability scores."""

    def __init__(self, max_entries: int = 500_000, verification: bool = True):
        self.verification = verification
        self._reliability: tuple[float, dict[str, float]] | None = None
        self._entries: dict[str, tuple[frozenset[str], fabric.Demand, float | None, bool, float | None,
                                       tuple[int, bool, bool]]] = {}
        self._max = max_entries
        self._nodes: dict[str, tuple[tuple, fabric.Node]] = {}
        self.allocations: dict[str, fabric.Allocation] = {}
        self._arrivals: tuple[tuple, tuple[tuple[fabric.Demand, int], ...]] | None = None

    def node(self, node_id: str, raw: str, state: str, verdict: str | None, estimate: str | None,
             reliability: float) -> fabric.Node:
        """A node as the fabric sees it, built again only when its stored description or standing changed."""
        key = (raw, state, verdict, estimate, reliability)
        hit = self._nodes.get(node_id)
        if hit is None or hit[0] != key:
            if len(self._nodes) >= self._max:
                self._nodes.clear()
            node = node_of(node_id, NodeInfo.model_validate_json(raw), state, verdict, estimate, reliability)
            hit = self._nodes[node_id] = (key, node)
        return hit[1]

    def keep_allocations(self, live: list[str]) -> None:
        """Forget allocations that are no longer live."""
        if len(self.allocations) > len(live):
            keep = set(live)
            self.allocations = {k: v for k, v in self.allocations.items() if k in keep}

    def reliability(self, s: Session, now: float) -> dict[str, float]:
        """Every node's reliability, recomputed at most every RELIABILITY_REFRESH_S: it moves over hours, and
        computing it reads the node and attempt history of the whole window."""
        if self._reliability is None or now - self._reliability[0] >= RELIABILITY_REFRESH_S or now < self._reliability[0]:
            self._reliability = (now, reliability_scores(s, now))
        return self._reliability[1]

    def get(self, job_id: str, models: frozenset[str]):
        hit = self._entries.get(job_id)
        return hit[1:] if hit is not None and hit[0] == models else None

    def demands(self, s: Session, job_ids: Sequence[str], models: frozenset[str]) -> list:
        """What each job asks (as `get`), parsing in chunks the specs not seen yet."""
        unknown = [job_id for job_id in job_ids if self.get(job_id, models) is None]
        for start in range(0, len(unknown), 500):
            for job_id, spec in s.execute(select(m.Job.id, m.Job.spec).where(m.Job.id.in_(unknown[start:start + 500]))):
                self.put(job_id, models, JobSpec.model_validate(spec))
        return [self.get(job_id, models) for job_id in job_ids]

    def arrivals(self, s: Session, models: frozenset[str]) -> tuple[tuple[fabric.Demand, int], ...]:
        """The latest ARRIVAL_WINDOW jobs submitted, whatever became of them: the work to come, for per-task
        placement's fragmentation measure (`fabric.Snapshot.arrivals`). The same tuple while they are the same
        jobs, so the round reuses the workload it learnt."""
        ids = tuple(s.scalars(select(m.Job.id).order_by(m.Job.queue_order.desc()).limit(ARRIVAL_WINDOW)).all())
        if self._arrivals is None or self._arrivals[0] != (ids, models):
            got = (hit for hit in self.demands(s, ids, models) if hit is not None)
            self._arrivals = ((ids, models), tuple((demand, gang[0]) for demand, _, _, _, gang in got))
        return self._arrivals[1]

    def put(self, job_id: str, models: frozenset[str], spec: JobSpec
            ) -> tuple[fabric.Demand, float | None, bool, float | None, tuple[int, bool, bool]]:
        if len(self._entries) >= self._max:
            self._entries.clear()
        hours = spec.max_duration / 3600.0 if spec.max_duration else None
        gang = (spec.nodes, spec.multi_node, spec.placement.mixed_gpu_models)
        value = (demand_of(spec, set(models), self.verification), spec.max_price_per_hour, spec.interruptible,
                 hours, gang)
        self._entries[job_id] = (models, *value)
        return value


def build_snapshot(s: Session, now: float, cache: PendingCache | None = None) -> fabric.Snapshot:
    """`cache` (kept by the scheduling loop across rounds) spares re-parsing the specs of waiting jobs."""
    cache = cache if cache is not None else PendingCache()
    # plain column reads, not ORM objects: a round reads every node and every live and pending job
    scores = cache.reliability(s, now)
    # the hardware description as stored text: parsed, and the node built, only when something changed
    nodes = [cache.node(node_id, raw, state, verdict, estimate, scores.get(node_id, 1.0))
             for node_id, raw, state, verdict, estimate in s.execute(
                 select(m.Node.id, cast(m.Node.info, String), m.Node.state, m.Node.verdict, m.Node.model_estimate)
                 .order_by(m.Node.id))]
    known_models = frozenset(g.model for n in nodes for g in n.gpus)
    a, j = m.Allocation, m.Job
    # what an allocation holds never changes: only the ones new since the last round are read in full
    live = s.scalars(select(a.id).where(a.state.in_(ACTIVE))).all()
    fresh = [alloc_id for alloc_id in live if alloc_id not in cache.allocations]
    for start in range(0, len(fresh), 500):
        for row in s.execute(
            select(a.id, a.job_id, a.node_id, a.cpu_milli, a.memory_mib, a.gpu_indices, a.gpu_share_milli,
                   a.disk_mib, j.priority, j.spec["interruptible"].as_boolean(),
                   j.spec["resources"]["gpus"]["models"])
            .join(j, j.id == a.job_id).where(a.id.in_(fresh[start:start + 500]))
        ):
            cache.allocations[row[0]] = fabric.Allocation(
                id=row[0], job_id=row[1], node_id=row[2], cpu_milli=row[3], memory_mib=row[4],
                gpu_indices=tuple(row[5]), gpu_share_milli=row[6], disk_mib=row[7], priority=row[8],
                interruptible=bool(row[9]),
                # which models its job may use: the per-task placement learns the workload from running work too
                gpu_models=allowed_models(row[10] if isinstance(row[10], list) else None, known_models),
            )
    running = [cache.allocations[alloc_id] for alloc_id in live if alloc_id in cache.allocations]
    cache.keep_allocations(live)
    pending = []
    queue = s.execute(select(j.id, j.queue_order, j.priority).where(j.state == JobState.pending.value)
                      .order_by(j.queue_order)).all()
    asks = cache.demands(s, [job_id for job_id, _, _ in queue], known_models)
    for (job_id, order, priority), ask in zip(queue, asks, strict=True):
        demand, bid, interruptible, hours, (tasks, one_per_node, mixed) = ask
        pending.append(fabric.Job(id=job_id, demand=demand, order=order, priority=priority, bid_per_hour=bid,
                                  interruptible=interruptible, expected_duration_h=hours, gang_size=tasks,
                                  one_per_node=one_per_node, mixed_gpu_models=mixed))
    return fabric.Snapshot(nodes=tuple(nodes), running=tuple(running), pending=tuple(pending), now=now,
                           arrivals=cache.arrivals(s, known_models))


def _preempting_nodes(s: Session) -> set[str]:
    rows = s.scalars(select(m.Allocation.node_id).where(
        m.Allocation.state == AllocationState.stopping.value, m.Allocation.stop_reason.startswith("preempted")
    ))
    return set(rows)


def apply_decisions(s: Session, snapshot: fabric.Snapshot, decisions: fabric.Decisions, now: float) -> RoundReport:
    """Apply one round's decisions.

    A pre-empted allocation keeps its resources until its agent confirms the stop (it has a grace period to
    checkpoint), while the fabric plans the pre-empting job onto those resources at once. So a start on a node
    where this round pre-empts waits for a later round, and a node pre-empts one wave at a time: while one is
    stopping there, no further victims are taken on that node (the waiting job would not need them).
    """
    report = RoundReport()
    with s.no_autoflush:  # one flush at commit: the write lock is held from the node locks to the commit only
        _apply(s, snapshot, decisions, now, report)
    return report


NODE_GONE = "waiting: a node chosen for it went offline"


def _lock_nodes(s: Session, snapshot: fabric.Snapshot, decisions: fabric.Decisions) -> set[str]:
    """Lock the nodes this round starts or pre-empts work on and return those that are no longer online.

    The snapshot was read before this transaction, and any replica's sweeper may have declared one of its nodes
    lost since (services/lost_nodes.py). Locked here, in node-id order as the sweeper locks them, a node cannot
    be declared lost until this round commits; and one declared lost before is seen as it now is, so nothing is
    placed on it (nor is a lost attempt on it turned back into a stopping one)."""
    node_of_alloc = {a.id: a.node_id for a in snapshot.running}
    touched = {st.node_id for st in decisions.starts}
    touched |= {node_of_alloc[p.allocation_id] for p in decisions.preemptions if p.allocation_id in node_of_alloc}
    states = {node.id: node.state for node in lock_rows(s, m.Node, touched)}
    return {node_id for node_id in touched if states.get(node_id) != "online"}


def _drop_changed_jobs(s: Session, rows: dict[str, m.Job], decisions: fabric.Decisions) -> None:
    """Lock the jobs this round will write and forget those no longer pending.

    `rows` were read before the round's locks, and a cancel may have committed since: writing the round's
    decision over it would start, or mark unschedulable, a job its owner was told is cancelled. Locked here (on
    SQLite the round already holds the database's write lock), and read again, such a job is left alone. A
    waiting job is written only where its reason changes, so only those are read again."""
    ids = {st.job_id for st in decisions.starts} | {u.job_id for u in decisions.unschedulable}
    ids |= {w.job_id for w in decisions.waiting
            if (job := rows.get(w.job_id)) is not None and job.reason != w.reason}
    ids &= rows.keys()
    if not ids:
        return
    ordered = sorted(ids)
    for start in range(0, len(ordered), 500):
        for job_id, state in s.execute(
            select(m.Job.id, m.Job.state).where(m.Job.id.in_(ordered[start:start + 500]))
            .order_by(m.Job.id).with_for_update()
        ):
            if state != JobState.pending.value:
                del rows[job_id]


def _apply(s: Session, snapshot: fabric.Snapshot, decisions: fabric.Decisions, now: float,
           report: RoundReport) -> None:
    jobs = {j.id: j for j in snapshot.pending}
    # the rows of every job a decision names, in one query (they are all pending in the snapshot)
    # (without their specs: the decisions carry what a start needs, and a backlog's specs are large)
    rows = {j.id: j for j in s.scalars(select(m.Job).where(m.Job.state == JobState.pending.value)
                                       .options(defer(m.Job.spec)))}
    node_of_alloc = {a.id: a.node_id for a in snapshot.running}
    already = _preempting_nodes(s)
    gone = _lock_nodes(s, snapshot, decisions)  # from here to the commit no sweeper changes these nodes
    _drop_changed_jobs(s, rows, decisions)  # nor does a cancel change the jobs this round writes
    planned = {node_of_alloc.get(p.allocation_id) for p in decisions.preemptions}
    for p in decisions.preemptions:
        alloc = s.get(m.Allocation, p.allocation_id, populate_existing=True)  # as it is now, under the node lock
        if alloc is None or alloc.state not in ACTIVE or alloc.state == AllocationState.stopping.value:
            continue
        if alloc.node_id in already:
            continue  # an earlier wave is still stopping there
        alloc.state = AllocationState.stopping.value
        alloc.stop_reason = f"preempted: {p.reason}"
        record(s, "preempted", now, p.reason, job_id=alloc.job_id, node_id=alloc.node_id, allocation_id=alloc.id)
        report.preempted += 1
    held_back = {st.job_id for st in decisions.starts if st.node_id in planned}
    # a job placed (wholly or a gang's task) on a node declared lost since the snapshot waits for the next round
    stranded = {st.job_id for st in decisions.starts if st.node_id in gone}
    ports = GangPorts(s, snapshot, decisions)
    accepted: dict[str, bool] = {}  # job -> whether its task 0 was placed: a gang's other tasks follow it
    for start in decisions.starts:
        if start.job_id in held_back or start.job_id in stranded:  # a gang waits whole: no task starts early
            job = rows.get(start.job_id)
            if job is not None and start.task_index == 0 and job.state == JobState.pending.value:
                why = NODE_GONE if start.job_id in stranded else "waiting for pre-empted work to stop"
                _set_wait_reason(job, why, now, report)
            continue
        job = rows.get(start.job_id)
        if start.task_index == 0:
            # a job that changed since the snapshot (cancelled) is left alone; the next round sees it as it is
            accepted[start.job_id] = job is not None and job.state == JobState.pending.value
            if accepted[start.job_id] and start.job_id in ports.gangs and not ports.reserve(start.job_id):
                accepted[start.job_id] = False
                _set_wait_reason(job, "waiting for free ports on its nodes (gang_port_min..gang_port_max)",
                                 now, report)
        if not accepted.get(start.job_id) or job is None:
            continue
        d = jobs[start.job_id].demand
        alloc = m.Allocation(
            id=new_id(), job_id=job.id, node_id=start.node_id, attempt=job.retries + 1,
            state=AllocationState.assigned.value, gpu_indices=list(start.gpu_indices),
            gpu_share_milli=start.gpu_share_milli, cpu_milli=d.cpu_milli, memory_mib=d.memory_mib,
            disk_mib=d.disk_mib, created_at=now, task_index=start.task_index,
            port_base=ports.port_of(start.job_id, start.task_index),
        )
        s.add(alloc)
        if start.task_index == 0:
            job.attempts += 1
            gpus = f" GPUs {list(start.gpu_indices)}" if start.gpu_indices else ""
            where = f"node {start.node_id}{gpus}"
            if jobs[start.job_id].gang_size > 1:
                where = f"{jobs[start.job_id].gang_size} nodes, head on {where}"
            set_job_state(s, job, JobState.starting, f"placed on {where}", now, start.node_id, alloc.id)
        report.started += 1
    has_nodes = bool(snapshot.nodes)
    for u in decisions.unschedulable:
        job = rows.get(u.job_id)
        if job is None or job.state != JobState.pending.value:
            continue
        if not has_nodes:  # an empty network is not proof: nodes may still join
            _set_wait_reason(job, "waiting for nodes to register", now, report)
            continue
        set_job_state(s, job, JobState.unschedulable, u.reason, now)
        report.unschedulable += 1
    for w in decisions.waiting:
        job = rows.get(w.job_id)
        if job is not None and job.state == JobState.pending.value:
            _set_wait_reason(job, w.reason, now, report)


def _set_wait_reason(job: m.Job, reason: str, now: float, report: RoundReport) -> None:
    report.waiting += 1
    report.pending_reasons[reason] = report.pending_reasons.get(reason, 0) + 1
    if job.reason != reason:  # reasons are state, not events: no event per round
        job.reason = reason
        job.updated_at = now


def run_round(
    s: Session, settings: Settings, now: float, cache: PendingCache | None = None,
    fence: Callable[[Session], None] | None = None,
) -> RoundReport:
    """Everything one tick does. `max_duration` enforcement commits on its own; the decisions are applied in one
    transaction the caller commits. Between the two, the snapshot and the pure fabric run without holding a write
    lock. Lost-node detection and metering are not here: every replica's sweeper does them (background/sweeper.py).

    `fence` (the leader's lease check, services/leader.py) runs first in both transactions: it locks the lease
    and raises when this replica no longer leads, so a deposed leader commits neither."""
    if fence:
        fence(s)
    timed_out = enforce_max_duration(s, now)
    s.commit()
    snapshot = build_snapshot(s, now, cache or PendingCache(verification=settings.verify.enabled))
    decisions = fabric.schedule(snapshot, settings.placement)
    if fence:
        fence(s)
    report = apply_decisions(s, snapshot, decisions, now)
    report.timed_out = timed_out
    return report
