"""The ledger: what developers pay, what providers earn and the fabric's fee, as double-entry bookkeeping.

Money is an integer number of micro-USD everywhere; prices (floats in the specs) are turned into integers once,
exactly, through their decimal text. Every posting is a transaction whose legs sum to zero (`post` refuses any
other), and each account keeps its balance beside its entries.

Pricing (docs/ledger.md): an allocation's provider rate is the node's ask for what the allocation holds (GPUs, or
its share of one, and CPUs) at the price the scheduler matched it at; the developer pays that plus the fabric's fee,
never more than the job's bid: rate = min(ask x (1 + fee), bid). The provider gets its ask, the fabric the rest.
Rates are fixed when metering first sees the allocation.

Metering is by cumulative amounts: what an allocation owes from its start up to time t is a function of t (rounded
down to whole micro-USD over the whole span, not per interval), and a pass books the difference between that and
what is already booked, then moves the allocation's watermark to t. Metering the same interval twice books
nothing; an end earlier than a watermark (a lost node's last heartbeat) books a refund; rounding never adds up.

Budgets: when a project's charges, with what its running work has accrued, reach its cap, its work is stopped
("budget exhausted") and its waiting jobs fail; from that moment the fabric, not the project, pays the provider
for the grace period. Every metering pass checks this with what running work accrued since it was last booked, so a
project never pays more than its cap plus what accrues between two passes (at most one metering interval).

Every replica runs metering passes; they share the meters by claiming them (services/claims.py), and a meter is
booked only in the transaction that checks its claim under its row lock, so no interval is booked twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, literal, or_, select
from sqlalchemy.orm import Session

from ceti.networks.base import NETWORK_ENV, REVENUE_ENV
from ceti.server.errors import ApiError, Forbidden, NotFound
from ceti.server.services import claims
from ceti.server.services.events import record, set_job_state
from ceti.server.services.tokens import Principal, new_id
from ceti.server.services.verification import offered_price_per_gpu_hour
from ceti.server.settings import Settings
from ceti.spec import AllocationState, JobSpec, JobState
from ceti.store import models as m

MICRO_PER_USD = 1_000_000
NANO_PER_MICRO = 1_000
MS_PER_HOUR = 3_600_000
# nano-USD per hour x milliseconds -> micro-USD
_RATE_DIVISOR = NANO_PER_MICRO * MS_PER_HOUR
FABRIC = "fabric"
ACCOUNT_KINDS = ("project", "provider", FABRIC)
MAX_CAP_MICRO = 10**9 * MICRO_PER_USD  # a billion dollars: past this a cap is a typo
BUDGET_EXHAUSTED = "budget exhausted"
_ACTIVE = [x.value for x in AllocationState if x.active]
_LIVE = [AllocationState.assigned.value, AllocationState.running.value]


class UnbalancedTransaction(RuntimeError):
    """A posting whose legs do not sum to zero: a bug, never booked."""


class BudgetExceeded(ApiError):
    status = 409


# -- money ---------------------------------------------------------------------------------------------


def to_micro(value: float | str | Decimal, rounding: str = ROUND_HALF_EVEN) -> int:
    """USD -> integer micro-USD, exactly from the value's decimal text (0.1 is 100000, not 99999)."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount") from None
    if not d.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    return int((d * MICRO_PER_USD).to_integral_value(rounding=rounding))


