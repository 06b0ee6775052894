"""`ceti networks bittensor`: the subnets of a Bittensor chain and what mining them would earn on given hardware."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ceti.networks.base import NetworkError, NodeClass, RevenueEstimate

app = typer.Typer(help="Bittensor: subnets and what a miner would earn on them.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

COINGECKO_TAO = "https://api.coingecko.com/api/v3/simple/price?ids=bittensor&vs_currencies=usd"

NetworkOpt = Annotated[str, typer.Option("--network", help="finney, test, local, a ws:// endpoint, or mock "
                                                          "(the SDK's mock chain with a small demonstration chain)")]
GpuModelOpt = Annotated[str, typer.Option("--gpu-model", help="normalised GPU model, e.g. H100-80GB, RTX 4090")]
GpusOpt = Annotated[int, typer.Option("--gpus", min=0, max=64, help="GPUs on the node")]
VramOpt = Annotated[int, typer.Option("--vram-mib", min=0, help="memory of one GPU, MiB")]
TaoUsdOpt = Annotated[float | None, typer.Option("--tao-usd", help="TAO price in USD (instead of --price-url)")]
PriceUrlOpt = Annotated[str, typer.Option("--price-url", help="JSON price feed for TAO in USD")]
PricePathOpt = Annotated[str, typer.Option("--price-path", help="dotted path to the price in the feed's JSON")]
QuantileOpt = Annotated[float, typer.Option("--quantile", min=0.0, max=1.0,
                                            help="where among earning miners a new miner lands (0.5 = median)")]
HorizonOpt = Annotated[float, typer.Option("--horizon-hours", min=1.0,
                                           help="hours of mining the registration burn is spread over")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _adapter(network: str, tao_usd: float | None, price_url: str, price_path: str, quantile: float,
             horizon_hours: float):
    from ceti.networks.bittensor import (
        BittensorAdapter,
        BittensorConfig,
        EstimateSettings,
        FixedPrice,
        HttpJsonPrice,
        connect,
    )

    price = FixedPrice(tao_usd) if tao_usd is not None else HttpJsonPrice(price_url, price_path)
    settings = EstimateSettings(miner_quantile=quantile, registration_horizon_hours=horizon_hours)
    # listing needs no wallet; the placeholders only have to be valid
    config = BittensorConfig(wallet="estimate", hotkeys=[], network=network, settings=settings)
    try:
        subtensor = connect(network)
    except Exception as exc:  # noqa: BLE001 - the SDK's connection errors have many types
        raise NetworkError(f"cannot connect to the {network} chain: {exc}") from None
    return BittensorAdapter(subtensor, price, config)


def _node(gpu_model: str, gpus: int, vram_mib: int) -> NodeClass:
    return NodeClass(gpu_model=gpu_model if gpus else None, gpu_count=gpus, vram_mib=vram_mib, cpus=16,
                     memory_mib=65_536)


def _estimate_json(estimate: RevenueEstimate) -> dict:
    return {"target": estimate.target, "usd_per_hour": estimate.usd_per_hour, "inputs": estimate.inputs,
            "detail": estimate.detail}


@app.command("subnets")
def subnets(
    network: NetworkOpt = "finney",
    gpu_model: GpuModelOpt = "RTX 4090",
    gpus: GpusOpt = 1,
    vram_mib: VramOpt = 24_576,
    tao_usd: TaoUsdOpt = None,
    price_url: PriceUrlOpt = COINGECKO_TAO,
    price_path: PricePathOpt = "bittensor.usd",
    quantile: QuantileOpt = 0.5,
    horizon_hours: HorizonOpt = 720.0,
    as_json: JsonOpt = False,
) -> None:
    """List subnets, best first, with the estimated net USD per hour of mining each on this hardware."""
    try:
        adapter = _adapter(network, tao_usd, price_url, price_path, quantile, horizon_hours)
        rows = adapter.subnet_table(_node(gpu_model, gpus, vram_mib))
    except NetworkError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps([
            {"netuid": r.netuid, "ok": r.estimate is not None,
             **(_estimate_json(r.estimate) if r.estimate else {"reason": r.reason})}
            for r in rows
        ], indent=2))
        return
    table = Table(title=f"Bittensor subnets on {network}: a miner with {gpus} x {gpu_model}")
    for column in ("netuid", "USD/h net", "USD/h gross", "burn USD/h", "earning miners", "alpha price TAO", "note"):
        table.add_column(column, justify="left" if column == "note" else "right")
    for r in rows:
        if r.estimate is None:
            table.add_row(str(r.netuid), "-", "-", "-", "-", "-", r.reason)
            continue
        i = r.estimate.inputs
        table.add_row(str(r.netuid), f"{r.estimate.usd_per_hour:.4f}", f"{i['gross_usd_per_hour']:.4f}",
                      f"{i['registration_usd_per_hour']:.4f}", str(i["comparable_miners"]),
                      f"{i['alpha_price_tao']:.6g}", "")
    console.print(table)
    if rows and rows[0].estimate is not None:
        console.print(f"best: {rows[0].estimate.detail}", highlight=False, soft_wrap=True)


@app.command("estimate")
def estimate(
    netuid: Annotated[int, typer.Argument(help="the subnet")],
    network: NetworkOpt = "finney",
    gpu_model: GpuModelOpt = "RTX 4090",
    gpus: GpusOpt = 1,
    vram_mib: VramOpt = 24_576,
    tao_usd: TaoUsdOpt = None,
    price_url: PriceUrlOpt = COINGECKO_TAO,
    price_path: PricePathOpt = "bittensor.usd",
    quantile: QuantileOpt = 0.5,
    horizon_hours: HorizonOpt = 720.0,
    as_json: JsonOpt = False,
) -> None:
    """Estimate one subnet with every input shown; an unknown subnet or an unusable price is an error."""
    try:
        adapter = _adapter(network, tao_usd, price_url, price_path, quantile, horizon_hours)
        result = adapter.estimate_subnet(_node(gpu_model, gpus, vram_mib), netuid)
    except NetworkError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(_estimate_json(result), indent=2))
        return
    for key, value in result.inputs.items():
        console.print(f"{key:>28}  {value}", highlight=False)
    console.print(result.detail, highlight=False, soft_wrap=True)
