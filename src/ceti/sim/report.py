"""Markdown report and plots for the inflation experiment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ceti.sim.inflation import PolicySummary

PERCENTS = list(range(131))


def markdown_report(
    summaries: Mapping[str, PolicySummary], *, nodes: str, pods: str, command: str, plot_name: str | None
) -> str:
    lines = [
        "# Workload inflation",
        "",
        f"- nodes: `{nodes}`",
        f"- pods: `{pods}`",
        f"- command: `{command}`",
        "",
        "| policy | unallocated GPUs at 100% (mean ± std) | allocation ratio at 100% | seeds |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in summaries.items():
        mean, std = s.unallocated_gpus(100)
        lines.append(f"| {name} | {mean:.1f} ± {std:.1f} | {s.allocation_ratio(100):.4f} | {len(s.runs)} |")
    if plot_name:
        lines += ["", f"![allocated GPU share vs arrived workload]({plot_name})", ""]
    rows = breakdown_rows(summaries)
    if rows:
        lines += [
            "",
            "## Where the unallocated GPUs are",
            "",
            (
                "When arrivals first reach the cluster's capacity (means over seeds): the pods that failed by "
                "then, whose GPUs are the unallocated GPUs, and the room they left, as idle GPUs and as the free "
                "milli of partly used GPUs (the five largest sizes, in GPUs)."
            ),
            "",
            "| policy | unallocated | failed pods (GPUs) | idle GPUs | room on partly used GPUs |",
            "| --- | --- | --- | --- | --- |",
            *(f"| {' | '.join(r)} |" for r in rows),
        ]
    return "\n".join(lines) + "\n"


def breakdown_rows(summaries: Mapping[str, PolicySummary]) -> list[tuple[str, str, str, str, str]]:
    """Per policy with a breakdown (`PolicySummary.breakdown`): its cells as text, for a table."""
    rows = []
    for name, s in summaries.items():
        b = s.breakdown()
        if b is None:
            continue
        failed = ", ".join(f"{k} {v['pods']:g} ({v['gpus']:g})" for k, v in b["failed_by_shape"].items())
        gaps = ", ".join(f"{k} milli: {v:g}" for k, v in b["gaps_gpus_by_free_milli"].items())
        if b["gaps_gpus_other"]:
            gaps += f", other: {b['gaps_gpus_other']:g}"
        rows.append((name, f"{b['unallocated_gpus']:g}", failed or "none", f"{b['idle_gpus']:g}", gaps or "none"))
    return rows


def plot_allocation(summaries: Mapping[str, PolicySummary], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.asarray(PERCENTS)
    for name, s in summaries.items():
        y = s.curve(PERCENTS)
        ax.plot(x, y, label=name)
        sel = x >= 80
        zoom.plot(x[sel], y[sel], label=name)
    for a in (ax, zoom):
        a.set_xlabel("arrived workload (% of GPU capacity)")
        a.set_ylabel("allocated GPUs (% of capacity)")
        a.grid(alpha=0.3)
    ax.plot(x, np.minimum(x, 100), color="grey", linestyle=":", linewidth=1)
    zoom.set_title("80% and above")
    ax.set_title(title)
    zoom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replay_report(payload: dict, command: str, plot_name: str | None) -> str:
    lines = [
        "# Trace replay",
        "",
        f"- nodes: `{payload['nodes']}` ({payload['cluster_nodes']} nodes, {payload['cluster_gpus']} GPUs replayed)",
        f"- pods: `{payload['pods']}`; load {payload['load']} (arrival times x {payload['arrival_time_scale']:.4g})",
        f"- command: `{command}`",
        "",
        "| policy | class | pods | mean wait s | p95 wait s | mean JCT s | never started | pre-empted |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in payload["policies"].items():
        for q, c in r["classes"].items():
            cells = [c["mean_queue_delay_s"], c["p95_queue_delay_s"], c["mean_completion_s"]]
            shown = " | ".join("-" if v is None else f"{v:,.0f}" for v in cells)
            lines.append(f"| {name} | {q} | {c['pods']} | {shown} | {c['never_started']} | {c['preemptions']} |")
    if plot_name:
        lines += ["", f"![allocated GPU share over time]({plot_name})", ""]
    return "\n".join(lines) + "\n"


def plot_utilization(results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        if r.utilization_curve:
            t, u = zip(*r.utilization_curve, strict=True)
            ax.plot(np.asarray(t) / 3600, np.asarray(u) * 100, label=r.policy, linewidth=1)
    ax.set_xlabel("hours since the first arrival")
    ax.set_ylabel("allocated GPUs (%)")
    ax.set_title(f"Replay: {title}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
