"""The agent protocol: register a node, heartbeat with what runs, get back what should run; ship logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ceti.server.errors import BadRequest, Forbidden, NotFound, TooLarge
from ceti.server.services import claims, secrets, verification
from ceti.server.services.events import record, set_job_state
from ceti.server.services.gangs import gang_of
from ceti.server.services.lifecycle import end_attempt
from ceti.server.services.tokens import Principal, new_id
from ceti.server.settings import Settings
from ceti.spec import AllocationState, JobState, NodeInfo, RetryOn
from ceti.store import models as m
from ceti.store.fencing import bump_epochs

ACTIVE = [s.value for s in AllocationState if s.active]


def _provider_of(who: Principal) -> str:
    if who.kind != "provider" or not who.provider_id:
        raise Forbidden("only provider tokens can register nodes and heartbeat")
    return who.provider_id


def register(s: Session, who: Principal, info: NodeInfo, node_id: str | None, now: float) -> m.Node:
    """Register a node, or update a known one (an agent restarting on the same data directory)."""
    provider_id = _provider_of(who)
    node = s.get(m.Node, node_id) if node_id else None
    if node is not None and node.provider_id != provider_id:
        raise Forbidden("this node belongs to another provider")
    if node is None:
        node = m.Node(
            id=node_id or new_id(), provider_id=provider_id, hostname=info.hostname, region=info.region,
            info=info.model_dump(mode="json"), state="online", registered_at=now, last_heartbeat_at=now,
            epoch=0,  # known without a read after the commit: the answer tells the agent its epoch
        )
        s.add(node)  # flushed with its event at commit: one round trip fewer than a flush of its own
        record(s, "node_registered", now, f"{info.hostname} in {info.region}", node_id=node.id, to_state="online")
        return node
    if node.info != info.model_dump(mode="json"):
        record(s, "node_updated", now, "hardware or terms changed", node_id=node.id)
    node.info = info.model_dump(mode="json")
    node.hostname, node.region = info.hostname, info.region
    verification.on_claim(s, node, now)
    _mark_alive(s, node, now)
    return node


def _mark_alive(s: Session, node: m.Node, now: float) -> None:
    node.last_heartbeat_at = now
    if node.state != "online":
        record(s, "node_state", now, "heartbeat received again", node_id=node.id, from_state=node.state,
               to_state="online")
        node.state = "online"
        node.lost_at = None


def own_node(s: Session, who: Principal, node_id: str) -> m.Node:
    provider_id = _provider_of(who)
    node = s.get(m.Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id}")
    if node.provider_id != provider_id:
        raise Forbidden("a provider may act only on its own nodes")
    return node


@dataclass
class Finished:
    allocation_id: str
    exit_code: int | None
    stopped: bool = False
    cpu_seconds: float | None = None
    peak_memory_mib: float | None = None
    wall_s: float | None = None
    reason: str = ""


@dataclass
class HeartbeatAnswer:
    node_state: str
    epoch: int = 0
    run: list[dict[str, Any]] = field(default_factory=list)
    stop: list[dict[str, Any]] = field(default_factory=list)
    verify: dict[str, Any] | None = None


def heartbeat(
    s: Session, who: Principal, node_id: str, running: list[str], finished: list[Finished], settings: Settings,
    now: float,
) -> HeartbeatAnswer:
    node = own_node(s, who, node_id)
    if finished:  # each may query what the previous one changed: flushed as it goes
        # the node's row lock first, as the lost-node sweep takes it: a sweep and these reports on the same node
        # then run one after the other, and each reads what the other wrote (not an attempt ended meanwhile)
        claims.lock_rows(s, m.Node, [node.id])
        read = _read_for_finished(s, [report.allocation_id for report in finished])
        for report in finished:
            _apply_finished(s, node, report, now)
        del read
        # committed at once: the write lock is held for the exits only, not while the answer is built, and an
        # exit is kept even if the answer then fails (a resent report changes nothing)
        s.commit()
    # reads first, writes last: on SQLite the one write lock is then held from the first write to the commit
    # only, and a heartbeat that changes nothing but the node's clock holds it for one UPDATE
    with s.no_autoflush:
        live = _live_allocations(s, node.id)
        job_ids = sorted({a.job_id for a in live.values()})
        jobs = {j.id: j for j in s.scalars(select(m.Job).where(m.Job.id.in_(job_ids)))} if job_ids else {}
        starting = [live[a] for a in dict.fromkeys(running)
                    if a in live and live[a].state == AllocationState.assigned.value]
        started = _start(s, node.id, starting, now)
        for alloc in starting:
            if alloc.id not in started:  # ended since it was read (a sweep declared this node lost)
                del live[alloc.id]
                continue
            job = jobs.get(alloc.job_id)
            if job is not None and job.state == JobState.starting.value:
                set_job_state(s, job, JobState.running, f"running on {node.hostname}", now, node.id, alloc.id)
        answer = _desired(s, node, live, jobs, settings)
        answer.verify = verification.desired(s, node, live.values(), settings, now)
        _mark_alive(s, node, now)
        answer.node_state = node.state
    return answer


def _start(s: Session, node_id: str, allocs: list[m.Allocation], now: float) -> set[str]:
    """assigned -> running for `allocs` (of one node), as one compare-and-set on the rows; the ids that moved.

    A sweep on another replica (or thread) may have ended an attempt after this heartbeat read it, and writing
    the stale object back would revive an attempt whose job is already being retried elsewhere. The objects take
    the new values as their committed state, so the flush writes them no second time, and the node's epoch is
    bumped here as the flush would have (store/fencing.py). A node that reported 30 new attempts running made
    30 compare-and-set UPDATEs one after another before, and the flush wrote the rows again."""
    if not allocs:
        return set()
    a = m.Allocation
    moved = set(s.scalars(
        update(a).where(a.id.in_(sorted(x.id for x in allocs)), a.state == AllocationState.assigned.value)
        .values(state=AllocationState.running.value, started_at=now)
        .returning(a.id).execution_options(synchronize_session=False)))
    if moved:
        for alloc in allocs:
            if alloc.id in moved:
                set_committed_value(alloc, "state", AllocationState.running.value)
                set_committed_value(alloc, "started_at", now)
        bump_epochs(s, [node_id])
    return moved


_NODE_QUIET = select(m.Node.provider_id, m.Node.state, m.Node.epoch, m.Node.verify_challenge_id, m.Node.verdict,
                     m.Node.next_verify_at).where(m.Node.id == bindparam("node_id"))
_ALLOCS_QUIET = select(m.Allocation.id, m.Allocation.state).where(
    m.Allocation.node_id == bindparam("node_id"), m.Allocation.state.in_(ACTIVE))
_ALIVE = update(m.Node).where(m.Node.id == bindparam("node_id")).values(last_heartbeat_at=bindparam("now"))


def quiet_heartbeat(s: Session, who: Principal, node_id: str, running: list[str], epoch: int, settings: Settings,
                    now: float, alive: Callable[[str, float], None] | None = None) -> int | None:
    """The common heartbeat in three plain statements: the agent holds the current desired state (its epoch is
    the node's), runs exactly what the server has running there, and reports nothing finished, and no proof
    of hardware is open or due. Then only the node's clock moves, and the answer is "unchanged" (the epoch).
    None when any of that does not hold: the full heartbeat decides. `alive` takes the clock's move to write it
    later with others (background/heartbeat_clock.py); without it the move is written here."""
    provider_id = _provider_of(who)
    conn = s.connection()
    node = conn.execute(_NODE_QUIET, {"node_id": node_id}).first()
    if node is None or node.provider_id != provider_id:
        return None  # the full path gives the 404 or 403
    allocs = conn.execute(_ALLOCS_QUIET, {"node_id": node_id}).all() if _node_quiet(node, epoch, settings, now) else None
    if allocs is None or not _runs_exactly(allocs, running):
        return None
    if alive is not None:
        alive(node_id, now)
    else:
        conn.execute(_ALIVE, {"node_id": node_id, "now": now})
    return epoch


def _node_quiet(node: Any, epoch: int, settings: Settings, now: float) -> bool:
    """The node's part of the quiet test: online, at the agent's epoch, no proof of hardware open or due.
    `node` is (provider_id, state, epoch, verify_challenge_id, verdict, next_verify_at)."""
    _, state, node_epoch, challenge, verdict, next_verify_at = node
    if state != "online" or node_epoch != epoch:
        return False
    return not settings.verify.enabled or (challenge is None and verdict is not None and next_verify_at is not None
                                           and now < next_verify_at)


def _runs_exactly(allocs: Any, running: list[str]) -> bool:
    """The agent runs exactly the server's live allocations there, and all of them are running (not assigned,
    not stopping). `allocs` is [(id, state)]."""
    return (len(allocs) == len(running) and all(state == AllocationState.running.value for _, state in allocs)
            and {alloc_id for alloc_id, _ in allocs} == set(running))


# The same test in the driver's own SQL, for the fast lane (server/fastlane.py): one statement, with no session and no
# SQL compilation, which is most of what a quiet heartbeat cost. On SQLite it runs on the event loop itself; on
# PostgreSQL through psycopg's async driver on the event loop, one round trip with no thread hop.
_QUIET_SQL = (
    "SELECT t.kind, t.provider_id, t.revoked_at, n.provider_id, n.state, n.epoch, n.verify_challenge_id, n.verdict, "
    "n.next_verify_at, a.id, a.state FROM tokens t JOIN nodes n ON n.id = {p} "
    "LEFT JOIN allocations a ON a.node_id = n.id AND a.state IN ("
    + ", ".join(f"'{state}'" for state in ACTIVE) + ") WHERE t.token_hash = {p}"
)


def quiet_heartbeat_sql(cursor: Any, placeholder: str, token_hash: str, node_id: str, running: list[str], epoch: int,
                        settings: Settings, now: float) -> bool:
    """`quiet_heartbeat`'s test with a DB-API cursor (`placeholder`: "?" for sqlite3, "%s" for psycopg), token
    check included: a valid, unrevoked provider token of the node's owner. Only reads; True when the answer is
    "unchanged" (the caller then notes the heartbeat's time). False leaves every decision, errors included,
    to the full path."""
    rows = cursor.execute(_QUIET_SQL.format(p=placeholder), (node_id, token_hash)).fetchall()
    return quiet_rows(rows, running, epoch, settings, now)


async def quiet_heartbeat_sql_async(cursor: Any, token_hash: str, node_id: str, running: list[str], epoch: int,
                                    settings: Settings, now: float) -> bool:
    """`quiet_heartbeat_sql` with a cursor of psycopg's async driver."""
    await cursor.execute(_QUIET_SQL.format(p="%s"), (node_id, token_hash))
    return quiet_rows(await cursor.fetchall(), running, epoch, settings, now)


def quiet_rows(rows: list[Any], running: list[str], epoch: int, settings: Settings, now: float) -> bool:
    """The quiet test on `_QUIET_SQL`'s rows: the token and node in the first nine columns of every row, then one
    live allocation (id, state) per row, or none (NULLs) in a single row."""
    if not rows:
        return False
    kind, token_provider, revoked_at, *node = rows[0][:9]
    if kind != "provider" or revoked_at is not None or not token_provider or node[0] != token_provider:
        return False
    if not _node_quiet(node, epoch, settings, now):
        return False
    return _runs_exactly([(row[9], row[10]) for row in rows if row[9] is not None], running)


def _live_allocations(s: Session, node_id: str) -> dict[str, m.Allocation]:
    rows = s.scalars(select(m.Allocation).where(m.Allocation.node_id == node_id, m.Allocation.state.in_(ACTIVE)))
    # an attempt closed by this heartbeat's own reports is not flushed yet: leave it out here
    return {a.id: a for a in rows if a.state in ACTIVE}


def _read_for_finished(s: Session, alloc_ids: list[str]) -> list[Any]:
    """Read at once, under the node's lock, the rows each report then looks up by key (its allocation, job and
    meter): a node that ran many small jobs reports dozens of ends in one heartbeat, and one lookup after another,
    each a round trip and an autoflush, took it a second on PostgreSQL. The caller holds the returned rows while
    it works: the session keeps only weak references to unchanged rows, so a lookup finds them only while held."""
    allocs = list(s.scalars(select(m.Allocation).where(m.Allocation.id.in_(alloc_ids))))
    job_ids = sorted({a.job_id for a in allocs})
    if not job_ids:
        return allocs
    jobs = list(s.scalars(select(m.Job).where(m.Job.id.in_(job_ids))))
    meters = list(s.scalars(select(m.LedgerMeter).where(m.LedgerMeter.allocation_id.in_([a.id for a in allocs]))))
    return [*allocs, *jobs, *meters]


def _apply_finished(s: Session, node: m.Node, report: Finished, now: float) -> None:
    alloc = s.get(m.Allocation, report.allocation_id)
    if alloc is None or alloc.node_id != node.id or alloc.state not in ACTIVE:
        return  # stale: the server already closed it (lost node, an older attempt); the report changes nothing
    alloc.cpu_seconds = report.cpu_seconds
    alloc.peak_memory_mib = report.peak_memory_mib
    alloc.wall_s = report.wall_s
    if alloc.started_at is None:
        alloc.started_at = now
    job = s.get(m.Job, alloc.job_id)
    code = report.exit_code
    if job.state == JobState.starting.value:  # it ran and ended between two heartbeats: it did run
        set_job_state(s, job, JobState.running, f"running on {node.hostname} (ended before its first report)",
                      now, node.id, alloc.id)
    if alloc.state == AllocationState.stopping.value:
        why = alloc.stop_reason or "stopped"
        if why == "cancelled":
            moved = end_attempt(s, job, alloc, AllocationState.stopped, now, cause=None, exit_code=code,
                                reason="cancelled")
            if moved or not JobState(job.state).finished:
                set_job_state(s, job, JobState.cancelled, "cancelled by the user", now, node.id, alloc.id)
        elif why.startswith("preempted"):
            end_attempt(s, job, alloc, AllocationState.stopped, now, cause=RetryOn.preemption, exit_code=code,
                        reason=why)
        else:
            moved = end_attempt(s, job, alloc, AllocationState.stopped, now, cause=None, exit_code=code, reason=why)
            if moved and job.state == JobState.succeeded.value:  # stopped for a limit even if the process exited 0
                set_job_state(s, job, JobState.failed, why, now, node.id, alloc.id)
        return
    if alloc.task_index > 0:
        # a node of a multi-node job is done only when its head is: ending first, with any code, fails the gang
        detail = f"exited with code {code}" if code is not None else (report.reason or "vanished")
        end_attempt(s, job, alloc, AllocationState.exited, now, cause=RetryOn.failure, exit_code=code,
                    reason=f"task {alloc.task_index} of the gang on {node.hostname} {detail} before the head")
        return
    if code == 0:
        end_attempt(s, job, alloc, AllocationState.exited, now, cause=None, exit_code=0, reason="exited with code 0")
        return
    detail = f"exited with code {code}" if code is not None else (report.reason or "the process vanished")
    end_attempt(s, job, alloc, AllocationState.exited, now, cause=RetryOn.failure, exit_code=code, reason=detail)


def _desired(
    s: Session, node: m.Node, live: dict[str, m.Allocation], jobs: dict[str, m.Job], settings: Settings
) -> HeartbeatAnswer:
    if s.new or s.dirty:
        s.flush()  # the epoch must include this heartbeat's own changes (fencing bumps it on flush)
    epoch = s.scalar(select(m.Node.epoch).where(m.Node.id == node.id))
    answer = HeartbeatAnswer(node_state=node.state, epoch=epoch)
    for alloc in live.values():
        if alloc.state not in ACTIVE:
            continue
        if alloc.state == AllocationState.stopping.value:
            answer.stop.append({"allocation_id": alloc.id, "grace_s": settings.stop_grace_s,
                                "reason": alloc.stop_reason})
            continue
        job = jobs[alloc.job_id]
        spec = job.spec  # validated at submit; stored as its JSON form
        env = {**spec["env"], **secrets.values_for(s, settings, job.project_id, spec.get("secrets") or [])}
        answer.run.append({
            "allocation_id": alloc.id,
            "job_id": job.id,
            "name": job.name,
            "image": spec.get("image"),
            "command": spec["command"],
            "env": env,
            "files": spec["files"],
            "gpu_indices": list(alloc.gpu_indices),
            "gpu_share_milli": alloc.gpu_share_milli,
            "cpu_milli": alloc.cpu_milli,
            "memory_mib": alloc.memory_mib,
        })
        if spec.get("engine"):
            answer.run[-1]["gang"] = gang_of(s, alloc, spec, node.info, settings)
    return answer


def upload_logs(
    s: Session, who: Principal, allocation_id: str, chunks: list[tuple[str, int, str]], settings: Settings,
    now: float,
) -> dict[str, Any]:
    """Store chunks idempotently (a chunk is identified by allocation, stream and byte offset)."""
    alloc = s.get(m.Allocation, allocation_id)
    if alloc is None:
        raise NotFound(f"no allocation {allocation_id}")
    own_node(s, who, alloc.node_id)
    job = s.get(m.Job, alloc.job_id)
    hidden = list(secrets.values_for(s, settings, job.project_id, job.spec.get("secrets") or []).values())
    accepted = duplicates = 0
    for stream, offset, data in chunks:
        size = len(data.encode())
        if stream not in ("stdout", "stderr"):
            raise BadRequest(f"unknown stream {stream!r}")
        if offset < 0:
            raise BadRequest("a chunk offset cannot be negative")
        if size > settings.max_log_chunk_bytes:
            raise TooLarge(f"a log chunk is {size} bytes; the limit is {settings.max_log_chunk_bytes}")
        exists = s.scalar(
            select(m.LogChunk.id).where(
                m.LogChunk.allocation_id == alloc.id, m.LogChunk.stream == stream, m.LogChunk.offset == offset
            )
        )
        if exists is not None:
            duplicates += 1
            continue
        if (job.log_bytes + size > settings.max_log_bytes_per_job
                or job.log_chunks + 1 > settings.max_log_chunks_per_job):
            if not job.log_truncated:
                job.log_truncated = True
                record(s, "logs_truncated", now,
                       f"log limit reached ({settings.max_log_bytes_per_job} bytes or "
                       f"{settings.max_log_chunks_per_job} chunks per job); later output is not stored",
                       job_id=job.id, allocation_id=alloc.id)
            break
        # NUL cannot be stored as text in PostgreSQL; a space keeps the byte length and so the offsets true
        data = secrets.mask(data, hidden).replace("\x00", " ")
        s.add(m.LogChunk(job_id=job.id, allocation_id=alloc.id, stream=stream, offset=offset, data=data,
                         created_at=now))
        job.log_bytes += size
        job.log_chunks += 1
        accepted += 1
    try:
        s.flush()
    except IntegrityError:  # the same chunk raced in from a retried upload
        raise BadRequest("duplicate chunk in one upload") from None
    return {"accepted": accepted, "duplicates": duplicates, "truncated": job.log_truncated}
