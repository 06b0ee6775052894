"""`ceti`: run the fabric, provide a machine, submit and watch work."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ceti.cli.config import resolve, save_config
from ceti.client import CetiError, Client
from ceti.spec import JobSpecError, load_job_spec_yaml

app = typer.Typer(help="ceτi Compute Fabric", no_args_is_help=True, pretty_exceptions_enable=False)
token_app = typer.Typer(help="Create, list and revoke tokens (admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")
secret_app = typer.Typer(help="Project secrets: encrypted at rest, given to jobs that name them.", no_args_is_help=True)
app.add_typer(secret_app, name="secret")
console = Console()
err_console = Console(stderr=True)

ServerOpt = Annotated[str | None, typer.Option("--server", help="server address(es), comma-separated", envvar="CETI_SERVER")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="bearer token", envvar="CETI_TOKEN")]
KNOWN_NETWORKS = frozenset({"bittensor", "render", "akash"})
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="json (one object per line) or console (readable); "
                                          "auto: console on a terminal, else json")]


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_global: dict[str, Any] = {"ca_cert": None}


@app.callback()
def _options(
    ca_cert: Annotated[str | None, typer.Option("--ca-cert", help="trust this CA for an HTTPS server",
                                                envvar="CETI_CA_CERT")] = None,
) -> None:
    _global["ca_cert"] = ca_cert


def client(server: str | None, token: str | None) -> Client:
    servers, tok = resolve(server, token)
    if not tok:
        fail("no token: pass --token, set CETI_TOKEN, or run `ceti up` to write a config file", 2)
    return Client(servers, tok, ca_cert=_global["ca_cert"])


def call(fn, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except CetiError as exc:
        fail(exc.message, 1)


def _configure_logging(log_format: str, log_level: str) -> None:
    from ceti.logs import configure_logging

    try:
        configure_logging(log_format, log_level)
    except ValueError as exc:
        fail(str(exc), 2)


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


# -- running the fabric ------------------------------------------------------------------------------


@app.command()
def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8700,
    data_dir: Annotated[Path | None, typer.Option(help="SQLite database and state (default ~/.ceti/server)")] = None,
    admin_token_file: Annotated[Path | None, typer.Option(help="write the first admin token here")] = None,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL", envvar="CETI_DATABASE_URL")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve HTTPS with this certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="the certificate's private key (PEM)")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    log_format: LogFormatOpt = "auto",
    schedule: Annotated[bool | None, typer.Option(
        "--schedule/--no-schedule", help=(
            "take part in scheduling (the default; CETI_SCHEDULE=0 is --no-schedule). --no-schedule serves "
            "requests only (PostgreSQL): the rounds then run in a replica that gets no traffic and never compete "
            "with requests"))] = None,
) -> None:
    """Run the control plane (REST API, scheduling loop)."""
    import uvicorn

    from ceti.server.app import create_app
    from ceti.server.settings import Settings

    settings = Settings()
    if data_dir:
        settings.data_dir = data_dir
    if database_url:
        settings.database_url = database_url
    if schedule is not None:
        settings.schedule = schedule
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together", 2)
    for path in (tls_cert, tls_key):
        if path and not path.is_file():
            fail(f"cannot read {path}", 2)
    _configure_logging(log_format, log_level)
    try:
        fabric_app = create_app(settings, admin_token_file=admin_token_file)
    except ValueError as exc:  # settings that cannot work together (--no-schedule on SQLite)
        fail(str(exc), 2)
    try:
        uvicorn.run(fabric_app, host=host, port=port,
                    log_level=log_level, access_log=False, timeout_graceful_shutdown=5, log_config=None,
                    ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None)
    except RuntimeError as exc:
        fail(str(exc))


@app.command()
def agent(
    server: ServerOpt = None,
    token: TokenOpt = None,
    region: Annotated[str, typer.Option(help="where this machine is")] = "local",
    price_per_gpu_hour: Annotated[float, typer.Option(help="your ask per GPU-hour", min=0)] = 0.0,
    price_per_cpu_hour: Annotated[float, typer.Option(help="your ask per CPU-hour", min=0)] = 0.0,
    networks: Annotated[str, typer.Option(
        help="decentralized networks that may fill this machine when no developer pays for it, "
             "comma-separated: bittensor, render, akash")] = "",
    network_floor: Annotated[float, typer.Option(
        help="no network work here for less than this, USD per hour", min=0)] = 0.0,
    data_dir: Annotated[Path, typer.Option(help="the agent's state and job directories")] = Path("~/.ceti/agent"),
    heartbeat_s: Annotated[float, typer.Option(help="seconds between heartbeats", min=0.05)] = 2.0,
    inventory_file: Annotated[Path | None, typer.Option(help="recorded GPU description instead of NVML")] = None,
    hostname: Annotated[str | None, typer.Option(help="name to report instead of the machine's")] = None,
    ca_cert: Annotated[str | None, typer.Option(help="trust this CA for an HTTPS server")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    log_format: LogFormatOpt = "auto",
    containers: Annotated[str | None, typer.Option(
        help="container engine for jobs with an image: off, auto, podman, docker or a path "
             "(default: CETI_CONTAINER_ENGINE, else off)")] = None,
    network_label: Annotated[str, typer.Option(
        help="the LAN or data centre this machine is in: machines with the same label run multi-node jobs "
             "together (empty = none)")] = "",
    network_address: Annotated[str, typer.Option(
        help="this machine's address on that network; multi-node engines (Ray) listen there only")] = "",
    gang_ports: Annotated[str, typer.Option(
        help="the port range multi-node jobs may use here, FIRST-LAST")] = "47000-47999",
) -> None:
    """Provide this machine to the fabric: discover it, register, heartbeat, run what the server assigns."""
    from pydantic import ValidationError

    from ceti.agent.discovery import discover
    from ceti.agent.loop import Agent, AgentConfig
    from ceti.spec import NodeInfo

    _configure_logging(log_format, log_level)
    servers, tok = resolve(server, token)
    if not tok:
        fail("no provider token: pass --token or set CETI_TOKEN", 2)
    data_dir = data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    info = discover(region=region, price_per_gpu_hour=price_per_gpu_hour, price_per_cpu_hour=price_per_cpu_hour,
                    inventory_file=inventory_file, disk_path=data_dir)
    if hostname:
        info = info.model_copy(update={"hostname": hostname})
    chosen = [n.strip().lower() for n in networks.split(",") if n.strip()]
    unknown = sorted(set(chosen) - KNOWN_NETWORKS)
    if unknown:
        fail(f"unknown network(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_NETWORKS))}", 2)
    first, _, last = gang_ports.partition("-")
    if not (first.strip().isdigit() and last.strip().isdigit()):
        fail(f"--gang-ports {gang_ports!r}: give a range such as 47000-47999", 2)
    update = {"networks": chosen, "network_floor_usd_per_hour": network_floor, "network_label": network_label,
              "network_address": network_address, "gang_port_min": int(first), "gang_port_max": int(last)}
    try:
        info = NodeInfo.model_validate({**info.model_dump(), **update})
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = {"gang_port_min": "gang-ports", "gang_port_max": "gang-ports"}.get(
            str(err["loc"][0]) if err["loc"] else "", str(err["loc"][0]).replace("_", "-") if err["loc"] else "")
        fail(f"{'--' + flag + ': ' if flag else ''}{err['msg'].removeprefix('Value error, ')}", 2)
    the_agent = Agent(AgentConfig(servers=servers, token=tok, data_dir=data_dir, info=info, heartbeat_s=heartbeat_s,
                                  ca_cert=ca_cert or _global["ca_cert"], containers=containers))
    signal.signal(signal.SIGTERM, lambda *_: the_agent.shutdown())
    try:
        the_agent.run()
    except KeyboardInterrupt:
        the_agent.shutdown()
    if the_agent.verification.busy():
        # a proof-of-hardware challenge can compute for minutes, and its worker threads would hold the exit
        # until it ends: abandon it (the server issues a new one later); jobs and state need nothing more
        logging.getLogger("ceti.agent").warning("stopping: a proof-of-hardware challenge in progress is abandoned")
        logging.shutdown()
        os._exit(0)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8700,
    data_dir: Annotated[Path, typer.Option(help="where the server and agent keep their state")] = Path(".ceti"),
    region: Annotated[str, typer.Option(help="region of the local agent")] = "local",
) -> None:
    """Run the whole fabric on this machine: server + one local agent + SQLite. Ctrl-C stops it."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = data_dir / "admin-token"
    address = f"http://127.0.0.1:{port}"
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    exe = [sys.executable, "-m", "ceti.cli.main"]
    with open(log_dir / "server.log", "a") as log:  # the server keeps its own copy of the descriptor
        srv = subprocess.Popen(
            [*exe, "server", "--port", str(port), "--data-dir", str(data_dir / "server"),
             "--admin-token-file", str(token_file)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    procs = [srv]
    try:
        with console.status("starting the control plane..."):
            for _ in range(300):
                if srv.poll() is not None:
                    fail(f"the server exited; see {log_dir / 'server.log'}")
                try:
                    Client(address, timeout_s=1, retries=0).health()
                    break
                except CetiError:
                    time.sleep(0.1)
            else:
                fail(f"the server did not answer on {address}; see {log_dir / 'server.log'}")
        admin = token_file.read_text().strip()
        admin_client = Client(address, admin)
        provider_file = data_dir / "provider-token"
        if not provider_file.exists():
            provider_file.write_text(admin_client.create_token("provider", "local agent", provider="local")["token"])
            provider_file.chmod(0o600)
        # the token goes in the environment, not the arguments: any local user can read a process's arguments
        with open(log_dir / "agent.log", "a") as log:
            agt = subprocess.Popen(
                [*exe, "agent", "--server", address, "--region", region, "--data-dir", str(data_dir / "agent")],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "CETI_TOKEN": provider_file.read_text().strip()},
            )
        procs.append(agt)
        path = save_config({"server": address, "token": admin})
        console.print("[bold green]ceτi fabric is up[/bold green] on this machine")
        console.print(f"  API:       {address}/v1   (OpenAPI: {address}/docs)")
        console.print(f"  admin token: {admin}")
        console.print(f"  config written to {path}; logs in {log_dir}")
        console.print("  try: ceti run examples/hello.yaml --follow   |   Ctrl-C stops the fabric")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        fail("a fabric process exited; see the logs in " + str(log_dir))
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


# -- developers -------------------------------------------------------------------------------------


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="job spec (YAML)")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream logs until the job ends")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit a job from a YAML spec."""
    try:
        text = file.read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 2)
    try:
        spec = load_job_spec_yaml(text)
    except JobSpecError as exc:
        fail(f"{file}: {exc}", 2)
    c = client(server, token)
    job = call(c.submit, spec)
    if json_out and not follow:
        print(json.dumps(job))
        return
    console.print(f"submitted job [bold]{job['id']}[/bold] ({job['name']}): {job['state']}")
    if follow:
        raise typer.Exit(_follow(c, job["id"]))


