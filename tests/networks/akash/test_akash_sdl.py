"""SDL parsing: every field the fabric uses, Akash's leniencies, and every error of a file with path and line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ceti.networks.akash import SdlError, load_sdl_file, parse_sdl, sdl_jobs
from ceti.networks.akash.gpu_models import fabric_gpu_models
from ceti.networks.akash.units import parse_bytes, parse_cpu_milli

SDL = Path(__file__).parent / "sdl"


def test_web_and_database_become_one_job_per_replica():
    sdl = load_sdl_file(str(SDL / "web-db.yaml"))
    jobs = {job.name: job for job in sdl_jobs(sdl)}
    assert sorted(jobs) == ["db", "web-0", "web-1"]

    web = jobs["web-0"]
    assert web.image == "nginx:1.27"
    assert web.command == ["/bin/sh", "-c"] and web.args == ["exec nginx -g 'daemon off;'"]
    assert web.env == {"DB_HOST": "db", "GREETING": "hello=world", "EMPTY": ""}
    assert web.resources.cpu_milli == 500
    assert web.resources.memory_mib == 512
    assert web.resources.disk_mib == 1431  # 1.5 GB (decimal) rounded up to MiB
    http, udp = web.expose
    assert (http.port, http.external_port, http.proto, http.global_, http.hosts) == (
        8080, 80, "tcp", True, ["shop.example.com"])
    assert (udp.proto, udp.ip_endpoint) == ("udp", "shop-ip")
    assert web.max_price.denom == "uakt" and web.max_price.amount == Decimal(1000)
    assert web.placement_attributes == {"host": "akash", "region": "us-west"}
    assert web.signed_by_any_of == ["akash1auditoraaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]

    db = jobs["db"]
    volumes = {v.name: v for v in db.resources.storage}
    assert volumes["data"].persistent and volumes["data"].storage_class == "beta3"
    assert volumes["data"].mount == "/var/lib/postgresql/data"
    assert volumes["shm"].storage_class == "ram" and volumes["shm"].mount == "/dev/shm"
    assert db.resources.disk_mib == 1024 + 10240  # RAM-backed volumes are not disk
    assert db.max_price.amount == Decimal("2500.5")
    assert db.expose[0].services == ["web"] and not db.expose[0].global_

    # Docker Compose keys are ignored by Akash: a warning, not an error
    assert [(w.path, w.line) for w in sdl.warnings] == [("services.web.depends_on", 34)]


def test_job_spec_carries_resources_command_and_gpu_models():
    spec = sdl_jobs(load_sdl_file(str(SDL / "web-db.yaml")))[1].to_job_spec()
    assert spec.name == "web-0" and spec.interruptible
    assert spec.command == ["/bin/sh", "-c", "exec nginx -g 'daemon off;'"]
    assert spec.resources.cpus == 0.5 and spec.resources.memory == 512

    (vllm,) = sdl_jobs(load_sdl_file(str(SDL / "gpu.yaml")))
    assert vllm.args[-1] == "8000"  # YAML numbers in args are strings to Akash
    gpu = vllm.resources.gpu
    assert gpu.units == 2
    assert gpu.models == ["H100-80GB", "A100-40GB", "A100-80GB"]
    assert gpu.akash_models == ["h100/ram/80Gi/interface/sxm", "a100"]
    assert gpu.min_vram_mib == 0  # one of the admitted models names no size
    assert vllm.max_price.denom.startswith("ibc/") and vllm.max_price.amount == Decimal("100000.25")
    spec = vllm.to_job_spec()
    assert spec.resources.gpus.count == 2 and spec.resources.gpus.models == gpu.models
    assert spec.env == {"HF_TOKEN": "", "FABRIC_NETWORK": "akash"}  # the network tag tells network work apart


def test_entrypoint_only_service_keeps_its_image_in_the_job_spec():
    (db,) = [j for j in sdl_jobs(load_sdl_file(str(SDL / "web-db.yaml"))) if j.service == "db"]
    spec = db.to_job_spec()
    assert spec.command == ["postgres:16"] or getattr(spec, "image", None) == "postgres:16"


def test_any_nvidia_gpu_and_single_mapping_storage():
    (worker,) = sdl_jobs(load_sdl_file(str(SDL / "any-gpu.yaml")))
    assert worker.resources.gpu.units == 1 and worker.resources.gpu.models == []
    assert [v.name for v in worker.resources.storage] == ["default"]
    assert worker.max_price.denom == "uact"


def test_every_error_of_a_file_with_path_and_line():
    with pytest.raises(SdlError) as caught:
        load_sdl_file(str(SDL / "broken.yaml"))
    problems = {p.path: p for p in caught.value.problems}
    expected = {
        "services.web.env": "has no name",
        "services.web.expose[0].port": "at most 65535",
        "services.web.expose[0].proto": "'tcp' or 'udp'",
        "services.web.expose[0].to": "must be a list",
        "services.api.image": "must not be empty",
        "services.api.params.storage.cache.mount": "absolute path",
        "profiles.compute.web.resources.cpu.units": "above zero",
        "profiles.compute.web.resources.memory.size": "cannot read size 'lots'",
        "profiles.compute.web.resources.storage[0].attributes": "unknown storage class 'floppy'",
        "profiles.compute.web.resources.gpu": "need attributes.vendor",
        "profiles.compute.api.resources.gpus": "unknown field",
        "profiles.placement.dc.pricing.web.denom": "unsupported denom 'usd'",
        "profiles.placement.dc.pricing.web.amount": "above zero",
        "deployment.web.dc.count": "at least 1",
        "deployment.api.nowhere": "no placement profile named 'nowhere'",
        "deployment.ghost": "no service named 'ghost'",
        "deployment.ghost.dc.profile": "no compute profile named 'missing'",
    }
    assert set(problems) == set(expected)
    for path, words in expected.items():
        assert words in problems[path].message, path
    assert problems["services.web.expose[0].port"].line == 8
    assert problems["deployment.ghost.dc.profile"].line == 56
    assert str(caught.value).startswith(str(SDL / "broken.yaml"))


BASE = """
version: "2.0"
services:
  app:
    image: busybox
{service}
profiles:
  compute:
    app:
      resources:
        cpu: {{units: 1}}
        memory: {{size: 1Gi}}
        storage:
{storage}
{gpu}
  placement:
    dc:
      pricing:
        app: {{denom: uakt, amount: 100}}