def format_usd(micro: int) -> str:
    """12345678 -> '12.345678'; at least two decimals, trailing zeros dropped beyond them."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO_PER_USD)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


# -- accounts and postings -----------------------------------------------------------------------------


def account(s: Session, kind: str, owner_id: str, now: float) -> m.LedgerAccount:
    if kind not in ACCOUNT_KINDS:
        raise ValueError(f"unknown account kind {kind!r}")
    row = s.scalar(select(m.LedgerAccount).where(m.LedgerAccount.kind == kind, m.LedgerAccount.owner_id == owner_id))
    if row is None:
        row = m.LedgerAccount(kind=kind, owner_id=owner_id, balance_micro=0, created_at=now)
        s.add(row)
        s.flush()
    return row


@dataclass(frozen=True)
class Leg:
    account: m.LedgerAccount
    amount_micro: int  # a debit is negative


def post(
    s: Session, legs: Iterable[Leg], *, kind: str, now: float, period_from: float, period_to: float,
    allocation_id: str | None = None, job_id: str | None = None, node_id: str | None = None,
    entries: list[dict[str, Any]] | None = None,
) -> str | None:
    """Book one transaction; None if every leg is zero. Refuses non-integer amounts and legs that do not balance.

    The entries are inserted at once, or, given `entries`, appended to it for the caller to insert with others in
    one statement (`insert_entries`): the ORM inserts rows with a generated key one statement each on SQLite."""
    legs = [leg for leg in legs if leg.amount_micro != 0]
    for leg in legs:
        if type(leg.amount_micro) is not int:
            raise UnbalancedTransaction(f"amounts are integers of micro-USD, not {type(leg.amount_micro).__name__}")
    if not legs:
        return None
    total = sum(leg.amount_micro for leg in legs)
    if total != 0:
        raise UnbalancedTransaction(f"legs sum to {total} micro-USD, not 0")
    txn = new_id()
    rows = [] if entries is None else entries
    for leg in legs:
        rows.append({"txn_id": txn, "account_id": leg.account.id, "amount_micro": leg.amount_micro, "kind": kind,
                     "allocation_id": allocation_id, "job_id": job_id, "node_id": node_id,
                     "period_from": period_from, "period_to": period_to, "booked_at": now})
        leg.account.balance_micro += leg.amount_micro
    if entries is None:
        insert_entries(s, rows)
    return txn


def insert_entries(s: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        s.execute(insert(m.LedgerEntry), rows)


# -- prices --------------------------------------------------------------------------------------------


def held_gpu_milli(alloc: m.Allocation) -> int:
    """GPUs an allocation holds, in thousandths: whole GPUs, or its share of one."""
    count = len(alloc.gpu_indices or [])
    return alloc.gpu_share_milli * max(count, 1) if alloc.gpu_share_milli else 1000 * count


def rates(gpu_milli: int, cpu_milli: int, gpu_ask: float, cpu_ask: float, bid: float | None,
          fee_bps: int) -> tuple[int, int]:
    """(provider rate, fee rate) in nano-USD per hour. The provider gets its ask for what is held; the fee is a
    share of that, cut so the two never pass the bid. An ask above the bid (raised after the job was placed) is
    paid at the bid, with no fee."""
    provider = gpu_milli * to_micro(gpu_ask) + cpu_milli * to_micro(cpu_ask)
    fee = provider * max(fee_bps, 0) // 10_000
    if bid is not None:
        bid_nano = to_micro(bid) * NANO_PER_MICRO
        provider = min(provider, bid_nano)
        fee = max(0, min(fee, bid_nano - provider))
    return provider, fee


def network_revenue(spec: dict[str, Any]) -> float | None:
    """What a decentralized network pays for this workload, USD per hour (set by back-fill or the Akash market
    when they made the job), or None for a developer's job."""
    env = spec.get("env") or {}
    if not env.get(NETWORK_ENV) or REVENUE_ENV not in env:
        return None
    try:
        value = float(env[REVENUE_ENV])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_CAP_MICRO / MICRO_PER_USD else None


def network_rates(usd_per_hour: float, fee_bps: int) -> tuple[int, int]:
    """(provider rate, fee rate) in nano-USD per hour for network work: the network's payment is the whole rate,
    booked to the networks' account; the fabric keeps its fee out of it and the provider gets the rest. (The
    provider agreed to this price through its network floor, which back-fill and the Akash market never go under.)"""
    total = to_micro(usd_per_hour) * NANO_PER_MICRO
    fee = total * min(max(fee_bps, 0), 10_000) // 10_000
    return total - fee, fee


def _ms(start: float, end: float) -> int:
    return max(0, round((end - start) * 1000))


def owed(provider_rate: int, fee_rate: int, started_at: float | None, t: float,
         budget_stop_at: float | None = None) -> tuple[int, int, int]:
    """(charged to the project, credited to the provider, net to the fabric) for [started_at, t), cumulative.

    The three balance: charged == provider + fabric. After a budget stop the provider is still paid, by the
    fabric (its net can then be negative), and the project pays nothing more."""
    if started_at is None or t <= started_at:
        return 0, 0, 0
    paid_until = t if budget_stop_at is None else min(t, max(budget_stop_at, started_at))
    provider_all = provider_rate * _ms(started_at, t) // _RATE_DIVISOR
    provider_paid = provider_rate * _ms(started_at, paid_until) // _RATE_DIVISOR
    fee = fee_rate * _ms(started_at, paid_until) // _RATE_DIVISOR
    charged = provider_paid + fee
    return charged, provider_all, charged - provider_all


