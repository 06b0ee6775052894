"""Trace-driven simulator: replays real traces through the same fabric functions the server calls."""
