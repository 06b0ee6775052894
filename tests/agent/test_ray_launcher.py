"""The multi-node launcher interface and the Ray node process.

Fast tests check the gang's validation and the argv built for Ray, and drive the node process against a
stand-in `ray` (a small script that plays `ray start --block`: it opens the GCS port, writes the ready file,
leaves an orphan behind). One real Ray cluster of three nodes runs once for the whole file
(`ray_scenario.py`), inside a network namespace made for it where loopback is the only interface. It starts in
the background with the file's first test, so the fast tests run while Ray starts; the tests on real Ray
assert on what it reported.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ceti.agent.launchers import GangError, GangInfo, LaunchOptions, launch_command
from ceti.agent.launchers import ray as ray_launcher
from tests.netns import NetnsRun, netns_skip_reason, start_python_in_netns

SCENARIO = Path(__file__).with_name("ray_scenario.py")
RAY_BIN = Path(sys.executable).with_name("ray")
TOKEN = "f" * 32


def gang_dict(**overrides) -> dict:
    data = {"engine": "ray", "size": 2, "rank": 1, "head_address": "10.1.2.3", "head_port": 47000,
            "bind_address": "10.1.2.4", "port_base": 48000, "port_count": 32}  # fmt: skip
    data.update(overrides)
    return data


# --- the gang ------------------------------------------------------------------------------------------


def test_a_gang_is_parsed_from_the_servers_object():
    gang = GangInfo.from_dict({**gang_dict(), "auth_token": TOKEN, "something_new": 1})
    assert (gang.engine, gang.size, gang.rank, gang.port_base, gang.port_count) == ("ray", 2, 1, 48000, 32)
    assert not gang.is_head
    assert TOKEN not in repr(gang)
    head = GangInfo.from_dict(gang_dict(rank=0, bind_address="10.1.2.3", port_base=47000))
    assert head.is_head
    v6 = GangInfo.from_dict(gang_dict(head_address="fd00::1", bind_address="fd00:0::2"))
    assert v6.bind_address == "fd00::2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"engine": "spark"}, "engine 'spark' is not one of"),
        ({"engine": None}, "engine None"),
        ({"rank": 2}, "rank 2 must be below its size 2"),
        ({"rank": -1}, "rank -1 is out of range"),
        ({"size": 0}, "size 0 is out of range"),
        ({"size": True}, "size must be an integer"),
        ({"port_base": 70000}, "port_base 70000 is out of range"),
        ({"port_base": 0}, "port_base 0 is out of range"),
        ({"port_base": 65530}, "go past 65535"),
        ({"port_count": 8}, "at least 16 ports"),
        ({"head_port": "47000"}, "head_port must be an integer"),
        ({"bind_address": "node-7.local"}, "bind_address must be an IP address"),
        ({"bind_address": 167838212}, "bind_address must be an IP address"),
        ({"bind_address": "0.0.0.0"}, "every interface"),
        ({"bind_address": "::"}, "every interface"),
        ({"head_address": ""}, "head_address must be an IP address"),
        ({"rank": 0, "bind_address": "10.1.2.3"}, "head_port 47000 must be its own port_base 48000"),
        ({"rank": 0, "port_base": 47000}, "must be its bind_address"),
        ({"auth_token": "short"}, "auth_token"),
        ({"auth_token": "has spaces in it, sixteen+"}, "auth_token"),
    ],
)
def test_a_bad_gang_is_refused_with_a_reason(overrides, message):
    with pytest.raises(GangError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GangInfo.from_dict(gang_dict(**overrides))


def test_a_gang_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError, match="must be an object"):
        GangInfo.from_dict(["ray"])  # type: ignore[arg-type]


# --- the argv ------------------------------------------------------------------------------------------


def test_the_head_runs_the_node_process_with_the_users_command_after_the_separator():
    head = GangInfo.from_dict(gang_dict(rank=0, bind_address="10.1.2.3", port_base=47000, auth_token=TOKEN))
    argv, env = launch_command(
        ["python", "train.py", "--", "x"],
        {"PATH": "/usr/bin", "RAY_ADDRESS": "elsewhere:1"},
        head,
        Path("/tmp/ceti-ray/a1b2c3"),
        "/opt/agent/bin/python",
        LaunchOptions(grace_s=4, num_cpus=3, object_store_mib=512),
    )
    assert argv[:4] == ["/opt/agent/bin/python", "-I", str(Path(ray_launcher.__file__).resolve()), "head"]
    separator = argv.index("--")
    assert argv[separator + 1 :] == ["python", "train.py", "--", "x"]
    options = argv[4:separator]
    assert _opt(options, "--bind-address") == "10.1.2.3"
    assert _opt(options, "--port-base") == "47000" and _opt(options, "--port-count") == "32"
    assert _opt(options, "--temp-dir") == "/tmp/ceti-ray/a1b2c3"
    assert (_opt(options, "--grace-s"), _opt(options, "--num-cpus"), _opt(options, "--object-store-mib")) == (
        "4",
        "3",
        "512",
    )
    assert "--head-address" not in options
    # The token travels in the environment, never in an argv that `ps` shows.
    assert TOKEN not in " ".join(argv)
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == TOKEN
    assert "RAY_ADDRESS" not in env
    assert (env["CETI_GANG_RANK"], env["CETI_GANG_SIZE"], env["PATH"]) == ("0", "2", "/usr/bin")
    args, command = ray_launcher.parse_args(argv[3:])
    assert (args.role, args.port_base, args.num_cpus) == ("head", 47000, 3)
    assert command == ["python", "train.py", "--", "x"]


def test_a_worker_gets_the_heads_address_and_no_command():
    argv, env = launch_command(
        ["python", "train.py"], {}, GangInfo.from_dict(gang_dict()), Path("/tmp/ceti-ray/w1"), "python3"
    )
    assert argv[3] == "worker" and "--" not in argv and "train.py" not in argv
    assert (_opt(argv, "--head-address"), _opt(argv, "--head-port"), _opt(argv, "--bind-address")) == (
        "10.1.2.3",
        "47000",
        "10.1.2.4",
    )
    assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in env
    args, command = ray_launcher.parse_args(argv[3:])
    assert (args.role, args.head_port, command) == ("worker", 47000, [])


@pytest.mark.parametrize("scratch", ["relative/dir", "/tmp/" + "x" * 40])
def test_a_temp_dir_that_is_relative_or_too_long_for_rays_sockets_is_refused(scratch):
    with pytest.raises(ValueError, match="absolute|107-byte"):
        launch_command(["x"], {}, GangInfo.from_dict(gang_dict()), Path(scratch), "python3")


@pytest.mark.parametrize("head", [True, False])
def test_every_port_ray_opens_comes_from_the_block(head):
    argv = ray_launcher.ray_start_argv(
        "ray", head=head, bind_address="10.1.2.4", port_base=48000, port_count=32, temp_dir=Path("/tmp/r"),
        num_cpus=4, num_gpus=2, head_address="10.1.2.3", head_port=47000,
    )  # fmt: skip
    assert argv[:3] == ["ray", "start", "--block"]
    assert _opt(argv, "--node-ip-address") == "10.1.2.4"
    port_flags = [
        "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
        "--min-worker-port", "--max-worker-port",
    ]  # fmt: skip
    if head:
        port_flags += ["--port", "--ray-client-server-port", "--dashboard-port"]
        assert "--include-dashboard=false" in argv and "--address" not in argv
    else:
        assert _opt(argv, "--address") == "10.1.2.3:47000"
        # `ray start` refuses head-only flags on a worker.
        assert not {"--port", "--include-dashboard=false", "--head"} & set(argv)
    ports = [int(_opt(argv, flag)) for flag in port_flags]
    assert all(48000 <= p <= 48031 for p in ports)
    assert len(set(ports)) == len(ports)
    assert int(_opt(argv, "--max-worker-port")) == 48031
    fixed = [p for flag, p in zip(port_flags, ports, strict=True) if "worker" not in flag]
    assert int(_opt(argv, "--min-worker-port")) > max(fixed)
    env = ray_launcher.ray_start_env({"RAY_ADDRESS": "x:1", "PATH": "/bin"}, 48000)
    assert 48000 <= int(env["AUTOSCALER_METRIC_PORT"]) <= 48031
    assert 48000 <= int(env["DASHBOARD_METRIC_PORT"]) <= 48031
    assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0" and "RAY_ADDRESS" not in env
    assert (_opt(argv, "--num-cpus"), _opt(argv, "--num-gpus")) == ("4", "2")
    assert "--disable-usage-stats" in argv
    assert "0.0.0.0" not in " ".join(argv)


def test_ray_gets_the_gpus_the_agent_gave_the_job_and_none_without_cuda_visible_devices():
    assert ray_launcher.gpu_count({"CUDA_VISIBLE_DEVICES": "3,5"}) == 2
    assert ray_launcher.gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert ray_launcher.gpu_count({}) == 0


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --- the node process against a stand-in `ray` ---------------------------------------------------------

# Plays `ray start --block`: a head listens on its GCS port, a worker needs its head's port to answer; both
# write Ray's ready file and leave an orphan behind (as Ray does with some of its agents), then block until
# SIGTERM and exit 1 without stopping the orphan.
FAKE_RAY = """\
#!{python}
import json, os, signal, socket, subprocess, sys, time
args = sys.argv[1:]
opt = lambda flag: args[args.index(flag) + 1] if flag in args else None
temp = opt("--temp-dir")
with open(os.path.join(temp, "argv.json"), "w") as f:
    json.dump({{"argv": args, "env": dict(os.environ)}}, f)
