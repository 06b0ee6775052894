"""The scheduling round's inner loops, compiled (numba): the flow's arcs (`plan_arcs`), its packing onto
the classes it chose (`pack_kinds`), the spill (`spill_kinds`, `spill_rows`, `spill_gang`) and the per-node
features node classes group by (`node_features`).

The rules are the ones `schedule._Round` and `classes.node_classes` document; this module only runs them over
arrays instead of Python objects, a whole level's kinds per call: at 100k jobs these loops run once per
placed job or once per node and class, and in Python they were most of the round. Decisions are bit for bit
those of the rules written in Python before them (same order, same float operations): the tests hold the
arc costs to `schedule.arc_cost` and the GPU choice to `packing.choose_gpus`, and every rule test of the
round runs through them.

The arrays come in named bundles (`Room`, `Nodes`, `Kinds`, `Jobs`, `Classes`, ...), which numba reads field
by field at no cost. The free room (`Room`, `GpuSummary`) is changed in place; `Free.absorb` brings the Python
side up to date afterwards.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

WHOLE = 1000  # milli-GPU of one whole GPU (model.WHOLE_GPU_MILLI; a literal so numba folds it)


# ---- what the kernels read and write, in bundles: numba reads a named tuple's fields at no cost ----
class Room(NamedTuple):
    """Each node's free room, by row (`packing.Free.arrays`); the kernels take from it in place."""

    cpu: np.ndarray  # milli-CPU
    mem: np.ndarray  # MiB
    disk: np.ndarray  # MiB
    gpu: np.ndarray  # (nodes, G): free milli per GPU position


class Nodes(NamedTuple):
    """What a round does not change of each node, by row (`classes.NodeTable`)."""

    gpu_model: np.ndarray  # (nodes, G): model id per GPU position, -1 past the node's GPUs
    gpu_vram: np.ndarray  # (nodes, G): MiB
    price_gpu: np.ndarray  # ask per GPU-hour
    price_cpu: np.ndarray  # ask per core-hour
    homogeneous: np.ndarray  # whether all its GPUs are of one type
    gpu_type: np.ndarray  # its GPU type (a type of its own where they are mixed)


class GpuSummary(NamedTuple):
    """Per node, its whole free GPUs and the most milli free on one GPU (`packing.Free.gpu_summary`); the
    spill keeps them up to date."""

    whole: np.ndarray
    most: np.ndarray


class GpuAsk(NamedTuple):
    """What one task of kind `kind` asks of a node's GPUs."""

    model_ok: np.ndarray  # (kinds, models): whether a kind may use a model
    kind: int
    masked: bool  # whether some GPUs may not do (model or VRAM): each is then checked (`_usable`)
    min_vram: int
    count: int  # GPUs per task (0: none)
    share: int  # milli of each (0: whole GPUs)


class Jobs(NamedTuple):
    """The job columns: each job's CPU, memory, disk and bid per hour (inf: none)."""

    cpu: np.ndarray
    mem: np.ndarray
    disk: np.ndarray
    bid: np.ndarray


class Kinds(NamedTuple):
    """A run of kinds: kind i's jobs are `jobs[i]:jobs[i+1]` of the job columns, and what its tasks ask."""

    jobs: np.ndarray
    gang: np.ndarray
    count: np.ndarray  # GPUs per task
    share: np.ndarray  # milli of each (0: whole)
    constrained: np.ndarray  # whether it may use only some models or needs VRAM
    min_vram: np.ndarray
    model_ok: np.ndarray  # (kinds, models)


class Classes(NamedTuple):
    """Node classes (`classes.NodeClasses`): class c's members are `rows[bounds[c]:bounds[c+1]]`."""

    rows: np.ndarray
    bounds: np.ndarray
    count: np.ndarray
    region: np.ndarray  # place id
    gpu_type: np.ndarray
    whole: np.ndarray  # free whole GPUs of each member
    partial_min: np.ndarray  # free milli on the best partly used GPU, least and most over the members
    partial_max: np.ndarray
    cpu_max: np.ndarray
    mem_max: np.ndarray
    cpu_mean: np.ndarray
    mem_mean: np.ndarray
    price_gpu: np.ndarray  # the members' mean asks, and the least
    price_cpu: np.ndarray
    price_gpu_min: np.ndarray
    price_cpu_min: np.ndarray
    reliability: np.ndarray  # the members' mean


class Pricing(NamedTuple):
    """What `schedule.arc_cost` weighs an ask against: the dearest asks, and the cost's scale and cap."""

    max_pg: float
    max_pc: float
    max_cost: int
    cost_scale: float


class KindLookups(NamedTuple):
    """Per kind of a run, rows of shared lookups (kinds alike share a row) and what prices its arcs."""

    place: np.ndarray  # row of `place_rows`: per place id, whether the kind may run there
    place_rows: np.ndarray
    type: np.ndarray  # row of `type_rows`: per GPU type, whether the kind may use it
    type_rows: np.ndarray
    speed: np.ndarray  # row of `speed_rows`: its speed on each class
    speed_rows: np.ndarray
    horizon: np.ndarray  # hours a node failure would throw away (`classes.horizon_of`)
    priced: np.ndarray  # whether some job of the kind has no bid (then the ask counts in its cost)
    ask: np.ndarray  # kinds that ask the same of a node share an id: they share their failures


class FlowKinds(NamedTuple):
    """The kinds of a level as the flow's arcs see them (`plan_arcs`)."""

    supply: np.ndarray  # tasks not placed yet
    cpu: np.ndarray  # their mean CPU and memory
    mem: np.ndarray
    least_cpu: np.ndarray
    top_bid: np.ndarray  # the highest bid per task (inf: some job has none)
    count: np.ndarray  # GPUs per task
    share: np.ndarray  # milli of each (0: whole)
    horizon: np.ndarray  # hours a node failure would throw away (`classes.horizon_of`)
    ok: np.ndarray  # row of `ok_rows`: the classes whose places and GPUs the kind may use (-1: no arcs)
    speed: np.ndarray  # row of `speed_rows`: its speed on each class
    ok_rows: np.ndarray
    speed_rows: np.ndarray


class Arcs(NamedTuple):
    """Where `plan_arcs` writes the arcs: kind, capacity node, capacity in tasks and cost per task."""

    kind: np.ndarray
    node: np.ndarray
    cap: np.ndarray
    cost: np.ndarray


class Placements(NamedTuple):
    """Where the kernels write what they place: placement i is task `task[i]` of job `job[i]` on row
    `row[i]`, GPU positions `gpus[i, :count]` in the order taken."""

    job: np.ndarray
    row: np.ndarray
    gpus: np.ndarray
    task: np.ndarray


class Mirror(NamedTuple):
    """The spill's class-ordered copy of its members' room (`spill_kinds`): per position of `Classes.rows`,
    free CPU, memory, disk, whole free GPUs, most milli free on one GPU, whether its GPUs are all of one
    type, and its GPU type; `pos_of[r]` is row r's position (-1: in no class). Empty: none kept."""

    table: np.ndarray
    pos_of: np.ndarray


