"""Akash SDL (Stack Definition Language, version 2.0/2.1) read into typed models.

What is strict and what is lenient follows what Akash itself accepts, so the SDLs people publish parse:
unknown keys at the top level, in compute profiles and in GPU or storage attributes are errors (a misspelt
`gpu:` would silently lose the GPU), while unknown keys in a service, an expose entry or a placement profile
(`depends_on`, `restart`, ... borrowed from Docker Compose) are ignored by Akash and come back here as
warnings. Every error of a file is reported, each with its YAML path and line: each section is validated on
its own, and the cross-references (deployment -> service, placement, compute profile, pricing; volumes;
IP endpoints) are checked on the sections that did parse.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ceti.networks.akash.errors import SdlError, SdlProblem
from ceti.networks.akash.units import parse_bytes, parse_cpu_milli

MAX_SDL_BYTES = 1024 * 1024
SUPPORTED_VERSIONS = ("2.0", "2.1")
DENOM_RE = re.compile(r"^(uakt|uact|ibc/[0-9A-Fa-f]{64})$")
ENDPOINT_NAME_RE = re.compile(r"^[a-z]+[-_0-9a-z]+$")
STORAGE_CLASSES = ("default", "beta1", "beta2", "beta3", "ram")
NEXT_CASES = ("error", "timeout", "500", "502", "503", "504", "403", "404", "429", "off")
TOP_LEVEL_KEYS = ("version", "services", "profiles", "deployment", "endpoints")


def _scalar_str(value: Any) -> Any:
    # Akash reads YAML scalars into strings whatever their YAML type: `model: 4090`, `region: true`.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _none_is_empty_list(value: Any) -> Any:
    return [] if value is None else value


def _none_is_empty_dict(value: Any) -> Any:
    return {} if value is None else value


ScalarStr = Annotated[str, BeforeValidator(_scalar_str)]
StrList = Annotated[list[ScalarStr], BeforeValidator(_none_is_empty_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Lenient(BaseModel):
    """Akash ignores unknown keys here; they are kept in `model_extra` and reported as warnings."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


# ---- services -----------------------------------------------------------------------------------------------


class HttpOptions(_Lenient):
    max_body_size: int = Field(0, ge=0, le=104_857_600, description="bytes; 0 = the provider's default (1 MiB)")
    read_timeout: int = Field(0, ge=0, le=60_000, description="ms; 0 = default (60 s)")
    send_timeout: int = Field(0, ge=0, le=60_000, description="ms; 0 = default (60 s)")
    next_tries: int = Field(0, ge=0)
    next_timeout: int = Field(0, ge=0)
    next_cases: list[ScalarStr] = Field(default_factory=list)
    proxy_buffer_size: int = Field(0, ge=0, le=1_048_576)

    @field_validator("next_cases")
    @classmethod
    def _cases(cls, cases: list[str]) -> list[str]:
        for case in cases:
            if case not in NEXT_CASES:
                raise ValueError(f"unknown next case {case!r}: use one of {', '.join(NEXT_CASES)}")
        if "off" in cases and len(cases) > 1:
            raise ValueError("'off' cannot be combined with other next cases")
        return cases


class ExposeTo(_Lenient):
    service: ScalarStr | None = None
    global_: bool = Field(False, alias="global")
    ip: ScalarStr | None = None

    @model_validator(mode="after")
    def _ip_needs_global(self) -> ExposeTo:
        if self.ip and not self.global_:
            raise ValueError(f"an expose to IP endpoint {self.ip!r} must also set global: true")
        return self