listener = None
if "--head" in args:
    listener = socket.create_server((opt("--node-ip-address"), int(opt("--port"))))
else:
    host, port = opt("--address").rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=2).close()
orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
open(os.path.join(temp, "orphan.pid"), "w").write(str(orphan.pid))
open(os.path.join(temp, "ray_current_cluster"), "w").write("ok")
signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
while True:
    time.sleep(0.1)
"""

HEAD_COMMAND = """\
import os, signal, sys, time
exit_code = int(sys.argv[1])
open("ray_address", "w").write(os.environ.get("RAY_ADDRESS", ""))
if exit_code >= 0:
    sys.exit(exit_code)
def on_term(*_):
    open("terms", "a").write("x")
    time.sleep(0.3)
    sys.exit(9)
signal.signal(signal.SIGTERM, on_term)
open("started", "w").write("")
time.sleep(60)
"""


@pytest.fixture
def short(tmp_path: Path):
    """A short directory for the node's temp dir (the node refuses one longer than Ray's sockets allow)."""
    path = Path(tempfile.mkdtemp(prefix="ct", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake(tmp_path: Path):
    ray = tmp_path / "ray"
    ray.write_text(FAKE_RAY.format(python=sys.executable))
    ray.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "cmd.py").write_text(HEAD_COMMAND)
    return ray, work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(fake, role: str, temp_dir: Path, *extra: str, port_base: int | None = None) -> subprocess.Popen:
    ray, work = fake
    argv = [sys.executable, "-I", ray_launcher.__file__, role, "--bind-address", "127.0.0.1"]
    argv += [
        "--ray",
        str(ray),
        "--port-base",
        str(port_base or _free_port()),
        "--port-count",
        "16",
        "--temp-dir",
        str(temp_dir),
    ]
    env = {"PATH": f"{ray.parent}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "0"}
    return subprocess.Popen(
        [*argv, *extra], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout_s: float = 20) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _orphan_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_head_exits_with_the_commands_code_and_leaves_nothing_behind(fake, short: Path):
    temp = short / "t"
    port = _free_port()
    proc = _node(fake, "head", temp, "--", sys.executable, "cmd.py", "3", port_base=port)
    _wait(lambda: (temp / "orphan.pid").exists(), 15, "the stand-in ray to start")
    orphan = int((temp / "orphan.pid").read_text())
    recorded = json.loads((temp / "argv.json").read_text())
    code, err = _finish(proc)
    assert code == 3, err
    assert (fake[1] / "ray_address").read_text() == f"127.0.0.1:{port}"
    assert recorded["env"]["AUTOSCALER_METRIC_PORT"] == str(port + 8)
    assert _opt(recorded["argv"], "--num-gpus") == "1"
    assert "ending 1 leftover process" in err  # the orphan, found because the node process is a subreaper
    assert _orphan_gone(orphan)
    assert not temp.exists()


def test_sigterm_reaches_the_command_once_and_its_exit_code_is_the_heads(fake, short: Path):
    temp = short / "t"
    proc = _node(fake, "head", temp, "--grace-s", "5", "--", sys.executable, "cmd.py", "-1")
    _wait(lambda: (fake[1] / "started").exists(), 15, "the command to start")
    orphan = int((temp / "orphan.pid").read_text())
    proc.send_signal(signal.SIGTERM)
    code, err = _finish(proc)
    assert code == 9, err
    assert (fake[1] / "terms").read_text() == "x"
    assert _orphan_gone(orphan)
    assert not temp.exists()


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(fake, short: Path):
    temp = short / "t"
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('started', 'w')\n"
    (fake[1] / "stubborn.py").write_text(stubborn + "time.sleep(60)\n")
    proc = _node(fake, "head", temp, "--grace-s", "0.5", "--", sys.executable, "stubborn.py")
    _wait(lambda: (fake[1] / "started").exists(), 15, "the command to start")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, err = _finish(proc)
    assert code == 128 + signal.SIGKILL, err
    assert "outlived its grace" in err
    assert time.monotonic() - started < 6


def test_a_worker_waits_for_its_head_joins_it_and_leaves_when_it_is_gone(fake, short: Path):
    head_port = _free_port()
    worker = _node(fake, "worker", short / "w", "--head-address", "127.0.0.1", "--head-port", str(head_port),
                   "--head-gone-s", "0.5")  # fmt: skip
    _wait(lambda: (short / "w").exists(), 15, "the worker to start")
    time.sleep(0.3)
    assert not (short / "w" / "ray_current_cluster").exists()  # nothing to join yet
    with socket.create_server(("127.0.0.1", head_port)):  # the head's GCS port answers
        _wait(lambda: (short / "w" / "ray_current_cluster").exists(), 15, "the worker to join")
        orphan = int((short / "w" / "orphan.pid").read_text())
    code, err = _finish(worker)  # the head is gone
    assert code == 0, err
    assert "waiting for the Ray head" in err and "is gone" in err
    assert _orphan_gone(orphan)
    assert not (short / "w").exists()


def test_a_worker_whose_head_never_answers_gives_up_with_a_reason(fake, short: Path):
    worker = _node(fake, "worker", short / "w", "--head-address", "127.0.0.1", "--head-port",
                   str(_free_port()), "--start-timeout-s", "1")  # fmt: skip
    code, err = _finish(worker)
    assert code == 1
    assert "did not answer within 1s" in err.strip().splitlines()[-1]


def test_without_ray_on_path_the_node_says_so(fake, short: Path):
    proc = _node(fake, "head", short / "t", "--ray", "no-such-ray", "--", "true")
    code, err = _finish(proc)
    assert code == 127 and "cannot find 'no-such-ray'" in err
    assert not (short / "t").exists()


def test_an_existing_temp_dir_is_not_taken_over(fake, short: Path):
    (short / "t").mkdir()
    (short / "t" / "keep").write_text("")
    code, err = _finish(_node(fake, "head", short / "t", "--", "true"))
    assert code == 1 and "cannot use" in err
    assert (short / "t" / "keep").exists()


# --- real Ray, in a network namespace --------------------------------------------------------------------


SCENARIO_TIMEOUT_S = 150


@dataclass
class _Background:
    run: NetnsRun | None
    skip: str | None
    started: float
    root: Path | None = None
    scratch: Path | None = None


def _ray_skip_reason() -> str | None:
    if importlib.util.find_spec("ray") is None or not RAY_BIN.exists():
        return "ray is not installed (pip install 'ray>=2.60')"
    return netns_skip_reason()


@pytest.fixture(scope="module", autouse=True)
def _ray_in_background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Background]:
    """Start the real-Ray scenario when the file's first test starts, so the fast tests run while Ray does."""
    reason = _ray_skip_reason()
    if reason:
        yield _Background(None, reason, time.monotonic())
        return
    root = tmp_path_factory.mktemp("ray-executor")
    scratch = Path(
        tempfile.mkdtemp(prefix="ct", dir="/tmp")
    )  # short: Ray's socket paths must stay < 107 bytes
    background = _Background(
        start_python_in_netns(SCENARIO, [str(root), str(scratch)]), None, time.monotonic()
    )
    background.root, background.scratch = root, scratch
    yield background
    assert background.run is not None
    if background.run.proc.poll() is None:
        background.run.kill()
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def scenario(_ray_in_background: _Background) -> dict:
    background = _ray_in_background
    if background.skip or background.run is None or background.scratch is None:
        pytest.skip(background.skip or "no scenario")
    left_s = max(1.0, SCENARIO_TIMEOUT_S - (time.monotonic() - background.started))
    result = background.run.wait(left_s)
    output = f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    assert not result.timed_out, f"the Ray scenario timed out\n{output}"
    assert result.returncode == 0, output
    line = next((x for x in result.stdout.splitlines() if x.startswith("SCENARIO ")), None)
    assert line, output
    data = json.loads(line.split(" ", 1)[1])
    data["netns_leftovers"] = result.leftovers
    data["scratch_leftovers"] = sorted(p.name for p in background.scratch.iterdir())
    return data


