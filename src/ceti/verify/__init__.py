"""Proof of hardware."""
