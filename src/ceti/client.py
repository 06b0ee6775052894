"""The Python SDK: every operation of the REST API, typed with the `ceti.spec` models. The CLI is built on it."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Self

import httpx

from ceti.spec import JobSpec, NodeInfo


class CetiError(Exception):
    """An answer the server refused (status >= 400) or a server that cannot be reached (status 0)."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


class Client:
    """Talks to one or more server addresses; on a connection failure it moves on to the next one."""

    def __init__(
        self,
        server: str | Sequence[str],
        token: str | None = None,
        timeout_s: float = 30.0,
        ca_cert: str | None = None,
        retries: int = 2,
    ):
        self.servers = [server] if isinstance(server, str) else list(server)
        if not self.servers:
            raise ValueError("no server address given")
        self._current = 0
        self._retries = retries
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        self._http = httpx.Client(timeout=timeout_s, headers=headers, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        last: Exception | None = None
        for attempt in range(len(self.servers) * (self._retries + 1)):
            base = self.servers[self._current].rstrip("/")
            try:
                response = self._http.request(method, base + path, **kwargs)
            except httpx.TransportError as exc:  # refused, reset, timed out: the next address, or a clean error
                last = exc
                self._current = (self._current + 1) % len(self.servers)
                if attempt + 1 >= len(self.servers):
                    time.sleep(min(0.2 * (attempt + 1), 2.0))
                continue
            if response.status_code == 503 and len(self.servers) > 1:
                self._current = (self._current + 1) % len(self.servers)
                last = CetiError(503, _detail(response))
                continue
            if response.status_code >= 400:
                body = _json(response)
                raise CetiError(response.status_code, _detail(response), body.get("errors") if body else None)
            return response.json() if response.content else None
        raise CetiError(0, f"cannot reach the server at {', '.join(self.servers)}: {last}")

    # -- developers --------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/v1/whoami")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")

    def submit(self, spec: JobSpec | dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a job. A key is made if none is given, so the client's own retries never create two jobs."""
        body = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec
        key = idempotency_key or str(uuid.uuid4())
        return self._request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._request("GET", "/v1/jobs", params=params)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/events")

    def logs(self, job_id: str, after_id: int = 0, limit: int = 1000) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params={"after_id": after_id, "limit": limit})

    def follow_logs(self, job_id: str, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[dict]:
        """Yield log chunks as they arrive until the job has finished and everything it wrote is read."""
        after = 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            page = self.logs(job_id, after_id=after)
            yield from page["chunks"]
            after = page["next_after_id"]
            if page["finished"] and not page["chunks"]:
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            if not page["chunks"]:
                time.sleep(poll_s)

    def wait(self, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.3) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["state"] in ("succeeded", "failed", "cancelled", "unschedulable"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s}s")
            time.sleep(poll_s)

    def nodes(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/nodes")

    # -- operators ---------------------------------------------------------------------------------

    def create_project(self, name: str) -> dict[str, Any]:
        return self._request("POST", "/v1/projects", json={"name": name})

    def create_provider(self, name: str) -> dict[str, Any]:
        return self._request("POST", "/v1/providers", json={"name": name})

    def create_token(
        self, kind: str, name: str = "", project: str | None = None, provider: str | None = None
    ) -> dict[str, Any]:
        body = {"kind": kind, "name": name, "project": project, "provider": provider}
        return self._request("POST", "/v1/tokens", json=body)

    def tokens(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/tokens")

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/tokens/{token_id}")

    def set_secret(self, name: str, value: str) -> dict[str, Any]:
        return self._request("PUT", f"/v1/secrets/{name}", json={"value": value})

    def secrets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/secrets")

    def delete_secret(self, name: str) -> None:
        self._request("DELETE", f"/v1/secrets/{name}")

    def audit(self, limit: int = 200) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/audit", params={"limit": limit})

    # -- the ledger (amounts in integer micro-USD) --------------------------------------------------

    def usage(self, project: str | None = None, t_from: float | None = None,
              t_to: float | None = None) -> dict[str, Any]:
        """Charges per project and job for metered time ending in [t_from, t_to) (UNIX seconds)."""
        params = {k: v for k, v in (("project", project), ("from", t_from), ("to", t_to)) if v is not None}
        return self._request("GET", "/v1/usage", params=params)

    def earnings(self, provider: str | None = None, t_from: float | None = None,
                 t_to: float | None = None) -> dict[str, Any]:
        """Earnings per provider and node for metered time ending in [t_from, t_to) (UNIX seconds)."""
        params = {k: v for k, v in (("provider", provider), ("from", t_from), ("to", t_to)) if v is not None}
        return self._request("GET", "/v1/earnings", params=params)

    # -- the Akash market (admin: the operator's chain bridge) --

    def akash_offer(self, order: dict[str, Any] | None = None, sdl: str | None = None,
                    deployment_id: str | None = None) -> list[dict[str, Any]]:
        """Offer open orders (one as the chain lists it, or those an SDL opens): each is bid on or declined."""
        body: dict[str, Any] = {"order": order} if order is not None else {"sdl": sdl, "deployment_id": deployment_id}
        return self._request("POST", "/v1/networks/akash/orders", json=body)

    def akash_lease_won(self, order_id: str, lease_id: str, sdl: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/networks/akash/orders/{order_id}/lease",
                             json={"lease_id": lease_id, "sdl": sdl})

    def akash_bid_lost(self, order_id: str, reason: str = "") -> dict[str, Any]:
        return self._request("POST", f"/v1/networks/akash/orders/{order_id}/lost", json={"reason": reason})

    def akash_close(self, order_id: str, reason: str = "") -> dict[str, Any]:
        return self._request("POST", f"/v1/networks/akash/orders/{order_id}/close", json={"reason": reason})

    def akash_leases(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        return self._request("GET", "/v1/networks/akash/leases", params=params)

    def budgets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/budgets")

    def budget(self, project: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/budgets/{project}")

    def set_budget(self, project: str, amount_usd: str) -> dict[str, Any]:
        """`amount_usd` as decimal text ("12.50"), so no float rounding touches money."""
        return self._request("PUT", f"/v1/budgets/{project}", json={"amount_usd": amount_usd})

    def clear_budget(self, project: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/budgets/{project}")

    # -- the agent protocol ------------------------------------------------------------------------

    def answer_verification(self, challenge_id: str, step: str, answer: dict[str, Any]) -> dict[str, Any]:
        """Send a proof-of-hardware answer: `step` is "roots" (then the server names the rows it wants) or
        "rows" (then the server gives its verdict)."""
        if step not in ("roots", "rows"):
            raise ValueError(f"unknown proof-of-hardware step {step!r}")
        return self._request("POST", f"/v1/agent/verifications/{challenge_id}/{step}", json=answer)

    def register_node(self, info: NodeInfo, node_id: str | None = None) -> dict[str, Any]:
        return self._request("POST", "/v1/agent/register", json={"node_id": node_id, "info": info.model_dump(mode="json")})

    def heartbeat(self, node_id: str, running: list[str], finished: list[dict[str, Any]],
                  epoch: int | None = None) -> dict[str, Any]:
        """`epoch`: that of the desired state this node holds; the answer is `unchanged` while it is current."""
        body: dict[str, Any] = {"running": running, "finished": finished}
        if epoch is not None and epoch >= 0:
            body["epoch"] = epoch
        return self._request("POST", f"/v1/agent/nodes/{node_id}/heartbeat", json=body)

    def upload_logs(self, allocation_id: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        return self._request("POST", f"/v1/agent/allocations/{allocation_id}/logs", json={"chunks": chunks})


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _detail(response: httpx.Response) -> str:
    body = _json(response)
    if body and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)
    return f"HTTP {response.status_code}: {response.text[:200]}"
