"""The scheduling loop loads the round's compiled kernels before its first round, and survives a failure there."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ceti.server.background import scheduler_loop
from ceti.server.background.scheduler_loop import SchedulerLoop
from ceti.server.settings import Settings
from ceti.store.db import make_engine, migrate, session_factory


@pytest.fixture
def loop(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ceti.db'}")
    migrate(engine)
    yield SchedulerLoop(session_factory(engine), Settings())
    engine.dispose()


def _run_one_round(loop: SchedulerLoop) -> None:
    """The loop's thread body, stopped after its first round (on a thread of its own: it lowers its priority)."""
    real = loop.run_once

    def once():  # type: ignore[no-untyped-def]
        loop.calls.append("round")
        loop._stop.set()
        loop._wake.set()
        return real()

    loop.run_once = once  # type: ignore[method-assign]
    t = threading.Thread(target=loop._run)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive()


def test_the_kernels_are_warm_before_the_first_round(loop, monkeypatch) -> None:
    loop.calls = []
    monkeypatch.setattr(scheduler_loop, "warm_up", lambda: loop.calls.append("warm") or 0.2)
    _run_one_round(loop)
    assert loop.calls == ["warm", "round"]


def test_a_failed_warm_up_is_logged_and_the_rounds_go_on(loop, monkeypatch) -> None:
    loop.calls = []
    logged: list[str] = []

    def broken() -> float:
        raise RuntimeError("no cache here")

    monkeypatch.setattr(scheduler_loop, "warm_up", broken)
    # the logger itself, not the root's handlers: the server's logging set-up may stop propagation
    monkeypatch.setattr(scheduler_loop.log, "exception", lambda msg, *a, **k: logged.append(msg % a))
    _run_one_round(loop)
    assert loop.calls == ["round"]
    assert logged == ["warming the scheduler kernels failed"]
