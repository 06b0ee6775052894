"""Where the CLI finds its server and token: flags, then environment, then the config file `ceti up` writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def config_path() -> Path:
    return Path(os.environ.get("CETI_CONFIG", "~/.ceti/config.json")).expanduser()


def load_config() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(data: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    return path


def resolve(server: str | None, token: str | None) -> tuple[list[str], str | None]:
    cfg = load_config()
    server = server or os.environ.get("CETI_SERVER") or cfg.get("server") or "http://127.0.0.1:8700"
    token = token or os.environ.get("CETI_TOKEN") or cfg.get("token")
    return [s.strip() for s in server.split(",") if s.strip()], token