@njit(cache=True, nogil=True)
def _usable(ask: GpuAsk, model: int, vram: int) -> bool:
    if model < 0 or not ask.model_ok[ask.kind, model]:
        return False
    return ask.min_vram == 0 or vram >= ask.min_vram


@njit(cache=True, nogil=True)
def _choose(row: np.ndarray, ask: GpuAsk, models: np.ndarray, vrams: np.ndarray, out: np.ndarray) -> bool:
    """`packing.choose_gpus` on one node's row (its GPUs' free milli, models and VRAM): fills
    `out[:ask.count]` and takes the GPUs, or returns False."""
    G = row.shape[0]
    masked = ask.masked
    count = ask.count
    share = ask.share
    if share:
        if count == 1:
            best = -1
            best_free = WHOLE + 1
            for p in range(G):
                f = row[p]
                if share <= f < best_free and (not masked or _usable(ask, models[p], vrams[p])):
                    best = p
                    best_free = f
            if best < 0:
                return False
            row[best] -= share
            out[0] = best
            return True
        # the `count` fitting GPUs with least free milli, ties to the lower position
        n = 0
        for p in range(G):
            if row[p] >= share and (not masked or _usable(ask, models[p], vrams[p])):
                n += 1
        if n < count:
            return False
        taken = np.zeros(G, np.bool_)
        for i in range(count):
            best = -1
            for p in range(G):
                if taken[p] or row[p] < share:
                    continue
                if masked and not _usable(ask, models[p], vrams[p]):
                    continue
                if best < 0 or row[p] < row[best]:
                    best = p
            taken[best] = True
            out[i] = best
        for i in range(count):
            row[out[i]] -= share
        return True
    n = 0
    for p in range(G):  # the first `count` whole free GPUs
        if row[p] >= WHOLE and (not masked or _usable(ask, models[p], vrams[p])):
            out[n] = p
            n += 1
            if n == count:
                break
    if n < count:
        return False
    for i in range(count):
        row[out[i]] -= WHOLE
    return True


@njit(cache=True, nogil=True)
def _place_gang(
    room: Room,
    nodes: Nodes,
    ask: GpuAsk,
    gang: int,
    rows: np.ndarray,
    start: int,
    scan_rows: int,
    dead: np.ndarray,
    jc: int,
    jm: int,
    jd: int,
    jb: float,
    hide: bool,
    g_rows: np.ndarray,
    g_pos: np.ndarray,
) -> tuple[bool, int]:
    """One gang on `rows[start:]`: all its tasks (rows in `g_rows`, GPU positions in `g_pos`) or none.

    Looks at up to `scan_rows` members that lack room (after the front ones with no GPUs for the kind, which
    move the returned start on for good). With `dead` (a flag per node, else empty), rows found without such
    GPUs are flagged and skipped instead of counted. A bid of inf is none; with `hide`, rows above the bid
    are not there at all (as if `rows` held only those within it).
    """
    cpu, mem, disk, gpu = room
    price_gpu = nodes.price_gpu
    price_cpu = nodes.price_cpu
    count = ask.count
    share = ask.share
    n = rows.shape[0]
    i = start
    seen = 0
    placed = 0
    has_bid = jb != np.inf
    per_cpu = jc / 1000.0
    use_dead = dead.shape[0] > 0
    while i < n:
        r = rows[i]
        if use_dead and dead[r]:
            i += 1
            continue
        if hide and has_bid and (count * price_gpu[r] + per_cpu * price_cpu[r]) * gang > jb + 1e-9:
            if i == start:
                start += 1
            i += 1
            continue
        if (
            cpu[r] < jc
            or mem[r] < jm
            or (jd > 0 and disk[r] < jd)
            or (has_bid and (count * price_gpu[r] + per_cpu * price_cpu[r]) * gang > jb + 1e-9)
        ):
            seen += 1
            if seen >= scan_rows:
                break
            i += 1
            continue
        if count:
            ok = _choose(gpu[r], ask, nodes.gpu_model[r], nodes.gpu_vram[r], g_pos[placed])
            if not ok and placed > 0 and g_rows[placed - 1] == r:
                i += 1  # full with this gang's own tasks, which a miss gives back: not for good
                continue
            if not ok:  # no GPUs for the kind here any more: for good, not just for this job
                if i == start:
                    start += 1
                elif use_dead:
                    dead[r] = True
                else:
                    seen += 1
                    if seen >= scan_rows:
                        break
                i += 1
                continue
        cpu[r] -= jc
        mem[r] -= jm
        disk[r] -= jd
        g_rows[placed] = r
        placed += 1  # the same node may take more tasks of the gang: stay on it
        if placed == gang:
            return True, start
    per = share if share else WHOLE
    for t in range(placed):
        r = g_rows[t]
        cpu[r] += jc
        mem[r] += jm
        disk[r] += jd
        for g in range(count):
            gpu[r, g_pos[t, g]] += per
    return False, start


