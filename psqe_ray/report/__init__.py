"""The human-readable report of a pipeline run (``report.html``)."""

from psqe_ray.report.html import render_html

__all__ = ["render_html"]