def _logs(scenario: dict) -> str:
    logs = scenario["logs"]
    return "\n".join(f"--- {node} {stream}\n{text}" for node, s in logs.items() for stream, text in s.items())


def test_real_ray_runs_in_a_namespace_with_loopback_only(scenario):
    assert scenario["netns_interfaces"] == ["lo"]
    assert set(scenario["result"]["node_ips"]) == {"127.0.0.1"}


def test_every_port_ray_listens_on_is_in_its_nodes_block_and_on_loopback(scenario):
    blocks = [range(base, base + 32) for base in (47000, 47100, 47200)]
    assert scenario["listening"], "nothing listened while the cluster ran"
    outside = [entry for entry in scenario["listening"] if not any(entry[1] in block for block in blocks)]
    assert outside == []
    assert {entry[0] for entry in scenario["listening"]} <= {"127.0.0.1", "::ffff:127.0.0.1"}


def test_the_heads_command_sees_every_node_and_runs_a_task_on_each(scenario):
    result = scenario["result"]
    assert len(result["nodes"]) == 3, _logs(scenario)
    assert sorted(r["node_id"] for r in result["ran"]) == result["nodes"]
    assert result["ray_address"] == "127.0.0.1:47000"
    assert result["gang"] == ["0", "3"]


def test_a_strict_spread_placement_group_spans_the_nodes_and_places_the_tasks(scenario):
    pg = scenario["result"]["pg"]
    assert (pg["strategy"], pg["state"]) == ("STRICT_SPREAD", "CREATED")
    assert sorted(pg["bundle_nodes"]) == scenario["result"]["nodes"]
    assert [r["node_id"] for r in scenario["result"]["ran"]] == pg["bundle_nodes"]


