"""Load generator for the control plane: simulated agents and developers against a real `ceti server`.

`run.run_bench(BenchConfig(...))` starts a server process on 127.0.0.1, drives it from one asyncio process
(`agents.SimAgent` speaks the real agent protocol) and returns the measured figures (`stats`).
"""
