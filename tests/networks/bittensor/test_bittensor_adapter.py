"""The Bittensor adapter against the SDK's own mock chain (`bittensor.utils.mock.MockSubtensor`)."""

from __future__ import annotations

import http.server
import json
import math
import threading
import time

import pytest

pytest.importorskip("bittensor.utils.mock", reason="the bittensor SDK (10.x) is not installed")

from ceti.networks.base import NetworkError, NodeClass
from ceti.networks.bittensor import (
    BittensorAdapter,
    BittensorConfig,
    EstimateSettings,
    FixedPrice,
    HttpJsonPrice,
    SubnetProfile,
)
from ceti.networks.bittensor.chain import ChainReader
from ceti.networks.bittensor.estimate import quantile
from ceti.networks.bittensor.mockchain import MockNeuron, MockSubnet, new_mock_chain, seed
from ceti.networks.price import read_price

GPU_NODE = NodeClass(gpu_model="RTX 4090", gpu_count=1, vram_mib=24_576, cpus=16, memory_mib=65_536)
CPU_NODE = NodeClass(gpu_model=None, gpu_count=0, vram_mib=0, cpus=8, memory_mib=16_384)
TAO_USD = 400.0
TAO_PRICE = FixedPrice(TAO_USD)

VALIDATORS = (MockNeuron(0.0, 50.0, validator=True), MockNeuron(0.0, 30.0, validator=True))
# subnet 1: four earning miners, one idle key, one inactive UID; 100 alpha per unit of incentive per epoch
SUBNET_1 = MockSubnet(
    1,
    VALIDATORS + (
        MockNeuron(0.10, 10.0), MockNeuron(0.20, 20.0), MockNeuron(0.30, 30.0), MockNeuron(0.40, 40.0),
        MockNeuron(0.0, 0.0),  # registered, earns nothing
        MockNeuron(0.5, 50.0, active=False),  # not active: not comparable
    ),
    tempo=99, burn_tao=1.0, pool_tao=1_000.0, pool_alpha=50_000.0,
)
# subnet 2: rich, but a huge registration burn eats it
SUBNET_2 = MockSubnet(2, VALIDATORS + tuple(MockNeuron(0.25, 25.0) for _ in range(4)), tempo=99,
                      burn_tao=10_000.0, pool_tao=1_000.0, pool_alpha=50_000.0)
# subnet 3: a single miner: no basis for an estimate
SUBNET_3 = MockSubnet(3, VALIDATORS + (MockNeuron(1.0, 100.0),), tempo=99, burn_tao=1.0, pool_tao=1.0,
                      pool_alpha=1.0)
# subnet 5: more alpha per incentive and a dearer alpha than subnet 1: the best
SUBNET_5 = MockSubnet(5, VALIDATORS + tuple(MockNeuron(0.25, 50.0) for _ in range(4)), tempo=99, burn_tao=0.5,
                      pool_tao=2_000.0, pool_alpha=50_000.0)
# subnet 7: no pool (alpha reserve zero): no price for its token
SUBNET_7 = MockSubnet(7, VALIDATORS + tuple(MockNeuron(0.25, 25.0) for _ in range(4)), tempo=99, burn_tao=0.5,
                      pool_tao=0.0, pool_alpha=0.0)


@pytest.fixture(scope="module")
def chain():
    """One populated mock chain for the module: the SDK's mock keeps its state process-wide."""
    return seed(new_mock_chain(), [SUBNET_1, SUBNET_2, SUBNET_3, SUBNET_5, SUBNET_7])


def adapter(chain, price=TAO_PRICE, **config) -> BittensorAdapter:
    config.setdefault("wallet", "miner")
    config.setdefault("hotkeys", ["hk1", "hk2"])
    config.setdefault("network", "mock")
    return BittensorAdapter(chain, price, BittensorConfig(**config))


# --- reading the chain --------------------------------------------------------------------------------------------

