"""A render job as a node operator receives it, and the renderer command that does it.

The Render Network hands a node a scene, a frame range, the engine and the tier it is paid at. The node renders
with a real renderer; Blender's command line is the default because it is free, scriptable and packaged by
Debian. Blender reads its arguments in order, so the scene comes right after `-b` and the output, engine and frame
range come before `-a` (render the animation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ceti.networks.base import NetworkError
from ceti.networks.render.pricing import tier
from ceti.networks.template import check_template, check_value, fill

BLENDER_MAX_FRAME = 1_048_574  # Blender's MAXFRAME
ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_EEVEE_NEXT", "BLENDER_WORKBENCH")
FORMATS = ("PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER", "TIFF", "TGA", "BMP")

DEFAULT_COMMAND: tuple[str, ...] = (
    "blender", "-b", "{scene}",
    "-E", "{engine}",
    "-o", "{output}",
    "-F", "{format}",
    "-s", "{start}",
    "-e", "{end}",
    "-a",
)
PLACEHOLDERS = ("scene", "engine", "output", "format", "start", "end")
REQUIRED_PLACEHOLDERS = ("scene", "start", "end")


@dataclass(frozen=True)
class RenderJob:
    """One job from the network: render frames `frame_start`..`frame_end` (inclusive) of `scene`.

    `scene` and `output` are paths inside the job's working directory; `output` is Blender's pattern, `#`
    standing for the frame number's digits.
    """

    job_id: str
    scene: str
    frame_start: int
    frame_end: int
    engine: str = "CYCLES"
    tier: str = "economy"
    output: str = "frames/frame_####"
    format: str = "PNG"

    def __post_init__(self) -> None:
        check_value("job id", self.job_id)
        check_value("scene", self.scene)
        if not self.scene.endswith(".blend") or self.scene.startswith("/"):
            raise NetworkError(f"scene {self.scene!r} must be a .blend file inside the job's working directory")
        check_value("output", self.output)
        if self.output.startswith("/"):
            raise NetworkError(f"output {self.output!r} must be inside the job's working directory")
        for name in ("frame_start", "frame_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BLENDER_MAX_FRAME:
                raise NetworkError(f"{name} {value!r} must be a whole frame number 0..{BLENDER_MAX_FRAME}")
        if self.frame_start > self.frame_end:
            raise NetworkError(f"frame range {self.frame_start}..{self.frame_end} is empty: start is after end")
        if self.engine not in ENGINES:
            raise NetworkError(f"engine {self.engine!r} is not one Blender renders with; use one of {', '.join(ENGINES)}")
        if self.format not in FORMATS:
            raise NetworkError(f"format {self.format!r} is not supported; use one of {', '.join(FORMATS)}")
        tier(self.tier)

    @property
    def frames(self) -> int:
        return self.frame_end - self.frame_start + 1


def check_command(template: Sequence[str]) -> tuple[str, ...]:
    return check_template(template, PLACEHOLDERS, REQUIRED_PLACEHOLDERS)


def render_command(job: RenderJob, template: Sequence[str] = DEFAULT_COMMAND) -> list[str]:
    return fill(check_command(template), {
        "scene": job.scene,
        "engine": job.engine,
        "output": job.output,
        "format": job.format,
        "start": job.frame_start,
        "end": job.frame_end,
    })
