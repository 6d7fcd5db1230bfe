"""psqe-ray: PSQE pseudo-seed generation and multimodal entity alignment on Ray.

The Python API (:mod:`psqe_ray.api`, loaded on first use so that ``import psqe_ray`` stays
light)::

    import psqe_ray as pr
    pr.synthesize("pair", entities=1000)
    report = pr.generate_seeds("pair", "out/seeds")
    metrics = pr.align_pair("pair", "out/seeds", "out/align")
"""

__version__ = "0.6.0.dev1"

API = ("align_pair", "evaluate_pairs", "generate_seeds", "import_pair", "load_pair",
       "make_config", "run_pipeline", "synthesize")


def __getattr__(name: str):
    if name in API:
        from psqe_ray import api

        return getattr(api, name)
    raise AttributeError(f"module 'psqe_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