def test_lists_subnets_and_reads_the_metagraph_written_into_chain_state(chain):
    reader = ChainReader(chain, network="mock")
    assert reader.subnet_ids() == [1, 2, 3, 5, 7]
    state = reader.subnet(1)
    assert state.tempo_blocks == 99
    assert state.burn_tao == pytest.approx(1.0)
    assert state.alpha_price_tao == pytest.approx(0.02)
    by_uid = {n.uid: n for n in state.neurons}
    assert len(by_uid) == 8
    assert by_uid[0].validator_permit and by_uid[0].emission_per_epoch == pytest.approx(50.0)
    assert by_uid[5].incentive == pytest.approx(0.40, abs=1e-4)  # u16-normalised on chain
    assert by_uid[5].emission_per_epoch == pytest.approx(40.0)
    assert not by_uid[7].active


def test_unknown_subnet_is_a_clear_error(chain):
    a = adapter(chain)
    with pytest.raises(NetworkError, match="subnet 77 does not exist on mock"):
        a.estimate_subnet(GPU_NODE, 77)
    with pytest.raises(NetworkError, match="not a subnet id"):
        a.estimate_subnet(GPU_NODE, -1)
    with pytest.raises(NetworkError, match="not a subnet id"):
        a.estimate_subnet(GPU_NODE, "1")  # type: ignore[arg-type]


def test_a_subnet_without_a_priced_pool_has_no_estimate(chain):
    with pytest.raises(NetworkError, match="subnet 7 on mock has no priced pool"):
        adapter(chain).estimate_subnet(GPU_NODE, 7)


# --- the estimate ---------------------------------------------------------------------------------------------------

def test_estimate_is_the_median_earning_miner_times_emission_and_prices_less_the_amortised_burn(chain):
    estimate = adapter(chain).estimate_subnet(GPU_NODE, 1)
    # comparable: the four active, non-validator miners with incentive > 0 (0.1, 0.2, 0.3, 0.4)
    incentive = 0.25  # their median
    pool_per_epoch = 100.0  # (10+20+30+40) alpha / (0.1+0.2+0.3+0.4) incentive
    per_block = incentive * pool_per_epoch / 100  # an epoch is tempo + 1 = 100 blocks
    gross = per_block * 300 * 0.02 * TAO_USD  # 300 blocks an hour, 0.02 TAO per alpha
    burn = 1.0 * TAO_USD / 720  # 1 TAO over 30 days
    assert estimate.usd_per_hour == pytest.approx(gross - burn, rel=1e-3)
    assert estimate.target == "subnet 1" and estimate.network == "bittensor"
    inputs = estimate.inputs
    assert inputs["comparable_miners"] == 4
    assert inputs["incentive_at_quantile"] == pytest.approx(incentive, rel=1e-3)
    assert inputs["miner_pool_alpha_per_epoch"] == pytest.approx(pool_per_epoch, rel=1e-3)
    assert inputs["tao_usd"] == TAO_USD and inputs["alpha_price_tao"] == pytest.approx(0.02)
    assert inputs["registration_usd_per_hour"] == pytest.approx(burn)
    assert "USD/h" in estimate.detail and "q0.5 of 4 earning miners" in estimate.detail


def test_quantile_and_horizon_are_configurable(chain):
    low = adapter(chain, settings=EstimateSettings(miner_quantile=0.0)).estimate_subnet(GPU_NODE, 1)
    high = adapter(chain, settings=EstimateSettings(miner_quantile=1.0)).estimate_subnet(GPU_NODE, 1)
    assert low.inputs["incentive_at_quantile"] == pytest.approx(0.10, abs=1e-4)
    assert high.inputs["incentive_at_quantile"] == pytest.approx(0.40, abs=1e-4)
    long = adapter(chain, settings=EstimateSettings(registration_horizon_hours=7200)).estimate_subnet(GPU_NODE, 1)
    assert long.inputs["registration_usd_per_hour"] == pytest.approx(TAO_USD / 7200)
    with pytest.raises(NetworkError, match="miner_quantile"):
        EstimateSettings(miner_quantile=1.5)
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5


