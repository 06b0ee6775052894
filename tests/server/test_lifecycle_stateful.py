"""A stateful (rule-based) test of the job life cycle through the control plane's service layer.

The machine drives the exact service functions the REST routers call (`agents.register/heartbeat`,
`jobs.submit/cancel`, `lost_nodes.sweep`, `scheduling.run_round`), one committed transaction per call as the
routers and loops do, on a fresh SQLite database per example and with a simulated clock that the machine
advances. After every step it checks the e2e invariant checker plus its own guarantees: job states, live attempts,
GPU and CPU commitment, retry limits, finished jobs staying finished, cancellation being honoured, the event log
following every state change, and the nodes' fencing epochs.

`CETI_STATEFUL_EXAMPLES` raises the number of examples. The two plain tests at the end replay the two bugs
this machine found (pre-emption over-committing the victim's GPU; a cancel lost during a pre-emption stop).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select
from sqlalchemy.util import LRUCache

from ceti.server.services import agents, jobs, lost_nodes, scheduling
from ceti.server.services.tokens import Principal, bootstrap_admin, ensure_provider
from ceti.server.settings import Settings
from ceti.spec import AllocationState, GPUInfo, JobState, NodeInfo, parse_job_spec
from ceti.store import models as m
from ceti.store.db import make_engine, migrate, session_factory
from tests.e2e import invariants as e2e_invariants
from tests.e2e.invariants import check_invariants

ADMIN = Principal("admin-token", "admin")
ACTIVE = {s.value for s in AllocationState if s.active}
CLOSED = {s.value for s in AllocationState if not s.active}
FINISHED = {s.value for s in JobState if s.finished}
LOST_AFTER_S = 30.0
MAX_NODES = 3
MAX_JOBS = 12
EXAMPLES = int(os.environ.get("CETI_STATEFUL_EXAMPLES", "20"))


def make_settings() -> Settings:
    s = Settings()
    s.node_lost_after_s = LOST_AFTER_S
    s.stop_grace_s = 10.0
    return s


# Compiled SQL shared by every example's engines: a new engine compiles every statement afresh, which made the
# per-step reads (and the e2e checker, which makes an engine per call) the bulk of the run time.
_COMPILED = LRUCache(4000)


def cached_engine(url: str):
    return make_engine(url).execution_options(compiled_cache=_COMPILED)


# -- a migrated, bootstrapped database, copied for every example (migrating each time costs ~0.25 s) --------

_TEMPLATE: dict[str, object] = {}


def _template() -> tuple[Path, str, str]:
    if not _TEMPLATE:
        d = Path(tempfile.mkdtemp(prefix="ceti-stateful-template-"))
        engine = make_engine(f"sqlite:///{d / 'ceti.db'}")
        migrate(engine)
        with session_factory(engine)() as s:
            bootstrap_admin(s, 0.0)
            p1 = ensure_provider(s, "provider-a", 0.0).id
            p2 = ensure_provider(s, "provider-b", 0.0).id
            s.commit()
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        _TEMPLATE.update(path=d / "ceti.db", providers=(p1, p2))
    p1, p2 = _TEMPLATE["providers"]  # type: ignore[misc]
    return _TEMPLATE["path"], p1, p2  # type: ignore[return-value]


def fresh_database() -> tuple[Path, str, list[Principal]]:
    src, p1, p2 = _template()
    d = Path(tempfile.mkdtemp(prefix="ceti-stateful-"))
    shutil.copyfile(src, d / "ceti.db")
    providers = [Principal("prov-a", "provider", provider_id=p1), Principal("prov-b", "provider", provider_id=p2)]
    return d, f"sqlite:///{d / 'ceti.db'}", providers


def node_info(name: str, gpus: int, cpus: int) -> NodeInfo:
    return NodeInfo(hostname=name, cpus=cpus, memory_mib=32000,
                    gpus=[GPUInfo(index=i, model="A100-40GB", vram_mib=40960) for i in range(gpus)])


def job_doc(priority: int, gpus: int, interruptible: bool, limit: int, on: list[str]) -> dict:
    return {"command": ["true"], "priority": priority, "interruptible": interruptible,
            "resources": {"cpus": 1, "memory": 512, "gpus": gpus}, "retry": {"limit": limit, "on": on}}


def read_world(sessions) -> dict:
    """Everything the checks need, read in one session after the step's commit."""
    with sessions() as s:
        js = {j.id: j for j in s.scalars(select(m.Job))}
        allocs = {a.id: a for a in s.scalars(select(m.Allocation).order_by(m.Allocation.created_at))}
        nodes = {n.id: n for n in s.scalars(select(m.Node))}
        events = list(s.scalars(select(m.Event).order_by(m.Event.id)))
    return {"jobs": js, "allocs": allocs, "nodes": nodes, "events": events}


