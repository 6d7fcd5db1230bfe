"""Downstream aligners trained on pseudo seeds: one trainer, four recipes (eva, mclea,
meaformer, pcmea).  ``Aligner(AlignConfig(recipe=...), random_state).fit(...)``."""

from psqe_ray.align.recipes import RECIPES, Recipe, get_recipe
from psqe_ray.align.trainer import Aligner, mutual_nearest

__all__ = ["RECIPES", "Aligner", "Recipe", "get_recipe", "mutual_nearest"]