@njit(cache=True, nogil=True)
def pack_kinds(
    room: Room,
    nodes: Nodes,
    class_rows: np.ndarray,
    class_bounds: np.ndarray,
    kinds: Kinds,
    jobs: Jobs,
    k_plans: np.ndarray,
    p_class: np.ndarray,
    p_quota: np.ndarray,
    p_slot: np.ndarray,
    cursors: np.ndarray,
    scan_rows: int,
    max_misses: int,
    out: Placements,
) -> int:
    """Kinds in order, each over its plan's classes in order, jobs in queue order; returns placements made.

    Kind i's plan entries are `k_plans[i]:k_plans[i+1]` (class, tasks the flow sent there, cursor slot or
    -1). A gang reads its class's cursor but does not move it: it may pass a member only its own (rolled
    back) tasks filled.
    """
    cpu, mem, disk, gpu = room
    gpu_model = nodes.gpu_model
    gpu_vram = nodes.gpu_vram
    k_jobs, k_gang, k_count, k_share, k_constrained, k_min_vram, model_ok = kinds
    j_cpu, j_mem, j_disk, j_bid = jobs
    out_job, out_row, out_gpus, out_task = out
    n_out = 0
    G = gpu.shape[1]
    left = np.empty(j_cpu.shape[0], np.int64)
    nxt = np.empty(j_cpu.shape[0], np.int64)
    pos = np.empty(max(G, 1), np.int64)
    g_rows = np.empty(max(k_gang.max(), 1) if k_gang.shape[0] else 1, np.int64)
    g_pos = np.empty((g_rows.shape[0], max(G, 1)), np.int64)
    no_dead = np.zeros(0, np.bool_)
    # failed job shapes since the last placement in this class: (cpu, mem, disk, bid, start) -> (short, start)
    f_c = np.empty(j_cpu.shape[0], np.int64)
    f_m = np.empty(j_cpu.shape[0], np.int64)
    f_d = np.empty(j_cpu.shape[0], np.int64)
    f_b = np.empty(j_cpu.shape[0], np.float64)
    f_s = np.empty(j_cpu.shape[0], np.int64)
    f_next = np.empty(j_cpu.shape[0], np.int64)
    f_short = np.empty(j_cpu.shape[0], np.bool_)
    for k in range(k_count.shape[0]):
        n_left = 0
        for j in range(k_jobs[k], k_jobs[k + 1]):
            left[n_left] = j
            n_left += 1
        count = k_count[k]
        share = k_share[k]
        min_vram = k_min_vram[k]
        per = share if share else WHOLE
        gang = k_gang[k]
        for e in range(k_plans[k], k_plans[k + 1]):
            if n_left == 0:
                break
            c = p_class[e]
            quota = p_quota[e]
            slot = p_slot[e]
            lo = class_bounds[c]
            n = class_bounds[c + 1] - lo
            start = cursors[slot] if slot >= 0 else 0
            ask = GpuAsk(model_ok, k, k_constrained[k], min_vram, count, share)
            constrained = k_constrained[k]
            quick_gpu = count > 0 and not constrained
            if constrained and n > 0 and nodes.homogeneous[class_rows[lo]]:
                # a class is of one GPU type: if the kind may use its first member's GPUs it may use them all
                r0 = class_rows[lo]
                for p in range(G):
                    if _usable(ask, gpu_model[r0, p], gpu_vram[r0, p]):
                        constrained = False
                        break
            ask_here = GpuAsk(model_ok, k, constrained, min_vram, count, share)
            misses = 0
            n_next = 0
            if gang > 1:
                rows = class_rows[lo : lo + n]
                for idx in range(n_left):
                    job = left[idx]
                    if quota < gang or start >= n or misses >= max_misses:
                        for rest in range(idx, n_left):
                            nxt[n_next] = left[rest]
                            n_next += 1
                        break
                    ok, start = _place_gang(
                        room, nodes, ask, gang, rows, start, scan_rows, no_dead, j_cpu[job], j_mem[job],
                        j_disk[job], j_bid[job], False, g_rows, g_pos,
                    )  # fmt: skip
                    if not ok:
                        misses += 1
                        nxt[n_next] = job
                        n_next += 1
                        continue
                    quota -= gang
                    misses = 0
                    for t in range(gang):
                        out_job[n_out] = job
                        out_row[n_out] = g_rows[t]
                        out_task[n_out] = t
                        for g in range(count):
                            out_gpus[n_out, g] = g_pos[t, g]
                        n_out += 1
                for idx in range(n_next):
                    left[idx] = nxt[idx]
                n_left = n_next
                continue
            n_failed = 0
            for idx in range(n_left):
                job = left[idx]
                if quota < 1 or start >= n or misses >= max_misses:
                    for rest in range(idx, n_left):
                        nxt[n_next] = left[rest]
                        n_next += 1
                    break
                jc = j_cpu[job]
                jm = j_mem[job]
                jd = j_disk[job]
                jb = j_bid[job]
                seen_before = -1
                for q in range(n_failed):
                    if f_c[q] == jc and f_m[q] == jm and f_d[q] == jd and f_b[q] == jb and f_s[q] == start:
                        seen_before = q
                        break
                if seen_before >= 0:
                    if f_short[seen_before]:
                        misses += 1
                    start = f_next[seen_before]
                    nxt[n_next] = job
                    n_next += 1
                    continue
                has_bid = jb != np.inf
                bid = jb + 1e-9
                per_cpu = jc / 1000.0
                key_start = start
                i = start
                seen = 0
                short = False  # some member lacked room (not just an ask above the bid)
                placed_row = -1
                while i < n:
                    r = class_rows[lo + i]
                    if quick_gpu:
                        top = -1
                        for p in range(G):
                            top = max(top, gpu[r, p])
                        if top < per:  # no GPU for the kind here any more
                            if i == start:
                                start += 1
                            else:
                                short = True
                                seen += 1
                                if seen >= scan_rows:
                                    break
                            i += 1
                            continue
                    if cpu[r] < jc or mem[r] < jm or (jd > 0 and disk[r] < jd):
                        short = True
                        seen += 1
                        if seen >= scan_rows:
                            break
                        i += 1
                        continue
                    if has_bid and count * nodes.price_gpu[r] + per_cpu * nodes.price_cpu[r] > bid:
                        seen += 1
                        if seen >= scan_rows:
                            break
                        i += 1
                        continue
                    if count:
                        ok = _choose(gpu[r], ask_here, gpu_model[r], gpu_vram[r], pos)
                        if not ok:  # no GPUs for the kind here any more: for good, not just for this job
                            if i == start:
                                start += 1
                            else:
                                short = True
                                seen += 1
                                if seen >= scan_rows:
                                    break
                            i += 1
                            continue
                    cpu[r] -= jc
                    mem[r] -= jm
                    disk[r] -= jd
                    placed_row = r
                    break
                if placed_row < 0:
                    # a bid below these members' asks says nothing about the next job: only lack of room counts
                    if short:
                        misses += 1
                    nxt[n_next] = job
                    n_next += 1
                    f_c[n_failed] = jc
                    f_m[n_failed] = jm
                    f_d[n_failed] = jd
                    f_b[n_failed] = jb
                    f_s[n_failed] = key_start
                    f_next[n_failed] = start
                    f_short[n_failed] = short
                    n_failed += 1
                    continue
                quota -= 1
                misses = 0
                n_failed = 0
                out_job[n_out] = job
                out_row[n_out] = placed_row
                out_task[n_out] = 0
                for g in range(count):
                    out_gpus[n_out, g] = pos[g]
                n_out += 1
            if slot >= 0:
                cursors[slot] = start
            for idx in range(n_next):
                left[idx] = nxt[idx]
            n_left = n_next
    return n_out


@njit(cache=True, nogil=True)
def _gpu_fit(gpu: np.ndarray, r: int, ask: GpuAsk, nodes: Nodes) -> int:
    """How many of row r's GPUs could take one more of the kind's per-GPU milli, counted up to `ask.count`
    (only whether a task fits is read)."""
    per = ask.share if ask.share else WHOLE
    fit = 0
    for p in range(gpu.shape[1]):
        if gpu[r, p] >= per and (not ask.masked or _usable(ask, nodes.gpu_model[r, p], nodes.gpu_vram[r, p])):
            fit += 1
            if fit == ask.count:
                break
    return fit


@njit(cache=True, nogil=True)
def _summarize(gpu: np.ndarray, r: int, summary: GpuSummary) -> None:
    """Row r's entry of the per-node GPU summaries (`Free.gpu_summary`): whole free GPUs, most free milli."""
    whole, most = summary
    w = 0
    top = -1
    for p in range(gpu.shape[1]):
        if gpu[r, p] >= WHOLE:
            w += 1
        top = max(top, gpu[r, p])
    whole[r] = w
    most[r] = top


