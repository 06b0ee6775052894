"""Token prices in USD from a source the operator chooses, never trusted blindly.

A revenue estimate is only as good as the price it multiplies by, and a price feed is the part most likely to be
down, slow, or wrong (an HTML error page, a null, a price in the wrong unit). So every read is bounded in time
and checked for range; anything else is a `NetworkError` and the caller makes no estimate at all rather than a
wrong one.

Nothing here is specific to Bittensor; the Render adapter uses it for the RENDER token too.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ceti.networks.base import NetworkError

PriceSource = Callable[[], float]
"""A zero-argument callable returning the price of one token in USD. It may block; `read_price` bounds it."""

DEFAULT_TIMEOUT_S = 5.0


def check_price(value: Any, what: str, max_usd: float) -> float:
    """A usable price: a finite number above zero and at most `max_usd`. Booleans and strings are refused
    (a feed that answers "1" as text or `true` is not answering the question)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NetworkError(f"{what}: the price source returned {value!r}, not a number")
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise NetworkError(f"{what}: the price source returned {price!r}; a price must be above zero")
    if price > max_usd:
        raise NetworkError(f"{what}: the price source returned {price:g} USD, above the sanity limit of "
                           f"{max_usd:g} USD; refusing to estimate from it")
    return price


def read_price(source: PriceSource, what: str, max_usd: float, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """Call `source` with a deadline and check its answer. A source that raises, hangs past `timeout_s` or
    answers nonsense becomes a `NetworkError` naming `what`."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="price-source")
    try:
        future = pool.submit(source)
        # wait first, then collect: a source that itself raises TimeoutError is a failed source, not a slow one
        done, _ = concurrent.futures.wait([future], timeout=timeout_s)
        if not done:
            raise NetworkError(f"{what}: the price source did not answer within {timeout_s:g} s")
        try:
            value = future.result()
        except NetworkError:
            raise
        except Exception as exc:  # noqa: BLE001 - a feed's own failure, whatever its type, means "no price"
            raise NetworkError(f"{what}: the price source failed: {type(exc).__name__}: {exc}") from None
    finally:
        # do not wait for a hung source: its thread ends on its own when its I/O times out
        pool.shutdown(wait=False, cancel_futures=True)
    return check_price(value, what, max_usd)


@dataclass(frozen=True)
class FixedPrice:
    """A price the operator states (or a test pins)."""

    usd: float

    def __call__(self) -> float:
        return self.usd


@dataclass(frozen=True)
class HttpJsonPrice:
    """A price read from a JSON document over HTTP(S), at a dotted path inside it.

    For CoinGecko's simple-price endpoint, for example:
    `HttpJsonPrice("https://api.coingecko.com/api/v3/simple/price?ids=bittensor&vs_currencies=usd",
    "bittensor.usd")`. The HTTP client's own timeout is `timeout_s`, so a hung server does not leave a thread
    behind for long.
    """

    url: str
    path: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise NetworkError(f"price URL {self.url!r} must start with https:// or http://")
        if not self.path or any(not part for part in self.path.split(".")):
            raise NetworkError(f"price path {self.path!r} must be dotted keys such as 'bittensor.usd'")

    def __call__(self) -> float:
        try:
            response = httpx.get(self.url, timeout=self.timeout_s, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise NetworkError(f"price source {self.url} is unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise NetworkError(f"price source {self.url} answered HTTP {response.status_code}")
        try:
            node: Any = response.json()
        except ValueError:
            raise NetworkError(f"price source {self.url} did not answer JSON") from None
        for key in self.path.split("."):
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise NetworkError(f"price source {self.url}: no {self.path!r} in its answer")
        return node
