"""The job spec a developer writes (YAML) and the API accepts (JSON)."""

from __future__ import annotations

import enum
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ceti.spec.units import parse_duration_s, parse_size_mib

SizeMiB = Annotated[int, BeforeValidator(parse_size_mib)]
DurationS = Annotated[int, BeforeValidator(parse_duration_s)]

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
# No whitespace and no leading "-": the reference is handed to a container engine's command line as one argument.
IMAGE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._:/@+-]{0,511}$")
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 512


class JobSpecError(ValueError):
    """A job spec that cannot be accepted; `errors` lists (field path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {reason}" if path else reason for path, reason in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GPURequest(_Strict):
    """GPUs a job needs. `count` whole GPUs, or a share of one GPU in `milli` (1000 = a whole GPU)."""

    count: int = Field(0, ge=0, le=64)
    milli: int | None = Field(None, ge=1, le=1000, description="share of one GPU when count is 0 or 1")
    models: list[str] = Field(default_factory=list, description="allowed GPU models; empty = any")
    min_vram_mib: SizeMiB = 0

    @field_validator("models")
    @classmethod
    def _models_known_shape(cls, models: list[str]) -> list[str]:
        return [m.strip() for m in models if m.strip()]

    @property
    def gpu_milli_total(self) -> int:
        if self.count == 0 and self.milli is None:
            return 0
        if self.milli is not None and self.count <= 1:
            return self.milli
        return self.count * 1000


def _gpus_shorthand(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("gpus must be a count or a mapping")  # noqa: TRY004 -- pydantic reports a ValueError
    if isinstance(value, int):
        return {"count": value}
    if isinstance(value, float):
        if 0 < value < 1:
            return {"milli": round(value * 1000)}
        if value.is_integer():
            return {"count": int(value)}
        raise ValueError("a fractional GPU request must be below 1 (use milli for a share)")
    return value


class Resources(_Strict):
    cpus: float = Field(1.0, gt=0, le=4096)
    memory: SizeMiB = Field(512, description="MiB, or a string such as '4Gi'")
    disk: SizeMiB = Field(0, description="MiB of scratch disk")
    gpus: Annotated[GPURequest, BeforeValidator(_gpus_shorthand)] = Field(default_factory=GPURequest)

    @property
    def cpu_milli(self) -> int:
        return round(self.cpus * 1000)

    @property
    def memory_mib(self) -> int:
        return self.memory

    @property
    def disk_mib(self) -> int:
        return self.disk


class Placement(_Strict):
    regions: list[str] = Field(default_factory=list, description="allowed regions; empty = anywhere")
    nodes: list[str] = Field(default_factory=list, description="allowed node ids; empty = any")
    verified: bool | None = Field(
        None,
        description="run only on nodes whose hardware passed the fabric's proof of hardware; "
        "unset = required for jobs with a price (max_price_per_hour), not for free ones",
    )
    mixed_gpu_models: bool = Field(
        False, description="a job on several nodes may get GPUs of different models (default: one model)")


class RetryOn(str, enum.Enum):
    failure = "failure"
    preemption = "preemption"
    node_lost = "node_lost"


class Engine(str, enum.Enum):
    """What joins the nodes of a multi-node job into one cluster for its command (the agent's launchers)."""

    ray = "ray"


class RetryPolicy(_Strict):
    limit: int = Field(3, ge=0, le=100, description="how many times the job may be retried")
    on: list[RetryOn] = Field(default_factory=lambda: [RetryOn.preemption, RetryOn.node_lost])
    exit_codes: list[int] = Field(default_factory=list, description="retry only these exit codes; empty = any")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    def allows(self, cause: RetryOn, exit_code: int | None = None) -> bool:
        if cause not in self.on:
            return False
        return not (cause is RetryOn.failure and self.exit_codes and exit_code not in self.exit_codes)


class JobSpec(_Strict):
    name: str = Field("job", description="a short name, letters, digits, . _ -")
    image: str | None = Field(None, max_length=512,
                              description="a container image to run the command in (or its own entrypoint)")
    command: list[str] = Field(default_factory=list, max_length=1000, validate_default=True,
                               description="program and arguments; may be empty only when an image is given")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, max_length=100,
                               description="names of project secrets given to the job as environment variables")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> text content")
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    max_price_per_hour: float | None = Field(None, ge=0, le=1_000_000,
                                            description="the most the job pays per hour, all its nodes together")
    priority: int = Field(50, ge=0, le=100, description="higher runs first and may pre-empt lower")
    interruptible: bool = Field(False, description="may be pre-empted by higher-priority work")
    max_duration: DurationS | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    nodes: int = Field(1, ge=1, le=MAX_NODES,
                       description="nodes the job runs on at once, each with `resources`; more than 1 needs an engine")
    engine: Engine | None = Field(None, description="joins the nodes into one cluster; the command runs on the first")

    @model_validator(mode="after")
    def _multi_node(self) -> JobSpec:
        if self.nodes > 1 and self.engine is None:
            raise ValueError(f"a job on {self.nodes} nodes needs an engine that joins them, e.g. engine: ray")
        if self.engine is not None and self.image is not None:
            raise ValueError(f"engine: {self.engine.value} runs as processes on the nodes; it cannot be combined "
                             "with an image")
        return self

    @property
    def multi_node(self) -> bool:
        """Runs under an engine: one allocation per node, placed as a gang on one network."""
        return self.engine is not None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_RE.match(name):
            raise ValueError("use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return name

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("command is empty")
            return ["/bin/sh", "-c", value]
        return value

    @field_validator("command")
    @classmethod
    def _something_to_run(cls, command: list[str], info: ValidationInfo) -> list[str]:
        if not command and info.data.get("image") is None:
            raise ValueError("give a command (at least 1 item), an image, or both")
        return command

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and not IMAGE_RE.match(image):
            raise ValueError(f"{image!r} is not an image reference such as 'registry/name:tag'")
        return image

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.startswith("CETI_"):
                raise ValueError(f"{key!r}: names starting with CETI_ are reserved")
        return env

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", name) or name.startswith("CETI_"):
                raise ValueError(f"{name!r} is not a usable secret (environment variable) name")
        return names

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        for path, content in files.items():
            check_relative_path(path)
            if len(content.encode()) > MAX_FILE_BYTES:
                raise ValueError(f"{path!r} is larger than {MAX_FILE_BYTES} bytes")
        return files


def check_relative_path(path: str) -> PurePosixPath:
    """A working-directory path that cannot escape it: relative, no '..', no empty parts."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path or "\x00" in path:
        raise ValueError(f"{path!r} must be a relative path inside the job's working directory")
    if any(part in ("..", "") for part in pure.parts) or pure.parts[0] == ".":
        raise ValueError(f"{path!r} must not contain '..' or '.' parts")
    return pure


def _error_list(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        out.append((path, message))
    return out


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a parsed document; raise JobSpecError with every field's path and reason."""
    if not isinstance(data, dict):
        raise JobSpecError([("", "a job spec must be a mapping of fields")])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobSpecError(_error_list(exc)) from None


def _depth(data: Any) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def load_job_spec_yaml(text: str, max_bytes: int = 1024 * 1024, max_depth: int = 16) -> JobSpec:
    if len(text.encode()) > max_bytes:
        raise JobSpecError([("", f"the spec is larger than {max_bytes} bytes")])
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise JobSpecError([("", f"the spec is nested deeper than {max_depth} levels")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobSpecError([("", f"malformed YAML{where}: {getattr(exc, 'problem', exc)}")]) from None
    if _depth(data) > max_depth:
        raise JobSpecError([("", f"the spec is nested deeper than {max_depth} levels")])
    return parse_job_spec(data)
