"""Decoding strategies, looked up by the scenario's `strategy.kind` (one file each; see base.py)."""

from sim.strategies.ar import AR
from sim.strategies.base import Step, Strategy
from sim.strategies.block_diffusion import BlockDiffusion
from sim.strategies.diffusion import Diffusion
from sim.strategies.speculative import Speculative

STRATEGIES = {"ar": AR, "speculative": Speculative, "diffusion": Diffusion, "block_diffusion": BlockDiffusion}

__all__ = ["STRATEGIES", "Step", "Strategy"]