@njit(cache=True, nogil=True, inline="always")
def _smallest(left: np.ndarray, n_left: int, jobs: Jobs) -> tuple[int, int, int]:
    """The least CPU, memory and disk among the jobs `left[:n_left]` (0 for none)."""
    j_cpu, j_mem, j_disk, _ = jobs
    if n_left == 0:
        return 0, 0, 0
    min_c = j_cpu[left[0]]
    min_m = j_mem[left[0]]
    min_d = j_disk[left[0]]
    for q in range(n_left):
        min_c = min(min_c, j_cpu[left[q]])
        min_m = min(min_m, j_mem[left[q]])
        min_d = min(min_d, j_disk[left[q]])
    return min_c, min_m, min_d


@njit(cache=True, nogil=True, inline="always")
def _covers(fails: np.ndarray, f_b: np.ndarray, q: int, c: int, m: int, d: int, bid: float) -> bool:
    """Whether a job asks no less and bids no more than failure `q`: its (CPU, memory, disk) ask in row `q` of
    `fails`, its bid in `f_b`."""
    return c >= fails[q, 0] and m >= fails[q, 1] and d >= fails[q, 2] and bid <= f_b[q]


@njit(cache=True, nogil=True, inline="always")
def _dominated(fails: np.ndarray, f_b: np.ndarray, n_failed: int, c: int, m: int, d: int, bid: float) -> bool:
    """Whether a job asks no less and bids no more than one of the `n_failed` that found nothing."""
    for q in range(n_failed):
        if _covers(fails, f_b, q, c, m, d, bid):
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _remember(fails: np.ndarray, f_b: np.ndarray, n_failed: int, c: int, m: int, d: int, bid: float) -> int:
    """Record a job that found nothing, for `_dominated`; returns the new count."""
    fails[n_failed, 0] = c
    fails[n_failed, 1] = m
    fails[n_failed, 2] = d
    f_b[n_failed] = bid
    return n_failed + 1


@njit(cache=True, nogil=True, inline="always")
def _failed_before(
    head: np.ndarray,
    nxt: np.ndarray,
    fails: np.ndarray,
    f_b: np.ndarray,
    ask: int,
    c: int,
    m: int,
    d: int,
    bid: float,
) -> bool:
    """Whether a job asks no less and bids no more than one that found nothing with the same ask of a node
    (`ask`) earlier in the spill: the failures of an ask are a list through `head` and `nxt`."""
    q = head[ask]
    while q >= 0:
        if _covers(fails, f_b, q, c, m, d, bid):
            return True
        q = nxt[q]
    return False


