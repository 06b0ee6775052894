"""Multi-node jobs (engine: ray) through the scheduling and agent services, with the clock passed in: placement
within one network label, ports per task, what each agent is told, and the gang ending whole."""

from cryptography.fernet import Fernet
from sqlalchemy import select

from ceti.server.services import agents, jobs, lost_nodes, scheduling
from ceti.server.services.tokens import Principal
from ceti.server.settings import Settings
from ceti.spec import NodeInfo, parse_job_spec
from ceti.store import models as m

ADMIN = Principal("t", "admin")
KEY = Fernet.generate_key().decode()


def settings(lost: float = 1000.0) -> Settings:
    s = Settings()
    s.node_lost_after_s = lost
    s.verify.enabled = False
    s.secret_key = KEY
    return s


def node(s, who, name: str, label: str = "", address: str = "", ports: tuple[int, int] = (47000, 47999),
         now: float = 0.0) -> str:
    info = NodeInfo(hostname=name, cpus=4, memory_mib=8000, network_label=label, network_address=address,
                    gang_port_min=ports[0], gang_port_max=ports[1])
    return agents.register(s, who, info, None, now).id


def submit(s, doc: dict, now: float) -> str:
    job, _ = jobs.submit(s, ADMIN, parse_job_spec({"command": ["python", "train.py"], **doc}), now, None, 1000)
    return job.id


def gang(s, job_id: str, attempt: int | None = None) -> list[m.Allocation]:
    q = select(m.Allocation).where(m.Allocation.job_id == job_id)
    if attempt is not None:
        q = q.where(m.Allocation.attempt == attempt)
    return sorted(s.scalars(q), key=lambda a: (a.attempt, a.task_index))


def run(s, who, node_id: str, alloc_ids: list[str], now: float):
    return agents.heartbeat(s, who, node_id, alloc_ids, [], settings(), now)


def finish(s, who, node_id: str, alloc_id: str, code: int | None, now: float, stopped: bool = False):
    return agents.heartbeat(s, who, node_id, [], [agents.Finished(alloc_id, code, stopped=stopped)], settings(), now)


def cluster(s, who) -> dict[str, str]:
    nodes = {f"a{i}": node(s, who, f"a{i}", "lab-a", f"10.0.0.{i + 1}") for i in range(3)}
    nodes["b0"] = node(s, who, "b0", "lab-b", "10.0.1.1")
    nodes["lone"] = node(s, who, "lone")
    return nodes


