"""The web dashboard's own page, script, style and region coordinates (served by ceti.server.routers.dashboard)."""