def test_subnets_ranked_best_first_with_reasons_for_the_ones_without_an_estimate(chain):
    rows = adapter(chain).subnet_table(GPU_NODE)
    assert [r.netuid for r in rows if r.estimate] == [5, 1, 2]
    assert rows[2].estimate.usd_per_hour < 0  # subnet 2: the burn outweighs the earnings
    reasons = {r.netuid: r.reason for r in rows if r.estimate is None}
    assert "1 earning miner(s)" in reasons[3]
    assert "no priced pool" in reasons[7]
    # what the fabric gets: only subnets that pay, and above the provider's floor
    assert [e.target for e in adapter(chain).estimate_revenue(GPU_NODE)] == ["subnet 5", "subnet 1"]
    floor = rows[0].estimate.usd_per_hour - 0.01
    node = NodeClass("RTX 4090", 1, 24_576, 16, 65_536, floor_price_per_hour=floor)
    assert [e.target for e in adapter(chain).estimate_revenue(node)] == ["subnet 5"]


def test_hardware_a_subnet_needs_decides_whether_a_node_is_offered_it(chain):
    profiles = {1: SubnetProfile(1, min_gpus=1, min_vram_mib=40_960), 5: SubnetProfile(5, min_gpus=0)}
    a = adapter(chain, subnets=profiles)
    rows = {r.netuid: r for r in a.subnet_table(GPU_NODE)}
    assert set(rows) == {1, 5}  # only the configured subnets
    assert "needs 40960 MiB of GPU memory" in rows[1].reason
    assert [e.target for e in a.estimate_revenue(CPU_NODE)] == ["subnet 5"]
    with pytest.raises(NetworkError, match="not among the subnets configured"):
        a.estimate_subnet(GPU_NODE, 2)
    assert adapter(chain).estimate_revenue(CPU_NODE) == []  # default: a miner needs a GPU


# --- price sources --------------------------------------------------------------------------------------------------

def _down():
    raise ConnectionError("connection refused")


def _times_out_itself():
    raise TimeoutError("upstream gateway timeout")


def _hangs():
    time.sleep(2)
    return 400.0


