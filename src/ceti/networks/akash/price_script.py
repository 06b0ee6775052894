"""The external bid price script, as Akash providers run one: the order as JSON on stdin, a price on stdout.

This is the one piece of the Akash provider side that does I/O. The script is untrusted in the sense that it
may hang, crash, or print anything: it runs in its own process group with a hard time limit (the whole group
is killed when it runs over), its output is bounded, and only a single finite, non-negative number no larger
than `absurd_factor` times the order's maximum is accepted. Anything else is a `PriceScriptError` and no bid.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from ceti.networks.akash.market import Order
from ceti.networks.akash.pricing import PRICE_QUANTUM, DenomRates, order_json
from ceti.networks.base import NetworkError

MAX_OUTPUT_BYTES = 4096


class PriceScriptError(NetworkError):
    """The price script gave no usable price: the message says why, in one line."""


@dataclass(frozen=True)
class ScriptPricing:
    """Runs `command` (argv) per order. The printed number is the price per block in the order's denom for
    the whole order."""

    command: tuple[str, ...]
    timeout_s: float = 5.0
    absurd_factor: float = 1000.0
    env: dict[str, str] = field(default_factory=dict)
    name: str = "script"

    def price(self, order: Order, rates: DenomRates) -> Decimal:
        output = run_price_script(self.command, order_json(order, rates), self.timeout_s, self.env)
        return parse_price(output, order.max_price, self.absurd_factor)


def run_price_script(command: tuple[str, ...] | list[str], stdin_text: str, timeout_s: float,
                     env: dict[str, str] | None = None) -> str:
    """Run the script and return its stdout; kill its whole process group if it runs past `timeout_s`."""
    if not command:
        raise PriceScriptError("no price script configured")
    try:
        proc = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    except OSError as exc:
        raise PriceScriptError(f"cannot start price script {command[0]!r}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(stdin_text.encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise PriceScriptError(f"price script ran longer than {timeout_s:g} s and was killed") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise PriceScriptError(f"price script exited with status {proc.returncode}"
                               + (f": {tail[0][:200]}" if tail[0] else ""))
    if len(out) > MAX_OUTPUT_BYTES:
        raise PriceScriptError(f"price script printed more than {MAX_OUTPUT_BYTES} bytes; expected one number")
    return out.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()


def parse_price(output: str, order_max: Decimal, absurd_factor: float = 1000.0) -> Decimal:
    """The one number a price script printed, checked: finite, not negative, not absurdly large."""
    text = output.strip()
    if not text:
        raise PriceScriptError("price script printed nothing; expected one number")
    if len(text.split()) != 1:
        raise PriceScriptError(f"price script printed {_show(text)}; expected one number")
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise PriceScriptError(f"price script printed {_show(text)}, which is not a number") from None
    if not price.is_finite():
        raise PriceScriptError(f"price script printed {_show(text)}, which is not a finite number")
    if price < 0:
        raise PriceScriptError(f"price script printed a negative price ({text})")
    ceiling = order_max * Decimal(repr(absurd_factor))
    if price > ceiling or not math.isfinite(float(price)):
        raise PriceScriptError(f"price script printed {_show(text)}, more than {absurd_factor:g} times the order's "
                               f"maximum ({order_max}): refusing an absurd price")
    return price.quantize(PRICE_QUANTUM) if price.as_tuple().exponent < -6 else price  # type: ignore[operator]


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
