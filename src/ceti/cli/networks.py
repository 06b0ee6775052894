"""`ceti networks ...`: one sub-command group per decentralized network, each defined beside its adapter."""

from __future__ import annotations

import typer

from ceti.cli import networks_akash as akash_cli
from ceti.cli.networks_bittensor import app as bittensor_app
from ceti.cli.networks_render import app as render_app

app = typer.Typer(help="Decentralized AI networks: Akash, Bittensor, Render.", no_args_is_help=True)

# One line per network: its typer app and the sub-command name.
app.add_typer(akash_cli.app, name="akash")
app.add_typer(bittensor_app, name="bittensor")
app.add_typer(render_app, name="render")
