"""The agent's side of proof of hardware: run the challenge the heartbeat answer carries, answer it.

The work runs in a thread of its own, so heartbeats (and the jobs they carry) go on while the matrices are
computed. The server keeps sending the challenge until its roots arrive; a challenge already running or
answered here is not started again. Errors are logged and, where the server can still hear it, reported as the
roots answer's `error` (the server records `failed`): nothing here may take the agent down.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import psutil

from ceti.client import CetiError, Client
from ceti.verify.compute import roots_answer, rows_answer, run_challenge

log = logging.getLogger("ceti.agent.verification")
_REMEMBERED = 64  # challenge ids kept to recognise a re-sent challenge


class ChallengeRunner:
    def __init__(self, servers: list[str], token: str, ca_cert: str | None = None, backend: str = "auto",
                 timeout_s: float = 600.0):
        # a client of its own: the server recomputes the rows it checks, which can outlast a heartbeat's timeout
        self._client = Client(servers, token, timeout_s=timeout_s, ca_cert=ca_cert, retries=1)
        self._backend = backend
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._seen: deque[str] = deque(maxlen=_REMEMBERED)
        self.last_verdict: dict[str, Any] | None = None

    def handle(self, challenge: dict[str, Any] | None) -> None:
        """Called with the heartbeat answer's `verify` field; returns at once."""
        if not isinstance(challenge, dict):
            return
        cid = challenge.get("challenge_id")
        if not isinstance(cid, str):
            log.error("ignoring a challenge without an id")
            return
        with self._lock:
            if cid in self._seen or (self._thread is not None and self._thread.is_alive()):
                return
            self._seen.append(cid)
            self._thread = threading.Thread(target=self._run, args=(cid, challenge), name="ceti-verify",
                                            daemon=True)
            self._thread.start()

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, cid: str, challenge: dict[str, Any]) -> None:
        try:
            log.info("running proof-of-hardware challenge %s", cid)
            try:
                run = run_challenge(challenge, self._backend, psutil.virtual_memory().available)
                for lane in run.lanes:  # where the time went, for a provider whose card is judged too slow
                    log.info("challenge %s lane %d on %s: %s", cid, lane.lane.lane, run.backend,
                             ", ".join(f"{k} {v:.2f} s" for k, v in lane.phases.items()))
                roots = roots_answer(run)
            except Exception as exc:  # a malformed challenge, a GPU library failing: report, do not crash
                log.exception("the challenge %s could not run", cid)
                run, roots = None, {"challenge_id": cid, "error": f"{type(exc).__name__}: {exc}"[:500]}
            step = self._post(cid, "roots", roots)
            if step is None or run is None:
                return
            if step.get("verdict") is None and step.get("row_request"):
                step = self._post(cid, "rows", rows_answer(run, step["row_request"]))
            verdict = (step or {}).get("verdict")
            if verdict:
                self.last_verdict = verdict
                log.info("proof of hardware %s: %s (%s)", cid, verdict.get("verdict"), verdict.get("reason"))
        except Exception:
            log.exception("proof-of-hardware challenge %s failed on this agent", cid)

    def _post(self, challenge_id: str, step: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._client.answer_verification(challenge_id, step, body)
        except CetiError as exc:
            log.error("the server refused a proof-of-hardware answer (%s): %s", exc.status, exc.message)
            return None
