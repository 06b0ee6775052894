"""The fused GPU generation of the challenge's streams: bit-identical to the NumPy reference on a real GPU, and a
clean fall-back to the panel path where its kernels cannot be built."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ceti.verify import gpu_streams
from ceti.verify.compute import _fill_chunk, generate_matrix
from ceti.verify.prng import fill_chunk


def _gpu_cupy():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean no GPU here
        return None


CUPY = _gpu_cupy()
needs_gpu = pytest.mark.skipif(CUPY is None, reason="needs CuPy and an NVIDIA GPU")


@pytest.fixture
def fresh_kernels(monkeypatch):
    monkeypatch.setattr(gpu_streams, "_usable", None)
    monkeypatch.setattr(gpu_streams, "_kernels", None)


@needs_gpu
def test_fused_streams_equal_the_reference(fresh_kernels, monkeypatch):
    assert gpu_streams.fused_kernels(CUPY) is not None
    monkeypatch.setattr(gpu_streams, "_LAUNCH_VALUES", 1 << 16)  # several launches per matrix, offsets included
    key = 0x0123456789ABCDEF
    for dtype in (np.float32, np.float16):
        got = generate_matrix(key, 96, 4096, CUPY, dtype)
        assert got.dtype == dtype
        assert np.array_equal(got.get(), generate_matrix(key, 96, 4096, np, dtype))
    chunk = _fill_chunk(key, 3, 1 << 20, CUPY)
    assert np.array_equal(chunk.get(), fill_chunk(key, 3, 1 << 20))


def test_unbuildable_kernels_fall_back_to_panels_and_say_why(fresh_kernels, caplog):
    class NoCompiler:
        def ElementwiseKernel(self, *args, **kwargs):
            raise RuntimeError("nvrtc: compiler not found")

    with caplog.at_level(logging.WARNING, logger="ceti.verify"):
        assert gpu_streams.fused_kernels(NoCompiler()) is None
        assert gpu_streams.matrix(NoCompiler(), 1, 2, 32, np.float32) is None
        assert gpu_streams.fill_words(NoCompiler(), 1, 0, 64) is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "ceti.verify"]
    assert len(warnings) == 1 and "compiler not found" in warnings[0]
