"""Fixtures for the runtime tests (tiny float32 models on the CPU)."""

import pytest

torch = pytest.importorskip("torch", reason="the runtime tests need torch (pip install -e '.[runtime]')")

from rt_helpers import tiny_spec  # noqa: E402
from runtime.model import Transformer  # noqa: E402

# Tiny models do microseconds of work per op; with more threads than free cores, OpenMP's spin-waiting made them
# ~100x slower (seen on the 2-core dev machine while another process held both cores). One thread is plenty.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """The tiny GQA model of rt_helpers.tiny_spec with seeded random weights."""
    return Transformer.random(tiny_spec(), seed=1)
