"""The round writes its starts on one thread while compiled code runs on another (`_Round._beside`)."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest

from ceti.cli.bench import synthetic_snapshot

schedule_module = importlib.import_module("ceti.fabric.schedule")  # the package re-exports `schedule` by name


def test_kernels_run_beside_the_deferred_starts_and_the_decisions_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the overlap on, a busy round runs some kernels on a second thread while it writes starts, and its
    decisions equal those of a round that writes every start before the next kernel."""
    snap = synthetic_snapshot(400, 1500, 3)
    threads: list[str] = []
    real = schedule_module._Round._beside

    def spy(self: object, kernel: object, *args: object) -> int:
        if self.deferred.writes:  # type: ignore[attr-defined]
            threads.append(getattr(kernel, "__name__", "?"))
        return real(self, kernel, *args)

    monkeypatch.setattr(schedule_module._Round, "_beside", spy)
    overlapped = schedule_module.schedule(snap)
    assert threads, "no kernel ran beside deferred starts"

    def in_line(self: object, kernel: object, *args: object) -> int:
        self._flush()  # type: ignore[attr-defined]
        return kernel(*args)  # type: ignore[operator]

    monkeypatch.setattr(schedule_module._Round, "_beside", in_line)
    assert schedule_module.schedule(snap) == overlapped


def test_an_error_in_a_kernel_beside_the_writes_is_raised_on_the_round_thread() -> None:
    rnd = schedule_module._Round(synthetic_snapshot(5, 5, 0))
    written: list[str] = []
    rnd.deferred.writes.append(lambda: written.append(threading.current_thread().name))

    def broken(x: np.ndarray) -> int:
        raise ValueError(f"bad input of {len(x)}")

    with pytest.raises(ValueError, match="bad input of 3"):
        rnd._beside(broken, np.zeros(3))
    assert written == [threading.current_thread().name]
    assert rnd._beside(lambda x: int(x.sum()), np.ones(4)) == 4