def _follow(c: Client, job_id: str) -> int:
    try:
        for chunk in c.follow_logs(job_id):
            stream = sys.stdout if chunk["stream"] == "stdout" else sys.stderr
            stream.write(chunk["data"])
            stream.flush()
    except CetiError as exc:
        fail(exc.message)
    job = call(c.job, job_id)
    color = "green" if job["state"] == "succeeded" else "red"
    err_console.print(f"[{color}]job {job_id} {job['state']}[/{color}] {job['reason']}", highlight=False)
    if job["state"] == "succeeded":
        return 0
    return job["exit_code"] if isinstance(job["exit_code"], int) and job["exit_code"] > 0 else 1


@app.command()
def jobs(
    state: Annotated[str | None, typer.Option(help="only jobs in this state")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs (a project token sees its own project's)."""
    rows = call(client(server, token).jobs, state, limit)
    if json_out:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("no jobs yet: submit one with `ceti run FILE.yaml`")
        return
    table = Table("id", "name", "state", "prio", "node", "tries", "created", "reason")
    for j in rows:
        table.add_row(j["id"][:8], j["name"], j["state"], str(j["priority"]), (j["node_id"] or "-")[:8],
                      str(j["attempts"]), _ts(j["created_at"]), j["reason"][:60])
    console.print(table)


@app.command()
def job(
    job_id: str,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a job, its attempts and its events."""
    c = client(server, token)
    j = call(c.job, job_id)
    events = call(c.events, job_id)
    if json_out:
        print(json.dumps({**j, "events": events}))
        return
    console.print(f"[bold]{j['name']}[/bold] {j['id']}  state=[bold]{j['state']}[/bold]  exit={j['exit_code']}")
    if j["reason"]:
        console.print(f"  reason: {j['reason']}")
    for a in j["allocations"]:
        console.print(f"  attempt {a['attempt']} on node {a['node_id'][:8]}: {a['state']} exit={a['exit_code']} "
                      f"gpus={a['gpu_indices']} cpu_s={a['cpu_seconds']} wall_s={a['wall_s']}")
    table = Table("time", "event", "from", "to", "reason")
    for e in events:
        table.add_row(_ts(e["at"]), e["kind"], e["from_state"] or "", e["to_state"] or "", e["reason"])
    console.print(table)


@app.command()
def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep streaming until the job ends")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a job's output."""
    c = client(server, token)
    if follow:
        raise typer.Exit(_follow(c, job_id))
    after = 0
    while True:
        page = call(c.logs, job_id, after)
        for chunk in page["chunks"]:
            (sys.stdout if chunk["stream"] == "stdout" else sys.stderr).write(chunk["data"])
        if not page["chunks"]:
            break
        after = page["next_after_id"]
    if page["truncated"]:
        err_console.print("[yellow]output was truncated at the server's log limit[/yellow]")


@app.command()
def cancel(job_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Cancel a job: a running one gets SIGTERM, then SIGKILL after its grace period."""
    j = call(client(server, token).cancel, job_id)
    console.print(f"job {j['id']}: {j['state']} {j['reason']}")


@app.command()
def nodes(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List the nodes of the network."""
    rows = call(client(server, token).nodes)
    if json_out:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("no nodes yet: start one with `ceti agent --server URL --token PROVIDER_TOKEN`")
        return
    table = Table("id", "host", "region", "state", "cpus", "memory", "gpus", "$/gpu-h", "hardware", "heartbeat",
                  "allocs", "reliability")
    now = time.time()
    for n in rows:
        info = n["info"]
        gpus = ", ".join(sorted({g["model"] for g in info["gpus"]}))
        table.add_row(n["id"][:8], n["hostname"], n["region"], n["state"], str(info["cpus"]),
                      f"{info['memory_mib'] / 1024:.1f} GiB", f"{len(info['gpus'])} {gpus}".strip(),
                      f"{info['price_per_gpu_hour']:.2f}", _verdict(n), f"{now - n['last_heartbeat_at']:.0f}s ago",
                      str(n["allocations"]),
                      "-" if n.get("reliability") is None
                      else f"{n['reliability']:.3f}/h (>= {n['reliability_low']:.3f})")
    console.print(table)


def _verdict(node: dict[str, Any]) -> str:
    """The proof-of-hardware verdict; for a mismatch, what the hardware really is."""
    verdict = node.get("verdict") or "unchecked"
    if verdict == "mismatch" and node.get("model_estimate"):
        return f"mismatch ({node['model_estimate']})"
    return verdict


# -- tokens -----------------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    kind: Annotated[str, typer.Argument(help="admin, provider or project")],
    name: Annotated[str, typer.Option(help="a label for the token")] = "",
    project: Annotated[str | None, typer.Option(help="project name (project tokens)")] = None,
    provider: Annotated[str | None, typer.Option(help="provider name (provider tokens)")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a token; its secret is shown once."""
    row = call(client(server, token).create_token, kind, name, project, provider)
    if json_out:
        print(json.dumps(row))
        return
    console.print(f"{row['kind']} token {row['id']} (shown once): {row['token']}", highlight=False)


@token_app.command("list")
def token_list(server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    rows = call(client(server, token).tokens)
    if json_out:
        print(json.dumps(rows))
        return
    table = Table("id", "kind", "name", "project", "provider", "created", "revoked")
    for r in rows:
        table.add_row(r["id"], r["kind"], r["name"], (r["project_id"] or "")[:8], (r["provider_id"] or "")[:8],
                      _ts(r["created_at"]), _ts(r["revoked_at"]))
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    row = call(client(server, token).revoke_token, token_id)
    console.print(f"token {row['id']} revoked")


@secret_app.command("set")
def secret_set(
    name: Annotated[str, typer.Argument(help="the environment variable name jobs will see")],
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Set a secret; the value is read from standard input (or prompted for, hidden)."""
    value = sys.stdin.read().rstrip("\n") if not sys.stdin.isatty() else typer.prompt("value", hide_input=True)
    call(client(server, token).set_secret, name, value)
    console.print(f"secret {name} set")


@secret_app.command("list")
def secret_list(server: ServerOpt = None, token: TokenOpt = None) -> None:
    for row in call(client(server, token).secrets):
        console.print(f"{row['name']}  (updated {_ts(row['updated_at'])})")


@secret_app.command("delete")
def secret_delete(name: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    call(client(server, token).delete_secret, name)
    console.print(f"secret {name} deleted")


# Commands that need none of the heavier groups below: `ceti agent` and `ceti server` start without loading the
# simulator, the benchmarks or the network SDK wrappers.
CORE_COMMANDS = frozenset({"server", "agent", "up", "run", "jobs", "job", "logs", "cancel", "nodes", "token", "secret",
                           "usage", "earnings", "budget"})


def _mount_subcommands(argv: list[str]) -> None:
    """Sub-commands that live in their own modules (ledger, simulator, benchmarks, networks, verify)."""
    from ceti.cli.ledger import budget_app, earnings, usage

    app.command()(usage)
    app.command()(earnings)
    app.add_typer(budget_app, name="budget",
                  help="Project spending caps: work that would pass one is refused or stopped.")
    words = [a for a in argv[1:] if not a.startswith("-")]
    if words and words[0] in CORE_COMMANDS:
        return
    from ceti.cli.bench import app as bench_app
    from ceti.cli.bench_control_plane import control_plane
    from ceti.cli.networks import app as networks_app
    from ceti.cli.sim import app as sim_app
    from ceti.cli.verify import app as verify_app

    bench_app.command("control-plane")(control_plane)
    app.add_typer(sim_app, name="sim", help="Replay traces through the fabric and its baselines.")
    app.add_typer(bench_app, name="bench", help="Benchmarks that print figures.")
    app.add_typer(networks_app, name="networks", help="Decentralized AI networks: Akash, Bittensor, Render.")
    app.add_typer(verify_app, name="verify", help="Proof of hardware: run the challenge the fabric runs.")


_mount_subcommands(sys.argv)

if __name__ == "__main__":
    app()