# -- metering ------------------------------------------------------------------------------------------

# meters claimed and booked in one transaction: a batch holds the write lock (SQLite) or its rows (PostgreSQL)
# until it commits, and at 200 that took up to 300 ms under load while requests waited
BATCH = 50


@dataclass
class MeterReport:
    opened: int = 0
    booked: int = 0  # transactions
    closed: int = 0
    exhausted: list[str] = field(default_factory=list)  # projects stopped for their budget


def _insert(s: Session, model: type):
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def _insert_absent(s: Session, model: type, values: dict[str, Any], unique: list[str]) -> bool:
    """Insert a row unless one with the same `unique` columns exists; True if this call made it. Two replicas, or
    the metering pass and an ending attempt, may make the same row at once."""
    made = _insert(s, model).values(**values).on_conflict_do_nothing(index_elements=unique)
    return s.execute(made.returning(model.__table__.c[unique[0]])).first() is not None


# what a new meter starts with, besides whose attempt it meters and when that started
_NEW_METER: dict[str, Any] = {
    "priced": False, "provider_rate_nano": 0, "fee_rate_nano": 0, "metered_to": None, "end_at": None,
    "budget_stop_at": None, "charged_micro": 0, "provider_micro": 0, "fabric_micro": 0, "closed": False,
}


def _meter_values(s: Session, alloc: m.Allocation) -> dict[str, Any]:
    job = s.get(m.Job, alloc.job_id)
    node = s.get(m.Node, alloc.node_id)
    return {"allocation_id": alloc.id, "job_id": alloc.job_id, "project_id": job.project_id,
            "node_id": alloc.node_id, "provider_id": node.provider_id, "started_at": alloc.started_at, **_NEW_METER}


def _open_meter(s: Session, alloc: m.Allocation) -> m.LedgerMeter:
    """The allocation's meter, made if absent."""
    meter = s.get(m.LedgerMeter, alloc.id)
    if meter is not None:
        return meter
    _insert_absent(s, m.LedgerMeter, _meter_values(s, alloc), ["allocation_id"])
    return s.get(m.LedgerMeter, alloc.id, populate_existing=True)


def _price(s: Session, meter: m.LedgerMeter, fee_bps: int) -> None:
    alloc = s.get(m.Allocation, meter.allocation_id)
    node = s.get(m.Node, meter.node_id)
    job = s.get(m.Job, meter.job_id)
    info = node.info or {}
    gpu_ask = offered_price_per_gpu_hour(float(info.get("price_per_gpu_hour") or 0.0), node.verdict,
                                         node.model_estimate)
    revenue = network_revenue(job.spec)
    if revenue is not None:
        meter.provider_rate_nano, meter.fee_rate_nano = network_rates(revenue, fee_bps)
    else:
        bid = job.spec.get("max_price_per_hour")
        if bid is not None:  # the bid is the whole job's: a multi-node job's nodes share it
            bid = bid / max(int(job.spec.get("nodes") or 1), 1)
        meter.provider_rate_nano, meter.fee_rate_nano = rates(
            held_gpu_milli(alloc), alloc.cpu_milli, gpu_ask, float(info.get("price_per_cpu_hour") or 0.0), bid,
            fee_bps)
    if meter.started_at is None:
        meter.started_at = alloc.started_at
    meter.priced = True


def attempt_ended(s: Session, alloc: m.Allocation, state: AllocationState, now: float) -> None:
    """Called as an attempt ends: fix the time it is charged until; the next metering pass books it.

    A lost attempt is charged until its node's last heartbeat: nothing says it ran after that."""
    if alloc.started_at is None:
        return  # it never ran
    end = now
    if state is AllocationState.lost:
        node = s.get(m.Node, alloc.node_id)
        if node is not None:
            end = min(end, node.last_heartbeat_at)
    meter = _open_meter(s, alloc)
    if meter.end_at is None:
        meter.end_at = max(end, alloc.started_at)


