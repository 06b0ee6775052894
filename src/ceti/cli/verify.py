"""`ceti verify run`: the proof-of-hardware challenge against this machine, issued and checked in-process.

Providers use it to see what the fabric will see. The verdict comes from the same verifier the server runs, with
the real clock; only the sizes are capped by `--budget-mib` so the run fits the machine.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import psutil
import typer
from rich.console import Console
from rich.table import Table

from ceti.spec.node import GPUInfo
from ceti.verify.catalog import CPU_MODEL, load_catalog
from ceti.verify.challenge import MIB, ClaimedHardware, VerifyPolicy
from ceti.verify.compute import roots_answer, rows_answer, run_challenge
from ceti.verify.verifier import Verdict, Verifier

app = typer.Typer(help="Proof of hardware: run the verification challenge against this machine.",
                  no_args_is_help=True)


@app.callback()
def main() -> None:
    """Proof of hardware: run the verification challenge against this machine."""


def run_local(claimed_model: str, budget_mib: int, backend: str = "auto", gpu_count: int = 1
              ) -> tuple[Verdict, dict[str, float]]:
    """Issue, compute, answer and verify in this process; the timing is this process's monotonic clock.

    Returns the verdict and the seconds each phase took on lane 0. `budget_mib` 0 sizes the challenge as the
    server does (the claimed VRAM); the allowances are the server's own, start-up of the GPU library included."""
    catalog = load_catalog()
    if budget_mib <= 0:
        policy = VerifyPolicy()
    else:
        budget = budget_mib * MIB
        policy = VerifyPolicy(max_matrix_bytes=budget, max_fill_bytes=budget, cpu_budget_mib=budget_mib,
                              chunk_bytes=min(64 * MIB, max(MIB, budget // 16)))
    verifier = Verifier(policy, catalog)
    if claimed_model.lower() == CPU_MODEL:
        claim = ClaimedHardware(cpus=os.cpu_count() or 1)
    else:
        rows = catalog.for_claim(claimed_model)
        vram_mib = rows[0].vram_mib if rows else 0
        claim = ClaimedHardware(gpus=tuple(
            GPUInfo(index=i, model=claimed_model, vram_mib=vram_mib, uuid=f"local-{i}") for i in range(gpu_count)
        ))
    session = verifier.issue("local", claim)
    if session.verdict is not None:
        return session.verdict, {}
    run = run_challenge(session.challenge, backend, psutil.virtual_memory().available)
    phases = run.lanes[0].phases if run.lanes else {}
    after_roots = verifier.receive_roots(roots_answer(run))
    if isinstance(after_roots, Verdict):
        return after_roots, phases
    if after_roots.verdict is not None:
        return after_roots.verdict, phases
    assert after_roots.row_request is not None
    return verifier.receive_rows(rows_answer(run, after_roots.row_request)), phases


@app.command("run")
def run_command(
    claimed_model: Annotated[str, typer.Option("--claimed-model", help="the model to prove, e.g. H100-80GB or cpu")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    budget_mib: Annotated[int, typer.Option(
        "--budget-mib", min=0, help="cap on matrix and memory-fill sizes; 0 = the claimed VRAM, as the fabric asks")] = 256,
    backend: Annotated[str, typer.Option("--backend", help="auto, numpy or cupy")] = "auto",
) -> None:
    """Run the challenge for CLAIMED_MODEL here and print the server-side verdict."""
    verdict, phases = run_local(claimed_model, budget_mib, backend)
    out = {"verdict": verdict.verdict, "model_estimate": verdict.model_estimate,
           "seconds": None if verdict.seconds is None else round(verdict.seconds, 4), "reason": verdict.reason,
           "phases": {k: round(v, 4) for k, v in phases.items()}}
    if as_json:
        typer.echo(json.dumps(out))
        return
    table = Table(title=f"proof of hardware: claimed {claimed_model}")
    table.add_column("verdict")
    table.add_column("model estimate")
    table.add_column("seconds", justify="right")
    table.add_column("reason")
    colour = {"verified": "green", "mismatch": "yellow", "failed": "red"}[verdict.verdict]
    table.add_row(f"[{colour}]{verdict.verdict}[/{colour}]", str(out["model_estimate"] or "-"),
                  "-" if out["seconds"] is None else f"{out['seconds']:.3f}", verdict.reason)
    console = Console()
    console.print(table)
    if phases:
        console.print("phases: " + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items()))
