"""The provider side: can the fabric host an order, what it bids, the price script, the lease, the adapter."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ceti.cli.networks import app
from ceti.networks.akash import (
    AkashAdapter,
    Bid,
    DenomRates,
    FreeNode,
    NoBid,
    NoFit,
    PriceScriptError,
    ProviderTerms,
    ScalePricing,
    ScriptPricing,
    decide_bid,
    load_sdl_file,
    orders_from_sdl,
    place_order,
    sdl_jobs,
)
from ceti.networks.akash.lease import (
    BidDecided,
    BidLost,
    Lease,
    LeaseClosed,
    LeaseState,
    LeaseTransitionError,
    LeaseWon,
    RunJobs,
    StopJobs,
    advance,
)
from ceti.networks.akash.price_script import parse_price
from ceti.networks.base import NetworkError, NodeClass

SDL = Path(__file__).parent / "sdl"
IBC = "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1"
RATES = DenomRates(usd_per_token={"uakt": 3.0, "uact": 1.0, IBC: 1.0}, block_time_s=6.0)
H100 = FreeNode("h100-a", cpu_milli=32_000, memory_mib=256_000, disk_mib=2_000_000, gpu_model="H100-80GB",
                gpu_count=8, vram_mib=81_559, floor_price_per_hour=16.0)
CPU = FreeNode("cpu-a", cpu_milli=16_000, memory_mib=64_000, disk_mib=500_000,
               storage_classes=frozenset({"beta3"}))
SHOP = ProviderTerms(attributes={"host": "akash", "region": "us-west"},
                     audited_by=frozenset({"akash1auditoraaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}), ip_endpoints=1)
AKASH = ProviderTerms(attributes={"host": "akash"})
SCALE = ScalePricing(cpu_per_millicore=0.00002, memory_per_gib=0.004, storage_per_gib=0.0001,
                     persistent_storage_per_gib={"beta3": 0.0003}, gpu_per_hour={"H100-80GB": 2.0, "*": 0.5},
                     endpoint_per_hour=0.001, ip_endpoint_per_hour=0.005)


def order(name: str):
    (first, *_) = orders_from_sdl(load_sdl_file(str(SDL / name)))
    return first


def test_order_from_sdl_is_one_group_with_unit_prices():
    shop = order("web-db.yaml")
    assert shop.group == "dcloud" and shop.denom == "uakt"
    assert [(u.name, u.count, u.price) for u in shop.resources] == [
        ("db", 1, Decimal("2500.5")), ("web", 2, Decimal(1000))]
    assert shop.max_price == Decimal("4500.5") and shop.replicas == 3
    web = shop.resources[1]
    assert web.global_endpoints == 1 and web.ip_endpoints == 1


def test_placement_respects_requirements_and_capacity():
    shop = order("web-db.yaml")
    placed = place_order(shop, [CPU], SHOP)
    assert not isinstance(placed, NoFit)
    assert set(placed.nodes.values()) == {"cpu-a"}
    assert placed.floor_usd_per_hour == 0.0

    assert "region=us-west" in place_order(shop, [CPU], ProviderTerms(attributes={"host": "akash"})).reason
    unaudited = ProviderTerms(attributes=SHOP.attributes, ip_endpoints=1)
    assert "signed" in place_order(shop, [CPU], unaudited).reason
    no_beta3 = FreeNode("cpu-b", cpu_milli=16_000, memory_mib=64_000)
    assert "no free node" in place_order(shop, [no_beta3], SHOP).reason

    vllm = order("gpu.yaml")
    assert isinstance(place_order(vllm, [CPU], AKASH), NoFit)
    assert place_order(vllm, [CPU, H100], AKASH).nodes == {(0, 0): "h100-a"}
    l40 = FreeNode("l40", cpu_milli=64_000, memory_mib=512_000, gpu_model="L40S", gpu_count=8, vram_mib=46_000)
    assert "no free node" in place_order(vllm, [l40], AKASH).reason
    # the dominant share of the node's free capacity: 64 GiB of 250 GiB memory (2 of 8 GPUs is less)
    assert place_order(vllm, [H100], AKASH).floor_usd_per_hour == pytest.approx(16.0 * 65_536 / 256_000)


def test_scale_bid_in_the_orders_denom_never_above_its_max():
    shop = order("web-db.yaml")
    bid = decide_bid(shop, [CPU], SCALE, RATES, SHOP)
    assert isinstance(bid, Bid)
    usd = SCALE.usd_per_hour(shop)
    assert bid.usd_per_hour == pytest.approx(usd, rel=1e-4)
    # uakt at 3 USD, 600 blocks an hour: 1 uakt/block = 0.0018 USD/h
    assert bid.price_per_block == RATES.to_per_block(usd, "uakt")
    assert bid.price_per_block <= shop.max_price
    assert bid.inputs["blocks_per_hour"] == 600.0 and bid.inputs["denom_usd_per_token"] == 3.0

    dear = ScalePricing(cpu_per_millicore=1.0)
    refused = decide_bid(shop, [CPU], dear, RATES, SHOP)
    assert isinstance(refused, NoBid) and "above the order's maximum" in refused.reason


def test_floor_raises_the_bid_and_blocks_it_above_the_max():
    vllm = order("gpu.yaml")  # 100000.25 IBC micro-units per block = 60.00015 USD/h at 1 USD
    cheap = ScalePricing(gpu_per_hour={"*": 0.01})
    bid = decide_bid(vllm, [H100], cheap, RATES, AKASH)
    assert isinstance(bid, Bid)
    assert bid.usd_per_hour == pytest.approx(4.096, rel=1e-4)  # 65536/256000 of the node's 16 USD/h floor
    assert "floor" in bid.detail
    greedy = FreeNode("h100-b", cpu_milli=32_000, memory_mib=256_000, gpu_model="H100-80GB", gpu_count=2,
                      vram_mib=81_559, floor_price_per_hour=500.0)
    refused = decide_bid(vllm, [greedy], cheap, RATES, AKASH)
    assert isinstance(refused, NoBid) and "floor" in refused.reason
    assert isinstance(decide_bid(vllm, [H100], ScalePricing(), DenomRates({"uakt": 1.0}), AKASH), NoBid)


def script(tmp_path: Path, body: str) -> ScriptPricing:
    path = tmp_path / "price.py"
    path.write_text(body)
    return ScriptPricing(command=(sys.executable, str(path)), timeout_s=1.0)


def test_price_script_reads_the_order_and_bids(tmp_path):
    pricing = script(tmp_path, "import json, sys\norder = json.load(sys.stdin)\n"
                               "print(int(order['resources'][0]['cpu_millicores']) * 0.5)\n")
    no_floor = dataclasses.replace(H100, floor_price_per_hour=0.0)
    bid = decide_bid(order("gpu.yaml"), [no_floor], pricing, RATES, AKASH)
    assert isinstance(bid, Bid) and bid.price_per_block == Decimal("4000.0") and bid.strategy == "script"


@pytest.mark.parametrize(("body", "words"), [
    ("print('cheap, very cheap')", "expected one number"),
    ("print('free')", "not a number"),
    ("print(-3)", "negative"),
    ("print('nan')", "not a finite number"),
    ("print('inf')", "not a finite number"),
    ("print(10**30)", "absurd"),
    ("", "printed nothing"),
    ("import sys; sys.exit('no market data')", "status 1: no market data"),
])
def test_price_script_garbage_gives_a_clear_error_and_no_bid(tmp_path, body, words):
    pricing = script(tmp_path, body)
    decision = decide_bid(order("gpu.yaml"), [H100], pricing, RATES, AKASH)
    assert isinstance(decision, NoBid) and words in decision.reason


def test_hanging_price_script_is_killed_in_time(tmp_path):
    pricing = script(tmp_path, "import os, time\nos.fork() or time.sleep(60)\ntime.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(PriceScriptError, match="longer than 1 s and was killed"):
        pricing.price(order("gpu.yaml"), RATES)
    assert time.monotonic() - started < 5


def test_missing_price_script():
    with pytest.raises(PriceScriptError, match="cannot start"):
        ScriptPricing(command=("/nonexistent/price-script",)).price(order("gpu.yaml"), RATES)
    assert parse_price(" 12.5\n", Decimal(100)) == Decimal("12.5")


def test_bad_rates_are_refused():
    with pytest.raises(NetworkError):
        DenomRates({"uakt": float("nan")})
    with pytest.raises(NetworkError):
        DenomRates({"uakt": 1.0}, block_time_s=0)
    with pytest.raises(NetworkError):
        ScalePricing(cpu_per_millicore=-1)


def test_lease_life_cycle():
    sdl = load_sdl_file(str(SDL / "gpu.yaml"))
    (vllm,) = orders_from_sdl(sdl)
    lease = Lease(vllm)
    bid = decide_bid(vllm, [H100], SCALE, RATES, AKASH)
    lease, actions = advance(lease, BidDecided(bid))
    assert lease.state is LeaseState.bid_placed and actions == []
    with pytest.raises(LeaseTransitionError):
        advance(lease, BidDecided(bid))
    lease, actions = advance(lease, LeaseWon("akash1tenant/42/1/1/akash1prov", tuple(sdl_jobs(sdl))))
    assert lease.state is LeaseState.active
    (run,) = actions
    assert isinstance(run, RunJobs) and run.jobs[0].resources.gpus.count == 2 and run.jobs[0].interruptible
    assert run.jobs[0].name == lease.job_names[0]
    lease, actions = advance(lease, LeaseClosed("tenant closed the deployment"))
    assert lease.state is LeaseState.closed
    assert actions == [StopJobs(lease.lease_id, lease.job_names, "tenant closed the deployment")]
    with pytest.raises(LeaseTransitionError):
        advance(lease, LeaseClosed())

    declined, _ = advance(Lease(vllm), BidDecided(NoBid(vllm.order_id, "no GPU")))
    assert declined.state is LeaseState.declined and declined.reason == "no GPU"
    placed, _ = advance(Lease(vllm), BidDecided(bid))
    assert advance(placed, BidLost())[0].state is LeaseState.lost
    other = tuple(sdl_jobs(load_sdl_file(str(SDL / "any-gpu.yaml"))))
    with pytest.raises(LeaseTransitionError, match="does not match"):
        advance(placed, LeaseWon("x", other))


def test_adapter_prices_node_classes_in_usd_per_hour():
    sdl = load_sdl_file(str(SDL / "gpu.yaml"))
    orders = orders_from_sdl(sdl)
    adapter = AkashAdapter(orders, SCALE, RATES, AKASH, manifests={orders[0].order_id: sdl_jobs(sdl)})
    h100 = NodeClass(gpu_model="H100-80GB", gpu_count=8, vram_mib=81_559, cpus=32, memory_mib=256_000)
    (estimate,) = adapter.estimate_revenue(h100)
    assert estimate.network == "akash" and estimate.target == orders[0].order_id
    assert estimate.usd_per_hour == pytest.approx(SCALE.usd_per_hour(orders[0], "H100-80GB"), rel=1e-4)
    assert {"denom_usd_per_token", "block_time_s", "bid_per_block"} <= set(estimate.inputs)
    spec = adapter.workload(h100, estimate)
    assert spec.interruptible and spec.resources.gpus.count == 2
    assert adapter.estimate_revenue(NodeClass(None, 0, 0, 64, 512_000)) == []
    assert adapter.capacity() == 1
    assert adapter.check_health("vllm", "", None).healthy
    assert not adapter.check_health("vllm", "", 137).healthy

    def down():
        raise ConnectionError("RPC node unreachable")

    with pytest.raises(NetworkError, match="RPC node unreachable"):
        AkashAdapter(down, SCALE, RATES).capacity()


def test_cli_validate_table_json_and_exit_code(tmp_path):
    runner = CliRunner()
    good, bad = str(SDL / "web-db.yaml"), str(SDL / "broken.yaml")
    result = runner.invoke(app, ["akash", "validate", good])
    assert result.exit_code == 0 and "3 job(s)" in result.output and "nginx:1.27" in result.output

    result = runner.invoke(app, ["akash", "validate", "--json", good, bad, str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [(r["file"], r["ok"]) for r in data] == [(good, True), (bad, False), (str(tmp_path / "missing.yaml"), False)]
    assert [j["name"] for j in data[0]["jobs"]] == ["db", "web-0", "web-1"]
    assert data[0]["jobs"][1]["job_spec"]["resources"]["cpus"] == 0.5
    assert len(data[1]["errors"]) == 17 and {"path", "line", "message"} == set(data[1]["errors"][0])
    assert "cannot read the file" in data[2]["errors"][0]["message"]

    result = runner.invoke(app, ["akash", "validate", bad])
    assert result.exit_code == 1 and "deployment.ghost" in result.output
