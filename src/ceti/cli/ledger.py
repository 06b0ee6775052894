"""`ceti usage`, `ceti earnings` and `ceti budget set|show|clear`: the ledger from the command line.

Amounts travel as integers of micro-USD and are printed as dollars; a budget is given as decimal text, so no float
rounding touches money on the way in.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ceti.cli.remote import ServerOpt, TokenOpt, call, client, fail

console = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (amounts in integer micro-USD)")]
TIME_HELP = "UNIX seconds, an ISO date or time (local), or an age such as 30m, 24h, 7d"
FromOpt = Annotated[str | None, typer.Option("--from", help=f"start of the range: {TIME_HELP}")]
ToOpt = Annotated[str | None, typer.Option("--to", help=f"end of the range (exclusive): {TIME_HELP}")]

budget_app = typer.Typer(help="Project spending caps: work that would pass one is refused or stopped.",
                         no_args_is_help=True)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """UNIX seconds, an ISO date/time (local time unless it names a zone), or an age before now ("24h")."""
    if text is None:
        return None
    value = text.strip()
    now = time.time() if now is None else now
    try:
        return float(value) if re.fullmatch(r"\d+(\.\d+)?", value) else _age_or_date(value, now)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a time: use {TIME_HELP}") from None


def _age_or_date(value: str, now: float) -> float:
    age = _AGE.match(value)
    if age:
        return now - float(age.group(1)) * _UNIT_S[age.group(2)]
    return datetime.fromisoformat(value).timestamp()


def usd(micro: int | None) -> str:
    if micro is None:
        return "-"
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), 1_000_000)
    return f"{sign}${whole:,}.{f'{frac:06d}'.rstrip('0').ljust(2, '0')}"


def _range_text(t_from: float | None, t_to: float | None) -> str:
    def fmt(t: float | None, default: str) -> str:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t is not None else default

    return f"{fmt(t_from, 'the start')} to {fmt(t_to, 'now')}"


def _range(t_from: str | None, t_to: str | None) -> tuple[float | None, float | None]:
    start, end = parse_time(t_from), parse_time(t_to)
    if start is not None and end is not None and start > end:
        fail("--from is after --to", 2)
    return start, end


def usage(
    t_from: FromOpt = None,
    t_to: ToOpt = None,
    project: Annotated[str | None, typer.Option(help="a project's name (admin; a project token sees its own)")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What your project was charged, per job, over a time range."""
    start, end = _range(t_from, t_to)
    out = call(client(server, token).usage, project, start, end)
    if json_out:
        print(json.dumps(out, indent=2))
        return
    if not out["projects"]:
        console.print(f"no charges from {_range_text(start, end)}")
        return
    for p in out["projects"]:
        budget = "" if p["cap_micro_usd"] is None else (
            f"; budget {usd(p['cap_micro_usd'])}, {usd(p['spent_micro_usd'])} spent"
            + (" (exhausted)" if p["exhausted"] else f", {usd(p['remaining_micro_usd'])} left"))
        console.print(f"[bold]{p['project']}[/bold]: {usd(p['charged_micro_usd'])} from "
                      f"{_range_text(start, end)}{budget}", highlight=False)
        if p["jobs"]:
            table = Table("job", "name", "charged")
            for j in p["jobs"]:
                table.add_row((j["job_id"] or "-")[:8], j["name"], usd(j["charged_micro_usd"]))
            console.print(table)


def earnings(
    t_from: FromOpt = None,
    t_to: ToOpt = None,
    provider: Annotated[str | None, typer.Option(help="a provider's name (admin; a provider token sees its own)")]
    = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What your nodes earned over a time range."""
    start, end = _range(t_from, t_to)
    out = call(client(server, token).earnings, provider, start, end)
    if json_out:
        print(json.dumps(out, indent=2))
        return
    if not out["providers"]:
        console.print(f"no earnings from {_range_text(start, end)}")
    for p in out["providers"]:
        console.print(f"[bold]{p['provider']}[/bold]: {usd(p['earned_micro_usd'])} from {_range_text(start, end)}",
                      highlight=False)
        if p["nodes"]:
            table = Table("node", "host", "earned")
            for n in p["nodes"]:
                table.add_row((n["node_id"] or "-")[:8], n["hostname"], usd(n["earned_micro_usd"]))
            console.print(table)
    if out.get("fabric_fee_micro_usd") is not None:
        console.print(f"fabric fees: {usd(out['fabric_fee_micro_usd'])}", highlight=False)


def _budget_line(b: dict[str, Any]) -> str:
    if b["cap_micro_usd"] is None:
        return f"{b['project']}: no budget ({usd(b['spent_micro_usd'])} spent)"
    state = "exhausted" if b["exhausted"] else f"{usd(b['remaining_micro_usd'])} left"
    return f"{b['project']}: {usd(b['spent_micro_usd'])} of {usd(b['cap_micro_usd'])} spent, {state}"


@budget_app.command("set")
def budget_set(
    project: Annotated[str, typer.Argument(help="the project's name")],
    amount: Annotated[str, typer.Argument(help="the most it may be charged in all, in USD, e.g. 250 or 12.50")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cap what a project may be charged (admin). Jobs that would pass it are refused or stopped."""
    text = amount.strip().removeprefix("$").replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{amount!r} is not an amount of USD", 2)
    if not value.is_finite() or value < 0:
        fail("a budget is a positive amount of USD (or 0)", 2)
    out = call(client(server, token).set_budget, project, text)
    if json_out:
        print(json.dumps(out, indent=2))
        return
    console.print(_budget_line(out), highlight=False)


@budget_app.command("show")
def budget_show(
    project: Annotated[str | None, typer.Argument(help="the project's name; default: every project you may see")]
    = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A project's budget: cap, spent, left."""
    c = client(server, token)
    rows = [call(c.budget, project)] if project else call(c.budgets)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    for b in rows:
        console.print(_budget_line(b), highlight=False)


@budget_app.command("clear")
def budget_clear(project: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Remove a project's cap (admin)."""
    out = call(client(server, token).clear_budget, project)
    console.print(_budget_line(out), highlight=False)
