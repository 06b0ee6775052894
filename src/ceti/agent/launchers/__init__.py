"""Multi-node launchers: turn (user command, env, gang) into the argv and env the executor runs for one node.

A job with `nodes: N` gets N allocations, one per node, and the server sends each agent a `gang` object in the
allocation's desired state:

    {"engine": "ray", "size": N, "rank": r, "head_address": "10.1.2.3", "head_port": 47000,
     "bind_address": "<this node's address on its network>", "port_base": 47000, "port_count": 32,
     "auth_token": "<optional shared secret>"}

The executor then runs whatever `launch_command` returns like any other command, so logs, exit codes, stop
with grace, usage and the killing of leftovers stay the executor's. A launcher for another engine (torchrun,
MPI) is one more entry in LAUNCHERS: nothing in the fabric or the server changes.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast


class GangError(ValueError):
    """A gang object the agent cannot run: the allocation fails with this message."""


TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,512}$")


@dataclass(frozen=True)
class GangInfo:
    """Where this node stands in its job's gang. rank 0 is the head; head_port is the head's port_base."""

    engine: str
    size: int
    rank: int
    head_address: str
    head_port: int
    bind_address: str
    port_base: int
    port_count: int  # ports port_base .. port_base + port_count - 1 are this allocation's on this node
    auth_token: str | None = field(default=None, repr=False)

    @property
    def is_head(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GangInfo:
        """Parse and check the server's `gang` object; GangError (a ValueError) says what is wrong. Unknown
        keys are ignored (a newer server may send more)."""
        if not isinstance(data, Mapping):
            raise GangError(f"gang must be an object, not {type(data).__name__}")
        engine = data.get("engine")
        if not isinstance(engine, str) or engine not in LAUNCHERS:
            raise GangError(f"gang engine {engine!r} is not one of {sorted(LAUNCHERS)}")
        size = _int(data, "size", 1, 100_000)
        rank = _int(data, "rank", 0, 100_000)
        if rank >= size:
            raise GangError(f"gang rank {rank} must be below its size {size}")
        port_base = _int(data, "port_base", 1, 65535)
        port_count = _int(data, "port_count", 1, 65535)
        if port_base + port_count - 1 > 65535:
            raise GangError(f"gang ports {port_base}..{port_base + port_count - 1} go past 65535")
        minimum = launcher(engine).MIN_PORT_COUNT
        if port_count < minimum:
            raise GangError(f"a {engine} gang needs at least {minimum} ports per node, not {port_count}")
        head_port = _int(data, "head_port", 1, 65535)
        head_address = _address(data, "head_address")
        bind_address = _address(data, "bind_address")
        if rank == 0 and head_port != port_base:
            raise GangError(f"the head's head_port {head_port} must be its own port_base {port_base}")
        if rank == 0 and head_address != bind_address:
            raise GangError(f"the head's head_address {head_address} must be its bind_address {bind_address}")
        token = data.get("auth_token")
        if token is not None and (not isinstance(token, str) or not TOKEN_RE.match(token)):
            raise GangError("gang auth_token must be 16 to 512 letters, digits, '-' or '_'")
        return cls(
            engine=engine,
            size=size,
            rank=rank,
            head_address=head_address,
            head_port=head_port,
            bind_address=bind_address,
            port_base=port_base,
            port_count=port_count,
            auth_token=token or None,
        )


@dataclass(frozen=True)
class LaunchOptions:
    """What the agent knows beyond the gang. grace_s is the user command's share of the stop grace: the node
    process needs a few seconds more to stop its engine (keep the executor's grace >= grace_s + 5)."""

    grace_s: float = 5.0
    num_cpus: int | None = None  # None: the CPUs the node process may run on
    object_store_mib: int | None = (
        None  # Ray's object store; None: Ray's default (30% of the machine's memory)
    )
    head_gone_s: float = 10.0  # a worker leaves once the head has not answered for this long


class Launcher(Protocol):
    """What a launcher module provides."""

    MIN_PORT_COUNT: int

    def build_command(
        self,
        command: list[str],
        env: dict[str, str],
        gang: GangInfo,
        scratch: Path,
        python: str,
        options: LaunchOptions,
    ) -> tuple[list[str], dict[str, str]]: ...


# engine -> the module that launches it. Imported on first use, so `python -m ceti.agent.launchers.ray` does
# not find its own module already imported by this package.
LAUNCHERS: dict[str, str] = {"ray": "ceti.agent.launchers.ray"}


def launcher(engine: str) -> Launcher:
    if engine not in LAUNCHERS:
        raise GangError(f"no launcher for engine {engine!r}; known: {sorted(LAUNCHERS)}")
    return cast(Launcher, importlib.import_module(LAUNCHERS[engine]))


def launch_command(
    command: list[str],
    env: dict[str, str],
    gang: GangInfo,
    scratch: Path,
    python: str,
    options: LaunchOptions | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and env the executor runs for this node of the gang.

    scratch: a short absolute path, not existing yet, that belongs to this allocation alone (something like
    /tmp/ceti-ray/<short id>: Ray keeps Unix sockets below it, and their paths must stay under 107 bytes);
    the node process creates it and removes it when it exits. python: the agent's interpreter, which runs the
    node process with -I; the user's command and the engine run with the returned env: `env` plus
    CETI_GANG_RANK, CETI_GANG_SIZE and what the engine needs (for Ray: RAY_AUTH_MODE, RAY_AUTH_TOKEN)."""
    if not command:
        raise ValueError("command must not be empty")
    env = {**env, "CETI_GANG_RANK": str(gang.rank), "CETI_GANG_SIZE": str(gang.size)}
    return launcher(gang.engine).build_command(
        list(command), env, gang, Path(scratch), python, options or LaunchOptions()
    )


def _int(data: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise GangError(f"gang {key} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise GangError(f"gang {key} {value} is out of range ({low}..{high})")
    return value


def _address(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise GangError(f"gang {key} must be an IP address, not {value!r}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise GangError(f"gang {key} must be an IP address, not {value!r}") from None
    if address.is_unspecified:
        raise GangError(f"gang {key} {address} would mean every interface; give the node's own address")
    return str(address)
