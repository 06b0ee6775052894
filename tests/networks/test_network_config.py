"""The operator's network file: adapters from a valid file, one clear line for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from ceti.networks.base import NetworkError
from ceti.networks.config import load_network_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "networks.yaml"
    path.write_text(text)
    return path


def test_a_valid_file_gives_one_adapter_per_network(tmp_path: Path) -> None:
    pytest.importorskip("bittensor", reason="the bittensor 10.x SDK (the 'networks' extra) is not installed")
    adapters = load_network_config(write(tmp_path, """
bittensor: {chain: mock, tao_usd: 400, wallet: fabric, hotkeys: [m1, m2]}
render:
  obh_rate_usd: {economy: 0.004}
  jobs: [{job_id: r1, scene: scene.blend, frame_start: 1, frame_end: 4}]
"""))
    assert set(adapters) == {"bittensor", "render"}
    assert adapters["bittensor"].capacity() == 2 and adapters["render"].capacity() == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("bittensor: [not, a, mapping]", "bittensor"),
        ("bittensor: {chain: mock, wallet: w, hotkeys: [h]}", "give tao_usd or price_url"),
        ("bittensor: {chain: mock, tao_usd: -3, wallet: w, hotkeys: [h]}", "tao_usd"),
        ("bittensor: {tao_usd: 3, wallet: w, hotkeys: []}", "hotkeys"),
        ("akash2: {}", "akash2"),
        ("render: {obh_rate_usd: {economy: 50}}", "OBh rate"),
        ("bittensor: {chain: [unclosed", "malformed YAML"),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(NetworkError, match=words):
        load_network_config(write(tmp_path, text))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="cannot read the network configuration"):
        load_network_config(tmp_path / "nope.yaml")