def test_gang_lands_on_distinct_nodes_of_one_label_with_ports_and_head_address(db):
    sessions, who = db
    with sessions() as s:
        nodes = cluster(s, who)
        j = submit(s, {"nodes": 3, "engine": "ray", "resources": {"cpus": 2}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        s.commit()
        allocs = gang(s, j)
        assert [a.task_index for a in allocs] == [0, 1, 2]
        by_id = {v: k for k, v in nodes.items()}
        assert sorted(by_id[a.node_id] for a in allocs) == ["a0", "a1", "a2"]
        assert all(47000 <= a.port_base <= 47999 - 63 for a in allocs)
        job = s.get(m.Job, j)
        assert job.state == "starting" and "3 nodes, head on" in job.reason
        head = allocs[0]
        head_ip = s.get(m.Node, head.node_id).info["network_address"]
        tokens = set()
        for a in allocs:
            answer = run(s, who, a.node_id, [], 3.0)
            item = next(i for i in answer.run if i["allocation_id"] == a.id)
            g = item["gang"]
            assert g["engine"] == "ray" and g["size"] == 3 and g["rank"] == a.task_index
            assert g["head_address"] == head_ip and g["head_port"] == head.port_base
            assert g["bind_address"] == s.get(m.Node, a.node_id).info["network_address"]
            assert g["port_base"] == a.port_base and g["port_count"] == 64
            tokens.add(g["auth_token"])
        assert len(tokens) == 1 and len(tokens.pop()) == 64  # one secret for the gang's nodes


def test_a_gang_never_spans_labels_and_unlabelled_nodes_take_none(db):
    sessions, who = db
    with sessions() as s:
        cluster(s, who)
        j = submit(s, {"nodes": 4, "engine": "ray", "resources": {"cpus": 2}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        job = s.get(m.Job, j)
        assert job.state == "unschedulable"
        assert "4" in job.reason and "lab-a" in job.reason
        assert gang(s, j) == []


def test_head_exit_ends_the_job_and_stops_the_rest(db):
    sessions, who = db
    with sessions() as s:
        cluster(s, who)
        j = submit(s, {"nodes": 3, "engine": "ray", "resources": {"cpus": 2}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        allocs = gang(s, j)
        for a in allocs:
            run(s, who, a.node_id, [a.id], 3.0)
        assert s.get(m.Job, j).state == "running"
        finish(s, who, allocs[0].node_id, allocs[0].id, 0, 10.0)
        job = s.get(m.Job, j)
        assert job.state == "succeeded" and job.exit_code == 0
        for a in allocs[1:]:
            s.refresh(a)
            assert a.state == "stopping" and a.stop_reason.startswith("gang ended: task 0 exited with code 0")
            answer = run(s, who, a.node_id, [a.id], 11.0)
            assert [x["allocation_id"] for x in answer.stop] == [a.id]
            finish(s, who, a.node_id, a.id, -15, 12.0, stopped=True)
        s.refresh(job)
        assert job.state == "succeeded" and job.exit_code == 0  # the workers' stops change nothing
        assert [a.state for a in gang(s, j)] == ["exited", "stopped", "stopped"]


def test_a_worker_ending_first_fails_the_attempt_and_the_gang_restarts_whole(db):
    sessions, who = db
    with sessions() as s:
        cluster(s, who)
        j = submit(s, {"nodes": 2, "engine": "ray", "resources": {"cpus": 4}, "retry": {"on": ["failure"]}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        first = gang(s, j)
        for a in first:
            run(s, who, a.node_id, [a.id], 3.0)
        finish(s, who, first[1].node_id, first[1].id, 0, 5.0)  # a worker node's Ray went away
        job = s.get(m.Job, j)
        assert job.state == "pending" and job.retries == 1
        assert "task 1 of the gang" in job.reason and "before the head" in job.reason
        s.refresh(first[0])
        assert first[0].state == "stopping"
        finish(s, who, first[0].node_id, first[0].id, -15, 6.0, stopped=True)
        s.refresh(job)
        assert job.state == "pending" and job.retries == 1  # the old head's stop does not touch attempt 2
        scheduling.run_round(s, settings(), 7.0)
        second = gang(s, j, attempt=2)
        assert len(second) == 2 and {a.task_index for a in second} == {0, 1}
        assert s.get(m.Job, j).state == "starting"


def test_cancel_stops_every_node_and_records_one_cancel(db):
    sessions, who = db
    with sessions() as s:
        cluster(s, who)
        j = submit(s, {"nodes": 3, "engine": "ray", "resources": {"cpus": 2}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        allocs = gang(s, j)
        for a in allocs:
            run(s, who, a.node_id, [a.id], 3.0)
        jobs.cancel(s, ADMIN, j, 4.0)
        s.commit()
        for a in allocs:
            s.refresh(a)
            assert a.state == "stopping" and a.stop_reason == "cancelled"
            finish(s, who, a.node_id, a.id, -15, 5.0, stopped=True)
        s.commit()
        assert s.get(m.Job, j).state == "cancelled"
        events = s.scalars(select(m.Event).where(m.Event.job_id == j, m.Event.to_state == "cancelled")).all()
        assert len(events) == 1


def test_a_lost_node_restarts_the_gang_under_the_retry_policy(db):
    sessions, who = db
    with sessions() as s:
        cluster(s, who)
        j = submit(s, {"nodes": 3, "engine": "ray", "resources": {"cpus": 2}}, 1.0)
        scheduling.run_round(s, settings(), 2.0)
        allocs = gang(s, j)
        for a in allocs:
            run(s, who, a.node_id, [a.id], 3.0)
        # every node but the last worker's keeps beating
        for a in allocs[:2]:
            run(s, who, a.node_id, [a.id], 50.0)
        lost_nodes.sweep(s, settings(lost=30.0), 50.0)
        job = s.get(m.Job, j)
        assert job.state == "pending" and job.retries == 1 and "lost" in job.reason
        states = [a.state for a in gang(s, j, attempt=1)]
        assert states.count("lost") >= 1 and states.count("stopping") == 2


def test_no_free_port_block_means_the_gang_waits_whole(db):
    sessions, who = db
    with sessions() as s:
        for i in range(2):  # room for two gangs, ports for one
            node(s, who, f"p{i}", "lab-p", f"10.0.2.{i + 1}", ports=(47000, 47063))
        first = submit(s, {"nodes": 2, "engine": "ray", "resources": {"cpus": 1}}, 1.0)
        second = submit(s, {"nodes": 2, "engine": "ray", "resources": {"cpus": 1}}, 1.5)
        scheduling.run_round(s, settings(), 2.0)
        assert len(gang(s, first)) == 2
        assert gang(s, second) == []
        job = s.get(m.Job, second)
        assert job.state == "pending" and "ports" in job.reason
