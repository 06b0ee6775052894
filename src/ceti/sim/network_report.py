"""Table rows, markdown report and plots for `ceti sim network`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ceti.sim.network import PolicyResult

COLUMNS = (
    "policy",
    "network",
    "value $/h",
    "of LP bound",
    "idle",
    "wait mean s",
    "wait p95 s",
    "not started",
    "net pre-empted",
    "lost to failures GPU-h",
)


def _s(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def table_rows(results: Mapping[str, PolicyResult]) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        j = r.as_json()
        rows.append(
            [
                name,
                "on" if r.network_demand else "off",
                f"{r.value_per_hour:,.1f}",
                _s(j["value_share_of_bound"], "{:.1%}"),  # type: ignore[arg-type]
                f"{r.idle_share:.2%}",
                _s(j["time_to_start_mean_s"]),  # type: ignore[arg-type]
                _s(j["time_to_start_p95_s"]),  # type: ignore[arg-type]
                str(j["jobs_never_started"]),
                str(r.preempted_network),
                f"{r.developer_gpu_hours_lost_to_failures + r.network_gpu_hours_lost_to_failures:,.1f}",
            ]
        )
    return rows


def markdown_report(payload: dict, results: Mapping[str, PolicyResult], command: str, plot_name: str | None) -> str:
    w = payload["world"]
    lines = [
        "# Network simulation",
        "",
        f"- command: `{command}`",
        (f"- world: {w['nodes']} nodes, {w['gpus']} GPUs in {len(w['regions'])} regions, {w['hours']:g} h, "
        f"round {payload['round_s']:g} s, seed {payload['seed']} ({w['source']})"),
        f"- developer jobs: {w['developer_jobs']} ({w['arrival_rate_per_h']:,.0f}/h, load {w['load']:g})",
        "- network capacity (GPUs): "
        + ", ".join(f"{k} {v}" for k, v in w["network_capacity_gpus"].items()),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in table_rows(results):
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        ("Idle is GPU-hours on nodes that were up with nothing allocated, as a share of those GPU-hours. "
        "Value counts developer bids and network revenue for work that was kept (lost work earns nothing). "
        "The LP bound relaxes CPU, memory, regions, gangs, asks and lost work."),
        "",
        "| policy | developer $/h | network $/h | bound $/h | pre-empted (network / developer) | failures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        bound = "-" if r.upper_bound is None else f"{r.upper_bound / r.hours:,.1f}"
        lines.append(
            f"| {name} | {r.value_developer / r.hours:,.1f} | {r.value_network / r.hours:,.1f} | {bound} | "
            f"{r.preempted_network} / {r.preempted_developer} | {r.node_failures} |"
        )
    if plot_name:
        lines += ["", f"![GPU use over time]({plot_name})", ""]
    return "\n".join(lines) + "\n"


def plot_gpu_use(results: Mapping[str, PolicyResult], path: Path, title: str) -> None:
    """One panel per policy: GPUs held by developer work, by network work, and idle, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), sharex=True, squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], results.items(), strict=True):
        if not r.curve:
            continue
        c = np.asarray(r.curve, dtype=float)
        if len(c) > 600:
            c = c[np.linspace(0, len(c) - 1, 600).astype(int)]
        t, dev, net, up = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
        idle = np.maximum(up - dev - net, 0)
        ax.stackplot(t, dev, net, idle, labels=["developer", "network", "idle"],
                     colors=["#1f77b4", "#2ca02c", "#d62728"], linewidth=0)
        ax.set_ylabel("GPUs")
        ax.set_title(f"{name} (network demand {'on' if r.network_demand else 'off'}): idle {r.idle_share:.2%}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("hours")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
