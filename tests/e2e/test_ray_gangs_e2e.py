"""Multi-node jobs on Ray, end to end: a real server, two agents and Ray, all inside a network namespace this
test makes (Ray advertises the machine's interface address otherwise; there loopback is the only one).

The scenarios live in `ray_gangs_in_netns.py`; this test runs them with pytest inside the namespace and reports
their output."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.netns import netns_skip_reason, run_in_netns

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_ray_gangs_with_real_processes_in_a_network_namespace():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install '.[ray]')")
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "CETI_TEST_IN_NETNS": "1"}
    result = run_in_netns([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "tests/e2e/ray_gangs_in_netns.py"], timeout_s=420, env=env, cwd=ROOT)
    figures = [line.lstrip(".") for line in result.stdout.splitlines() if "RAY_E2E" in line]
    print("\n".join(figures))
    assert not result.timed_out, result.stdout[-6000:]
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-3000:]
    assert not result.leftovers, result.leftovers
