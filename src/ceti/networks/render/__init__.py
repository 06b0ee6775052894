"""Render Network: render frames on idle GPUs, paid per OctaneBench-hour at the job's tier."""

from ceti.networks.render.adapter import RenderAdapter, RenderConfig
from ceti.networks.render.jobs import DEFAULT_COMMAND, RenderJob, render_command
from ceti.networks.render.pricing import TIERS, estimate_node, per_gpu_score

__all__ = ["DEFAULT_COMMAND", "TIERS", "RenderAdapter", "RenderConfig", "RenderJob", "estimate_node",
           "per_gpu_score", "render_command"]
