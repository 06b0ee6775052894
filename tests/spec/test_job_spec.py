import pytest

from ceti.spec import JobSpecError, RetryOn, load_job_spec_yaml, parse_job_spec


def test_full_spec_parses_units_and_shorthands():
    spec = load_job_spec_yaml(
        """
name: train-1
command: python train.py --epochs 3
env: {SEED: "1"}
files: {"conf/a.yaml": "x: 1"}
resources: {cpus: 2.5, memory: 4Gi, disk: 10Gi, gpus: {count: 2, models: [A100], min_vram_mib: 40Gi}}
placement: {regions: [eu-west]}
max_price_per_hour: 3.5
priority: 80
max_duration: 2h
retry: {limit: 2, on: [failure], exit_codes: [137]}
"""
    )
    assert spec.command == ["/bin/sh", "-c", "python train.py --epochs 3"]
    assert spec.resources.cpu_milli == 2500
    assert spec.resources.memory_mib == 4096
    assert spec.resources.disk_mib == 10240
    assert spec.resources.gpus.min_vram_mib == 40960
    assert spec.max_duration == 7200
    assert spec.retry.allows(RetryOn.failure, 137)
    assert not spec.retry.allows(RetryOn.failure, 1)
    assert not spec.retry.allows(RetryOn.node_lost)


def test_gpu_shorthands():
    assert parse_job_spec({"command": ["x"], "resources": {"gpus": 4}}).resources.gpus.count == 4
    half = parse_job_spec({"command": ["x"], "resources": {"gpus": 0.5}}).resources.gpus
    assert half.milli == 500 and half.gpu_milli_total == 500


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ({"command": ["x"], "bogus": 1}, "bogus", "Extra inputs"),
        ({"command": ["x"], "resources": {"cpus": "many"}}, "resources.cpus", "number"),
        ({"command": ["x"], "resources": {"memory": "lots"}}, "resources.memory", "cannot read size"),
        ({"command": ["x"], "resources": {"gpus": {"count": -1}}}, "resources.gpus.count", "greater than"),
        ({"command": ["x"], "priority": 101}, "priority", "less than"),
        ({"command": []}, "command", "at least 1"),
        ({"command": ["x"], "files": {"../etc/passwd": "x"}}, "files", "'..'"),
        ({"command": ["x"], "files": {"/abs": "x"}}, "files", "relative path"),
        ({"command": ["x"], "env": {"CETI_TOKEN": "x"}}, "env", "reserved"),
        ({"command": ["x"], "name": "has space"}, "name", "letters"),
        ({"name": "x"}, "command", "give a command"),
        ({"command": ["x"], "image": "-rm"}, "image", "image reference"),
    ],
)
def test_bad_fields_name_the_path_and_reason(doc, path, words):
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(doc)
    paths = [p for p, _ in info.value.errors]
    assert path in paths, info.value.errors
    assert words in str(info.value)


def test_malformed_yaml_reports_line():
    with pytest.raises(JobSpecError, match="malformed YAML at line 2"):
        load_job_spec_yaml("command: [x\nname: : :\n")


def test_not_a_mapping_and_oversized():
    with pytest.raises(JobSpecError, match="mapping"):
        load_job_spec_yaml("- just\n- a list\n")
    with pytest.raises(JobSpecError, match="larger than"):
        load_job_spec_yaml("command: [x]\n" + "#" * 2_000_000)


def test_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(JobSpecError, match="nested deeper"):
        load_job_spec_yaml("command: [x]\nenv: " + "[" * 20 + "]" * 20 + "\n")
    with pytest.raises(JobSpecError, match="nested deeper"):
        load_job_spec_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n")


def test_an_image_alone_is_something_to_run():
    spec = parse_job_spec({"image": "docker.io/library/busybox:1.36"})
    assert spec.command == [] and spec.image == "docker.io/library/busybox:1.36"
