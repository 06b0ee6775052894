"""What every sub-command that talks to a server shares: the server and token options, a client built from them
(flags, then environment, then the config file), and one-line failures with an exit code.

It lives apart from `ceti.cli.main` because the sub-command modules are imported by main."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from ceti.cli.config import resolve
from ceti.client import CetiError, Client

err_console = Console(stderr=True)

ServerOpt = Annotated[str | None, typer.Option("--server", help="server address(es), comma-separated", envvar="CETI_SERVER")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="bearer token", envvar="CETI_TOKEN")]


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def ca_cert() -> str | None:
    """The `--ca-cert` given to `ceti` (kept by the main module), else the environment's."""
    for name in ("ceti.cli.main", "__main__"):
        options = getattr(sys.modules.get(name), "_global", None)
        if isinstance(options, dict) and options.get("ca_cert"):
            return options["ca_cert"]
    return os.environ.get("CETI_CA_CERT") or None


def client(server: str | None, token: str | None) -> Client:
    servers, tok = resolve(server, token)
    if not tok:
        fail("no token: pass --token, set CETI_TOKEN, or run `ceti up` to write a config file", 2)
    return Client(servers, tok, ca_cert=ca_cert())


def call(fn, *args: Any, **kwargs: Any) -> Any:
    """`fn(...)`, with a server's refusal turned into its one-line reason and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except CetiError as exc:
        fail(exc.message, 1)
