"""`ceti networks akash ...`: check Akash SDL files and see the fabric jobs they become."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ceti.cli.remote import ServerOpt, TokenOpt, call, client
from ceti.networks.akash.errors import SdlError
from ceti.networks.akash.jobs import AkashJob, sdl_jobs
from ceti.networks.akash.sdl import load_sdl_file

app = typer.Typer(help="Akash Network: SDL files and the provider side of its market.", no_args_is_help=True)


def _job_row(job: AkashJob) -> dict[str, object]:
    data = job.model_dump(mode="json", by_alias=True)
    data["job_spec"] = job.to_job_spec().model_dump(mode="json")
    return data


def validate_files(files: list[str]) -> list[dict[str, object]]:
    """One result per file: its jobs, or every error with YAML path and line."""
    results: list[dict[str, object]] = []
    for file in files:
        try:
            sdl = load_sdl_file(file)
            jobs = sdl_jobs(sdl)
        except SdlError as exc:
            results.append({"file": file, "ok": False, "errors": [p.as_dict() for p in exc.problems]})
            continue
        results.append({
            "file": file,
            "ok": True,
            "jobs": [_job_row(job) for job in jobs],
            "warnings": [w.as_dict() for w in sdl.warnings],
        })
    return results


def _gpu(job: dict[str, object]) -> str:
    gpu = job["resources"]["gpu"]  # type: ignore[index]
    if not gpu["units"]:
        return "-"
    return f"{gpu['units']} x {', '.join(gpu['models']) or 'any'}"


def _print(console: Console, result: dict[str, object]) -> None:
    if not result["ok"]:
        console.print(f"[red]✗[/red] {result['file']}", highlight=False)
        for err in result["errors"]:  # type: ignore[attr-defined]
            where = err["path"] or "(document)"
            line = f" (line {err['line']})" if err["line"] else ""
            console.print(f"    {where}{line}: {err['message']}", highlight=False, soft_wrap=True)
        return
    jobs = result["jobs"]
    console.print(f"[green]✓[/green] {result['file']}: {len(jobs)} job(s)", highlight=False)  # type: ignore[arg-type]
    table = Table(show_edge=False)
    for col in ("job", "image", "cpu", "memory", "disk", "gpu", "expose", "max price/block"):
        table.add_column(col)
    for job in jobs:  # type: ignore[attr-defined]
        res = job["resources"]
        expose = ", ".join(
            f"{e['port']}->{e['external_port']}/{e['proto']}{' global' if e['global'] else ''}" for e in job["expose"]
        )
        disk = sum(v["size_mib"] for v in res["storage"] if v["storage_class"] != "ram")
        table.add_row(job["name"], job["image"], f"{res['cpu_milli']}m", f"{res['memory_mib']} MiB",
                      f"{disk} MiB", _gpu(job), expose or "-",
                      f"{job['max_price']['amount']} {job['max_price']['denom']}")
    console.print(table)
    for warning in result.get("warnings", []):  # type: ignore[attr-defined]
        console.print(f"    [yellow]warning[/yellow] {warning['path']}: {warning['message']}", highlight=False)


@app.command()
def validate(
    files: Annotated[list[str], typer.Argument(help="SDL files (deploy.yaml)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Check SDL files and show the fabric jobs each becomes, or all of its errors. Exits 1 if any is invalid."""
    results = validate_files(files)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        # a wide page when piped, so image names and prices are not cut
        console = Console() if sys.stdout.isatty() else Console(width=160)
        for result in results:
            _print(console, result)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


# -- the live market: the operator's chain bridge, or an operator by hand -------------------------------------



def _leases_table(rows: list[dict]) -> Table:
    table = Table(title="Akash orders and leases")
    for col in ("order", "state", "bid", "USD/h", "lease", "jobs", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        bid = r.get("bid") or {}
        price = f"{bid['price_per_block']} {bid['denom']}/block" if bid else "-"
        usd = f"{r['usd_per_hour']:.4f}" if r.get("usd_per_hour") is not None else "-"
        table.add_row(r["order_id"], r["state"], price, usd, r.get("lease_id") or "-", str(len(r["job_ids"])),
                      r.get("reason") or "")
    return table


def _market_call(server: str | None, token: str | None, method: str, *args, **kwargs):
    return call(getattr(client(server, token), method), *args, **kwargs)


@app.command()
def offer(
    file: Annotated[str, typer.Argument(help="an SDL file: the orders its groups open")],
    deployment: Annotated[str, typer.Option("--deployment", help="owner/dseq of the deployment")] = "local/1",
    server: ServerOpt = None, token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Offer the orders an SDL opens to the fabric's market: see its bid, or why it declines."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}") from None
    rows = _market_call(server, token, "akash_offer", sdl=text, deployment_id=deployment)
    typer.echo(json.dumps(rows, indent=2)) if as_json else Console().print(_leases_table(rows))


@app.command()
def leases(
    state: Annotated[str | None, typer.Option("--state", help="bid_placed, declined, active, closed, lost")] = None,
    server: ServerOpt = None, token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The orders the fabric was offered, what it bid, and the leases it runs."""
    rows = _market_call(server, token, "akash_leases", state)
    typer.echo(json.dumps(rows, indent=2)) if as_json else Console().print(_leases_table(rows))


@app.command()
def close(
    order_id: Annotated[str, typer.Argument(help="owner/dseq/gseq/oseq")],
    reason: Annotated[str, typer.Option("--reason")] = "closed by the operator",
    server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Close a lease: its jobs are stopped with their grace period."""
    row = _market_call(server, token, "akash_close", order_id, reason)
    Console().print(_leases_table([row]))
