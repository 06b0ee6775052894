"""Decentralized AI networks as demand sources."""