def meter(s: Session, now: float, settings: Settings, batch: int = BATCH) -> MeterReport:
    """One metering pass. Every replica's sweeper runs them (background/sweeper.py), sharing the meters by
    claiming them (services/claims.py): open meters for work that started; claim the meters that are due (new,
    ended, past their interval, or frozen by a budget stop since last booked) a batch at a time and book each batch
    under its claims; stop what a budget no longer covers and book what that made due. Idempotent: a second pass at
    the same `now` books nothing. Commits `s`."""
    report = MeterReport()
    _open_started(s, report)
    s.commit()
    _book_due(s, now, settings, batch, report)
    if _stop_over_budget(s, now, report):
        _book_due(s, now, settings, batch, report)
    return report


def _open_started(s: Session, report: MeterReport) -> None:
    """Open a meter for every attempt that started and has none, in one INSERT ... SELECT: a pass at 50 job
    starts a second used to open them one lookup and one commit at a time (with the pricing and booking, a
    quarter of a core and the server's longest holds of SQLite's write lock). Every replica's pass may find
    the same new attempts, and a heartbeat reporting an attempt's end may open its meter at the same moment:
    rows that exist by then are skipped (ON CONFLICT DO NOTHING), and rows are made in allocation id order, so
    two passes wait on each other in one order only. Committed at once: until then a new meter's key is
    locked, and another replica's pass or a heartbeat ending the attempt (which holds its node's row lock)
    would wait on it."""
    a, lm, j, n = m.Allocation, m.LedgerMeter, m.Job, m.Node
    constants = [literal(v, lm.__table__.c[name].type) for name, v in _NEW_METER.items()]
    source = (
        select(a.id, a.job_id, j.project_id, a.node_id, n.provider_id, a.started_at, *constants)
        .join(j, j.id == a.job_id).join(n, n.id == a.node_id)
        .where(a.state.in_(_ACTIVE), a.started_at.is_not(None),
               ~select(lm.allocation_id).where(lm.allocation_id == a.id).exists())
        .order_by(a.id))
    columns = ["allocation_id", "job_id", "project_id", "node_id", "provider_id", "started_at", *_NEW_METER]
    made = _insert(s, lm).from_select(columns, source).on_conflict_do_nothing(index_elements=["allocation_id"])
    report.opened += len(s.execute(made.returning(lm.allocation_id)).all())
    s.commit()


def _due(now: float, horizon: float) -> ColumnElement[bool]:
    """The meters a pass books, in SQL; `_is_due` is the same test on a meter read under its lock. `horizon` is
    `now` less the meter interval: running work is booked once per interval."""
    lm, a = m.LedgerMeter, m.Allocation
    live = select(a.id).where(a.id == lm.allocation_id, a.state.in_(_ACTIVE)).exists()
    return and_(lm.closed.is_(False), or_(
        lm.metered_to.is_(None),
        lm.end_at.is_not(None),
        ~live,  # ended without telling the ledger
        and_(lm.metered_to <= horizon, lm.metered_to < now),
        and_(lm.budget_stop_at.is_not(None), lm.metered_to < lm.budget_stop_at),
    ))


def _is_due(x: m.LedgerMeter, final: bool, now: float, horizon: float) -> bool:
    return (not x.closed) and (
        x.metered_to is None or final or (x.metered_to <= horizon and x.metered_to < now)
        or (x.budget_stop_at is not None and x.metered_to < x.budget_stop_at))


def _targets(s: Session, meters: list[m.LedgerMeter], now: float) -> dict[str, tuple[float, bool]]:
    """allocation -> (book up to, final)."""
    a = m.Allocation
    states = {}
    ids = [x.allocation_id for x in meters]
    for start in range(0, len(ids), 500):
        states.update({r[0]: (r[1], r[2]) for r in s.execute(
            select(a.id, a.state, a.ended_at).where(a.id.in_(ids[start:start + 500])))})
    targets = {}
    for x in meters:
        state, ended_at = states.get(x.allocation_id, (None, None))
        if x.end_at is not None:
            targets[x.allocation_id] = (x.end_at, True)
        elif state not in _ACTIVE:  # ended without telling the ledger: charge to its recorded end
            targets[x.allocation_id] = (max(ended_at if ended_at is not None else now, x.started_at or now), True)
        else:  # running: up to now, never back (a replica whose clock lags books nothing)
            targets[x.allocation_id] = (max(now, x.metered_to or now), False)
    return targets


