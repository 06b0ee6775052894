"""What the agent must remember across its own restarts: its node id, log offsets, unacknowledged exits."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class AgentState:
    node_id: str | None = None
    # the newest desired-state epoch the server has sent; an older answer (delayed, from a stale replica) is ignored
    epoch: int = -1
    # allocation id -> stream -> bytes already accepted by the server
    log_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    # allocation id -> exit report not yet acknowledged by a heartbeat answer
    unreported: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)
