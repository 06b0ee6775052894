"""The checker the fault tests run after every fault: read the database directly and verify the guarantees."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from ceti.spec import AllocationState, JobState
from ceti.store import models as m
from ceti.store.db import make_engine, session_factory

ACTIVE = {s.value for s in AllocationState if s.active}


def check_invariants(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            jobs = s.scalars(select(m.Job)).all()
            allocs = s.scalars(select(m.Allocation)).all()
            chunks = s.scalars(select(m.LogChunk).order_by(m.LogChunk.offset)).all()
            events = s.scalars(select(m.Event).where(m.Event.job_id.is_not(None))).all()
            txn_sums = s.execute(select(m.LedgerEntry.txn_id, func.sum(m.LedgerEntry.amount_micro))
                                 .group_by(m.LedgerEntry.txn_id)).all()
            balances = s.execute(select(m.LedgerAccount.id, m.LedgerAccount.balance_micro)).all()
            entry_sums = dict(s.execute(select(m.LedgerEntry.account_id, func.sum(m.LedgerEntry.amount_micro))
                                        .group_by(m.LedgerEntry.account_id)).all())
    finally:
        engine.dispose()
    by_job: dict[str, list[m.Allocation]] = defaultdict(list)
    for a in allocs:
        assert a.state in {s.value for s in AllocationState}, f"allocation {a.id} in unknown state {a.state}"
        by_job[a.job_id].append(a)
    for job in jobs:
        state = JobState(job.state)  # raises on an unknown state
        active = [a for a in by_job[job.id] if a.state in ACTIVE]
        if state in (JobState.starting, JobState.running):
            assert len(active) == 1, f"job {job.id} is {state.value} with {len(active)} live attempts"
        else:
            assert not active, f"job {job.id} is {state.value} but attempt(s) {[a.id for a in active]} still live"
    # no job runs twice at once: at most one live attempt per job (checked above), and per node no GPU twice
    per_gpu: dict[tuple[str, int], int] = defaultdict(int)
    for a in allocs:
        if a.state in ACTIVE:
            for g in a.gpu_indices:
                per_gpu[(a.node_id, g)] += a.gpu_share_milli or 1000
    assert all(v <= 1000 for v in per_gpu.values()), f"a GPU is over-committed: {dict(per_gpu)}"
    # logs: per attempt and stream the stored pieces tile the output from byte 0 with no gap and no overlap
    streams: dict[tuple[str, str], list[m.LogChunk]] = defaultdict(list)
    for c in chunks:
        streams[(c.allocation_id, c.stream)].append(c)
    for key, pieces in streams.items():
        expected = 0
        for c in pieces:
            assert c.offset == expected, f"log {key}: piece at {c.offset}, expected {expected} (gap or duplicate)"
            expected += len(c.data.encode())
    # every job has its history from submission on
    submitted = {e.job_id for e in events if e.to_state == "pending" and e.from_state is None}
    assert submitted == {j.id for j in jobs}, "a job lacks its submission event"
    # the books: every transaction balances, and every account's balance is the sum of its entries
    unbalanced = [txn for txn, total in txn_sums if int(total) != 0]
    assert not unbalanced, f"ledger transactions that do not balance: {unbalanced[:5]}"
    for account_id, balance in balances:
        assert int(balance) == int(entry_sums.get(account_id, 0)), f"ledger account {account_id} drifted"
    return {"jobs": len(jobs), "allocations": len(allocs), "log_chunks": len(chunks), "ledger_transactions": len(txn_sums)}
