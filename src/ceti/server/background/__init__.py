"""Background loops of the server, one file per loop."""
