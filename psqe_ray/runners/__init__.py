"""The runners: one per command, one engine shape, one commit-or-reuse helper.

===========================  =====================================================
:func:`run_seeds`            ``psqe-ray seeds`` / ``jobs/seeds.py`` (:mod:`.seeds`)
:func:`run_align`            ``psqe-ray align`` / ``jobs/align.py`` (:mod:`.align`)
:func:`run_pipeline`         ``psqe-ray run`` / ``jobs/run.py`` (:mod:`.pipeline`)
===========================  =====================================================

Each takes an ``engine`` (:mod:`.engine`: :class:`Engine` in this process, ``engine_for("ray")``
on a Ray cluster) and commits its output through :class:`~.output.StepOutput`.
"""

from psqe_ray.runners.align import run_align
from psqe_ray.runners.engine import Engine, engine_for
from psqe_ray.runners.pipeline import run_pipeline
from psqe_ray.runners.seeds import run_seeds

__all__ = ["Engine", "engine_for", "run_align", "run_pipeline", "run_seeds"]
