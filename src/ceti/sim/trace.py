"""Loaders (and a pod-list writer) for the Alibaba GPU cluster trace v2023 ("openb") node and pod lists.

Columns are found by header name, so column order may vary and optional columns may be absent (the
`multigpu50` variant has only name, cpu_milli, memory_mib, num_gpu, gpu_milli). A row that cannot be used
is never used silently: it becomes a `TraceRowError` naming the file and line, and the caller decides
whether to skip it (`on_error="skip"`, the error is kept in the result) or stop (`on_error="reject"`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

OnError = Literal["skip", "reject"]

# GPU models of the openb trace (G1-G3 are Alibaba's undisclosed internal codes).
KNOWN_GPU_MODELS: frozenset[str] = frozenset({"G1", "G2", "G3", "T4", "P100", "V100M16", "V100M32", "A10"})

NODE_REQUIRED = ("sn", "cpu_milli", "memory_mib", "gpu")
NODE_OPTIONAL = ("model",)
POD_REQUIRED = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_OPTIONAL = ("gpu_spec", "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time")

MAX_GPUS_PER_NODE = 8
WHOLE_GPU_MILLI = 1000


class TraceError(ValueError):
    """A trace file that cannot be read at all (missing file, missing required header)."""


@dataclass(frozen=True, slots=True)
class TraceRowError:
    path: str
    line: int  # 1-based line number in the file (the header is line 1)
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class TraceRowRejected(TraceError):
    """Raised with `on_error="reject"` at the first bad row."""

    def __init__(self, error: TraceRowError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int
    gpu_model: str  # "" for a CPU-only node


@dataclass(frozen=True, slots=True)
class TracePod:
    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int
    gpu_milli: int  # per GPU: 1000 = whole GPUs, 1..999 = a share of one GPU, 0 for a CPU pod
    gpu_spec: str = ""  # raw constraint as written, e.g. "V100M16|V100M32"; "" = any model
    gpu_models: frozenset[str] = frozenset()  # parsed gpu_spec; empty = any model
    qos: str = ""
    pod_phase: str = ""
    creation_time: int | None = None
    deletion_time: int | None = None
    scheduled_time: int | None = None

    @property
    def gpu_milli_total(self) -> int:
        return self.gpu_count * self.gpu_milli

    @property
    def is_gpu_share(self) -> bool:
        return self.gpu_count == 1 and 0 < self.gpu_milli < WHOLE_GPU_MILLI


R = TypeVar("R")


@dataclass(slots=True)
class TraceLoad(Generic[R]):
    """Rows that were read, and the rows that were skipped with why."""

    rows: list[R] = field(default_factory=list)
    errors: list[TraceRowError] = field(default_factory=list)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "reject"):
        raise ValueError(f"on_error must be 'skip' or 'reject', not {on_error!r}")


def _read_rows(path: Path, required: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise TraceError(f"{path}:1: empty file, no header") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(f"{path}:1: header lacks required column(s) {', '.join(missing)}")
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield line, {"__bad__": f"has {len(values)} fields, the header has {len(header)}"}
                continue
            yield line, {h: v.strip() for h, v in zip(header, values, strict=True)}


def _int_field(row: dict[str, str], column: str, *, required: bool = True) -> int | None:
    raw = row.get(column, "")
    if raw == "":
        if required:
            raise ValueError(f"missing value for {column}")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{column}={raw!r} is not a number") from None
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{column}={raw!r} is not a whole number")
    if value < 0:
        raise ValueError(f"{column}={raw!r} is negative")
    return int(value)


def parse_gpu_spec(spec: str, known_models: frozenset[str] = KNOWN_GPU_MODELS) -> frozenset[str]:
    """`"V100M16|V100M32"` -> {"V100M16", "V100M32"}; raises ValueError naming an unknown model."""
    models = frozenset(m.strip() for m in spec.split("|") if m.strip())
    unknown = sorted(models - known_models)
    if unknown:
        raise ValueError(f"gpu_spec {spec!r} names unknown GPU model(s) {', '.join(unknown)}")
    return models


def _collect(path: Path, required: Sequence[str], parse, on_error: str) -> TraceLoad:  # type: ignore[type-arg]
    _check_on_error(on_error)
    out: TraceLoad = TraceLoad()  # type: ignore[type-arg]
    for line, row in _read_rows(path, required):
        try:
            if "__bad__" in row:
                raise ValueError(row["__bad__"])
            out.rows.append(parse(row))
        except ValueError as exc:
            error = TraceRowError(str(path), line, str(exc))
            if on_error == "reject":
                raise TraceRowRejected(error) from None
            out.errors.append(error)
    return out


def load_nodes(
    path: str | Path, *, on_error: OnError = "reject", known_models: frozenset[str] = KNOWN_GPU_MODELS
) -> TraceLoad[TraceNode]:
    """Read a node list (sn, cpu_milli, memory_mib, gpu[, model])."""

    seen: set[str] = set()

    def parse(row: dict[str, str]) -> TraceNode:
        name = row["sn"]
        if not name:
            raise ValueError("missing value for sn")
        if name in seen:
            raise ValueError(f"duplicate node {name!r}")
        cpu = _int_field(row, "cpu_milli")
        mem = _int_field(row, "memory_mib")
        gpus = _int_field(row, "gpu")
        assert cpu is not None and mem is not None and gpus is not None
        model = row.get("model", "")
        if gpus > MAX_GPUS_PER_NODE:
            raise ValueError(f"gpu={gpus} is more than {MAX_GPUS_PER_NODE} GPUs per node")
        if gpus > 0 and not model:
            raise ValueError("a GPU node without a model")
        if model and model not in known_models:
            raise ValueError(f"unknown GPU model {model!r}")
        seen.add(name)
        return TraceNode(name, cpu, mem, gpus, model if gpus > 0 else "")

    return _collect(Path(path), NODE_REQUIRED, parse, on_error)


def load_pods(
    path: str | Path, *, on_error: OnError = "reject", known_models: frozenset[str] = KNOWN_GPU_MODELS
) -> TraceLoad[TracePod]:
    """Read a pod list (name, cpu_milli, memory_mib, num_gpu, gpu_milli[, gpu_spec, qos, ...])."""

    seen: set[str] = set()

    def parse(row: dict[str, str]) -> TracePod:
        name = row["name"]
        if not name:
            raise ValueError("missing value for name")
        if name in seen:
            raise ValueError(f"duplicate pod {name!r}")
        cpu = _int_field(row, "cpu_milli")
        mem = _int_field(row, "memory_mib")
        count = _int_field(row, "num_gpu")
        milli = _int_field(row, "gpu_milli")
        assert cpu is not None and mem is not None and count is not None and milli is not None
        if count > MAX_GPUS_PER_NODE:
            raise ValueError(f"num_gpu={count} is more than {MAX_GPUS_PER_NODE}")
        if milli > WHOLE_GPU_MILLI:
            raise ValueError(f"gpu_milli={milli} is more than one GPU ({WHOLE_GPU_MILLI})")
        if count == 0 and milli != 0:
            raise ValueError(f"gpu_milli={milli} with num_gpu=0")
        if count > 0 and milli == 0:
            raise ValueError(f"num_gpu={count} with gpu_milli=0")
        if count > 1 and milli != WHOLE_GPU_MILLI:
            raise ValueError(f"a share of a GPU (gpu_milli={milli}) over num_gpu={count} GPUs")
        spec = row.get("gpu_spec", "")
        models = parse_gpu_spec(spec, known_models) if spec else frozenset()
        seen.add(name)
        return TracePod(
            name=name,
            cpu_milli=cpu,
            memory_mib=mem,
            gpu_count=count,
            gpu_milli=milli,
            gpu_spec=spec if count > 0 else "",
            gpu_models=models if count > 0 else frozenset(),
            qos=row.get("qos", ""),
            pod_phase=row.get("pod_phase", ""),
            creation_time=_int_field(row, "creation_time", required=False),
            deletion_time=_int_field(row, "deletion_time", required=False),
            scheduled_time=_int_field(row, "scheduled_time", required=False),
        )

    return _collect(Path(path), POD_REQUIRED, parse, on_error)


def write_pods(path: str | Path, pods: Sequence[TracePod]) -> None:
    """A pod list in the trace's CSV format (the columns `load_pods` reads; empty where a time is unknown), which reads back the same."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*POD_REQUIRED, *POD_OPTIONAL])
        for p in pods:
            writer.writerow(
                [
                    p.name,
                    p.cpu_milli,
                    p.memory_mib,
                    p.gpu_count,
                    p.gpu_milli,
                    p.gpu_spec,
                    p.qos,
                    p.pod_phase,
                    "" if p.creation_time is None else p.creation_time,
                    "" if p.deletion_time is None else p.deletion_time,
                    "" if p.scheduled_time is None else p.scheduled_time,
                ]
            )
