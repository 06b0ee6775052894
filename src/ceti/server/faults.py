"""Fault injection for the crash tests: `CETI_FAULT_CRASH_AT=<point>` makes the server kill itself (SIGKILL)
at that point, e.g. between a scheduling round's decisions and its commit. Unset, it costs one dict lookup."""

from __future__ import annotations

import os
import signal

POINTS = ("round_before_commit", "log_upload_before_commit", "submit_after_commit")


def crash_point(name: str) -> None:
    if os.environ.get("CETI_FAULT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