deployment:
  app:
    dc: {{profile: app, count: 1}}
"""


def sdl_text(service: str = "", storage: str = "          - size: 1Gi", gpu: str = "") -> str:
    return BASE.format(service=service, storage=storage, gpu=gpu)


@pytest.mark.parametrize(
    ("service", "storage", "gpu", "path", "words"),
    [
        ("", "          - size: 1Gi\n            attributes: {persistent: true}", "",
         "profiles.compute.app.resources.storage", "needs a mount"),
        ("", "          - size: 1Gi\n            attributes: {class: ram, persistent: true}", "",
         "profiles.compute.app.resources.storage[0].attributes", "ram cannot be persistent"),
        ("", "          - size: 1Gi\n            attributes: {class: beta2}", "",
         "profiles.compute.app.resources.storage[0].attributes", "set persistent: true"),
        ("", "          - size: 1Gi\n          - size: 2Gi", "",
         "profiles.compute.app.resources.storage", "used twice"),
        ("    params:\n      storage:\n        nope: {mount: /data}", "          - size: 1Gi", "",
         "services.app.params.storage.nope", "no volume named 'nope'"),
        ("", "          - size: 1Gi",
         ("        gpu:\n          units: 1\n          attributes:\n            vendor:\n              nvidia:\n"
         "                - model: h100\n                  interface: nvlink"),
         "profiles.compute.app.resources.gpu.attributes.vendor.nvidia[0].interface", "'pcie' or 'sxm'"),
        ("    expose:\n      - port: 80\n        http_options: {next_cases: ['off', 'error']}", "          - size: 1Gi",
         "", "services.app.expose[0].http_options.next_cases", "'off'"),
        ("    expose:\n      - port: 80\n        to: [{ip: myip}]", "          - size: 1Gi", "",
         "services.app.expose[0].to[0]", "global: true"),
        ("    expose:\n      - port: 80\n        to: [{ip: myip, global: true}]", "          - size: 1Gi", "",
         "services.app.expose[0].to[0].ip", "no endpoint named 'myip'"),
    ],
)
def test_akash_rules(service, storage, gpu, path, words):
    with pytest.raises(SdlError) as caught:
        parse_sdl(sdl_text(service, storage, gpu))
    messages = {p.path: p.message for p in caught.value.problems}
    assert path in messages, messages
    assert words in messages[path]


def test_document_level_errors():
    for text, words in [
        ("version: '2.0'\nservices: [", "malformed YAML"),
        ("- a list", "must be a YAML mapping"),
        (sdl_text().replace('"2.0"', '"3.0"'), "unsupported SDL version"),
        (sdl_text() + "include: [other.yaml]\n", "unknown top-level field"),
        (sdl_text().replace("version: \"2.0\"\n", ""), "version"),
    ]:
        with pytest.raises(SdlError) as caught:
            parse_sdl(text)
        assert words in str(caught.value), text


def test_unreadable_file_is_an_error_for_that_file(tmp_path):
    with pytest.raises(SdlError, match="cannot read the file"):
        load_sdl_file(str(tmp_path / "missing.yaml"))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SdlError, match="not UTF-8"):
        load_sdl_file(str(binary))


def test_what_people_publish_parses():
    # version "2" with no minor, YAML numbers where Akash reads strings, null env and attributes, `uact`,
    # unquoted float CPU, unknown service and placement keys (ignored by Akash), and SDL 2.1.
    text = sdl_text(service="    env:\n    restart: always\n    args: [1, true]").replace('"2.0"', "2")
    text = text.replace("      pricing:", "      attributes:\n      placement:\n      pricing:")
    sdl = parse_sdl(text)
    (job,) = sdl_jobs(sdl)
    assert job.args == ["1", "true"] and job.env == {}
    assert {w.path for w in sdl.warnings} == {"services.app.restart", "profiles.placement.dc.placement"}
    assert parse_sdl(sdl_text().replace('"2.0"', '"2.1"')).version == "2.1"


def test_units():
    assert parse_cpu_milli("100m") == 100 and parse_cpu_milli("0.5") == 500 and parse_cpu_milli(2) == 2000
    assert parse_cpu_milli(0.25) == 250
    for bad in ("0", "-1", "1.0005", "lots", None, True, [16]):
        with pytest.raises(ValueError):
            parse_cpu_milli(bad)
    assert parse_bytes("512Mi") == 512 * 2**20 and parse_bytes("1.5G") == 1_500_000_000
    assert parse_bytes("1Gi") == 2**30 and parse_bytes("2k") == 2000 and parse_bytes(1024) == 1024
    for bad in ("1 gallon", "-1Gi", None, True):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_gpu_model_names_match_the_fabric():
    assert fabric_gpu_models("h100", 80) == ["H100-80GB"]
    assert fabric_gpu_models("a100") == ["A100-40GB", "A100-80GB"]
    assert fabric_gpu_models("a100-80gb") == ["A100-80GB"]
    assert fabric_gpu_models("rtx4090") == ["RTX4090"]
    assert fabric_gpu_models("rtxa6000") == ["RTXA6000"]
    assert fabric_gpu_models("a4000") == ["RTXA4000"]
    assert fabric_gpu_models("rtx3090ti") == ["RTX3090Ti"]
    assert fabric_gpu_models("t4") == ["T4"] and fabric_gpu_models("h200", 141) == ["H200"]