class Expose(_Lenient):
    port: int = Field(..., ge=1, le=65535, description="container port")
    as_: int | None = Field(None, alias="as", ge=1, le=65535, description="port the outside sees")
    proto: Literal["tcp", "udp"] = "tcp"
    to: Annotated[list[ExposeTo], BeforeValidator(_none_is_empty_list)] = Field(default_factory=list)
    accept: StrList = Field(default_factory=list, description="host names to accept HTTP requests for")
    http_options: HttpOptions = Field(default_factory=HttpOptions)

    @field_validator("proto", mode="before")
    @classmethod
    def _proto(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def external_port(self) -> int:
        return self.as_ or self.port

    @property
    def is_global(self) -> bool:
        return any(to.global_ for to in self.to)


class StorageMount(_Lenient):
    mount: ScalarStr
    read_only: bool = Field(False, alias="readOnly")

    @field_validator("mount")
    @classmethod
    def _absolute(cls, mount: str) -> str:
        if not mount.startswith("/"):
            raise ValueError(f"mount {mount!r} must be an absolute path")
        return mount


class ServicePermissions(_Lenient):
    read: StrList = Field(default_factory=list, description="deployment, logs, events")


class ServiceParams(_Lenient):
    storage: Annotated[dict[str, StorageMount], BeforeValidator(_none_is_empty_dict)] = Field(default_factory=dict)
    permissions: ServicePermissions | None = None
    tee: Literal["cpu", "cpu-gpu"] | None = Field(None, description="confidential computing (SDL 2.1)")


class Dependency(_Lenient):
    service: ScalarStr


class Service(_Lenient):
    image: str = Field(..., min_length=1)
    command: StrList = Field(default_factory=list)
    args: StrList = Field(default_factory=list)
    env: StrList = Field(default_factory=list, description="'NAME=value' entries")
    expose: Annotated[list[Expose], BeforeValidator(_none_is_empty_list)] = Field(default_factory=list)
    dependencies: Annotated[list[Dependency], BeforeValidator(_none_is_empty_list)] = Field(default_factory=list)
    params: ServiceParams = Field(default_factory=ServiceParams)

    @field_validator("env")
    @classmethod
    def _env(cls, env: list[str]) -> list[str]:
        for entry in env:
            if not entry.split("=", 1)[0].strip():
                raise ValueError(f"environment entry {entry!r} has no name: use NAME=value")
        return env

    @property
    def env_dict(self) -> dict[str, str]:
        """NAME=value entries; Akash sets an entry without '=' as the name with an empty value."""
        out: dict[str, str] = {}
        for entry in self.env:
            name, _, value = entry.partition("=")
            out[name] = value
        return out


# ---- compute profiles ---------------------------------------------------------------------------------------


class Cpu(_Strict):
    units: Annotated[int, BeforeValidator(parse_cpu_milli)] = Field(..., description="millicores")
    attributes: dict[str, Any] = Field(default_factory=dict)

    @property
    def milli(self) -> int:
        return self.units


class Memory(_Strict):
    size: Annotated[int, BeforeValidator(parse_bytes)] = Field(..., gt=0, description="bytes")


def _storage_attributes(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("storage attributes must be a mapping (persistent, class)")  # noqa: TRY004 - pydantic reports ValueError
    attrs = {str(k): _scalar_str(v) for k, v in value.items()}
    unknown = sorted(set(attrs) - {"persistent", "class"})
    if unknown:
        raise ValueError(f"unsupported storage attribute(s) {', '.join(unknown)}: use persistent and class")
    persistent = attrs.get("persistent", "false").lower()
    if persistent not in ("true", "false"):
        raise ValueError(f"persistent must be true or false, not {attrs['persistent']!r}")
    cls = attrs.get("class", "")
    if cls and cls not in STORAGE_CLASSES:
        raise ValueError(f"unknown storage class {cls!r}: use one of {', '.join(STORAGE_CLASSES)}")
    if cls == "ram" and persistent == "true":
        raise ValueError("storage class ram cannot be persistent")
    if cls and cls != "ram" and persistent != "true":
        raise ValueError(f"storage class {cls!r} is for persistent volumes: set persistent: true")
    if persistent == "true" and not cls:
        cls = "default"
    return {"persistent": persistent == "true", "storage_class": cls or None}


class StorageAttributes(_Strict):
    persistent: bool = False
    storage_class: str | None = None


class StorageVolume(_Strict):
    name: ScalarStr = "default"
    size: Annotated[int, BeforeValidator(parse_bytes)] = Field(..., description="bytes")
    attributes: Annotated[StorageAttributes, BeforeValidator(_storage_attributes)] = Field(
        default_factory=StorageAttributes
    )


def _storage_list(value: Any) -> Any:
    # A single mapping is one unnamed (root, ephemeral) volume.
    return [value] if isinstance(value, dict) else _none_is_empty_list(value)


class NvidiaGpu(_Strict):
    model: ScalarStr | None = None
    ram: Annotated[int, BeforeValidator(parse_bytes)] | None = Field(None, description="bytes")
    interface: Literal["pcie", "sxm"] | None = None


class GpuVendor(_Strict):
    nvidia: Annotated[list[NvidiaGpu], BeforeValidator(_none_is_empty_list)] = Field(default_factory=list)


class GpuAttributes(_Strict):
    vendor: GpuVendor


def _gpu_units(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Gpu(_Strict):
    units: Annotated[int, BeforeValidator(_gpu_units)] = Field(0, ge=0, le=64, strict=True)
    attributes: GpuAttributes | None = None

    @model_validator(mode="after")
    def _units_need_vendor(self) -> Gpu:
        if self.units > 0 and self.attributes is None:
            raise ValueError("GPU units above 0 need attributes.vendor (e.g. vendor: {nvidia: [{model: h100}]})")
        return self


class ComputeResources(_Strict):
    cpu: Cpu
    memory: Memory
    storage: Annotated[list[StorageVolume], BeforeValidator(_storage_list)] = Field(..., min_length=1)
    gpu: Gpu = Field(default_factory=Gpu)

    @field_validator("storage")
    @classmethod
    def _unique_names(cls, volumes: list[StorageVolume]) -> list[StorageVolume]:
        seen: set[str] = set()
        for volume in volumes:
            if volume.name in seen:
                raise ValueError(f"volume name {volume.name!r} is used twice (at most one unnamed volume)")
            seen.add(volume.name)
        return volumes


class ComputeProfile(_Strict):
    resources: ComputeResources


# ---- placement profiles -------------------------------------------------------------------------------------


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError("amount must be a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a number") from None
    if not amount.is_finite():
        raise ValueError("amount must be finite")
    if amount <= 0:
        raise ValueError("amount must be above zero")
    return amount


class Price(_Strict):
    denom: str
    amount: Annotated[Decimal, BeforeValidator(_amount)] = Field(..., description="per block, in `denom`")

    @field_validator("denom")
    @classmethod
    def _denom(cls, denom: str) -> str:
        if not DENOM_RE.match(denom):
            raise ValueError(f"unsupported denom {denom!r}: use uakt, uact or an IBC denom ibc/<64 hex>")
        return denom


class SignedBy(_Lenient):
    all_of: StrList = Field(default_factory=list, alias="allOf")
    any_of: StrList = Field(default_factory=list, alias="anyOf")


class PlacementProfile(_Lenient):
    attributes: Annotated[dict[str, ScalarStr], BeforeValidator(_none_is_empty_dict)] = Field(default_factory=dict)
    signed_by: SignedBy = Field(default_factory=SignedBy, alias="signedBy")
    pricing: dict[str, Price]


# ---- deployment and endpoints -------------------------------------------------------------------------------


class DeploymentEntry(_Strict):
    profile: str
    count: int = Field(..., ge=1, le=1000, strict=True)


class Endpoint(_Strict):
    kind: Literal["ip"]


class Sdl(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    services: dict[str, Service]
    compute: dict[str, ComputeProfile]
    placement: dict[str, PlacementProfile]
    deployment: dict[str, dict[str, DeploymentEntry]]
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    warnings: list[SdlProblem] = Field(default_factory=list)


# ---- parsing ------------------------------------------------------------------------------------------------

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_map(text: str) -> dict[Path, int]:
    """1-based line of every mapping key and list item, by YAML path."""
    lines: dict[Path, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    stack: list[tuple[Any, Path]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                lines.setdefault(child, key.start_mark.line + 1)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                child = (*path, i)
                lines.setdefault(child, value.start_mark.line + 1)
                stack.append((value, child))
    return lines


class _Collector:
    def __init__(self, text: str):
        self.lines = _line_map(text)
        self.errors: list[SdlProblem] = []
        self.warnings: list[SdlProblem] = []

    def _line(self, path: Path) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: Path, message: str) -> None:
        self.errors.append(SdlProblem(format_path(path), message, self._line(path)))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(SdlProblem(format_path(path), message, self._line(path)))

    def validate(self, model: type[BaseModel], data: Any, path: Path) -> Any:
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = _raw_loc(data, err["loc"])
                self.error((*path, *loc), _message(err))
            return None
        self._extras(parsed, path)
        return parsed

    def _extras(self, model: BaseModel, path: Path) -> None:
        for key in model.model_extra or {}:
            self.warn((*path, key), "not an Akash SDL field: ignored")
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            key = info.alias or name
            if isinstance(value, BaseModel):
                self._extras(value, (*path, key))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, BaseModel):
                        self._extras(item, (*path, key, i))
            elif isinstance(value, dict):
                for k, item in value.items():
                    if isinstance(item, BaseModel):
                        self._extras(item, (*path, key, k))


def _raw_loc(data: Any, loc: tuple[Any, ...]) -> Path:
    """pydantic's error location, mapped back onto the YAML document (a one-mapping storage is not a list)."""
    out: list[str | int] = []
    node = data
    for step in loc:
        if isinstance(step, int):
            if isinstance(node, list) and step < len(node):
                out.append(step)
                node = node[step]
            # a mapping read as a one-item list: the index is not part of the YAML path
            continue
        if isinstance(step, str) and isinstance(node, dict):
            out.append(step)
            node = node.get(step)
            continue
        if isinstance(step, str) and ("[" in step or step.startswith("function-")):
            continue  # pydantic's tag for a union member or a validator
        out.append(step)
        node = None
    return tuple(out)


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def _message(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}" if kind.endswith("equal") else \
            f"must be above {ctx.get('gt')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    return str(err["msg"]).removeprefix("Value error, ")


def _version(value: Any, out: _Collector) -> str | None:
    if value is None:
        out.error(("version",), "required field is missing: use version: \"2.0\"")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        out.error(("version",), f"version must be a string such as \"2.0\", not {value!r}")
        return None
    text = str(value).strip().lstrip("v")
    parts = text.split(".")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        out.error(("version",), f"cannot read version {value!r}: use \"2.0\" or \"2.1\"")
        return None
    major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    normalised = f"{major}.{minor}"
    if normalised not in SUPPORTED_VERSIONS:
        out.error(("version",), f"unsupported SDL version {value!r}: use one of {', '.join(SUPPORTED_VERSIONS)}")
        return None
    return normalised


def _mapping(value: Any, path: Path, out: _Collector, what: str, required: bool = True) -> dict[str, Any]:
    if value is None:
        if required:
            out.error(path, f"required section is missing: {what}")
        return {}
    if not isinstance(value, dict):
        out.error(path, f"must be a mapping of {what}")
        return {}
    return {str(k): v for k, v in value.items()}


def parse_sdl_data(data: Any, text: str = "", file: str = "<sdl>") -> Sdl:
    """Validate a loaded SDL document; raise SdlError with every problem found."""
    out = _Collector(text)
    if not isinstance(data, dict):
        raise SdlError(file, [SdlProblem("", "an SDL must be a YAML mapping with version, services, profiles, "
                                            "deployment")])
    for key in data:
        if str(key) not in TOP_LEVEL_KEYS:
            out.error((str(key),), f"unknown top-level field: use {', '.join(TOP_LEVEL_KEYS)}")
    version = _version(data.get("version"), out)

    services: dict[str, Service] = {}
    for name, raw in _mapping(data.get("services"), ("services",), out, "service name -> service").items():
        parsed = out.validate(Service, raw, ("services", name))
        if parsed is not None:
            services[name] = parsed
    raw_services = _mapping(data.get("services"), ("services",), _Collector(""), "", required=False)
    if not raw_services and isinstance(data.get("services"), dict):
        out.error(("services",), "at least one service is needed")

    profiles = _mapping(data.get("profiles"), ("profiles",), out, "compute and placement profiles")
    for key in profiles:
        if key not in ("compute", "placement"):
            out.warn(("profiles", key), "not an Akash SDL field: ignored")
    compute: dict[str, ComputeProfile] = {}
    raw_compute = _mapping(profiles.get("compute"), ("profiles", "compute"), out, "profile name -> resources") \
        if profiles else {}
    for name, raw in raw_compute.items():
        parsed = out.validate(ComputeProfile, raw, ("profiles", "compute", name))
        if parsed is not None:
            compute[name] = parsed
    placement: dict[str, PlacementProfile] = {}
    raw_placement = _mapping(profiles.get("placement"), ("profiles", "placement"), out,
                             "placement name -> attributes and pricing") if profiles else {}
    for name, raw in raw_placement.items():
        parsed = out.validate(PlacementProfile, raw, ("profiles", "placement", name))
        if parsed is not None:
            placement[name] = parsed

    endpoints: dict[str, Endpoint] = {}
    for name, raw in _mapping(data.get("endpoints"), ("endpoints",), out, "endpoint name -> kind",
                              required=False).items():
        if not ENDPOINT_NAME_RE.match(name):
            out.error(("endpoints", name), "an endpoint name is lower-case letters, digits, '-' and '_', "
                                           "starting with a letter")
        parsed = out.validate(Endpoint, raw, ("endpoints", name))
        if parsed is not None:
            endpoints[name] = parsed

    deployment: dict[str, dict[str, DeploymentEntry]] = {}
    raw_deployment = _mapping(data.get("deployment"), ("deployment",), out, "service -> placement -> profile")
    if not raw_deployment and isinstance(data.get("deployment"), dict):
        out.error(("deployment",), "at least one service must be deployed")
    for svc, raw_placements in raw_deployment.items():
        entries: dict[str, DeploymentEntry] = {}
        for pl, raw in _mapping(raw_placements, ("deployment", svc), out, "placement -> profile and count").items():
            parsed = out.validate(DeploymentEntry, raw, ("deployment", svc, pl))
            if parsed is not None:
                entries[pl] = parsed
        deployment[svc] = entries

    _cross_check(out, raw_services, services, raw_compute, compute, raw_placement, placement,
                 raw_deployment, deployment, endpoints)
    if out.errors:
        raise SdlError(file, out.errors)
    assert version is not None
    return Sdl(version=version, services=services, compute=compute, placement=placement, deployment=deployment,
               endpoints=endpoints, warnings=out.warnings)


def _cross_check(out: _Collector, raw_services: dict[str, Any], services: dict[str, Service],
                 raw_compute: dict[str, Any], compute: dict[str, ComputeProfile], raw_placement: dict[str, Any],
                 placement: dict[str, PlacementProfile], raw_deployment: dict[str, Any],
                 deployment: dict[str, dict[str, DeploymentEntry]], endpoints: dict[str, Endpoint]) -> None:
    # Only report a broken reference when the thing referred to is absent, not when it is present but invalid
    # (its own errors are already reported).
    for svc, entries in deployment.items():
        if svc not in raw_services:
            out.error(("deployment", svc), f"no service named {svc!r} in services")
        for pl, entry in entries.items():
            if pl not in raw_placement:
                out.error(("deployment", svc, pl), f"no placement profile named {pl!r} in profiles.placement")
            if entry.profile not in raw_compute:
                out.error(("deployment", svc, pl, "profile"),
                          f"no compute profile named {entry.profile!r} in profiles.compute")
            if pl in placement and entry.profile not in placement[pl].pricing:
                out.error(("profiles", "placement", pl, "pricing"),
                          f"no price for compute profile {entry.profile!r} (deployed by {svc!r})")
            service, profile = services.get(svc), compute.get(entry.profile)
            if service is not None and profile is not None:
                _check_volumes(out, svc, service, entry.profile, profile)
    for svc in raw_services:
        if svc not in raw_deployment:
            out.warn(("services", svc), "service is not deployed (no entry under deployment)")

    used_endpoints: set[str] = set()
    taken_ports: dict[tuple[str, int, str], str] = {}
    for svc in sorted(services):
        for i, expose in enumerate(services[svc].expose):
            for j, to in enumerate(expose.to):
                path: Path = ("services", svc, "expose", i, "to", j)
                if to.service and to.service not in raw_services:
                    out.warn((*path, "service"), f"no service named {to.service!r} in services")
                if not to.ip:
                    continue
                if to.ip not in endpoints:
                    out.error((*path, "ip"), f"no endpoint named {to.ip!r} in endpoints")
                    continue
                used_endpoints.add(to.ip)
                key = (to.ip, expose.external_port, expose.proto)
                if key in taken_ports:
                    out.error((*path, "ip"), f"endpoint {to.ip!r} port {expose.external_port}/{expose.proto} is "
                                             f"already used by service {taken_ports[key]!r}")
                taken_ports.setdefault(key, svc)
    for name in endpoints:
        if name not in used_endpoints:
            out.error(("endpoints", name), "endpoint is declared but no expose uses it")


def _check_volumes(out: _Collector, svc: str, service: Service, profile_name: str, profile: ComputeProfile) -> None:
    volumes = {v.name: v for v in profile.resources.storage}
    mounts: dict[str, str] = {}
    for name, params in service.params.storage.items():
        path: Path = ("services", svc, "params", "storage", name)
        if name not in volumes:
            out.error(path, f"no volume named {name!r} in compute profile {profile_name!r}")
            continue
        if params.mount in mounts:
            out.error((*path, "mount"), f"mount {params.mount!r} is already used by volume {mounts[params.mount]!r}")
        mounts[params.mount] = name
    for volume in profile.resources.storage:
        if volume.attributes.persistent and volume.name not in service.params.storage:
            out.error(("profiles", "compute", profile_name, "resources", "storage"),
                      f"persistent volume {volume.name!r} needs a mount in services.{svc}.params.storage.{volume.name}")


def _depth_ok(data: Any, limit: int = 32) -> bool:
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def parse_sdl(text: str, file: str = "<sdl>") -> Sdl:
    """Parse SDL text; raise SdlError listing every problem (file, YAML path, line, reason)."""
    if len(text.encode()) > MAX_SDL_BYTES:
        raise SdlError(file, [SdlProblem("", f"the SDL is larger than {MAX_SDL_BYTES} bytes")])
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SdlError(file, [SdlProblem("", "the SDL is nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SdlError(file, [SdlProblem("", f"malformed YAML: {problem}", line)]) from None
    if not _depth_ok(data):
        raise SdlError(file, [SdlProblem("", "the SDL is nested too deeply")])
    return parse_sdl_data(data, text, file)


def load_sdl_file(path: str) -> Sdl:
    """Read and parse an SDL file; an unreadable file is an SdlError for that file, never a traceback."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SDL_BYTES + 1)
    except OSError as exc:
        raise SdlError(path, [SdlProblem("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SdlError(path, [SdlProblem("", "the file is not UTF-8 text")]) from None
    return parse_sdl(text, path)


