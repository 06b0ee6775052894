"""Machine discovery: the real CPU/memory/disk here, GPUs from NVML or from recorded NVML descriptions."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psutil
import pydantic
import pytest

from ceti.agent import discovery
from ceti.agent.discovery import (
    GPUInventory,
    discover,
    load_inventory,
    nvml_gpus,
    nvml_inventory,
    recorded_inventories,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "gpus"
MIB = 1024 * 1024


def _nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except pynvml.NVMLError:
        return False


HAS_NVML = _nvml_works()


@pytest.mark.skipif(HAS_NVML, reason="this machine has an NVIDIA driver")
def test_discover_on_a_cpu_only_machine_reports_the_real_machine_and_no_gpus(tmp_path: Path):
    node = discover(region="eu-west", price_per_cpu_hour=0.02, disk_path=tmp_path)
    host_cpus = psutil.cpu_count(logical=True)
    assert 1 <= node.cpus <= host_cpus
    if hasattr(os, "sched_getaffinity"):
        assert node.cpus <= len(os.sched_getaffinity(0))
    limit = discovery._cgroup_memory_limit()
    total = psutil.virtual_memory().total
    assert node.memory_mib == min(total, limit if limit and limit > 0 else total) // MIB
    if discovery._cgroup_cpu_quota() is None and hasattr(os, "sched_getaffinity"):
        assert node.cpus == len(os.sched_getaffinity(0))
    free = psutil.disk_usage(str(tmp_path)).free // MIB
    assert abs(node.disk_mib - free) <= max(64, free // 100)
    assert node.gpus == [] and node.gpu_driver is None
    assert (node.region, node.price_per_cpu_hour, node.price_per_gpu_hour) == ("eu-west", 0.02, 0.0)
    assert node.hostname and node.os


def test_disk_of_a_data_dir_that_does_not_exist_yet(tmp_path: Path):
    node = discover(disk_path=tmp_path / "not" / "yet", inventory_file=DATA / "2xT4.json")
    assert node.disk_mib > 0


@pytest.mark.skipif(HAS_NVML, reason="this machine has an NVIDIA driver")
def test_nvml_missing_gives_no_gpus_and_logs_the_reason_once(monkeypatch, caplog):
    monkeypatch.setattr(discovery, "_nvml_logged", set())  # a fresh process, as far as logging goes
    with caplog.at_level(logging.DEBUG, logger="ceti.agent"):
        assert nvml_gpus() == []
        assert nvml_gpus() == []
        assert nvml_inventory() is None
        assert discover().gpus == []
    records = [r for r in caplog.records if r.name == "ceti.agent"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert "NVML" in records[0].getMessage()


@pytest.mark.skipif(not HAS_NVML, reason="needs an NVIDIA driver")
def test_nvml_on_a_gpu_machine():
    inventory = nvml_inventory()
    assert inventory is not None and inventory.driver_version
    gpus = nvml_gpus()
    assert gpus and [g.index for g in gpus] == list(range(len(gpus)))
    for gpu in gpus:
        assert gpu.vram_mib > 1000 and gpu.uuid.startswith(("GPU-", "MIG-")) and gpu.model != "unknown"
    assert discover().gpus == gpus


@pytest.mark.parametrize(
    "file, count, model, vram_mib, driver",
    [
        ("8xH100-80GB-SXM.json", 8, "H100-80GB", 81559, "535.129.03"),
        ("1xRTX4090.json", 1, "RTX4090", 24564, "550.54.14"),
        ("4xA100-40GB.json", 4, "A100-40GB", 40960, "525.85.12"),
        ("2xT4.json", 2, "T4", 15360, "535.104.05"),
    ],
)
def test_recorded_inventory_replaces_nvml(monkeypatch, file, count, model, vram_mib, driver):
    def no_nvml():
        raise AssertionError("an inventory file replaces the NVML query")

    monkeypatch.setattr(discovery, "nvml_inventory", no_nvml)
    node = discover(inventory_file=DATA / file, price_per_gpu_hour=2.5)
    assert len(node.gpus) == count
    assert {g.model for g in node.gpus} == {model}
    assert {g.vram_mib for g in node.gpus} == {vram_mib}
    assert [g.index for g in node.gpus] == list(range(count))
    assert len({g.uuid for g in node.gpus}) == count and all(g.uuid.startswith("GPU-") for g in node.gpus)
    assert node.gpu_driver == driver and node.price_per_gpu_hour == 2.5
    assert node.cpus >= 1 and node.memory_mib >= 1, "CPU and memory are still this machine's"


def test_packaged_recordings_are_the_test_recordings():
    packaged = recorded_inventories()
    tests = {p.stem: p for p in DATA.glob("*.json")}
    assert set(packaged) == set(tests) and len(tests) >= 4
    for stem, path in tests.items():
        assert packaged[stem].read_bytes() == path.read_bytes(), stem
        load_inventory(packaged[stem])


def test_a_malformed_inventory_is_an_error_not_zero_gpus(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"driver_version": "535.1", "gpus": [{"index": 0, "name": "Tesla T4", "memory_total": 1}]}'
    )
    with pytest.raises(pydantic.ValidationError):
        discover(inventory_file=bad)


def test_an_inventory_round_trips():
    inventory = load_inventory(DATA / "4xA100-40GB.json")
    assert GPUInventory.model_validate_json(inventory.model_dump_json()) == inventory
