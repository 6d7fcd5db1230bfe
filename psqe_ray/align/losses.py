"""Contrastive losses of the downstream aligners (PSQE paper section 6.1: EVA, MCLEA,
MEAformer, PCMEA).

Every function takes a batch of seed pairs: row ``i`` of ``zl`` (B, d) and of ``zr`` (B, d),
float32, is a pair.  Cross-graph similarities are cosines (inputs are L2-normalised here).
The intra-modal contrastive loss (ICL) is :func:`psqe_ray.core.seed_encoder.icl_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ial_loss", "mi_loss", "momentum_icl", "nca_loss"]


def nca_loss(zl: torch.Tensor, zr: torch.Tensor, alpha: float = 5.0, beta: float = 10.0,
             margin: float = 0.5) -> torch.Tensor:
    """EVA's NCA loss (a multi-similarity loss on cosines), both directions::

        l_i = 1/alpha log(1 + exp(-alpha (S_ii - margin)))
            + 1/beta  log(1 + sum_{j != i} exp(beta (S_ij - margin)))

    with ``S = norm(zl) @ norm(zr)^T``; the mean over rows and over columns (right -> left).
    ``alpha``, ``beta``: EVA's code; ``margin``: the multi-similarity loss's lambda (ours).
    """
    s = F.normalize(zl, dim=1) @ F.normalize(zr, dim=1).T
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)

    def one_way(m: torch.Tensor) -> torch.Tensor:
        pos = F.softplus(-alpha * (m.diagonal() - margin)) / alpha
        neg = torch.logsumexp(torch.cat([torch.zeros(m.shape[0], 1, device=m.device),
                                         (beta * (m - margin)).masked_fill(eye, float("-inf"))],
                                        dim=1), dim=1) / beta
        return (pos + neg).mean()

    return (one_way(s) + one_way(s.T)) / 2


def ial_loss(joint_l: torch.Tensor, joint_r: torch.Tensor, zl: torch.Tensor, zr: torch.Tensor,
             temperature: float = 4.0) -> torch.Tensor:
    """MCLEA's inter-modal alignment loss: KL(p_joint || p_modal) of the cross-graph
    similarity distributions of a batch, the joint one detached (it teaches the modality).
    ``temperature``: MCLEA's tau2 (4)."""
    def log_p(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
        return torch.cat([F.log_softmax(s, dim=1), F.log_softmax(s.T, dim=1)])

    target = log_p(joint_l, joint_r).detach()
    return F.kl_div(log_p(zl, zr), target, log_target=True, reduction="batchmean")


def momentum_icl(ql: torch.Tensor, qr: torch.Tensor, kl: torch.Tensor, kr: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """PCMEA's contrastive loss against a momentum (EMA) encoder: the online left vector must
    pick its partner among the target encoder's right vectors of the batch, and vice versa.
    ``q*``: online (B, d); ``k*``: target (B, d), no gradient."""
    ql, qr = F.normalize(ql, dim=1), F.normalize(qr, dim=1)
    kl, kr = F.normalize(kl, dim=1).detach(), F.normalize(kr, dim=1).detach()
    target = torch.arange(ql.shape[0], device=ql.device)
    return (F.cross_entropy(ql @ kr.T / temperature, target)
            + F.cross_entropy(qr @ kl.T / temperature, target)) / 2


def mi_loss(z: torch.Tensor, joint: torch.Tensor, temperature: float) -> torch.Tensor:
    """PCMEA's mutual-information term, as its InfoNCE lower bound: an entity's modality vector
    ``z`` (B, d) must identify the same entity's joint vector ``joint`` (B, d) (projected to
    ``d`` by the caller) among the batch's entities."""
    s = F.normalize(z, dim=1) @ F.normalize(joint, dim=1).T / temperature
    target = torch.arange(z.shape[0], device=z.device)
    return (F.cross_entropy(s, target) + F.cross_entropy(s.T, target)) / 2
