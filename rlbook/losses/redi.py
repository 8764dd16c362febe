r"""Reinforcement Distillation (REDI) and its sigmoid-weighted relative SimPO.

REDI (Xu et al. 2025, "Harnessing Negative Signals: Reinforcement Distillation from Teacher
Data for LLM Reasoning", arXiv 2505.24850, Sec. 4, the REDI objective; official code
Tim-Siu/reinforcement-distillation, ``trl/trl/trainer/dpo2_trainer.py``, ``loss_type ==
"reinforce"``):

.. math::
   \mathcal L_{REDI}(\theta)=\mathbb E_{(x,y_w,y_l)}\Big[-\frac{\log\pi_\theta(y_w|x)}{|y_w|}
   +\alpha\,\frac{\log\pi_\theta(y_l|x)}{|y_l|}\Big]

with the official code's ``reinforce_chosen_coef`` (1.0) on the positive and
``reinforce_rejected_coef`` :math:`=\alpha` (0.8 in the released recipe) on the negative,
:math:`|y|` the number of completion tokens (the completion attention mask's sum), and the mean
over pairs. Reference-free, no sigmoid: every pair keeps a constant weight however large its
margin. :math:`\alpha=0` is SFT on the positives (rejection-sampling SFT) with per-sequence
length normalisation.

SimPO (Meng et al. 2024, arXiv 2405.14734, eq. 6), the reference-free pairwise baseline:

.. math::
   \mathcal L_{SimPO}=-\mathbb E\Big[\log\sigma\Big(\frac{\beta}{|y_w|}\log\pi_\theta(y_w|x)
   -\frac{\beta}{|y_l|}\log\pi_\theta(y_l|x)-\gamma\Big)\Big]

Its per-pair gradient is exactly :math:`\beta\,\sigma(-m)` times REDI's with :math:`\alpha=1`
(:math:`m` the SimPO margin): the sigmoid weight vanishes on well-separated pairs
(tests/test_redi_reinforcement_distillation.py).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.common import _check_same_shape, masked_mean


def _norm_logp(logp: Tensor, mask: Tensor, name: str) -> Tensor:
    """Length-normalised sequence log-prob ``sum_t m_t logp_t / max(sum_t m_t, 1)``: ``(N, T) -> (N,)``."""
    if logp.dim() != 2:
        raise ValueError(f"{name} must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    return masked_mean(logp, mask, dim=-1)


def redi_loss(
    logp_w: Tensor, mask_w: Tensor, logp_l: Tensor, mask_l: Tensor, alpha: float = 0.8, chosen_coef: float = 1.0
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The REDI loss (the module docstring's equation; official ``loss_type="reinforce"``).

    ``logp_w, mask_w: (N, T_w)`` per-token log-probs and valid-token mask of the positive
    (chosen) traces; ``logp_l, mask_l: (N, T_l)`` of the negative (rejected) ones.
    ``alpha``: the negative weight (official ``reinforce_rejected_coef``, 0.8 in the released
    recipe ``redi_1_08_1e-6``); ``chosen_coef``: the positive weight (official
    ``reinforce_chosen_coef``, 1.0). Lengths are the valid-token counts, clamped to >= 1
    (as the official ``safe_*_lengths``). The official option ``use_neg_weighting`` (off in the
    recipe) is not implemented.

    Returns ``(loss: (), diagnostics)`` with ``norm_logp_w, norm_logp_l: (N,)`` (what the
    official trainer logs as rewards/chosen and rewards/rejected).
    """
    _check_same_shape(logp_w=logp_w, mask_w=mask_w)
    _check_same_shape(logp_l=logp_l, mask_l=mask_l)
    if alpha < 0 or chosen_coef < 0:
        raise ValueError("alpha and chosen_coef must be >= 0")
    nw = _norm_logp(logp_w, mask_w, "logp_w")  # (N,)
    nl = _norm_logp(logp_l, mask_l, "logp_l")  # (N,)
    if nw.shape != nl.shape:
        raise ValueError(f"positive and negative batches differ: {tuple(nw.shape)} vs {tuple(nl.shape)}")
    losses = -chosen_coef * nw + alpha * nl  # (N,)
    return losses.mean(), {"norm_logp_w": nw.detach(), "norm_logp_l": nl.detach()}


def simpo_loss(
    logp_w: Tensor, mask_w: Tensor, logp_l: Tensor, mask_l: Tensor, beta: float = 2.0, gamma: float = 0.5
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The SimPO loss (the module docstring's second equation; SimPO paper eq. 6).

    Shapes as :func:`redi_loss`. ``beta``: the reward scale (the SimPO paper uses 2.0-2.5 on
    its Mistral / Llama-3 settings); ``gamma``: the target reward margin :math:`\gamma`
    (TRL's ``CPOTrainer`` ``simpo_gamma``). Returns ``(loss: (), diagnostics)`` with ``margin: (N,)`` and
    ``weight: (N,)`` :math:`=\sigma(-\text{margin})`, the factor that scales each pair's gradient.
    """
    _check_same_shape(logp_w=logp_w, mask_w=mask_w)
    _check_same_shape(logp_l=logp_l, mask_l=mask_l)
    nw = _norm_logp(logp_w, mask_w, "logp_w")
    nl = _norm_logp(logp_l, mask_l, "logp_l")
    if nw.shape != nl.shape:
        raise ValueError(f"positive and negative batches differ: {tuple(nw.shape)} vs {tuple(nl.shape)}")
    margin = beta * nw - beta * nl - gamma  # (N,)
    loss = -F.logsigmoid(margin).mean()
    return loss, {"margin": margin.detach(), "weight": (-margin).sigmoid().detach(),
                  "norm_logp_w": nw.detach(), "norm_logp_l": nl.detach()}
