"""The four downstream recipes as named option sets over one trainer (PyKEEN-style registry).

What each recipe keeps from its paper (``shared/PSQE.md``, ``shared/papers/``):

======== =============== ======================================== ============================
recipe   fusion          loss                                     iterative learning
======== =============== ======================================== ============================
eva      global weights  NCA on the joint vector                  mutual nearest neighbours
mclea    global weights  ICL on joint + each modality, weighted   none (MCLEA's default)
                         by learned uncertainties; inter-modal
                         alignment (KL joint -> modality)
meaformer per-entity     ICL on joint + each modality             MNN that hold in two
         (transformer)                                            consecutive checks (stable)
pcmea    global weights  ICL against a momentum (EMA) target      MNN that hold in two checks
                         encoder + each modality; mutual-         and under both the online and
                         information term (modality vs joint)     the target encoder (calibrated)
======== =============== ======================================== ============================
"""

from __future__ import annotations

from dataclasses import dataclass

from psqe_ray.config import RECIPES as NAMES


@dataclass(frozen=True)
class Recipe:
    name: str
    loss: str              # joint-vector loss: nca | icl | momentum
    fusion: str            # global | entity
    per_modality: bool     # ICL on every branch as well
    uncertainty: bool      # learned uncertainty weights over the loss terms (MCLEA)
    ial: bool              # inter-modal alignment loss (MCLEA)
    mi: float              # weight of the mutual-information term (PCMEA); 0 = off
    rounds: int            # default iterative rounds
    agree: int             # consecutive checks a new pair must be a mutual nearest neighbour in
    two_views: bool        # the online and the momentum encoder must both pick the pair


RECIPES: dict[str, Recipe] = {
    "eva": Recipe("eva", "nca", "global", False, False, False, 0.0, rounds=2, agree=1,
                  two_views=False),
    "mclea": Recipe("mclea", "icl", "global", True, True, True, 0.0, rounds=0, agree=1,
                    two_views=False),
    "meaformer": Recipe("meaformer", "icl", "entity", True, False, False, 0.0, rounds=3,
                        agree=2, two_views=False),
    "pcmea": Recipe("pcmea", "momentum", "global", True, False, False, 0.1, rounds=3, agree=2,
                    two_views=True),
}
assert tuple(RECIPES) == NAMES


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})") from None
