"""The scheduling round against a real database, with the clock passed in: no sleeping."""

from sqlalchemy import select

from ceti.server.services import agents, jobs, lost_nodes, scheduling
from ceti.server.services.tokens import Principal
from ceti.server.settings import Settings
from ceti.spec import GPUInfo, NodeInfo, parse_job_spec
from ceti.store import models as m

ADMIN = Principal("t", "admin")


def settings(**kw) -> Settings:
    s = Settings()
    s.node_lost_after_s = kw.get("lost", 1000.0)
    return s


def node(s, who, name: str, gpus: int = 0, now: float = 0.0) -> str:
    info = NodeInfo(hostname=name, cpus=8, memory_mib=32000,
                    gpus=[GPUInfo(index=i, model="A100-40GB", vram_mib=40960) for i in range(gpus)])
    return agents.register(s, who, info, None, now).id


def submit(s, doc: dict, now: float) -> str:
    job, _ = jobs.submit(s, ADMIN, parse_job_spec(doc), now, None, 1000)
    return job.id


def test_priority_then_submission_order(db):
    sessions, provider = db
    with sessions() as s:
        node(s, provider, "n1", gpus=1)
        low = submit(s, {"command": ["x"], "priority": 10, "resources": {"gpus": 1}}, 1.0)
        first = submit(s, {"command": ["x"], "priority": 90, "resources": {"gpus": 1}}, 2.0)
        second = submit(s, {"command": ["x"], "priority": 90, "resources": {"gpus": 1}}, 3.0)
        scheduling.run_round(s, settings(), 4.0)
        states = {j: s.get(m.Job, j).state for j in (low, first, second)}
        assert states == {low: "pending", first: "starting", second: "pending"}
        assert "waiting" in s.get(m.Job, second).reason


