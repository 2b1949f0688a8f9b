"""toyfaces: a built-in world of cartoon faces whose concepts are known, for tests and first runs."""

from engine.toyfaces.renderer import render
from engine.toyfaces.world import CONCEPTS, NUISANCES, World, WorldConfig, z_for_indices

__all__ = ["CONCEPTS", "NUISANCES", "World", "WorldConfig", "render", "z_for_indices"]
