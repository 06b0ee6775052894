"""Rule tests that hold for both ways a round places tasks run under each (`schedule(..., placement=)`)."""

from __future__ import annotations

import functools

import pytest


@pytest.fixture(params=["flow", "fabric"])
def each_placement(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test module's `schedule` with one placement: the class flow, or per-task placement by the fabric
    policy. A test marked `flow_only` checks a rule of the class flow's packing and runs only with it."""
    placement = request.param
    if placement != "flow" and request.node.get_closest_marker("flow_only"):
        pytest.skip("a rule of the class flow's packing")
    real = request.module.schedule
    monkeypatch.setattr(request.module, "schedule", functools.partial(real, placement=placement))
    return placement