def _book_due(s: Session, now: float, settings: Settings, batch: int, report: MeterReport) -> None:
    horizon = now - settings.ledger.meter_interval_s
    while (claimed := claims.claim(s, m.LedgerMeter, _due(now, horizon), now, settings.claim_ttl_s,
                                   batch)) is not None:
        s.expire_all()  # what this session read in earlier transactions may be stale: read everything afresh
        held = claims.still_ours(s, m.LedgerMeter, claimed)
        _book_held(s, held, now, horizon, settings.ledger.fee_bps, report)
        s.commit()
        if not held or len(claimed.keys) < batch:
            break


def _book_held(s: Session, meters: list[m.LedgerMeter], now: float, horizon: float, fee_bps: int,
               report: MeterReport) -> None:
    """The final write of a claimed batch: the meters are locked and read afresh; each that is still due is
    booked up to its target, and closed when its attempt has ended."""
    unpriced = [x for x in meters if not x.priced]
    rows = _read_for_pricing(s, unpriced)  # held: the session keeps unchanged rows only weakly
    for x in unpriced:
        _price(s, x, fee_bps)
    del rows
    targets = _targets(s, meters, now)
    due = [x for x in meters if _is_due(x, targets[x.allocation_id][1], now, horizon)]
    if not due:
        return
    accounts = _Accounts(s, now, {key for x in due for key in (
        ("project", x.project_id), ("provider", x.provider_id), (FABRIC, FABRIC))})
    entries: list[dict[str, Any]] = []
    for x in due:
        t, final = targets[x.allocation_id]
        if _book(s, x, t, now, accounts, entries):
            report.booked += 1
        if final:
            x.closed = True
            report.closed += 1
    insert_entries(s, entries)


def _read_for_pricing(s: Session, meters: list[m.LedgerMeter]) -> list[Any]:
    """The allocations, nodes and jobs that `_price` looks up for `meters`, read with one query per table (500
    ids at a time), so its lookups find them in the session instead of making three round trips a meter."""
    rows: list[Any] = []
    for model, ids in ((m.Allocation, {x.allocation_id for x in meters}), (m.Node, {x.node_id for x in meters}),
                       (m.Job, {x.job_id for x in meters})):
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):
            rows += s.scalars(select(model).where(model.id.in_(ordered[start:start + 500]))).all()
    return rows


class _Accounts:
    """The accounts a batch books to, made if absent and locked (in id order) until its commit: replicas booking
    at the same time all add to the fabric's account, often to the same provider's, and a balance is read and
    then written."""

    def __init__(self, s: Session, now: float, keys: set[tuple[str, str]]):
        acct = m.LedgerAccount
        owners = sorted({owner for _, owner in keys})

        def ids() -> dict[tuple[str, str], int]:
            found = {}
            for start in range(0, len(owners), 500):
                for row_id, kind, owner in s.execute(select(acct.id, acct.kind, acct.owner_id).where(
                        acct.owner_id.in_(owners[start:start + 500]))):
                    if (kind, owner) in keys:
                        found[(kind, owner)] = row_id
            return found

        found = ids()
        if len(found) < len(keys):
            for kind, owner in sorted(keys - found.keys()):
                _insert_absent(s, acct, {"kind": kind, "owner_id": owner, "balance_micro": 0, "created_at": now},
                               ["kind", "owner_id"])
            found = ids()
        self._rows = {(r.kind, r.owner_id): r for r in claims.lock_rows(s, acct, found.values())}

    def __call__(self, kind: str, owner_id: str) -> m.LedgerAccount:
        return self._rows[(kind, owner_id)]


def _book(s: Session, x: m.LedgerMeter, t: float, now: float, accounts: _Accounts,
          entries: list[dict[str, Any]]) -> bool:
    charged, provider, fabric = owed(x.provider_rate_nano, x.fee_rate_nano, x.started_at, t, x.budget_stop_at)
    legs = [
        Leg(accounts("project", x.project_id), -(charged - x.charged_micro)),
        Leg(accounts("provider", x.provider_id), provider - x.provider_micro),
        Leg(accounts(FABRIC, FABRIC), fabric - x.fabric_micro),
    ]
    since = x.metered_to if x.metered_to is not None else (x.started_at if x.started_at is not None else t)
    txn = post(s, legs, kind="usage", now=now, period_from=min(since, t), period_to=t,
               allocation_id=x.allocation_id, job_id=x.job_id, node_id=x.node_id, entries=entries)
    x.charged_micro, x.provider_micro, x.fabric_micro = charged, provider, fabric
    x.metered_to = t
    return txn is not None