def expected_after_retryable_end(job: m.Job, cause: str) -> tuple[str, int]:
    """The state and retries counter end_attempt must leave for an attempt ended by `cause`."""
    retry = job.spec["retry"]
    if cause in retry["on"] and job.retries < retry["limit"]:
        return JobState.pending.value, job.retries + 1
    return JobState.failed.value, job.retries


class _Ids:
    """Deterministic ids, so that an example replays exactly (the scheduler orders nodes by id)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"00000000-0000-4000-8000-{self.n:012d}"


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ids = _Ids()
        self._patches = [mock.patch.object(mod, "new_id", ids) for mod in (agents, jobs, scheduling)]
        for p in self._patches:
            p.start()
        self.dir, self.url, self.providers = fresh_database()
        self.engine = cached_engine(self.url)
        self.sessions = session_factory(self.engine)
        self.check_engine = cached_engine(self.url)  # the e2e checker's own connection, see _e2e_checker
        self.settings = make_settings()
        self.now = 10.0
        self.nodes: list[str] = []
        self.node_provider: dict[str, Principal] = {}
        self.jobs: list[str] = []
        # what earlier steps saw
        self.finished_seen: dict[str, tuple[str, int, int]] = {}  # job -> (state, retries, attempts)
        self.cancel_requested: set[str] = set()
        self.closed_allocs: dict[str, tuple[str, str]] = {}  # allocation -> (state, job)
        self.epochs: dict[str, int] = {}
        self.node_allocs: dict[str, frozenset] = {}
        self._world: dict | None = None

    def teardown(self) -> None:
        for p in self._patches:
            p.stop()
        self.engine.engine.dispose()
        self.check_engine.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------------------

    def tick(self, dt: float = 1.0) -> float:
        self.now += dt
        return self.now

    def beat(self, node_id: str, running: list[str], finished: list[agents.Finished], now: float):
        self._world = None
        with self.sessions() as s:
            answer = agents.heartbeat(s, self.node_provider[node_id], node_id, running, finished, self.settings, now)
            s.commit()
        return answer

    def world(self) -> dict:
        """The database as the last write left it (read once per write: every write goes through `write`)."""
        if self._world is None:
            self._world = read_world(self.sessions)
        return self._world

    def write(self):
        self._world = None
        return self.sessions()

    # -- rules ---------------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.nodes) < MAX_NODES)
    # small nodes (jobs take 1 CPU each): work competes for room, so waiting and pre-emption happen
    @rule(provider=st.integers(0, 1), gpus=st.integers(0, 2), cpus=st.integers(1, 2))
    def register_node(self, provider: int, gpus: int, cpus: int) -> None:
        now = self.tick()
        who = self.providers[provider]
        with self.write() as s:
            node = agents.register(s, who, node_info(f"n{len(self.nodes)}", gpus, cpus), None, now)
            s.commit()
            node_id = node.id
        self.nodes.append(node_id)
        self.node_provider[node_id] = who
        w = self.world()
        assert w["nodes"][node_id].state == "online"

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule(priority=st.sampled_from([10, 50, 90]), gpus=st.integers(0, 1), interruptible=st.booleans(),
          limit=st.integers(0, 2),
          on=st.lists(st.sampled_from(["failure", "preemption", "node_lost"]), unique=True, max_size=3),
          poke=st.booleans())
    def submit_job(self, priority: int, gpus: int, interruptible: bool, limit: int, on: list[str],
                   poke: bool) -> None:
        now = self.tick()
        spec = parse_job_spec(job_doc(priority, gpus, interruptible, limit, on))
        with self.write() as s:
            job, created = jobs.submit(s, ADMIN, spec, now, None, 1000)
            s.commit()
            job_id = job.id
        assert created
        self.jobs.append(job_id)
        w = self.world()
        assert w["jobs"][job_id].state == JobState.pending.value
        if poke:  # the router wakes the scheduler after a submit
            self.scheduling_round()

    @rule()
    def scheduling_round(self) -> None:
        """A sweep for lost nodes, then a round: the server's sweeper and scheduling loop, one tick each."""
        now = self.tick()
        with self.write() as s:
            lost_nodes.sweep(s, self.settings, now)
            scheduling.run_round(s, self.settings, now)
            s.commit()

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def heartbeat(self, data) -> None:
        node_id = data.draw(st.sampled_from(self.nodes), label="node")
        before = self.world()
        assigned = sorted(a.id for a in before["allocs"].values()
                          if a.node_id == node_id and a.state == AllocationState.assigned.value)
        running = []
        if assigned:
            every = data.draw(st.booleans(), label="report every assigned attempt")
            running = assigned if every else data.draw(
                st.lists(st.sampled_from(assigned), unique=True), label="running")
        answer = self.beat(node_id, running, [], self.tick())
        after = self.world()
        assert after["nodes"][node_id].state == "online"
        for alloc_id in running:
            assert after["allocs"][alloc_id].state == AllocationState.running.value
            job_id = after["allocs"][alloc_id].job_id
            assert after["jobs"][job_id].state == JobState.running.value, (job_id, after["jobs"][job_id].state)
        # the answer is the node's desired state at the epoch it carries
        live = [a for a in after["allocs"].values() if a.node_id == node_id and a.state in ACTIVE]
        assert answer.epoch == after["nodes"][node_id].epoch
        assert sorted(x["allocation_id"] for x in answer.run) == sorted(
            a.id for a in live if a.state != AllocationState.stopping.value)
        assert sorted(x["allocation_id"] for x in answer.stop) == sorted(
            a.id for a in live if a.state == AllocationState.stopping.value)

    @rule(data=st.data(), outcome=st.sampled_from([0, 1, 137, "stopped"]))
    def allocation_finished(self, data, outcome) -> None:
        before = self.world()
        live = sorted(a.id for a in before["allocs"].values() if a.state in ACTIVE)
        if not live:
            return
        alloc = before["allocs"][data.draw(st.sampled_from(live), label="allocation")]
        job = before["jobs"][alloc.job_id]
        if outcome == "stopped":
            report = agents.Finished(alloc.id, None, stopped=True, reason="never started on this node")
        else:
            report = agents.Finished(alloc.id, outcome, wall_s=1.0)
        self.beat(alloc.node_id, [], [report], self.tick())
        after = self.world()
        a2, j2 = after["allocs"][alloc.id], after["jobs"][alloc.job_id]
        assert a2.state in CLOSED and a2.ended_at == self.now
        code = report.exit_code
        if alloc.state == AllocationState.stopping.value:
            assert a2.state == AllocationState.stopped.value
            if alloc.stop_reason == "cancelled":
                assert j2.state == JobState.cancelled.value
            elif alloc.stop_reason.startswith("preempted"):
                assert (j2.state, j2.retries) == expected_after_retryable_end(job, "preemption")
            else:
                raise AssertionError(f"unexpected stop reason {alloc.stop_reason!r}")
        elif code == 0:
            assert a2.state == AllocationState.exited.value and j2.state == JobState.succeeded.value
        else:
            assert a2.state == AllocationState.exited.value
            assert (j2.state, j2.retries) == expected_after_retryable_end(job, "failure"), (j2.state, j2.retries)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel_job(self, data) -> None:
        job_id = data.draw(st.sampled_from(self.jobs), label="job")
        before = self.world()
        job = before["jobs"][job_id]
        live = [a for a in before["allocs"].values() if a.job_id == job_id and a.state in ACTIVE]
        now = self.tick()
        with self.write() as s:
            jobs.cancel(s, ADMIN, job_id, now)
            s.commit()
        after = self.world()
        j2 = after["jobs"][job_id]
        if job.state in FINISHED:
            assert j2.state == job.state
            return
        self.cancel_requested.add(job_id)
        if not live:
            assert j2.state == JobState.cancelled.value
            return
        for a in live:
            assert after["allocs"][a.id].state == AllocationState.stopping.value
            assert after["allocs"][a.id].stop_reason == "cancelled"

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def node_lost(self, data) -> None:
        before = self.world()
        online = sorted(n for n in self.nodes if before["nodes"][n].state == "online")
        if not online:
            return
        victim = data.draw(st.sampled_from(online), label="silent node")
        now = self.tick(LOST_AFTER_S + 1.0)
        for other in online:  # everyone else keeps heartbeating (running what the server believes runs)
            if other != victim:
                still = [a.id for a in before["allocs"].values() if a.node_id == other and a.state == "running"]
                self.beat(other, still, [], now)
        self.now += 0.5
        with self.write() as s:
            assert lost_nodes.sweep(s, self.settings, self.now) == 1
            scheduling.run_round(s, self.settings, self.now)
            s.commit()
        after = self.world()
        assert after["nodes"][victim].state == "lost"
        for a in before["allocs"].values():
            if a.node_id != victim or a.state not in ACTIVE:
                continue
            assert after["allocs"][a.id].state == AllocationState.lost.value
            job, j2 = before["jobs"][a.job_id], after["jobs"][a.job_id]
            if a.stop_reason == "cancelled":
                assert j2.state == JobState.cancelled.value
            else:
                expected = expected_after_retryable_end(job, "node_lost")
                # a retried job may be placed again in the same round (on another node)
                ok = {expected[0]} | ({"starting"} if expected[0] == "pending" else set())
                assert j2.state in ok and j2.retries == expected[1], (j2.state, j2.retries, expected)

    @rule(data=st.data())
    def node_comes_back(self, data) -> None:
        before = self.world()
        lost = sorted(n for n in self.nodes if before["nodes"][n].state == "lost")
        if not lost:
            return
        node_id = data.draw(st.sampled_from(lost), label="node")
        # the agent never stopped its old work: it reports the allocations the server already gave up on
        old = [a.id for a in before["allocs"].values() if a.node_id == node_id]
        answer = self.beat(node_id, old, [], self.tick())
        after = self.world()
        assert after["nodes"][node_id].state == "online"
        assert answer.run == [] and answer.stop == []  # nothing it ran before is wanted again
        for a in old:
            assert after["allocs"][a].state == before["allocs"][a].state
        for j in before["jobs"].values():
            assert after["jobs"][j.id].state == j.state

    @rule(data=st.data(), outcome=st.sampled_from([0, 1, 137, "stopped"]))
    def stale_finished_report(self, data, outcome) -> None:
        before = self.world()
        closed = sorted(a.id for a in before["allocs"].values() if a.state in CLOSED)
        if not closed:
            return
        alloc = before["allocs"][data.draw(st.sampled_from(closed), label="allocation")]
        code, stopped = (None, True) if outcome == "stopped" else (outcome, False)
        self.beat(alloc.node_id, [], [agents.Finished(alloc.id, code, stopped=stopped)], self.tick())
        after = self.world()
        a2 = after["allocs"][alloc.id]
        assert (a2.state, a2.exit_code, a2.ended_at) == (alloc.state, alloc.exit_code, alloc.ended_at)
        for j in before["jobs"].values():
            j2 = after["jobs"][j.id]
            assert (j2.state, j2.retries, j2.attempts) == (j.state, j.retries, j.attempts)
        assert after["nodes"][alloc.node_id].epoch == before["nodes"][alloc.node_id].epoch

    @rule(dt=st.sampled_from([2.0, 5.0]), beat=st.booleans())
    def time_passes(self, dt: float, beat: bool) -> None:
        """Time passes and the scheduler ticks; with `beat`, every online node heartbeats first (starting what
        it was assigned), otherwise nodes stay silent and may pass the lost timeout on their own."""
        now = self.tick(dt)
        if beat:
            w = self.world()
            for node_id in self.nodes:
                if w["nodes"][node_id].state == "online":
                    # the agent runs what it was given: assigned attempts are reported running from now on
                    running = [a.id for a in w["allocs"].values()
                               if a.node_id == node_id and a.state in ("assigned", "running")]
                    self.beat(node_id, running, [], now)
        self.scheduling_round()

    # -- invariants, after every step ------------------------------------------------------------------------

    @invariant()
    def guarantees_hold(self) -> None:
        w = self.world()
        self._e2e_checker(w)
        js, allocs, nodes, events = w["jobs"], w["allocs"], w["nodes"], w["events"]
        by_job = defaultdict(list)
        for a in allocs.values():
            by_job[a.job_id].append(a)
        job_events = defaultdict(list)
        for e in events:
            if e.job_id is not None and e.kind == "job_state":
                job_events[e.job_id].append(e)
        assert set(js) == set(self.jobs)
        for job in js.values():
            state = JobState(job.state)
            live = [a for a in by_job[job.id] if a.state in ACTIVE]
            if state in (JobState.starting, JobState.running):
                assert len(live) == 1, f"{state.value} job {job.id} has {len(live)} live attempts"
                want = {"starting": {"assigned", "stopping"}, "running": {"running", "stopping"}}[state.value]
                assert live[0].state in want, (job.state, live[0].state)
            else:
                assert not live, f"{state.value} job {job.id} has live attempts"
            retry = job.spec["retry"]
            assert 0 <= job.retries <= retry["limit"], f"job {job.id}: retries {job.retries} > {retry['limit']}"
            assert job.attempts == len(by_job[job.id]) and job.retries <= job.attempts
            assert [a.attempt for a in by_job[job.id]] == sorted(a.attempt for a in by_job[job.id])
            # finished stays finished, untouched
            if job.id in self.finished_seen:
                assert (job.state, job.retries, job.attempts) == self.finished_seen[job.id], (
                    f"finished job {job.id} changed: {self.finished_seen[job.id]} -> "
                    f"{(job.state, job.retries, job.attempts)}")
            elif state.finished:
                self.finished_seen[job.id] = (job.state, job.retries, job.attempts)
                if state is JobState.succeeded:
                    assert job.exit_code == 0
            # a cancel is honoured: the job is never retried after it and ends cancelled
            if job.id in self.cancel_requested:
                assert state in (JobState.starting, JobState.running, JobState.cancelled), (
                    f"job {job.id} was cancelled but is now {job.state}")
            if state is JobState.cancelled:
                assert job.id in self.cancel_requested
            # the event log: submitted, then a chain of changes that ends in the current state
            ev = job_events[job.id]
            assert ev and ev[0].from_state is None and ev[0].to_state == "pending", f"job {job.id}: no submit event"
            for prev, nxt in pairwise(ev):
                assert nxt.from_state == prev.to_state, f"job {job.id}: events skip {prev.to_state}->{nxt.from_state}"
            assert ev[-1].to_state == job.state, f"job {job.id} is {job.state}, its log ends in {ev[-1].to_state}"
            retried = sum(1 for e in ev if e.to_state == "pending" and e.from_state is not None)
            assert retried == job.retries
        # allocations: a closed one never changes again; live ones sit on online nodes, on GPUs the node has
        for a in allocs.values():
            if a.id in self.closed_allocs:
                assert a.state == self.closed_allocs[a.id][0], f"closed allocation {a.id} reopened as {a.state}"
            elif a.state in CLOSED:
                assert a.ended_at is not None
                self.closed_allocs[a.id] = (a.state, a.job_id)
            if a.state in ACTIVE:
                node = nodes[a.node_id]
                assert node.state == "online", f"live allocation {a.id} on {node.state} node"
                have = {g["index"] for g in node.info["gpus"]}
                assert set(a.gpu_indices) <= have
                assert len(a.gpu_indices) == js[a.job_id].spec["resources"]["gpus"]["count"]
        self._commitment(allocs, nodes)
        # fencing: epochs never go back and move whenever the node's allocations change
        for node_id, node in nodes.items():
            mine = frozenset((a.id, a.state, a.stop_reason) for a in allocs.values() if a.node_id == node_id)
            if node_id in self.epochs:
                assert node.epoch >= self.epochs[node_id], f"node {node_id}: epoch went back"
                if mine != self.node_allocs[node_id]:
                    assert node.epoch > self.epochs[node_id], f"node {node_id}: allocations changed, epoch did not"
            self.epochs[node_id], self.node_allocs[node_id] = node.epoch, mine

    def _e2e_checker(self, w: dict) -> None:
        # the checker's own code on this database; only its engine is one with the shared statement cache
        with mock.patch.object(e2e_invariants, "make_engine", lambda url: self.check_engine):
            check_invariants(self.url)

    def _commitment(self, allocs: dict, nodes: dict) -> None:
        """No GPU and no node's CPUs over-committed, counting attempts that are still stopping."""
        gpu = defaultdict(int)
        cpu = defaultdict(int)
        for a in allocs.values():
            if a.state not in ACTIVE:
                continue
            for g in a.gpu_indices:
                gpu[(a.node_id, g)] += a.gpu_share_milli or 1000
            cpu[a.node_id] += a.cpu_milli
        assert all(v <= 1000 for v in gpu.values()), f"GPU over-committed: {dict(gpu)}"
        for node_id, used in cpu.items():
            assert used <= nodes[node_id].info["cpus"] * 1000, f"node {node_id}: {used} milli-CPUs committed"


LifecycleMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = LifecycleMachine.TestCase


# -- known bugs, as the smallest sequences that show them ------------------------------------------------------


@pytest.fixture
def machine():
    mc = LifecycleMachine()
    yield mc
    mc.teardown()


def _live_on_gpu0(mc: LifecycleMachine) -> list[m.Allocation]:
    return [a for a in mc.world()["allocs"].values() if a.state in ACTIVE and 0 in a.gpu_indices]


def test_preemption_does_not_overcommit_the_victims_gpu(machine):
    mc = machine
    mc.register_node(provider=0, gpus=1, cpus=2)
    mc.submit_job(priority=10, gpus=1, interruptible=True, limit=1, on=["preemption"], poke=True)
    mc.time_passes(dt=2.0, beat=True)  # the low-priority job runs on GPU 0
    assert [a.state for a in _live_on_gpu0(mc)] == ["running"]
    mc.submit_job(priority=90, gpus=1, interruptible=False, limit=0, on=[], poke=True)  # pre-empts it
    live = _live_on_gpu0(mc)
    assert len(live) == 1, [(a.job_id, a.state, a.stop_reason) for a in live]  # the victim, stopping
    check_invariants(mc.url)
    (victim,) = live
    mc.beat(victim.node_id, [], [agents.Finished(victim.id, 143, stopped=True)], mc.tick())
    mc.time_passes(dt=1.0, beat=True)  # once the victim has stopped, the pre-empting job takes the GPU
    (taker,) = _live_on_gpu0(mc)
    assert taker.job_id == mc.jobs[1]
    check_invariants(mc.url)


def test_cancel_during_preemption_stop_is_honoured(machine):
    mc = machine
    mc.register_node(provider=0, gpus=1, cpus=2)
    mc.submit_job(priority=10, gpus=1, interruptible=True, limit=1, on=["preemption"], poke=True)
    mc.time_passes(dt=2.0, beat=True)
    mc.submit_job(priority=90, gpus=1, interruptible=False, limit=0, on=[], poke=True)  # pre-empts it
    victim = mc.jobs[0]
    with mc.write() as s:
        jobs.cancel(s, ADMIN, victim, mc.tick())  # answers as accepted: "cancelling"
        s.commit()
    (alloc,) = [a for a in mc.world()["allocs"].values() if a.job_id == victim]
    assert alloc.state == "stopping"
    mc.beat(alloc.node_id, [], [agents.Finished(alloc.id, None, stopped=True)], mc.tick())
    job = mc.world()["jobs"][victim]
    assert job.state == JobState.cancelled.value, (job.state, job.retries, job.reason)
