"""Driver-reported GPU names to the fabric's model names."""

from __future__ import annotations

import pytest

from ceti.agent.gpu_names import UNKNOWN_MODEL, normalize_gpu_model


@pytest.mark.parametrize(
    "name, vram_mib, model",
    [
        # the names NVML reports, with the VRAM it reports for them
        ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"),
        ("NVIDIA H100 PCIe", 81559, "H100-80GB"),  # no size in the name: from VRAM
        ("NVIDIA H100 NVL", 95830, "H100-94GB"),
        ("Tesla V100-SXM2-16GB", 16160, "V100-16GB"),
        ("Tesla V100-PCIE-32GB", 32510, "V100-32GB"),
        ("Tesla V100-SXM2-32GB", None, "V100-32GB"),
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", 40536, "A100-40GB"),
        ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
        ("NVIDIA GH200 480GB", 97871, "GH200-96GB"),  # 480GB is the superchip's memory, not the GPU's
        ("NVIDIA GeForce RTX 4090", 24564, "RTX4090"),
        ("NVIDIA GeForce RTX 3080 Ti", 12288, "RTX3080Ti"),
        ("NVIDIA GeForce RTX 4070 SUPER", 12282, "RTX4070Super"),
        ("NVIDIA GeForce GTX 1080 Ti", 11264, "GTX1080Ti"),
        ("NVIDIA RTX A6000", 49140, "RTXA6000"),
        ("NVIDIA RTX 6000 Ada Generation", 49140, "RTX6000Ada"),
        ("Quadro RTX 8000", 46080, "RTX8000"),
        ("Tesla T4", 15360, "T4"),
        ("NVIDIA L4", 23034, "L4"),
        ("NVIDIA L40S", 46068, "L40S"),
        ("NVIDIA A10G", 23028, "A10G"),
        ("NVIDIA A10", 23028, "A10"),  # not A100
        ("NVIDIA H200", 143771, "H200"),  # not GH200
        ("Tesla P100-PCIE-16GB", 16280, "P100-16GB"),
        ("Tesla K80", 11441, "K80"),
    ],
)
def test_known_cards(name: str, vram_mib: int | None, model: str):
    assert normalize_gpu_model(name, vram_mib) == model


def test_a_family_with_several_sizes_and_no_size_known_keeps_the_family():
    assert normalize_gpu_model("NVIDIA H100 PCIe") == "H100"


def test_unknown_cards_fall_back_to_a_stable_readable_name():
    assert normalize_gpu_model("NVIDIA Graphics Device", 97000) == "GRAPHICS-DEVICE"
    assert normalize_gpu_model("NVIDIA Zorn 9000 PCIe 48GB") == "ZORN-9000-48GB"
    assert normalize_gpu_model("  ") == UNKNOWN_MODEL
    assert normalize_gpu_model("NVIDIA") == UNKNOWN_MODEL
    assert normalize_gpu_model("NVIDIA Zorn 9000") == normalize_gpu_model("nvidia  zorn 9000")


def test_model_names_fit_the_node_schema():
    from ceti.spec.node import GPUInfo

    for name in ("NVIDIA H100 80GB HBM3", "x" * 300, "NVIDIA " + "Q" * 200):
        GPUInfo(index=0, model=normalize_gpu_model(name), vram_mib=1)