def spent_micro(s: Session, project_id: str) -> int:
    """What a project has been charged, ever (its account's balance, negated)."""
    balance = s.scalar(select(m.LedgerAccount.balance_micro).where(
        m.LedgerAccount.kind == "project", m.LedgerAccount.owner_id == project_id))
    return -(balance or 0)


def _open_meters(s: Session, project_id: str) -> list[m.LedgerMeter]:
    lm = m.LedgerMeter
    return list(s.scalars(select(lm).where(lm.project_id == project_id, lm.closed.is_(False))
                          .order_by(lm.allocation_id).execution_options(populate_existing=True)))


def _over_budget(s: Session, project_id: str, cap: int, meters: list[m.LedgerMeter],
                 targets: dict[str, tuple[float, bool]]) -> bool:
    """Whether a project's charges, booked and committed, with what its open meters accrued since their last
    booking, reach its cap."""
    accrued = sum(owed(x.provider_rate_nano, x.fee_rate_nano, x.started_at, targets[x.allocation_id][0],
                       x.budget_stop_at)[0] - x.charged_micro for x in meters)
    return spent_micro(s, project_id) + accrued >= cap


def _stop_over_budget(s: Session, now: float, report: MeterReport) -> bool:
    """Stop every project over its budget; True if that froze a meter's charge (it is then due for booking).

    Any replica's pass may find the same project over. The decision is taken again under the lock of the budget
    row and then of the project's open meters (no booking moves them meanwhile), so a project is stopped once,
    with one set of events; a pass that finds it stopped already changes nothing."""
    lm, b = m.LedgerMeter, m.LedgerBudget
    capped = dict(s.execute(select(b.project_id, b.cap_micro).where(
        b.project_id.in_(select(lm.project_id).where(lm.closed.is_(False))))).all())
    froze = False
    for project_id in sorted(capped):
        meters = _open_meters(s, project_id)
        if not _over_budget(s, project_id, capped[project_id], meters, _targets(s, meters, now)):
            continue  # the common case, read only: no lock is taken
        s.expire_all()  # _exhaust changes allocations and jobs: never from copies read in earlier transactions
        budget = claims.lock_rows(s, b, [project_id])
        meters = claims.lock_rows(s, lm, [x.allocation_id for x in _open_meters(s, project_id)])
        targets = _targets(s, meters, now)
        if budget and _over_budget(s, project_id, budget[0].cap_micro, meters, targets):
            for x in meters:
                if x.budget_stop_at is None:
                    x.budget_stop_at = min(now, targets[x.allocation_id][0])
                    froze = True
            if _exhaust(s, project_id, now):
                report.exhausted.append(project_id)
        s.commit()
    return froze


def _exhaust(s: Session, project_id: str, now: float) -> bool:
    """Stop a project's running work and fail its waiting jobs: its budget is spent. True if anything changed."""
    changed = False
    cap = s.scalar(select(m.LedgerBudget.cap_micro).where(m.LedgerBudget.project_id == project_id)) or 0
    detail = f"{BUDGET_EXHAUSTED}: charged {format_usd(spent_micro(s, project_id))} of a {format_usd(cap)} USD cap"
    live = s.execute(select(m.Allocation, m.Job).join(m.Job, m.Job.id == m.Allocation.job_id).where(
        m.Job.project_id == project_id, m.Allocation.state.in_(_LIVE))).all()
    for alloc, job in live:
        alloc.state = AllocationState.stopping.value
        alloc.stop_reason = BUDGET_EXHAUSTED
        job.reason = detail
        job.updated_at = now
        record(s, "allocation_stopping", now, detail, job_id=job.id, node_id=alloc.node_id, allocation_id=alloc.id)
        changed = True
    for job in s.scalars(select(m.Job).where(m.Job.project_id == project_id,
                                             m.Job.state == JobState.pending.value)).all():
        set_job_state(s, job, JobState.failed, detail, now)
        changed = True
    return changed


# -- budgets -------------------------------------------------------------------------------------------


def _project(s: Session, ref: str) -> m.Project:
    row = s.get(m.Project, ref) or s.scalar(select(m.Project).where(m.Project.name == ref))
    if row is None:
        raise NotFound(f"no project {ref}")
    return row