@njit(cache=True, nogil=True)
def _with_room(
    room: Room,
    nodes: Nodes,
    summary: GpuSummary,
    rows: np.ndarray,
    ask: GpuAsk,
    types: np.ndarray,
    left: np.ndarray,
    n_left: int,
    jobs: Jobs,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows with room for the smallest of the jobs `left[:n_left]` (rows only lose room, so no other row
    takes one), and per row its GPUs that fit a task (counted up to `ask.count`). `types`: per GPU type,
    whether the kind may use it."""
    cpu, mem, disk, gpu = room
    whole, most = summary
    count = ask.count
    share = ask.share
    masked = ask.masked
    min_c, min_m, min_d = _smallest(left, n_left, jobs)
    found = np.empty(rows.shape[0], np.int64)
    gfit = np.zeros(rows.shape[0], np.int64)
    n = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        if cpu[r] < min_c or mem[r] < min_m or (min_d > 0 and disk[r] < min_d):
            continue
        if count:
            if share and count > 1 or (masked and not nodes.homogeneous[r]):
                fit = _gpu_fit(gpu, r, ask, nodes)
            elif masked and not types[nodes.gpu_type[r]]:
                fit = 0
            else:  # from the per-node summaries: one read, not one per GPU
                fit = min(whole[r], count) if not share else (1 if most[r] >= share else 0)
            if fit < count:
                continue
            gfit[n] = fit
        found[n] = r
        n += 1
    return found[:n], gfit[:n]


@njit(cache=True, nogil=True)
def _mirror(r: int, room: Room, summary: GpuSummary, mirror: Mirror) -> None:
    """Copy node r's free room into the spill's class-ordered mirror, where it keeps one."""
    if mirror.pos_of.shape[0] == 0:
        return
    x = mirror.pos_of[r]
    if x >= 0:
        m = mirror.table
        m[x, 0] = room.cpu[r]
        m[x, 1] = room.mem[r]
        m[x, 2] = room.disk[r]
        m[x, 3] = summary.whole[r]
        m[x, 4] = summary.most[r]


@njit(cache=True, nogil=True)
def _room_rows(
    ranked: np.ndarray,
    lo: int,
    hi: int,
    classes: Classes,
    mirror: Mirror,
    gpu: np.ndarray,
    nodes: Nodes,
    ask: GpuAsk,
    types: np.ndarray,
    left: np.ndarray,
    n_left: int,
    jobs: Jobs,
) -> tuple[np.ndarray, np.ndarray]:
    """`_with_room` over the members of classes `ranked[lo:hi]`, read from the class-ordered mirror (in
    order, not one node here and one there)."""
    class_bounds = classes.bounds
    class_rows = classes.rows
    table = mirror.table
    count = ask.count
    share = ask.share
    masked = ask.masked
    min_c, min_m, min_d = _smallest(left, n_left, jobs)
    total = 0
    for i in range(lo, hi):
        c = ranked[i]
        total += class_bounds[c + 1] - class_bounds[c]
    found = np.empty(total, np.int64)
    gfit = np.zeros(total, np.int64)
    n = 0
    for i in range(lo, hi):
        c = ranked[i]
        for x in range(class_bounds[c], class_bounds[c + 1]):
            if table[x, 0] < min_c or table[x, 1] < min_m or (min_d > 0 and table[x, 2] < min_d):
                continue
            r = class_rows[x]
            if count:
                if share and count > 1 or (masked and not table[x, 5]):
                    fit = _gpu_fit(gpu, r, ask, nodes)
                elif masked and not types[table[x, 6]]:
                    fit = 0
                else:  # the same test as `_with_room`, from the mirror
                    fit = min(table[x, 3], count) if not share else (1 if table[x, 4] >= share else 0)
                if fit < count:
                    continue
                gfit[n] = fit
            found[n] = r
            n += 1
    return found[:n], gfit[:n]


@njit(cache=True, nogil=True)
def _first_fit(
    room: Room,
    nodes: Nodes,
    summary: GpuSummary,
    rows: np.ndarray,
    ask: GpuAsk,
    left: np.ndarray,
    n_left: int,
    jobs: Jobs,
    out: Placements,
    n_out: int,
    gfit: np.ndarray,
    mirror: Mirror,
) -> tuple[int, int]:
    """The spill for single tasks: the jobs `left[:n_left]`, in order, each onto the first of `rows` (with
    room, and per row its GPUs that fit a task: `_with_room`) that fits it now; the jobs not placed stay in
    `left`, in order. Returns (jobs left, placements made so far).

    Rows before `lo` cannot take any job of the kind any more; a job of a shape that already found a row
    starts there (rows only lose room); a job no smaller and no cheaper than one that found nothing finds
    nothing. Sets no `out.task` (the caller's: these are single tasks).
    """
    cpu, mem, disk, gpu = room
    j_cpu, j_mem, j_disk, j_bid = jobs
    count = ask.count
    n = rows.shape[0]
    min_c = _smallest(left, n_left, jobs)[0]
    rc = cpu[rows]
    rm = mem[rows]
    rd = disk[rows]
    pos = np.empty(max(gpu.shape[1], 1), np.int64)
    fails = np.empty((n_left, 3), np.int64)
    f_b = np.empty(n_left, np.float64)
    n_failed = 0
    h_c = np.empty(n_left, np.int64)
    h_m = np.empty(n_left, np.int64)
    h_d = np.empty(n_left, np.int64)
    h_b = np.empty(n_left, np.float64)
    h_row = np.empty(n_left, np.int64)
    n_hint = 0
    lo = 0
    n_next = 0
    for idx in range(n_left):
        job = left[idx]
        c = j_cpu[job]
        mm = j_mem[job]
        dk = j_disk[job]
        lim = j_bid[job]
        if _dominated(fails, f_b, n_failed, c, mm, dk, lim):
            left[n_next] = job
            n_next += 1
            continue
        while lo < n and (rc[lo] < min_c or (count > 0 and gfit[lo] < count)):
            lo += 1
        hint = -1
        h = 0
        for q in range(n_hint):
            if h_c[q] == c and h_m[q] == mm and h_d[q] == dk and h_b[q] == lim:
                hint = q
                h = h_row[q]
                break
        h = max(h, lo)
        has_bid = lim != np.inf
        found = -1
        for i in range(h, n):
            if rc[i] < c or rm[i] < mm or (dk > 0 and rd[i] < dk) or (count > 0 and gfit[i] < count):
                continue
            r = rows[i]
            if has_bid and not (count * nodes.price_gpu[r] + c / 1000.0 * nodes.price_cpu[r] <= lim + 1e-9):
                continue
            found = i
            break
        if found < 0:
            n_failed = _remember(fails, f_b, n_failed, c, mm, dk, lim)
            left[n_next] = job
            n_next += 1
            continue
        if hint < 0:
            hint = n_hint
            h_c[hint] = c
            h_m[hint] = mm
            h_d[hint] = dk
            h_b[hint] = lim
            n_hint += 1
        h_row[hint] = found
        r = rows[found]
        if count and not _choose(gpu[r], ask, nodes.gpu_model[r], nodes.gpu_vram[r], pos):
            left[n_next] = job  # cannot happen: the row was tested exactly
            n_next += 1
            continue
        cpu[r] -= c
        mem[r] -= mm
        disk[r] -= dk
        rc[found] -= c
        rm[found] -= mm
        rd[found] -= dk
        if count:
            gfit[found] = _gpu_fit(gpu, r, ask, nodes)
            _summarize(gpu, r, summary)
        _mirror(r, room, summary, mirror)
        out.job[n_out] = job
        out.row[n_out] = r
        for g in range(count):
            out.gpus[n_out, g] = pos[g]
        n_out += 1
    return n_next, n_out


@njit(cache=True, nogil=True)
def spill_rows(
    room: Room,
    nodes: Nodes,
    summary: GpuSummary,
    rows: np.ndarray,
    ask: GpuAsk,
    types: np.ndarray,
    jobs: Jobs,
    out: Placements,
) -> int:
    """`_first_fit` for one kind's jobs (all of the job columns) on `rows`; returns placements made."""
    left = np.arange(jobs.cpu.shape[0])
    rows, gfit = _with_room(room, nodes, summary, rows, ask, types, left, left.shape[0], jobs)
    no_mirror = Mirror(np.zeros((0, 7), np.int64), np.zeros(0, np.int64))
    _, n_out = _first_fit(room, nodes, summary, rows, ask, left, left.shape[0], jobs, out, 0, gfit, no_mirror)
    return n_out


@njit(cache=True, nogil=True)
def spill_gang(
    room: Room,
    nodes: Nodes,
    ask: GpuAsk,
    gang: int,
    rows: np.ndarray,
    start: int,
    dead: np.ndarray,
    jc: int,
    jm: int,
    jd: int,
    g_rows: np.ndarray,
    g_pos: np.ndarray,
) -> tuple[bool, int]:
    """The spill for one gang: every one of `rows` from `start` (already within its bid), no scan limit."""
    return _place_gang(
        room, nodes, ask, gang, rows, start, rows.shape[0] + 1, dead, jc, jm, jd, np.inf, False, g_rows, g_pos
    )


@njit(cache=True, nogil=True)
def _arc_costs(
    cand: np.ndarray,
    n: int,
    gpus: int,
    share: int,
    cpu: float,
    priced: bool,
    horizon: float,
    speed: np.ndarray,
    classes: Classes,
    pricing: Pricing,
    finish: np.ndarray,
    cost: np.ndarray,
) -> None:
    """`schedule.arc_cost` of one task on each of the classes `cand[:n]`, into `cost[:n]` (`finish`: scratch).
    Unpriced (every job of the kind bids): the ask does not count."""
    whole = classes.whole
    partial_min = classes.partial_min
    price_gpu = classes.price_gpu
    price_cpu = classes.price_cpu
    reliability = classes.reliability
    max_pg, max_pc, max_cost, cost_scale = pricing
    norm = gpus * max_pg + (cpu / 1000.0) * max_pc
    top = -np.inf
    for i in range(n):
        f = min(max(reliability[cand[i]], 0.05), 1.0)
        if horizon != 1.0:
            f = horizon * np.log(f)
            top = max(top, f)
        finish[i] = f
    for i in range(n):
        c = cand[i]
        f = finish[i]
        if horizon != 1.0:
            f = min(max(np.exp(f - top), 0.05), 1.0)
        eff = max(speed[c] * f, 0.1)
        price = gpus * price_gpu[c] + (cpu / 1000.0) * price_cpu[c] if priced else 0.0
        rel_price = price / norm if norm > 0 else 0.0
        x = cost_scale * (1.0 + rel_price) / eff
        if gpus and share:
            x += (0.0 if partial_min[c] >= share else 400.0) + 20.0 * whole[c]
        elif gpus:
            x += 40.0 * max(whole[c] - gpus, 0)
        else:
            x += 400.0 * whole[c]
        cost[i] = int(min(x, max_cost))


@njit(cache=True, nogil=True)
def _cheapest(
    cost: np.ndarray, cap: np.ndarray, n: int, need: int, min_arcs: int, max_arcs: int
) -> tuple[np.ndarray, int]:
    """The candidates (of `n`) cheapest first, ties to the lower position, until their `cap` holds `need`,
    within [min_arcs, max_arcs]: (order, how many). Sorts only a prefix: most kinds need a few classes of
    a thousand."""
    comp = cost[:n].astype(np.int64) * n + np.arange(n)  # costs are whole numbers: one distinct key each
    k = min(max(4 * min_arcs, 32), n)
    while True:
        if k < n:
            top = np.partition(comp, k - 1)[k - 1]
            sel = comp[comp <= top]
        else:
            sel = comp.copy()
        sel.sort()
        order = sel % n
        total = 0
        enough = -1
        for i in range(k):
            total += cap[order[i]]
            if total >= need:
                enough = i + 1
                break
        if enough > 0:
            return order, min(max(enough, min_arcs), max_arcs, n)
        if k >= min(max_arcs, n):
            return order, min(max_arcs, n)
        k = min(4 * k, n)


@njit(cache=True, nogil=True)
def plan_arcs(
    kinds: FlowKinds,
    classes: Classes,
    pricing: Pricing,
    min_arcs: int,
    max_arcs: int,
    arcs: Arcs,
) -> int:
    """The flow's arcs for every kind of a level (`schedule._Round._plan` documents the rule and `arc_cost`
    the cost); kinds with no supply or pinned to nodes (`ok` -1) get none. Returns the number of arcs, kind by
    kind: all of a kind's candidate classes in class order where there are at most `min_arcs`, else its
    cheapest first (ties to the lower class)."""
    supply = kinds.supply
    k_ok = kinds.ok
    cpu_mean = classes.cpu_mean
    mem_mean = classes.mem_mean
    count = classes.count
    whole = classes.whole
    partial_min = classes.partial_min
    arc_kind, arc_class, arc_cap, arc_cost = arcs
    C = cpu_mean.shape[0]
    n_arcs = 0
    cap = np.empty(C, np.int64)
    cand = np.empty(C, np.int64)
    cost = np.empty(C, np.float64)
    finish = np.empty(C, np.float64)
    for j in range(supply.shape[0]):
        if supply[j] == 0 or k_ok[j] < 0:
            continue
        cpu = kinds.cpu[j]
        mem = kinds.mem[j]
        gpus = kinds.count[j]
        share = kinds.share[j]
        top_bid = kinds.top_bid[j]
        ok = kinds.ok_rows[k_ok[j]]
        n = 0
        for c in range(C):
            if not ok[c]:
                continue
            per = 1 << 20
            if gpus:  # first the integer tests that rule most full classes out
                if share and gpus == 1:
                    per = min(per, whole[c] * (WHOLE // share) + partial_min[c] // share)
                elif share:
                    per = min(per, (whole[c] + (1 if partial_min[c] >= share else 0)) // gpus)
                else:
                    per = min(per, whole[c] // gpus)
                if per <= 0:
                    continue
            # CPU and memory by the class mean: the min would starve coarse classes; packing checks exactly
            if cpu > 0:
                per = min(per, int(cpu_mean[c] / cpu))
            if mem > 0:
                per = min(per, int(mem_mean[c] / mem))
            if per <= 0:
                continue
            if top_bid < np.inf and not (
                gpus * classes.price_gpu_min[c] + kinds.least_cpu[j] / 1000.0 * classes.price_cpu_min[c]
                <= top_bid + 1e-9
            ):
                continue
            room = max(per, 0) * count[c]
            if room > 0:
                cap[n] = room
                cand[n] = c
                n += 1
        if n == 0:
            continue
        _arc_costs(
            cand, n, gpus, share, cpu, top_bid == np.inf, kinds.horizon[j], kinds.speed_rows[kinds.speed[j]],
            classes, pricing, finish, cost,
        )  # fmt: skip
        keep = n
        if n <= min_arcs:
            order = np.arange(n)  # few enough: all of them, in class order
        else:
            order, keep = _cheapest(cost, cap, n, 2 * supply[j], min_arcs, max_arcs)
        for i in range(keep):
            o = order[i]
            arc_kind[n_arcs] = j
            arc_class[n_arcs] = cand[o] if gpus else cand[o] + C  # CPU-only work: the CPU capacity node
            arc_cap[n_arcs] = min(cap[o], supply[j])
            arc_cost[n_arcs] = int(cost[o])
            n_arcs += 1
    return n_arcs


@njit(cache=True, nogil=True)
def _spill_gangs(
    room: Room,
    nodes: Nodes,
    summary: GpuSummary,
    ranked: np.ndarray,
    classes: Classes,
    want: int,
    budget: np.ndarray,
    ask: GpuAsk,
    gang: int,
    types: np.ndarray,
    left: np.ndarray,
    n_left: int,
    jobs: Jobs,
    out: Placements,
    n_out: int,
    mirror: Mirror,
) -> tuple[int, int]:
    """The spill for gangs: each job in order, node by node over the candidate classes' rows with room,
    cheapest class first (its tasks may share a node), no scan limit. A bid job sees only the rows it can
    afford, with one cursor per (CPUs, bid); rows found without the kind's GPUs are passed by every later
    job. A job no smaller and no cheaper than one that found nothing finds nothing.

    The rows are read in growing prefixes of `ranked` (`want` rows, four times more each time, each taken
    from `budget`), as far as a job needs: a job that misses on a prefix has changed only what a scan of
    every row would have (the cursor, the rows without GPUs), so scanning on from its cursor over the longer
    prefix is that scan. Returns (jobs left, in `left`; placements made so far)."""
    class_bounds = classes.bounds
    price_gpu = nodes.price_gpu
    price_cpu = nodes.price_cpu
    j_cpu, j_mem, j_disk, j_bid = jobs
    count = ask.count
    gpu = room.gpu
    total = 0
    for i in range(ranked.shape[0]):
        c = ranked[i]
        total += class_bounds[c + 1] - class_bounds[c]
    rows = np.empty(total, np.int64)  # the rows with room read so far, in order
    n = 0
    next_class = 0
    dead = np.zeros(room.cpu.shape[0], np.bool_)
    g_rows = np.empty(gang, np.int64)
    g_pos = np.empty((gang, max(gpu.shape[1], 1)), np.int64)
    key_cpu = np.empty(n_left, np.int64)
    key_bid = np.empty(n_left, np.float64)
    key_at = np.empty(n_left, np.int64)
    n_keys = 0
    fails = np.empty((n_left, 3), np.int64)
    f_b = np.empty(n_left, np.float64)
    n_failed = 0
    n_next = 0
    for idx in range(n_left):
        job = left[idx]
        c = j_cpu[job]
        lim = j_bid[job]
        kc = c if lim != np.inf else 0
        q = -1
        for x in range(n_keys):
            if key_cpu[x] == kc and key_bid[x] == lim:
                q = x
                break
        if q < 0:
            q = n_keys
            key_cpu[q] = kc
            key_bid[q] = lim
            key_at[q] = 0
            n_keys += 1
        checked = False  # the dominance test: once, when the job first has rows to scan
        scanned = False
        placed = False
        while True:
            at = key_at[q]
            if lim != np.inf:  # the cursor's row is one the job can afford
                while (
                    at < n
                    and (count * price_gpu[rows[at]] + c / 1000.0 * price_cpu[rows[at]]) * gang > lim + 1e-9
                ):
                    at += 1
            key_at[q] = at
            if at < n:
                if not checked:
                    checked = True
                    if _dominated(fails, f_b, n_failed, c, j_mem[job], j_disk[job], lim):
                        break
                scanned = True
                placed, key_at[q] = _place_gang(
                    room, nodes, ask, gang, rows[:n], at, n + 1, dead, c, j_mem[job], j_disk[job], lim, True,
                    g_rows, g_pos,
                )  # fmt: skip
                if placed:
                    break
            # read the next classes, if the budget has them
            if next_class >= ranked.shape[0]:
                break
            read = 0
            stop = next_class
            while stop < ranked.shape[0] and read < want:
                cl = ranked[stop]
                read += class_bounds[cl + 1] - class_bounds[cl]
                stop += 1
            if read > budget[0]:
                next_class = ranked.shape[0]
                break
            budget[0] -= read
            want *= 4
            found, _ = _room_rows(
                ranked,
                next_class,
                stop,
                classes,
                mirror,
                gpu,
                nodes,
                ask,
                types,
                left[idx:],
                n_left - idx,
                jobs,
            )
            next_class = stop
            rows[n : n + found.shape[0]] = found
            n += found.shape[0]
        if not placed:
            if scanned:
                n_failed = _remember(fails, f_b, n_failed, c, j_mem[job], j_disk[job], lim)
            left[n_next] = job
            n_next += 1
            continue
        for t in range(gang):
            _summarize(gpu, g_rows[t], summary)
            _mirror(g_rows[t], room, summary, mirror)
            out.job[n_out] = job
            out.row[n_out] = g_rows[t]
            out.task[n_out] = t
            for g in range(count):
                out.gpus[n_out, g] = g_pos[t, g]
            n_out += 1
    return n_next, n_out


@njit(cache=True, nogil=True)
def spill_kinds(
    room: Room,
    nodes: Nodes,
    summary: GpuSummary,
    classes: Classes,
    kinds: Kinds,
    lookups: KindLookups,
    jobs: Jobs,
    pricing: Pricing,
    chunk_rows: int,
    gang_rows: int,
    budget: np.ndarray,
    out: Placements,
) -> int:
    """The spill for a run of kinds, in order: each kind's jobs onto every node that could still fit them,
    node classes cheapest first (`arc_cost`, priced by the kind's first job's CPUs; ties to the lower class),
    in chunks of classes a few times what the jobs need (a kind with a few jobs left reads a few classes, not
    every node that could take it; chunks are disjoint, so a job meets each in the same state as in one long
    scan). A chunk of more rows than `budget[0]` has left ends the kind's spill; the rows read are taken
    from it. Gangs scan node by node, in growing prefixes of the candidates from `gang_rows` rows on
    (`_spill_gangs`). Returns placements made."""
    class_rows = classes.rows
    count = classes.count
    whole = classes.whole
    j_cpu, j_mem, j_disk, j_bid = jobs
    k_jobs = kinds.jobs
    k_ask = lookups.ask
    C = count.shape[0]
    # the members' free room in class order, kept up to date with the nodes' (`_mirror`): chunks read it in order
    table = np.empty((class_rows.shape[0], 7), np.int64)
    pos_of = np.full(room.cpu.shape[0], -1, np.int64)
    for x in range(class_rows.shape[0]):
        r = class_rows[x]
        pos_of[r] = x
        table[x, 0] = room.cpu[r]
        table[x, 1] = room.mem[r]
        table[x, 2] = room.disk[r]
        table[x, 3] = summary.whole[r]
        table[x, 4] = summary.most[r]
        table[x, 5] = nodes.homogeneous[r]
        table[x, 6] = nodes.gpu_type[r]
    mirror = Mirror(table, pos_of)
    left = np.empty(j_cpu.shape[0], np.int64)
    cand = np.empty(C, np.int64)
    cost = np.empty(C, np.float64)
    finish = np.empty(C, np.float64)
    # single tasks that read every candidate and found nothing, per ask of a node (kinds that differ only in
    # priority, speed or horizon share one): room only shrinks, so a later job of that ask that asks no less
    # and bids no more would find nothing too, and is not scanned for
    head = np.full(int(k_ask.max()) + 1 if k_ask.shape[0] else 0, -1, np.int64)
    nxt = np.empty(j_cpu.shape[0], np.int64)
    fails = np.empty((j_cpu.shape[0], 3), np.int64)
    f_b = np.empty(j_cpu.shape[0], np.float64)
    n_fails = 0
    n_out = 0
    for k in range(kinds.count.shape[0]):
        gang = kinds.gang[k]
        ask = k_ask[k]
        n_left = 0
        for j in range(k_jobs[k], k_jobs[k + 1]):
            if gang == 1 and _failed_before(
                head, nxt, fails, f_b, ask, j_cpu[j], j_mem[j], j_disk[j], j_bid[j]
            ):
                continue
            left[n_left] = j
            n_left += 1
        if n_left == 0:
            continue
        gpus = kinds.count[k]
        share = kinds.share[k]
        gpu_ask = GpuAsk(kinds.model_ok, k, kinds.constrained[k], kinds.min_vram[k], gpus, share)
        min_cpu = j_cpu[left[0]]
        min_mem = j_mem[left[0]]
        for q in range(n_left):
            min_cpu = min(min_cpu, j_cpu[left[q]])
            min_mem = min(min_mem, j_mem[left[q]])
        places = lookups.place_rows[lookups.place[k]]
        types = lookups.type_rows[lookups.type[k]]
        n = 0
        for c in range(C):
            if not places[classes.region[c]] or classes.cpu_max[c] < min_cpu or classes.mem_max[c] < min_mem:
                continue
            if gpus:
                if kinds.constrained[k] and not types[classes.gpu_type[c]]:
                    continue
                if share:
                    if not (whole[c] >= 1 or classes.partial_max[c] >= share):
                        continue
                elif whole[c] < gpus:
                    continue
            cand[n] = c
            n += 1
        if n == 0:
            continue
        _arc_costs(
            cand, n, gpus, share, float(j_cpu[k_jobs[k]]), lookups.priced[k], lookups.horizon[k],
            lookups.speed_rows[lookups.speed[k]], classes, pricing, finish, cost,
        )  # fmt: skip
        # the candidates cheapest first (ties to the lower class), sorted only as far as the chunks read
        comp = cost[:n].astype(np.int64) * n + np.arange(n)  # whole-number costs: one distinct key each
        want = chunk_rows + 8 * n_left
        if gang > 1:
            comp.sort()
            n_left, n_out = _spill_gangs(
                room, nodes, summary, cand[comp % n], classes, gang_rows, budget, gpu_ask, gang, types, left,
                n_left, jobs, out, n_out, mirror,
            )  # fmt: skip
            continue
        k_sorted = 0
        ranked = cand[:0]
        ends = np.zeros(0, np.int64)
        lo = 0
        while n_left > 0 and lo < n:
            target = (ends[lo - 1] if lo else 0) + want
            while k_sorted < n and (k_sorted == 0 or ends[k_sorted - 1] < target):
                k_sorted = min(max(4 * k_sorted, 64), n)
                sel = np.partition(comp, k_sorted - 1)[:k_sorted] if k_sorted < n else comp.copy()
                sel.sort()
                ranked = cand[sel % n]
                ends = np.cumsum(count[ranked])
            hi = min(int(np.searchsorted(ends, target)) + 1, n)
            n_rows = ends[hi - 1] - (ends[lo - 1] if lo else 0)
            if n_rows > budget[0]:
                break
            budget[0] -= n_rows
            n_out_before = n_out
            rows, gfit = _room_rows(
                ranked, lo, hi, classes, mirror, room.gpu, nodes, gpu_ask, types, left, n_left, jobs
            )
            n_left, n_out = _first_fit(
                room, nodes, summary, rows, gpu_ask, left, n_left, jobs, out, n_out, gfit, mirror
            )
            out.task[n_out_before:n_out] = 0
            lo = hi
            want *= 4
        if lo >= n:  # every candidate read: what is left found nothing
            for q in range(n_left):
                j = left[q]
                if not _failed_before(head, nxt, fails, f_b, ask, j_cpu[j], j_mem[j], j_disk[j], j_bid[j]):
                    nxt[n_fails] = head[ask]
                    head[ask] = n_fails
                    n_fails = _remember(fails, f_b, n_fails, j_cpu[j], j_mem[j], j_disk[j], j_bid[j])
    return n_out


@njit(cache=True, nogil=True, inline="always")
def _reliable_price(pg: float, pc: float, reliability: float, top_pg: float, top_pc: float) -> float:
    """The price of reliable work on a node: (1 + ask relative to the dearest) / reliability."""
    rel_ask = pg / top_pg + pc / top_pc
    return (1.0 + rel_ask) / min(max(reliability, 0.05), 1.0)


@njit(cache=True, nogil=True)
def reliable_prices(
    price_gpu: np.ndarray, price_cpu: np.ndarray, reliability: np.ndarray, top_pg: float, top_pc: float
) -> np.ndarray:
    """`node_features`' price of reliable work for every node, against the given dearest asks."""
    out = np.empty(price_gpu.shape[0], np.float64)
    for r in range(price_gpu.shape[0]):
        out[r] = _reliable_price(price_gpu[r], price_cpu[r], reliability[r], top_pg, top_pc)
    return out


@njit(cache=True, nogil=True)
def node_features(
    rows: np.ndarray,
    cpu_free: np.ndarray,
    mem_free: np.ndarray,
    gpu_free: np.ndarray,
    gpu_type: np.ndarray,
    region: np.ndarray,
    reliability: np.ndarray,
    price_gpu: np.ndarray,
    price_cpu: np.ndarray,
    failure_edges: np.ndarray,
    by_reliability: bool,
    cpu_edges: np.ndarray,
    mem_edges: np.ndarray,
    n_regions: int,
    partial_bucket: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Per row what `classes.node_classes` groups and orders by, in one pass: whole free GPUs, the most milli
    free on a partly used GPU, free GPU milli, reliability band, the bucketed class key, and the price of
    reliable work (`_reliable_price`); then the dearest GPU and CPU asks among the rows it was priced against."""
    n = rows.shape[0]
    whole = np.zeros(n, np.int64)
    part = np.zeros(n, np.int64)
    gpu_sum = np.zeros(n, np.int64)
    band = np.zeros(n, np.int64)
    key = np.empty(n, np.int64)
    eff = np.empty(n, np.float64)
    top_pg = 0.0
    top_pc = 0.0
    for i in range(n):
        r = rows[i]
        top_pg = max(top_pg, price_gpu[r])
        top_pc = max(top_pc, price_cpu[r])
    top_pg = max(top_pg, 1e-12)
    top_pc = max(top_pc, 1e-12)
    for i in range(n):
        r = rows[i]
        w = 0
        p = 0
        total = 0
        for g in range(gpu_free.shape[1]):
            f = gpu_free[r, g]
            if f >= WHOLE:
                w += 1
            elif f > p:
                p = f
            if f > 0:
                total += f
        whole[i] = w
        part[i] = p
        gpu_sum[i] = total
        if by_reliability:
            x = 1.0 - reliability[r]
            b = 0
            for e in failure_edges:
                if e < x:
                    b += 1
            band[i] = b
        cpu_b = 0
        for e in cpu_edges:
            if e <= cpu_free[r]:
                cpu_b += 1
        mem_b = 0
        for e in mem_edges:
            if e <= mem_free[r]:
                mem_b += 1
        k = gpu_type[r]
        k = k * max(n_regions, 1) + region[r]
        k = k * (failure_edges.shape[0] + 1) + band[i]
        k = k * 64 + min(w, 63)
        k = k * 4 + p // partial_bucket
        k = k * 3 + cpu_b
        key[i] = k * 3 + mem_b
        eff[i] = _reliable_price(price_gpu[r], price_cpu[r], reliability[r], top_pg, top_pc)
    return whole, part, gpu_sum, band, key, eff, top_pg, top_pc


@njit(cache=True, nogil=True)
def static_fits(
    s_place: np.ndarray,
    s_cpu: np.ndarray,
    s_mem: np.ndarray,
    s_disk: np.ndarray,
    weight: np.ndarray,
    places: np.ndarray,
    k_place: np.ndarray,
    usable: np.ndarray,
    k_usable: np.ndarray,
    k_count: np.ndarray,
    k_share: np.ndarray,
    k_cpu: np.ndarray,
    k_mem: np.ndarray,
    k_disk: np.ndarray,
    k_gang: np.ndarray,
    out: np.ndarray,
) -> None:
    """Per kind, whether `schedule.static_misfit` finds no reason: some static node shape in the kind's places
    holds one task of its largest CPU, memory and disk with enough GPUs it may use (`usable`, per shape), and
    for a gang the shapes' nodes together hold all its tasks. Shapes: `s_place` (place id), totals and
    `weight` (nodes per shape)."""
    for k in range(k_count.shape[0]):
        count = k_count[k]
        share = k_share[k]
        need = 1 if share > 0 and count == 1 else count
        gang = k_gang[k]
        total = 0
        fits = False
        for s in range(s_cpu.shape[0]):
            if not places[k_place[k], s_place[s]]:
                continue
            u = usable[k_usable[k], s]
            if count > 0 and u < need:
                continue
            if (
                (k_cpu[k] > 0 and s_cpu[s] < k_cpu[k])
                or (k_mem[k] > 0 and s_mem[s] < k_mem[k])
                or (k_disk[k] > 0 and s_disk[s] < k_disk[k])
            ):
                continue
            if gang <= 1:
                fits = True
                break
            per = 1 << 20
            if k_cpu[k] > 0:
                per = min(per, s_cpu[s] // k_cpu[k])
            if k_mem[k] > 0:
                per = min(per, s_mem[s] // k_mem[k])
            if k_disk[k] > 0:
                per = min(per, s_disk[s] // k_disk[k])
            if count > 0:
                per = min(per, u * (WHOLE // share) if share > 0 and count == 1 else u // count)
            total += per * weight[s]
        out[k] = fits or (gang > 1 and total >= gang)
