r"""The two RSO losses and SLiC's hinge (Liu et al. 2024, "Statistical Rejection Sampling
Improves Preference Optimization", ICLR 2024, arXiv 2309.06657, Sec. 3.1, eqs. 8-10).

RSO fits the Bradley-Terry model :math:`P(y_w\succ y_l)=\sigma(r^*(y_w)-r^*(y_l))` with the
reward written through the policy, :math:`r = \beta\log\frac{\pi}{\pi_{sft}}+\beta\log Z`
(eq. 5), as a binary classifier whose logit is the *normalised* log-likelihood margin

.. math:: h_\theta = \gamma\log\frac{\pi_\theta(y_w|x)}{\pi_{sft}(y_w|x)}-\gamma\log\frac{\pi_\theta(y_l|x)}{\pi_{sft}(y_l|x)}

with a logistic loss (*sigmoid-norm*, eq. 8: DPO's loss, DPO sets :math:`\gamma=\beta`) or a
hinge loss (*hinge-norm*, eq. 10: an SVM). SLiC's hinge (eq. 9, and eq. 1 without its
regulariser) is the hinge on *unnormalised* log-likelihoods with margin :math:`\delta=1/\gamma`.

Notation: the paper's :math:`\pi_{sft}` is the book's :math:`\pi_{ref}` (``logp_ref``); the
paper decouples the loss temperature :math:`\gamma` from the :math:`\beta` of the KL-regularised
objective (rejection sampling uses :math:`\beta`). TRL 1.16 ``DPOTrainer`` has both:
``loss_type="sigmoid"`` is eq. 8 and ``loss_type="hinge"`` is eq. 10, with ``beta`` = γ
(TRL's ``"sigmoid_norm"`` is something else: a *length*-normalised DPO).
Shapes: ``logp_w, logp_ref_w, logp_l, logp_ref_l: (N,)`` sequence log-probs → ``loss: ()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.common import _check_same_shape


def _normalised_margin(logp_w: Tensor, logp_ref_w: Tensor, logp_l: Tensor, logp_ref_l: Tensor, gamma: float) -> Tensor:
    """``(N,)``: γ log π(y_w)/π_sft(y_w) − γ log π(y_l)/π_sft(y_l)."""
    for name, t in dict(logp_w=logp_w, logp_ref_w=logp_ref_w, logp_l=logp_l, logp_ref_l=logp_ref_l).items():
        if t.dim() != 1:
            raise ValueError(f"{name} must be (N,) sequence log-probs, got shape {tuple(t.shape)}")
    _check_same_shape(logp_w=logp_w, logp_ref_w=logp_ref_w, logp_l=logp_l, logp_ref_l=logp_ref_l)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return gamma * ((logp_w - logp_ref_w) - (logp_l - logp_ref_l))


def sigmoid_norm_loss(
    logp_w: Tensor, logp_ref_w: Tensor, logp_l: Tensor, logp_ref_l: Tensor, gamma: float
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""RSO's sigmoid-norm loss (eq. 8): logistic regression on the normalised likelihood margin.

    .. math:: \mathcal L_{sigmoid\text{-}norm} = -\mathbb E\Big[\log\sigma\Big(\gamma\log\frac{\pi_\theta(y_w|x)}{\pi_{sft}(y_w|x)}
              -\gamma\log\frac{\pi_\theta(y_l|x)}{\pi_{sft}(y_l|x)}\Big)\Big]

    Equal to :func:`rlbook.losses.dpo_loss` with ``beta = gamma`` (tested). Returns
    ``(loss: (), {"margin": (N,)})``.
    """
    margin = _normalised_margin(logp_w, logp_ref_w, logp_l, logp_ref_l, gamma)
    return -F.logsigmoid(margin).mean(), {"margin": margin.detach()}


def hinge_norm_loss(
    logp_w: Tensor, logp_ref_w: Tensor, logp_l: Tensor, logp_ref_l: Tensor, gamma: float
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""RSO's hinge-norm loss (eq. 10): an SVM on the normalised likelihood margin.

    .. math:: \mathcal L_{hinge\text{-}norm} = \mathbb E\Big[\max\Big(0,\ 1-\Big[\gamma\log\frac{\pi_\theta(y_w|x)}{\pi_{sft}(y_w|x)}
              -\gamma\log\frac{\pi_\theta(y_l|x)}{\pi_{sft}(y_l|x)}\Big]\Big)\Big]

    A pair stops contributing once its margin reaches 1 (log-ratio gap ``1/γ``): unlike the
    sigmoid loss, hard labels do not push the margin to infinity. Equal to TRL 1.16
    ``DPOTrainer`` ``loss_type="hinge"`` with ``beta = gamma``. Returns
    ``(loss: (), {"margin": (N,)})``.
    """
    margin = _normalised_margin(logp_w, logp_ref_w, logp_l, logp_ref_l, gamma)
    return torch.relu(1.0 - margin).mean(), {"margin": margin.detach()}


def slic_hinge_loss(logp_w: Tensor, logp_l: Tensor, delta: float) -> Tensor:
    r"""SLiC's calibration hinge (Zhao et al. 2023, eq. 1 without the regulariser; RSO eq. 9 with δ = 1/γ).

    .. math:: \mathcal L_{hinge} = \mathbb E\big[\max\big(0,\ \delta-\log\pi_\theta(y_w|x)+\log\pi_\theta(y_l|x)\big)\big]

    ``logp_w, logp_l: (N,)`` → ``()``. Passed log-ratios instead of log-probs it becomes
    hinge-norm: ``hinge_norm_loss(γ) = γ · slic_hinge_loss(log-ratios, δ=1/γ)`` (tested).
    """
    if logp_w.dim() != 1:
        raise ValueError(f"logp_w must be (N,), got shape {tuple(logp_w.shape)}")
    _check_same_shape(logp_w=logp_w, logp_l=logp_l)
    return torch.relu(delta - logp_w + logp_l).mean()
