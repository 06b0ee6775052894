"""Multi-node jobs (Ray gangs): every task of the gang on a node of its own, all nodes of one network label.

A `one_per_node` job of N > 1 tasks needs N distinct nodes that reach each other (the same non-empty
`Node.network`), each able to hold one task, and, unless `mixed_gpu_models`, all the gang's GPUs of one model.
It starts whole or not at all. The flow between node classes cannot express "N distinct nodes of one label",
so these jobs skip it: `split` takes them out of the job kinds and `MultiNode` places them per priority level,
before that level's ordinary kinds, in queue order, on the round's `Free` room with the same per-node checks
(`Need`) as the rest of the fabric.

Placement rule: candidate nodes are grouped into pools by (network label, GPU model; any model when mixing
is allowed or the job needs no GPU). Among the pools with at least N nodes that can take one task now, the
one whose N best nodes leave the least room wins, and in it the N nodes that are left with the least free
room after their task (best fit: free GPU milli left on the node first, then the fraction of its CPU and
memory left, then the cheaper ask). Best fit keeps whole empty nodes, and whole empty networks, for the next
gang that needs them: a gang takes half-used nodes first, and a CPU-only gang counts free GPUs as room to
keep. Pools are compared on their nodes in the order of the room they had when the level started (tasks
placed since make nodes tighter but do not reorder them, so a round stays linear in the nodes); the nodes
within the chosen pool are then chosen on their room now.

The head (task 0) goes to the chosen node that is most reliable, then the one with the most CPU and memory
left: Ray's head also runs the cluster's control processes and the driver, and its loss ends the whole job
while a worker's loss may not.

When no pool fits now, the gang may displace running work under the `Preemptor`'s rules (only interruptible
work of strictly lower priority, the cheapest lost work, the bid's payback): a pool's nodes that fit freely
are used first and the rest are its cheapest to free. Nothing is pre-empted for a gang that still would not
fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ceti.fabric.classes import JobKind, Need
from ceti.fabric.decisions import Start, Unschedulable, Wait
from ceti.fabric.model import WHOLE_GPU_MILLI, Allocation, Demand, Job
from ceti.fabric.preemption import MAX_NODES_PER_TASK, PAYBACK_HOURS
from ceti.fabric.schedule import _gpu_words, _shape, static_misfit

if TYPE_CHECKING:
    from ceti.fabric.schedule import _Round

ANY_MODEL = -1
MAX_GROUPS_IN_REASON = 4
# node rows read per round by multi-node jobs (pools built and scanned, reasons counted; about a second's work
# at 100,000 nodes); the jobs left when it is spent wait for the next round
ROW_BUDGET = 20_000_000


def split(kinds: list[JobKind]) -> tuple[list[JobKind], list[tuple[Job, JobKind]]]:
    """Take the one_per_node gangs out of `kinds` (their job lists are edited): the kinds that still have
    jobs, and each gang taken out with its kind."""
    gangs: list[tuple[Job, JobKind]] = []
    for k in kinds:
        if k.gang_size < 2 or not any(j.one_per_node for j in k.jobs):
            continue
        gangs.extend((j, k) for j in k.jobs if j.one_per_node)
        k.jobs = [j for j in k.jobs if not j.one_per_node]
    return [k for k in kinds if k.jobs], gangs


@dataclass(slots=True)
class _Pool:
    """Nodes of one GPU model (or any) that could hold one task, take new work and declare a network label,
    in the level's order (`MultiNode._order`); the columns are copies of their free room, kept up to date
    as tasks are placed (`MultiNode._sync`)."""

    model: int
    need: Need
    usable_t: np.ndarray  # per GPU type x G: the GPUs a task may use
    at: np.ndarray  # positions in the level's order (ascending)
    rows: np.ndarray
    net: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    disk: np.ndarray
    gpus: np.ndarray  # usable GPUs with room for one task's share of each
    gpu_milli: np.ndarray  # free GPU milli of the whole node
    pg: np.ndarray
    pc: np.ndarray
    synced: int = 0


@dataclass(slots=True)
class _Fit:
    """What one task asks of a node's GPUs and places, shared by the gangs that ask the same.

    `masks[model]`: the nodes (in any state) in the task's places with enough usable GPUs of that model
    (ANY_MODEL where models may mix or no GPU is needed); `usable_t[model]`: per GPU type, the GPUs usable."""

    need: Need
    per_gpu: int
    masks: dict[int, np.ndarray]
    usable_t: dict[int, np.ndarray]
    by_model: dict[int, Need] = field(default_factory=dict)
    pools: list[_Pool] = field(default_factory=list)
    level: int = -1
    biggest: tuple[int, Demand] = (0, Demand(0, 0))
    all_fine: bool | None = None  # whether the biggest gang and demand of the fit pass `_static`
    reasons: dict[tuple, tuple[str | None, str | None]] = field(default_factory=dict)


@dataclass(slots=True)
class _Pick:
    """N nodes of one pool for a gang; `victims` per row (none where the task fits freely)."""

    pool: _Pool
    rows: list[int]
    victims: dict[int, list[Allocation]]
    key: tuple


class MultiNode:
    """Places one_per_node gangs for a `_Round`, level by level (`place`), then says why the rest wait."""

    def __init__(self, rnd: _Round, gangs: Sequence[tuple[Job, JobKind]]) -> None:
        self.t = t = rnd.t
        self.free = rnd.free
        self.decisions = rnd.decisions
        self.preemptor = rnd.preemptor
        labels = [n.network for n in t.nodes]
        self.labels: list[str] = sorted(set(labels) - {""})
        lid = {name: i for i, name in enumerate(self.labels)}
        self.net_of = np.fromiter((lid.get(x, -1) for x in labels), np.int64, t.n)
        self._fits: dict[tuple, _Fit] = {}
        self._jobs: dict[int, list[tuple[Job, JobKind]]] = {}
        # per fit, its largest gang and demand at once: when those could run, every job of the fit could
        self._biggest: dict[tuple, tuple[int, Demand]] = {}
        for j, k in gangs:
            self._jobs.setdefault(j.priority, []).append((j, k))
            key = self._fit_key(k, j)
            n, d = self._biggest.get(key, (j.gang_size, j.demand))
            self._biggest[key] = (
                max(n, j.gang_size),
                replace(
                    d,
                    cpu_milli=max(d.cpu_milli, j.demand.cpu_milli),
                    memory_mib=max(d.memory_mib, j.demand.memory_mib),
                    disk_mib=max(d.disk_mib, j.demand.disk_mib),
                ),
            )
        self._levels = sorted(self._jobs, reverse=True)
        self._level_no = 0
        self._changed: list[int] = []  # rows whose free room changed this level, for the pools' copies
        self._inv_cpu = 1.0 / np.maximum(t.cpu_total, 1)
        self._inv_mem = 1.0 / np.maximum(t.mem_total, 1)
        self._order = np.zeros(0, np.int64)
        self._rank = np.zeros(0, np.int64)
        self._order_level = -1
        self._start: tuple[np.ndarray, ...] = ()
        self._whole = self._most = np.zeros(0, np.int64)
        self._waiting: list[Wait] = []
        self.rows_left = ROW_BUDGET

    # ---- the levels ----
    def place(self, down_to: int | None) -> None:
        """Place every level of priority >= `down_to` not placed yet (all of them for None)."""
        while self._levels and (down_to is None or self._levels[0] >= down_to):
            jobs = self._jobs.pop(self._levels.pop(0))
            jobs.sort(key=lambda jk: (jk[0].order, jk[0].id))
            self._level_no += 1
            self._changed = []
            self._level(jobs)

    def finish(self) -> None:
        """Place what is left and say why the jobs that did not start wait."""
        self.place(None)
        self.decisions.waiting.extend(self._waiting)

    def _level(self, jobs: list[tuple[Job, JobKind]]) -> None:
        failed: dict[int, list[tuple[int, int, int, int, float, str]]] = {}
        may_preempt: dict[int, bool] = {}
        for job, k in jobs:
            fit = self._fit_of(k, job)
            if fit.level != self._level_no and self.rows_left > 0:
                self._build_pools(fit, k)
            seen = self._seen_failure(failed.get(id(fit), ()), job)
            if seen is not None or self.rows_left <= 0:
                never, wait = self._static(fit, job)
                if never is not None:
                    self.decisions.unschedulable.append(Unschedulable(job.id, never))
                else:
                    self._waiting.append(Wait(job.id, wait or seen or self._room_text(job, fit, [])))
                continue
            pick, most = self._free_pick(job, fit)
            if pick is None:
                never, wait = self._static(fit, job)
                if never is not None:
                    self.decisions.unschedulable.append(Unschedulable(job.id, never))
                    continue
                if wait is not None:
                    self._waiting.append(Wait(job.id, wait))
                    continue
                if id(fit) not in may_preempt:  # one look for victims per fit and level, as for a kind
                    may_preempt[id(fit)] = self.preemptor.open_kind(job.priority)
                if may_preempt[id(fit)]:
                    pick = self._preempt_pick(job, fit)
                if pick is None:
                    why = self._wait_text(job, fit, most)
                    self._waiting.append(Wait(job.id, why))
                    d = job.demand
                    lim = np.inf if job.bid_per_hour is None else job.bid_per_hour
                    entry = (job.gang_size, d.cpu_milli, d.memory_mib, d.disk_mib, lim, why)
                    failed.setdefault(id(fit), []).append(entry)
                    continue
            if not self._commit(job, pick):
                self._waiting.append(Wait(job.id, self._room_text(job, fit, [])))

    @staticmethod
    def _seen_failure(failed: Sequence[tuple[int, int, int, int, float, str]], job: Job) -> str | None:
        """Why `job` waits when it is at least as big as a job of its fit that failed this level and has no
        more to pay (the room only shrinks within a level), or None."""
        d = job.demand
        lim = np.inf if job.bid_per_hour is None else job.bid_per_hour
        mine = (job.gang_size, d.cpu_milli, d.memory_mib, d.disk_mib, lim)
        for entry in failed:
            if all(a >= b for a, b in zip(mine[:4], entry[:4], strict=True)) and lim <= entry[4]:
                return entry[5] if mine == entry[:5] else f"waiting for {_room_words(job)}"
        return None

    # ---- the nodes a task could use ----
    @staticmethod
    def _fit_key(k: JobKind, job: Job) -> tuple:
        mixed = bool(job.mixed_gpu_models and k.gpu_count)
        return (*k.node_ask, mixed)

    def _fit_of(self, k: JobKind, job: Job) -> _Fit:
        key = self._fit_key(k, job)
        got = self._fits.get(key)
        if got is not None:
            return got
        mixed = key[-1]
        t = self.t
        need = Need(t, replace(k, jobs=[]))
        ok = need.place_ok(t, np.arange(t.n))
        masks: dict[int, np.ndarray] = {}
        usable_t: dict[int, np.ndarray] = {}
        if not k.gpu_count:
            masks[ANY_MODEL] = ok
        else:  # by GPU type (model and VRAM): a few types stand for every node
            types = t.type_first_row
            u = need.gpu_ok(t, types)
            if mixed:
                usable_t[ANY_MODEL] = u
            else:
                model = t.gpu_model[types]
                for m in np.unique(model[u]).tolist():
                    usable_t[m] = u & (model == m)
            for m, um in usable_t.items():
                mask = ok & (um.sum(axis=1) >= k.gpu_count)[t.gpu_type]
                if mask.any():
                    masks[m] = mask
        got = self._fits[key] = _Fit(need, k.gpu_share_milli or WHOLE_GPU_MILLI, masks, usable_t)
        got.biggest = self._biggest[key]
        return got

    def _level_order(self) -> None:
        """The nodes that take new work and declare a label, by (label, free GPU milli, free CPU + memory
        fraction, row) when the level starts: the order every pool of the level keeps; and that moment's free
        room, which pools built later in the level bring up to date from `_changed`."""
        if self._order_level == self._level_no:
            return
        t = self.t
        cpu, mem, disk, gpu = self.free.arrays()
        self._start = (cpu.copy(), mem.copy(), disk.copy(), np.where(gpu > 0, gpu, 0).sum(axis=1))
        self._whole = (gpu >= WHOLE_GPU_MILLI).sum(axis=1)
        self._most = gpu.max(axis=1, initial=-1)
        live = np.flatnonzero(t.schedulable & (self.net_of >= 0))
        room = cpu[live] * self._inv_cpu[live] + mem[live] * self._inv_mem[live]
        o = np.lexsort((live, room, self._start[3][live], self.net_of[live]))
        self._order = live[o]
        self._rank = np.full(t.n, -1, np.int64)
        self._rank[self._order] = np.arange(len(self._order))
        self._order_level = self._level_no

    def _build_pools(self, fit: _Fit, k: JobKind) -> None:
        self._level_order()
        t = self.t
        cpu, mem, disk, gpu_milli = self._start
        fit.pools = []
        fit.level = self._level_no
        for m, mask in fit.masks.items():
            at = np.flatnonzero(mask[self._order])
            if not len(at):
                continue
            rows = self._order[at]
            gpus = np.zeros(len(rows), np.int64)
            usable_t = fit.usable_t.get(m, np.zeros((0, 0), np.bool_))
            if k.gpu_count:
                # whole GPUs of a type the task may use entirely: the free whole GPUs; else GPU by GPU
                whole = (usable_t == t.gpu_valid[t.type_first_row]).all(axis=1)[t.gpu_type[rows]]
                if not k.gpu_share_milli:
                    gpus[whole] = self._whole[rows[whole]]
                elif k.gpu_count == 1:  # a share of one GPU: whether some GPU has room for it is enough
                    gpus[whole] = self._most[rows[whole]] >= k.gpu_share_milli
                else:
                    whole[:] = False
                rest = rows[~whole]
                if len(rest):
                    gpu = self.free.arrays()[3]
                    ok = usable_t[t.gpu_type[rest]] & (gpu[rest] >= fit.per_gpu)
                    gpus[~whole] = ok.sum(axis=1)
            pool = _Pool(
                m,
                fit.need if m == ANY_MODEL else self._model_need(fit, k, m),
                usable_t,
                at,
                rows,
                self.net_of[rows],
                cpu[rows],
                mem[rows],
                disk[rows],
                gpus,
                gpu_milli[rows],
                t.price_gpu[rows],
                t.price_cpu[rows],
            )
            self._sync(fit, pool)  # the level's placements so far
            fit.pools.append(pool)
            self.rows_left -= 4 * len(rows)  # a build reads a few columns per row

    def _model_need(self, fit: _Fit, k: JobKind, m: int) -> Need:
        got = fit.by_model.get(m)
        if got is None:
            only = replace(k, jobs=[], gpu_models=frozenset({self.t.model_names[m]}))
            got = fit.by_model[m] = Need(self.t, only)
        return got

    def _sync(self, fit: _Fit, pool: _Pool) -> None:
        """Bring the pool's copy of the free room up to date with the rows changed since it last looked."""
        changed = self._changed
        if pool.synced == len(changed):
            return
        f = self.free
        t = self.t
        rows = np.fromiter(set(changed[pool.synced :]), np.int64)
        rank = self._rank[rows]
        i = np.minimum(np.searchsorted(pool.at, rank), len(pool.at) - 1)
        mine = (rank >= 0) & (pool.at[i] == rank)
        for r, p in zip(rows[mine].tolist(), i[mine].tolist(), strict=True):
            pool.cpu[p], pool.mem[p], pool.disk[p] = f.cpu[r], f.mem[r], f.disk[r]
            g = f.gpu[r]
            pool.gpu_milli[p] = sum(x for x in g if x > 0)
            if len(pool.usable_t):
                ok = pool.usable_t[t.type_list[r]]
                pool.gpus[p] = sum(1 for q, x in enumerate(g) if x >= fit.per_gpu and ok[q])
        pool.synced = len(changed)

    # ---- free room ----
    def _fits_now(self, pool: _Pool, job: Job) -> np.ndarray:
        """Which of the pool's nodes can take one task now, exactly as `Free.take` would, within the bid (the
        rule of `_Round.price_ok`: one task's ask times the gang)."""
        d = job.demand
        ok = (pool.cpu >= d.cpu_milli) & (pool.mem >= d.memory_mib)
        if d.disk_mib > 0:
            ok &= pool.disk >= d.disk_mib
        if d.gpu_count:
            ok &= pool.gpus >= d.gpu_count
        if job.bid_per_hour is not None:
            ok &= self._ask(pool, job) * job.gang_size <= job.bid_per_hour + 1e-9
        return ok

    @staticmethod
    def _ask(pool: _Pool, job: Job, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        d = job.demand
        return d.gpu_count * pool.pg[idx] + d.cpu_milli / 1000.0 * pool.pc[idx]

    def _left(self, pool: _Pool, job: Job, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per node after one task: free GPU milli, fraction of CPU + memory, and the ask."""
        d = job.demand
        rows = pool.rows[idx]
        gpu_left = pool.gpu_milli[idx] - d.gpu_milli_total
        room = (pool.cpu[idx] - d.cpu_milli) * self._inv_cpu[rows]
        room += (pool.mem[idx] - d.memory_mib) * self._inv_mem[rows]
        return gpu_left, room, self._ask(pool, job, idx)

    def _free_pick(self, job: Job, fit: _Fit) -> tuple[_Pick | None, list[tuple[int, int, int]]]:
        """The best N nodes of one pool that fit now, or None and the most that do per (label, model)."""
        n_tasks = job.gang_size
        L = len(self.labels)
        best: tuple[tuple, _Pool, np.ndarray] | None = None
        most: list[tuple[int, int, int]] = []
        for pool in fit.pools:
            self._sync(fit, pool)
            self.rows_left -= len(pool.rows)
            fp = np.flatnonzero(self._fits_now(pool, job))
            if not len(fp):
                continue
            fn = pool.net[fp]  # sorted: the pool is in label order
            counts = np.bincount(fn, minlength=L)
            top = int(counts.argmax())
            most.append((int(counts[top]), top, pool.model))
            nets = np.flatnonzero(counts >= n_tasks)
            if not len(nets):
                continue
            s = np.searchsorted(fn, nets)
            first = fp[s[:, None] + np.arange(n_tasks)]  # each label's first N that fit, in the pool's order
            gpu_left, room, ask = (x.sum(axis=1) for x in self._left(pool, job, first))
            o = int(np.lexsort((nets, ask, room, gpu_left))[0])
            key = (int(gpu_left[o]), float(room[o]), float(ask[o]), int(nets[o]), pool.model)
            if best is None or key < best[0]:
                best = (key, pool, fp[s[o] : s[o] + counts[nets[o]]])
        if best is None:
            return None, most
        key, pool, seg = best
        gpu_left, room, ask = self._left(pool, job, seg)
        o = _smallest(n_tasks, (gpu_left, room, ask, pool.rows[seg]))
        self.rows_left -= len(seg)
        return _Pick(pool, pool.rows[seg[o]].tolist(), {}, key), most

    # ---- room from lower-priority work ----
    def _preempt_pick(self, job: Job, fit: _Fit) -> _Pick | None:
        """The cheapest label to complete by pre-emption: its nodes that fit freely plus its cheapest to free.

        Labels are tried by a lower bound of what freeing them costs (the cheapest victim per node), and a
        label's nodes in that order, so most are ruled out without an exact look; exact looks per job are
        bounded as the `Preemptor` bounds them per task."""
        p = self.preemptor
        n_tasks = job.gang_size
        d = job.demand
        v_rows, v_lb, cpu_rel, mem_rel, gpu_rel = p.victim_rows(job.priority)
        if not len(v_rows):
            return None
        L = len(self.labels)
        plans: list[tuple[float, int, _Pool, np.ndarray, np.ndarray, np.ndarray]] = []
        for pool in fit.pools:
            ok = self._fits_now(pool, job)
            afford = np.ones(len(ok), np.bool_)
            if job.bid_per_hour is not None:
                afford = self._ask(pool, job) * n_tasks <= job.bid_per_hour + 1e-9
            self.rows_left -= len(pool.rows) + len(v_rows)
            rank = self._rank[v_rows]
            at = np.minimum(np.searchsorted(pool.at, rank), len(pool.at) - 1)
            inside = (rank >= 0) & (pool.at[at] == rank)  # in the pool, affordable and short of room now
            inside[inside] &= (afford & ~ok)[at[inside]]
            if not inside.any():
                continue
            cand = v_rows[inside]  # cheapest victim first
            cpu, mem, _, gpu = self.free.arrays()
            enough = (cpu[cand] + cpu_rel[inside] >= d.cpu_milli) & (
                mem[cand] + mem_rel[inside] >= d.memory_mib
            )
            if d.gpu_count:
                g = gpu[cand]
                enough &= np.where(g > 0, g, 0).sum(axis=1) + gpu_rel[inside] >= d.gpu_milli_total
            cand, lb = cand[enough], v_lb[inside][enough]
            cand_net = self.net_of[cand]
            free_rows, free_net = pool.rows[ok], pool.net[ok]
            free_counts = np.bincount(free_net, minlength=L)
            for i in np.flatnonzero(free_counts + np.bincount(cand_net, minlength=L) >= n_tasks).tolist():
                short = n_tasks - int(free_counts[i])
                mine = cand_net == i
                plans.append(
                    (float(lb[mine][:short].sum()), i, pool, free_rows[free_net == i], cand[mine], lb[mine])
                )
        plans.sort(key=lambda x: (x[0], x[1], x[2].model))
        checks = MAX_NODES_PER_TASK * n_tasks
        best: _Pick | None = None
        for bound, i, pool, free_rows, cand, lb in plans:
            if checks <= 0 or (best is not None and bound >= best.key[0]):
                break
            short = n_tasks - len(free_rows)
            options: list[tuple[float, int, int, list[Allocation]]] = []
            for r, low in zip(cand.tolist(), lb.tolist(), strict=True):
                if checks <= 0 or (len(options) >= short and low >= options[short - 1][0]):
                    break
                checks -= 1
                got = p.cheapest_room(r, job, pool.need)
                if got is not None:
                    options.append((got[0], len(got[1]), r, got[1]))
                    options.sort(key=lambda o: o[:3])
            if len(options) < short:
                continue
            chosen = options[:short]
            key = (sum(o[0] for o in chosen), sum(o[1] for o in chosen), i, pool.model)
            if best is None or key < best.key:
                rows = free_rows.tolist() + [o[2] for o in chosen]
                best = _Pick(pool, rows, {o[2]: o[3] for o in chosen}, key)
        if best is None:
            return None
        if best.key[1] > p.budget or (
            job.bid_per_hour is not None and job.bid_per_hour * PAYBACK_HOURS < best.key[0]
        ):
            return None
        return best

    # ---- decisions ----
    def _commit(self, job: Job, pick: _Pick) -> bool:
        """Take the pick's room (pre-empting its victims) and emit the starts, head first; False (nothing
        changed) if a node turns out not to fit."""
        f = self.free
        t = self.t
        d = job.demand
        need = pick.pool.need
        victims = [a for r in pick.rows for a in pick.victims.get(r, ())]
        for a in victims:
            f.release(a)
        taken: list[tuple[int, list[int]]] = []
        for r in pick.rows:
            pos = f.take(r, d, need.gpu_ok_list(t, r))
            if pos is None:  # cannot happen: every row was checked against this state
                for rr, pp in taken:
                    f.give(rr, d, pp)
                for a in victims:
                    f.hold(a)
                return False
            taken.append((r, pos))
        self._changed.extend(pick.rows)
        if victims:
            self.preemptor.record(job, job.priority, victims)

        def head_rank(i: int) -> tuple[float, float, int]:
            r = taken[i][0]
            room = f.cpu[r] / max(int(t.cpu_total[r]), 1) + f.mem[r] / max(int(t.mem_total[r]), 1)
            return (-float(t.reliability[r]), -room, r)

        head = min(range(len(taken)), key=head_rank)
        order = [taken[head]] + taken[:head] + taken[head + 1 :]
        for task, (r, pos) in enumerate(order):
            gpus = t.gpu_indices(r, pos) if pos else ()
            self.decisions.starts.append(Start(job.id, t.ids[r], gpus, d.gpu_share_milli, task))
        return True

    # ---- reasons ----
    def _static(self, fit: _Fit, job: Job) -> tuple[str | None, str | None]:
        """(why the job can never run on the network as it is, why no free room would let it run now)."""
        if fit.all_fine is None:
            fit.all_fine = self._static_text(fit, *fit.biggest) == (None, None)
        if fit.all_fine:
            return None, None
        d = job.demand
        key = (job.gang_size, d.cpu_milli, d.memory_mib, d.disk_mib)
        got = fit.reasons.get(key)
        if got is None:
            got = fit.reasons[key] = self._static_text(fit, job.gang_size, d)
        return got

    def _static_text(self, fit: _Fit, n_tasks: int, d: Demand) -> tuple[str | None, str | None]:
        t = self.t
        big = (t.cpu_total >= d.cpu_milli) & (t.mem_total >= d.memory_mib)
        if d.disk_mib > 0:
            big &= t.disk_total >= d.disk_mib
        masks = {m: v & big for m, v in fit.masks.items() if (v & big).any()}
        if not masks:
            why = static_misfit(t, d, 1, fit.need, np.arange(t.n), np.ones(t.n, np.int64))
            if why is None:  # each node's usable GPUs are enough only across models
                why = (
                    f"needs {_gpu_words(d)} of one model on each node (mixed_gpu_models is off); "
                    "no node has that many of one model"
                )
            return why, None
        if not self.labels:
            return (
                f"a job of {n_tasks} nodes needs {n_tasks} nodes of one network that reach each other; "
                "no node declares a network label: nodes must declare one (their LAN or data centre)"
            ), None
        labelled = self.net_of >= 0
        shape = _shape(d, 1)
        models = len(masks) > 1
        groups, n_groups = self._largest(masks, labelled)
        if not groups or groups[0][0] < n_tasks:
            text = f"a job of {n_tasks} nodes needs {n_tasks} nodes of one network that each hold {shape}; "
            some = np.zeros(t.n, np.bool_)
            for v in masks.values():
                some |= v
            bare = int((some & ~labelled).sum())
            if not groups:
                return (
                    text + f"none of the {bare} nodes that could hold a task declares a network label",
                    None,
                )
            text += f"the largest such group has {self._groups_text(groups, n_groups, models)}"
            if bare:
                text += f"; {bare} more such node{'s' if bare > 1 else ''} declare no network label"
            if models:
                across = np.bincount(self.net_of[some & labelled], minlength=len(self.labels))
                i = int(across.argmax())
                if across[i] >= n_tasks:
                    text += (
                        f"; network '{self.labels[i]}' has {int(across[i])} counting every GPU model "
                        "(mixed_gpu_models would allow that)"
                    )
            return text, None
        live, _ = self._largest(masks, labelled & t.schedulable)
        if not live or live[0][0] < n_tasks:
            most = (
                f"; the largest group without them has {self._groups_text(live, 1, models)}" if live else ""
            )
            return None, (
                f"only with nodes that take no new work (draining or lost) are there {n_tasks} nodes of one "
                f"network that each hold {shape}{most}"
            )
        return None, None

    def _largest(
        self, masks: dict[int, np.ndarray], where: np.ndarray
    ) -> tuple[list[tuple[int, int, int]], int]:
        """The largest groups of `where` nodes by (label, model) as (nodes, label id, model), most nodes first
        (then label, model), and how many groups there are."""
        models = sorted(masks)
        counts = np.stack(
            [np.bincount(self.net_of[masks[m] & where], minlength=len(self.labels)) for m in models]
        )
        flat = counts.T.reshape(-1)  # by label, then model
        top = np.argsort(-flat, kind="stable")[:MAX_GROUPS_IN_REASON]
        groups = [(int(flat[x]), x // len(models), models[x % len(models)]) for x in top.tolist() if flat[x]]
        return groups, int(np.count_nonzero(flat))

    def _groups_text(self, groups: list[tuple[int, int, int]], n_groups: int, models: bool) -> str:
        """ "2 (network 'lab-a'), then ..." for `groups` (from `_largest`), the model named when they may
        differ in it, and how many smaller ones there are beside."""
        names = self.t.model_names
        head = ", then ".join(
            f"{c} (network '{self.labels[i]}'" + (f", {names[m]})" if models and m != ANY_MODEL else ")")
            for c, i, m in groups
        )
        more = n_groups - len(groups)
        return head + (f" and {more} smaller" if more > 0 else "")

    def _wait_text(self, job: Job, fit: _Fit, most: list[tuple[int, int, int]]) -> str:
        if job.bid_per_hour is not None:
            why = self._bid_text(job, fit)
            if why is not None:
                return why
        return self._room_text(job, fit, most)

    def _room_text(self, job: Job, fit: _Fit, most: list[tuple[int, int, int]]) -> str:
        why = f"waiting for {_room_words(job)}"
        if job.bid_per_hour is not None:
            why += " within the bid"
        if not most:
            return why
        best = min(most, key=lambda x: (-x[0], x[1], x[2]))
        return why + f"; the most with room now is {self._groups_text([best], 1, len(fit.masks) > 1)}"

    def _bid_text(self, job: Job, fit: _Fit) -> str | None:
        """Why the bid rules the job out on every label, or None when some label has N nodes within it."""
        t = self.t
        d = job.demand
        n_tasks = job.gang_size
        cheapest = np.inf
        for pool in fit.pools:
            big = (t.cpu_total[pool.rows] >= d.cpu_milli) & (t.mem_total[pool.rows] >= d.memory_mib)
            if d.disk_mib > 0:
                big &= t.disk_total[pool.rows] >= d.disk_mib
            price, net = self._ask(pool, job)[big], pool.net[big]
            o = np.lexsort((price, net))
            price, net = price[o], net[o]
            counts = np.bincount(net, minlength=len(self.labels))
            nets = np.flatnonzero(counts >= n_tasks)
            if len(nets):  # every task pays as much as the dearest of the N cheapest nodes of a label
                nth = price[np.searchsorted(net, nets) + n_tasks - 1]
                cheapest = min(cheapest, float(nth.min()) * n_tasks)
        if cheapest == np.inf or cheapest <= job.bid_per_hour + 1e-9:
            return None
        return (
            f"bid ${job.bid_per_hour:.2f}/h is below the ask of any {n_tasks} nodes of one network that could "
            f"hold it (cheapest such gang ${cheapest:.2f}/h)"
        )


def _room_words(job: Job) -> str:
    return f"{job.gang_size} nodes of one network with room for {_shape(job.demand, 1)} each"


def _smallest(n: int, keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Positions of the `n` lexicographically smallest entries of `keys` (primary first, the last unique), in
    order; by partitions key by key rather than one sort of them all (a label may hold 100,000 nodes)."""
    sure: list[np.ndarray] = []
    idx = np.arange(len(keys[0]))
    need = n
    for k in keys:
        if len(idx) <= 4 * need + 64:
            break
        v = k[idx]
        thr = np.partition(v, need - 1)[need - 1]
        sure.append(idx[v < thr])
        need -= len(sure[-1])
        idx = idx[v == thr]
    idx = np.concatenate([*sure, idx])
    return idx[np.lexsort(tuple(k[idx] for k in reversed(keys)))[:n]]