@pytest.mark.parametrize(("source", "message"), [
    (_down, "price source failed: ConnectionError"),
    (_hangs, "did not answer within 0.2 s"),
    (_times_out_itself, "price source failed: TimeoutError"),
    (lambda: "400", "not a number"),
    (lambda: None, "not a number"),
    (lambda: True, "not a number"),
    (lambda: math.nan, "above zero"),
    (lambda: -400.0, "above zero"),
    (lambda: 0, "above zero"),
    (lambda: 1e12, "above the sanity limit"),
])
def test_a_bad_price_source_means_no_estimate_at_all(chain, source, message):
    a = adapter(chain, price=source, price_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(NetworkError, match=message):
        a.estimate_revenue(GPU_NODE)
    with pytest.raises(NetworkError, match=message):
        a.subnet_table(GPU_NODE)
    assert time.monotonic() - started < 1.5  # bounded, even for the source that hangs


class _PriceHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        routes = {
            "/ok": (200, "application/json", json.dumps({"bittensor": {"usd": 412.5}})),
            "/missing": (200, "application/json", json.dumps({"other": {"usd": 1}})),
            "/html": (200, "text/html", "<html>rate limited</html>"),
            "/error": (503, "application/json", "{}"),
            "/negative": (200, "application/json", json.dumps({"bittensor": {"usd": -3}})),
        }
        status, kind, body = routes.get(self.path, (404, "text/plain", "no"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def price_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PriceHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_price_source(price_server):
    assert read_price(HttpJsonPrice(f"{price_server}/ok", "bittensor.usd"), "TAO", 1e5) == 412.5
    for path, message in [("/missing", "no 'bittensor.usd'"), ("/html", "did not answer JSON"),
                          ("/error", "answered HTTP 503"), ("/negative", "above zero")]:
        with pytest.raises(NetworkError, match=message):
            read_price(HttpJsonPrice(f"{price_server}{path}", "bittensor.usd"), "TAO", 1e5)
    with pytest.raises(NetworkError, match="unreachable"):
        read_price(HttpJsonPrice("http://127.0.0.1:9/", "bittensor.usd", timeout_s=0.5), "TAO", 1e5)
    with pytest.raises(NetworkError, match="must start with"):
        HttpJsonPrice("file:///etc/passwd", "x")


# --- the workload ---------------------------------------------------------------------------------------------------

def test_workload_is_an_interruptible_low_priority_miner_from_the_template(chain):
    a = adapter(chain, axon_port=8901)
    estimate = a.estimate_subnet(GPU_NODE, 5)
    job = a.workload(GPU_NODE, estimate, hotkey="hk2")
    assert job.command == ["python", "neurons/miner.py", "--netuid", "5", "--subtensor.network", "mock",
                           "--wallet.name", "miner", "--wallet.hotkey", "hk2", "--axon.port", "8901",
                           "--logging.info"]
    assert job.interruptible and job.priority < 50
    assert job.resources.gpus.count == 1 and job.resources.gpus.models == ["RTX 4090"]
    assert job.name == "bittensor-sn5-hk2"
    with pytest.raises(NetworkError, match="not one of the configured hotkeys"):
        a.workload(GPU_NODE, estimate, hotkey="someone-else")


def test_a_subnet_profile_brings_its_own_command(chain):
    profiles = {5: SubnetProfile(5, command=("miner", "--netuid={netuid}", "--hotkey={hotkey}",
                                             "--wallet={wallet}"))}
    a = adapter(chain, subnets=profiles)
    job = a.workload(GPU_NODE, a.estimate_subnet(GPU_NODE, 5))
    assert job.command == ["miner", "--netuid=5", "--hotkey=hk1", "--wallet=miner"]


@pytest.mark.parametrize(("config", "message"), [
    ({"command": ["miner", "{netuid}", "{wallet}", "{hotkey}", "{port}"]}, r"unknown placeholder\(s\) \{port\}"),
    ({"command": ["miner", "{netuid}", "{wallet}"]}, r"must use \{hotkey\}"),
    ({"command": ["miner", "{netuid!r}", "{wallet}", "{hotkey}"]}, "only plain"),
    ({"command": ["miner", "{netuid:>5}", "{wallet}", "{hotkey}"]}, "only plain"),
    ({"command": ["miner", "{wallet.name}", "{hotkey}", "{netuid}"]}, "only plain"),
    ({"command": ["miner", "{netuid", "{wallet}", "{hotkey}"]}, "literal brace"),
    ({"command": "python miner.py {netuid}"}, "non-empty list"),
    ({"hotkeys": ["ok", "h1; rm -rf /"]}, "not safe in a command line"),
    ({"hotkeys": ["--wallet.path=/tmp/evil"]}, "not safe"),
    ({"wallet": "../other"}, "not safe"),
    ({"hotkeys": "hk1"}, "a list of hotkey names"),
    ({"axon_port": 80}, "port number"),
    ({"subnets": {1: SubnetProfile(2)}}, "says netuid 2"),
])
def test_bad_configuration_is_refused_with_the_reason(chain, config, message):
    with pytest.raises(NetworkError, match=message):
        adapter(chain, **config)


def test_health_and_capacity(chain):
    a = adapter(chain)
    assert a.check_health("m", "axon served on 8091\nset weights", None).healthy
    report = a.check_health("m", "Hotkey 5F... is not registered on netuid 5", None)
    assert not report.healthy and "is not registered" in report.reason
    assert not a.check_health("m", "", 1).healthy
    assert not a.check_health("m", "", 0).healthy  # a miner that stops is not mining
    assert a.capacity() == 2
