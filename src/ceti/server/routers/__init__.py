"""Thin HTTP routers: parse, authorise, call a service, commit, answer."""
