"""Errors of an SDL document: each with the YAML path and line it concerns, all of a file at once."""

from __future__ import annotations

from dataclasses import dataclass

from ceti.networks.base import NetworkError


@dataclass(frozen=True)
class SdlProblem:
    """One thing wrong (or, as a warning, ignored) in an SDL: `path` is dotted YAML, e.g.
    `profiles.compute.web.resources.gpu.units` or `services.web.expose[0].port`."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}" if self.path else "(document)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "message": self.message}


class SdlError(NetworkError):
    """An SDL that cannot become jobs; `problems` lists every error found, not only the first."""

    def __init__(self, file: str, problems: list[SdlProblem]):
        self.file = file
        self.problems = problems
        first = str(problems[0]) if problems else "invalid SDL"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{file}: {first}{more}")
