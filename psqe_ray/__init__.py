"""psqe-ray: PSQE pseudo-seed generation and multimodal entity alignment on Ray."""

__version__ = "0.6.0.dev1"
