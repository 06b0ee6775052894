"""The agent's reconcile step, driven with desired states directly (no server needed for these rules)."""

import time

from ceti.agent.loop import Agent, AgentConfig
from ceti.spec import NodeInfo


def make_agent(tmp_path) -> Agent:
    info = NodeInfo(hostname="t", cpus=2, memory_mib=1024)
    return Agent(AgentConfig(servers=["http://127.0.0.1:9"], token="t", data_dir=tmp_path, info=info))


def item(alloc_id: str) -> dict:
    return {"allocation_id": alloc_id, "job_id": "j", "name": "n", "command": ["sleep", "30"], "env": {},
            "files": {}, "gpu_indices": [], "gpu_share_milli": 0, "cpu_milli": 100, "memory_mib": 10}


def test_an_older_desired_state_is_ignored_and_a_newer_one_is_obeyed(tmp_path):
    agent = make_agent(tmp_path)
    agent._reconcile({"epoch": 5, "run": [item("a1")], "stop": []})
    assert agent.executor.running() == ["a1"]
    agent._reconcile({"epoch": 4, "run": [], "stop": []})  # delayed answer from before a1 was placed
    assert agent.executor.running() == ["a1"]
    agent._reconcile({"epoch": 6, "run": [], "stop": []})  # the server gave a1 up: it must stop
    deadline = time.monotonic() + 15
    while agent.executor.running() and time.monotonic() < deadline:
        agent.executor.poll()
        time.sleep(0.05)
    assert agent.executor.running() == []
    assert agent.state.epoch == 6


def test_a_stop_for_something_never_started_is_reported_back(tmp_path):
    agent = make_agent(tmp_path)
    agent._reconcile({"epoch": 1, "run": [], "stop": [{"allocation_id": "ghost", "grace_s": 1, "reason": "x"}]})
    assert agent.state.unreported["ghost"]["stopped"] is True