def _provider(s: Session, ref: str) -> m.Provider:
    row = s.get(m.Provider, ref) or s.scalar(select(m.Provider).where(m.Provider.name == ref))
    if row is None:
        raise NotFound(f"no provider {ref}")
    return row


def budget_view(s: Session, project: m.Project) -> dict[str, Any]:
    cap = s.scalar(select(m.LedgerBudget.cap_micro).where(m.LedgerBudget.project_id == project.id))
    spent = spent_micro(s, project.id)
    return {
        "project_id": project.id, "project": project.name, "cap_micro_usd": cap, "spent_micro_usd": spent,
        "remaining_micro_usd": None if cap is None else cap - spent,
        "exhausted": cap is not None and spent >= cap,
    }


def _readable_project(s: Session, who: Principal, ref: str | None) -> m.Project | None:
    """The project a caller asks about (None = every project, for an admin). A project token reads its own only."""
    if who.kind == "project":
        own = s.get(m.Project, who.project_id)
        if ref is not None and ref not in (own.id, own.name):
            raise Forbidden("a project token can read only its own project's usage and budget")
        return own
    if not who.is_admin:
        raise Forbidden("usage and budgets need a project or admin token")
    return _project(s, ref) if ref is not None else None


def get_budget(s: Session, who: Principal, ref: str | None) -> list[dict[str, Any]]:
    project = _readable_project(s, who, ref)
    if project is not None:
        return [budget_view(s, project)]
    return [budget_view(s, p) for p in s.scalars(select(m.Project).order_by(m.Project.name))]


def set_budget(s: Session, ref: str, cap_micro: int | None, now: float) -> dict[str, Any]:
    """Set (or, with None, remove) a project's cap; a cap already reached stops the project's work now."""
    project = _project(s, ref)
    if cap_micro is not None and not 0 <= cap_micro <= MAX_CAP_MICRO:
        raise ValueError(f"a budget must be between 0 and {format_usd(MAX_CAP_MICRO)} USD")
    row = s.get(m.LedgerBudget, project.id)
    if cap_micro is None:
        if row is not None:
            s.delete(row)
        s.flush()
        return budget_view(s, project)
    if row is None:
        s.add(m.LedgerBudget(project_id=project.id, cap_micro=cap_micro, set_at=now))
    else:
        row.cap_micro, row.set_at = cap_micro, now
    s.flush()
    if spent_micro(s, project.id) >= cap_micro:
        for x in s.scalars(select(m.LedgerMeter).where(m.LedgerMeter.project_id == project.id,
                                                        m.LedgerMeter.closed.is_(False))):
            if x.budget_stop_at is None:
                x.budget_stop_at = now
        _exhaust(s, project.id, now)
    return budget_view(s, project)


