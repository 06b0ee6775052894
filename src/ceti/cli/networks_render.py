"""`ceti networks render`: what a node earns rendering for the Render Network, and the renderer command it runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from ceti.networks.base import NetworkError, NodeClass
from ceti.networks.render import RenderJob, estimate_node, render_command
from ceti.networks.render.pricing import TIERS, score_table

app = typer.Typer(help="Render Network: revenue by OctaneBench score, and Blender renders.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command("estimate")
def estimate(
    gpu_model: Annotated[str, typer.Option("--gpu-model", help="normalised GPU model, e.g. RTX 4090, A100-40GB")],
    obh_rate: Annotated[float, typer.Option("--obh-rate", help="USD paid per OctaneBench-hour")],
    gpus: Annotated[int, typer.Option("--gpus", min=1, max=64, help="GPUs on the node")] = 1,
    score: Annotated[float | None, typer.Option("--score", help="measured OctaneBench score of one GPU")] = None,
    tier: Annotated[str, typer.Option("--tier", help=f"one of {', '.join(TIERS)}")] = "economy",
    as_json: JsonOpt = False,
) -> None:
    """Revenue of a node: OctaneBench score x GPUs x OBh rate, with its inputs."""
    node = NodeClass(gpu_model=gpu_model, gpu_count=gpus, vram_mib=0, cpus=0, memory_mib=0)
    try:
        # only the model is known here, so the network's memory minimum is not checked
        result = estimate_node(node, obh_rate, tier, score, check_minimum=False)
    except NetworkError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps({"target": result.target, "usd_per_hour": result.usd_per_hour, "inputs": result.inputs,
                          "detail": result.detail}, indent=2))
        return
    for key, value in result.inputs.items():
        console.print(f"{key:>20}  {value}", highlight=False, soft_wrap=True)
    console.print(result.detail, highlight=False)


@app.command("scores")
def scores(as_json: JsonOpt = False) -> None:
    """The OctaneBench scores on file, with their sources."""
    table = score_table()
    if as_json:
        print(json.dumps(table, indent=2))
        return
    for model, entry in sorted(table.items(), key=lambda kv: -kv[1]["score"]):
        console.print(f"{model:>12}  {entry['score']:>6}  {entry['source']}", highlight=False, soft_wrap=True)


@app.command("command")
def command(
    scene: Annotated[str, typer.Argument(help=".blend file inside the job's working directory")],
    start: Annotated[int, typer.Option("--start", help="first frame")],
    end: Annotated[int, typer.Option("--end", help="last frame (inclusive)")],
    engine: Annotated[str, typer.Option("--engine")] = "CYCLES",
    output: Annotated[str, typer.Option("--output", help="Blender output pattern, # = frame digits")] = "frames/frame_####",
    file_format: Annotated[str, typer.Option("--format")] = "PNG",
    as_json: JsonOpt = False,
) -> None:
    """Check a render job and print the renderer command line it becomes."""
    try:
        job = RenderJob(job_id="cli", scene=scene, frame_start=start, frame_end=end, engine=engine, output=output,
                        format=file_format)
        argv = render_command(job)
    except NetworkError as exc:
        _fail(str(exc))
    print(json.dumps(argv) if as_json else " ".join(argv))