def test_lost_node_reschedules_and_retry_keeps_queue_place(db):
    sessions, provider = db
    with sessions() as s:
        n1 = node(s, provider, "n1", gpus=1, now=0.0)
        old = submit(s, {"command": ["x"], "resources": {"gpus": 1}, "retry": {"limit": 1}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        assert s.get(m.Job, old).state == "starting"
        newer = submit(s, {"command": ["x"], "resources": {"gpus": 1}}, 3.0)
        n2 = node(s, provider, "n2", gpus=1, now=3.0)
        scheduling.run_round(s, settings(), 3.5)  # newer takes n2
        assert s.get(m.Job, newer).state == "starting"
        # n1 silent past the timeout (clock passed in), n2 heartbeats
        agents.heartbeat(s, provider, n2, [], [], settings(), 40.0)
        assert lost_nodes.sweep(s, settings(lost=30.0), 40.0) == 1
        scheduling.run_round(s, settings(lost=30.0), 40.0)
        assert s.get(m.Node, n1).state == "lost"
        job = s.get(m.Job, old)
        assert job.state == "pending" and job.retries == 1
        events = s.scalars(select(m.Event).where(m.Event.job_id == old).order_by(m.Event.id)).all()
        assert any(e.to_state == "pending" and "retry 1/1: node n1 lost" in e.reason for e in events)
        assert job.queue_order == 1_000_000  # kept its place
        allocs = s.scalars(select(m.Allocation).where(m.Allocation.job_id == old)).all()
        assert [a.state for a in allocs] == ["lost"]


def test_retry_limit_then_failed(db):
    sessions, provider = db
    with sessions() as s:
        n1 = node(s, provider, "n1")
        j = submit(s, {"command": ["x"], "retry": {"limit": 1, "on": ["failure"]}}, 1.0)
        for attempt, now in ((1, 2.0), (2, 4.0)):
            scheduling.run_round(s, settings(), now)
            alloc = s.scalars(select(m.Allocation).where(m.Allocation.job_id == j, m.Allocation.state == "assigned")).one()
            agents.heartbeat(s, provider, n1, [alloc.id], [], settings(), now + 0.1)
            agents.heartbeat(s, provider, n1, [], [agents.Finished(alloc.id, 3)], settings(), now + 0.5)
        job = s.get(m.Job, j)
        assert job.state == "failed" and job.exit_code == 3 and "retry limit 1 reached" in job.reason


def test_unschedulable_needs_a_reason_but_not_on_an_empty_network(db):
    sessions, provider = db
    with sessions() as s:
        j = submit(s, {"command": ["x"], "resources": {"gpus": 2}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        assert s.get(m.Job, j).state == "pending"
        node(s, provider, "n1", gpus=1)
        scheduling.run_round(s, settings(), 3.0)
        job = s.get(m.Job, j)
        assert job.state == "unschedulable" and "gpu" in job.reason.lower()


def test_max_duration_stops_and_fails(db):
    sessions, provider = db
    with sessions() as s:
        n1 = node(s, provider, "n1")
        j = submit(s, {"command": ["x"], "max_duration": 60}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        alloc = s.scalars(select(m.Allocation).where(m.Allocation.job_id == j)).one()
        agents.heartbeat(s, provider, n1, [alloc.id], [], settings(), 3.0)
        scheduling.run_round(s, settings(), 70.0)
        answer = agents.heartbeat(s, provider, n1, [alloc.id], [], settings(), 70.5)
        assert [x["allocation_id"] for x in answer.stop] == [alloc.id]
        agents.heartbeat(s, provider, n1, [], [agents.Finished(alloc.id, 143, stopped=True)], settings(), 72.0)
        job = s.get(m.Job, j)
        assert job.state == "failed" and "max_duration" in job.reason


def test_silence_while_the_server_was_down_does_not_lose_nodes(db):
    sessions, provider = db
    with sessions() as s:
        node(s, provider, "n1", now=0.0)
        # the server restarted at t=100 after being down since t=1: the node's silence is the server's fault
        assert lost_nodes.sweep(s, settings(lost=30.0), 110.0, listening_since=100.0) == 0
        assert lost_nodes.sweep(s, settings(lost=30.0), 131.0, listening_since=100.0) == 1


def test_every_change_of_a_nodes_allocations_bumps_its_epoch(db):
    sessions, provider = db
    with sessions() as s:
        n1 = node(s, provider, "n1")
        s.commit()

        def epoch() -> int:
            s.commit()
            return s.scalar(select(m.Node.epoch).where(m.Node.id == n1))

        seen = [epoch()]
        j = submit(s, {"command": ["x"]}, 1.0)
        seen.append(epoch())  # a submit alone changes nothing on the node
        scheduling.run_round(s, settings(), 2.0)  # placed
        seen.append(epoch())
        alloc = s.scalars(select(m.Allocation).where(m.Allocation.job_id == j)).one()
        answer = agents.heartbeat(s, provider, n1, [alloc.id], [], settings(), 3.0)  # confirmed running
        seen.append(epoch())
        assert answer.epoch == seen[-1]
        jobs.cancel(s, ADMIN, j, 4.0)  # stop requested
        seen.append(epoch())
        agents.heartbeat(s, provider, n1, [], [agents.Finished(alloc.id, 143, stopped=True)], settings(), 5.0)
        seen.append(epoch())
        assert seen[0] == seen[1] and seen[1] < seen[2] < seen[3] < seen[4] < seen[5]
        assert s.get(m.Job, j).state == "cancelled"


def test_a_job_cancelled_while_the_round_applies_stays_cancelled(db, monkeypatch):
    """A cancel that commits after the round read the pending jobs but before it took its locks: the round
    must see the job as it is now (cancelled) and neither start it nor mark it unschedulable."""
    sessions, provider = db
    with sessions() as s:
        node(s, provider, "n1", gpus=1)
        placed = submit(s, {"command": ["x"], "resources": {"gpus": 1}}, 1.0)
        never = submit(s, {"command": ["x"], "resources": {"gpus": 4}}, 1.5)
        s.commit()
    real = scheduling._preempting_nodes

    def cancel_meanwhile(s):
        with sessions() as other:
            for job_id in (placed, never):
                jobs.cancel(other, ADMIN, job_id, 2.5)
            other.commit()
        return real(s)

    monkeypatch.setattr(scheduling, "_preempting_nodes", cancel_meanwhile)
    with sessions() as s:
        report = scheduling.run_round(s, settings(), 3.0)
        s.commit()
    with sessions() as s:
        for job_id in (placed, never):
            job = s.get(m.Job, job_id)
            assert (job.state, job.reason) == ("cancelled", "cancelled by the user"), job_id
        assert not s.scalars(select(m.Allocation).where(m.Allocation.job_id == placed)).all()
        assert report.started == 0 and report.unschedulable == 0


def test_a_round_that_starts_a_job_while_it_is_being_cancelled_leaves_nothing_running(db, monkeypatch):
    """The other order: the cancel has found nothing running and is about to write when a round (on another
    thread) places the job. Either the round waits for the cancel and leaves the job alone, or the cancel
    sees the start and stops it; never a cancelled job whose allocation goes on to run."""
    import threading

    sessions, provider = db
    with sessions() as s:
        node(s, provider, "n1", gpus=1)
        job_id = submit(s, {"command": ["x"], "resources": {"gpus": 1}}, 1.0)
        s.commit()
    real = jobs.set_job_state
    rounds: list[threading.Thread] = []

    def a_round() -> None:
        with sessions() as other:
            scheduling.run_round(other, settings(), 2.0)
            other.commit()

    def round_meanwhile(*args, **kw):
        t = threading.Thread(target=a_round)
        t.start()
        rounds.append(t)
        t.join(timeout=3.0)  # a round that must wait for the cancel's lock is still waiting after this
        return real(*args, **kw)

    monkeypatch.setattr(jobs, "set_job_state", round_meanwhile)
    with sessions() as s:
        jobs.cancel(s, ADMIN, job_id, 2.5)
        s.commit()
    rounds[0].join(timeout=30)
    assert not rounds[0].is_alive()
    with sessions() as s:
        job = s.get(m.Job, job_id)
        allocs = s.scalars(select(m.Allocation).where(m.Allocation.job_id == job_id)).all()
        active = [a for a in allocs if a.state in ("assigned", "running")]
        assert not active, [(a.state, a.stop_reason) for a in allocs]
        assert job.state == "cancelled" or all(a.stop_reason == "cancelled" for a in allocs)


def test_running_work_carries_the_gpu_models_its_job_may_use(db):
    """The per-task placement learns the workload from running work too; a running job's model constraint
    reaches the snapshot as the network's models it names ("A100" = every A100 variant)."""
    sessions, provider = db
    with sessions() as s:
        node(s, provider, "n1", gpus=2)
        pinned = submit(s, {"command": ["x"], "resources": {"gpus": {"count": 1, "models": ["A100"]}}}, 1.0)
        free = submit(s, {"command": ["x"], "resources": {"gpus": 1}}, 1.5)
        scheduling.run_round(s, settings(), 2.0)
        s.commit()
        snap = scheduling.build_snapshot(s, 3.0)
        by_job = {a.job_id: a.gpu_models for a in snap.running}
        assert by_job == {pinned: frozenset({"A100-40GB"}), free: frozenset()}


def test_the_snapshot_carries_the_jobs_that_arrived_lately(db, monkeypatch):
    """Per-task placement learns the work to come from the latest submissions, whatever became of them
    (running, pending, done), one entry per job with its tasks, at most ARRIVAL_WINDOW of the latest."""
    monkeypatch.setattr(scheduling, "ARRIVAL_WINDOW", 2)
    sessions, provider = db
    with sessions() as s:
        node(s, provider, "n1", gpus=1)
        submit(s, {"command": ["x"], "resources": {"gpus": 1}}, 1.0)
        gpu = submit(s, {"command": ["x"], "resources": {"gpus": 1, "cpus": 2}}, 1.5)
        cpu = submit(s, {"command": ["x"], "resources": {"cpus": 3}}, 2.0)
        scheduling.run_round(s, settings(), 2.5)
        s.commit()
        snap = scheduling.build_snapshot(s, 3.0)
        assert [(d.cpu_milli, d.gpu_count, tasks) for d, tasks in snap.arrivals] == [(3000, 0, 1), (2000, 1, 1)]
        assert {a.job_id for a in snap.running} & {gpu, cpu}  # one of them runs, and still counts