def check_submit(s: Session, project_id: str, spec: JobSpec) -> None:
    """Refuse a job its project's budget cannot cover: the budget is spent, or the most the job can cost (its bid
    for its whole max_duration) is more than what is left. A job without both can only be stopped when it runs."""
    cap = s.scalar(select(m.LedgerBudget.cap_micro).where(m.LedgerBudget.project_id == project_id))
    if cap is None:
        return
    spent = spent_micro(s, project_id)
    left = cap - spent
    if left <= 0:
        raise BudgetExceeded(f"{BUDGET_EXHAUSTED}: the project was charged {format_usd(spent)} of its "
                             f"{format_usd(cap)} USD cap; raise it with `ceti budget set`")
    if spec.max_price_per_hour is not None and spec.max_duration:
        worst = -(-to_micro(spec.max_price_per_hour, ROUND_CEILING) * int(spec.max_duration) // 3600)
        if worst > left:
            raise BudgetExceeded(
                f"this job may cost up to {format_usd(worst)} USD (max_price_per_hour {spec.max_price_per_hour} for "
                f"max_duration {spec.max_duration}s) but the project has {format_usd(left)} of its "
                f"{format_usd(cap)} USD budget left")


# -- reports -------------------------------------------------------------------------------------------


def check_range(t_from: float | None, t_to: float | None) -> None:
    for name, value in (("from", t_from), ("to", t_to)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a UNIX time (seconds, >= 0)")
    if t_from is not None and t_to is not None and t_from > t_to:
        raise ValueError(f"from ({t_from}) is after to ({t_to})")


def _in_range(q, t_from: float | None, t_to: float | None):
    """Entries whose metered interval ends in [from, to)."""
    if t_from is not None:
        q = q.where(m.LedgerEntry.period_to >= t_from)
    if t_to is not None:
        q = q.where(m.LedgerEntry.period_to < t_to)
    return q


def usage(s: Session, who: Principal, ref: str | None, t_from: float | None, t_to: float | None) -> dict[str, Any]:
    check_range(t_from, t_to)
    project = _readable_project(s, who, ref)
    projects = [project] if project is not None else list(s.scalars(select(m.Project).order_by(m.Project.name)))
    e, acct = m.LedgerEntry, m.LedgerAccount
    out = []
    for p in projects:
        rows = s.execute(_in_range(
            select(e.job_id, func.sum(e.amount_micro), func.min(e.period_from), func.max(e.period_to))
            .join(acct, acct.id == e.account_id).where(acct.kind == "project", acct.owner_id == p.id)
            .group_by(e.job_id), t_from, t_to)).all()
        names = dict(s.execute(select(m.Job.id, m.Job.name).where(m.Job.id.in_([r[0] for r in rows]))).all()) \
            if rows else {}
        jobs = sorted(({"job_id": job_id, "name": names.get(job_id, ""), "charged_micro_usd": -int(total),
                        "from": first, "to": last} for job_id, total, first, last in rows),
                      key=lambda j: (-j["charged_micro_usd"], j["job_id"] or ""))
        if project is None and not jobs and s.get(m.LedgerBudget, p.id) is None:
            continue  # an admin's overview lists the projects that have something to show
        out.append({**budget_view(s, p), "charged_micro_usd": sum(j["charged_micro_usd"] for j in jobs),
                    "jobs": jobs})
    return {"from": t_from, "to": t_to, "projects": out}


def earnings(s: Session, who: Principal, ref: str | None, t_from: float | None, t_to: float | None) -> dict[str, Any]:
    check_range(t_from, t_to)
    if who.kind == "provider":
        own = s.get(m.Provider, who.provider_id)
        if ref is not None and ref not in (own.id, own.name):
            raise Forbidden("a provider token can read only its own earnings")
        providers = [own]
    elif who.is_admin:
        providers = [_provider(s, ref)] if ref is not None else list(
            s.scalars(select(m.Provider).order_by(m.Provider.name)))
    else:
        raise Forbidden("earnings need a provider or admin token")
    e, acct = m.LedgerEntry, m.LedgerAccount
    out = []
    for p in providers:
        rows = s.execute(_in_range(
            select(e.node_id, func.sum(e.amount_micro)).join(acct, acct.id == e.account_id)
            .where(acct.kind == "provider", acct.owner_id == p.id).group_by(e.node_id), t_from, t_to)).all()
        if ref is None and who.is_admin and not rows:
            continue
        hosts = dict(s.execute(select(m.Node.id, m.Node.hostname).where(m.Node.id.in_([r[0] for r in rows]))).all()) \
            if rows else {}
        nodes = sorted(({"node_id": node_id, "hostname": hosts.get(node_id, ""), "earned_micro_usd": int(total)}
                        for node_id, total in rows), key=lambda n: (-n["earned_micro_usd"], n["node_id"] or ""))
        out.append({"provider_id": p.id, "provider": p.name,
                    "earned_micro_usd": sum(n["earned_micro_usd"] for n in nodes), "nodes": nodes})
    answer: dict[str, Any] = {"from": t_from, "to": t_to, "providers": out, "fabric_fee_micro_usd": None}
    if who.is_admin:
        fee = s.scalar(_in_range(select(func.coalesce(func.sum(e.amount_micro), 0)).join(
            acct, acct.id == e.account_id).where(acct.kind == FABRIC), t_from, t_to))
        answer["fabric_fee_micro_usd"] = int(fee or 0)
    return answer


def totals_by_kind(s: Session) -> dict[str, int]:
    """The sum of every account's balance by kind; over all kinds it is zero."""
    out = dict.fromkeys(ACCOUNT_KINDS, 0)
    for kind, total in s.execute(select(m.LedgerAccount.kind, func.coalesce(func.sum(m.LedgerAccount.balance_micro), 0))
                                 .group_by(m.LedgerAccount.kind)):
        out[kind] = int(total)
    return out
