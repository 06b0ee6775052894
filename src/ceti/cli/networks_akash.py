"""`ceti networks akash ...`: check Akash SDL files and see the fabric jobs they become."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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