def test_a_worker_started_before_its_head_joins_once_the_head_is_up(scenario):
    assert scenario["worker1_waited"]  # it was started first and said it waits for the head
    assert len(scenario["result"]["nodes"]) == 3  # ...and it is one of the nodes the head's command saw


def test_the_heads_exit_code_is_its_commands_after_sigterm_reached_it_once(scenario):
    head = scenario["head"]
    assert head["exit_code"] == 7, _logs(scenario)
    assert head["stopped"] and not head["lost"]
    assert head["sigterms"] == "SIGTERMS 1"


def test_sigterm_to_a_worker_and_to_the_head_leaves_no_ray_process(scenario):
    assert all(n >= 3 for n in scenario["running_before_stop"].values()), scenario["running_before_stop"]
    worker1 = scenario["worker1"]
    assert worker1["exit_code"] == 128 + signal.SIGTERM and worker1["stopped"]
    assert worker1["head_still_running"]  # one node leaving does not end the job
    assert worker1["left"] == [] and scenario["head"]["left"] == []
    assert worker1["stop_s"] < 10 and scenario["head"]["stop_s"] < 12


def test_a_worker_leaves_by_itself_once_its_head_is_gone(scenario):
    worker2 = scenario["worker2"]
    assert worker2["exit_code"] == 0 and not worker2["stopped"], _logs(scenario)
    assert worker2["saw_head_gone"]
    assert worker2["left"] == []


def test_nothing_of_ray_is_left_on_the_machine(scenario):
    assert scenario["stray"] == []
    assert scenario["netns_leftovers"] == []
    assert scenario["temp_dirs_left"] == [] and scenario["scratch_leftovers"] == []
    assert not scenario["tmp_ray_created"]
