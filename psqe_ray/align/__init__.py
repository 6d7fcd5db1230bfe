"""Downstream aligners trained on pseudo seeds: one trainer, four recipes (eva, mclea,
meaformer, pcmea).  ``Aligner(AlignConfig(recipe=...), random_state).fit(...)``."""

from psqe_ray.align.recipes import RECIPES, Recipe, get_recipe
from psqe_ray.align.mutual import mutual_nearest
from psqe_ray.align.trainer import Aligner

__all__ = ["RECIPES", "Aligner", "Recipe", "get_recipe", "mutual_nearest"]
