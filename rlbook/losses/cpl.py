r"""Contrastive Preference Learning (Hejna et al. 2023, "Contrastive Preference Learning: Learning
from Human Feedback without RL", arXiv 2310.13639; official code github.com/jhejna/cpl).

CPL assumes that a person prefers the segment with the larger *regret*-based score
:math:`\sum_t\gamma^t A^*(s_t,a_t)` (the paper's Sec. 2) and that, in maximum-entropy RL with
temperature :math:`\alpha`, the optimal advantage is the optimal policy's log-likelihood,
:math:`A^*(s,a)=\alpha\log\pi^*(a|s)` (Sec. 3.1). Substituting the policy for the advantage
turns preference learning into a logistic (contrastive) loss on segment log-likelihoods.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.common import _check_same_shape


def segment_score(logp: Tensor, mask: Tensor, alpha: float, gamma: float = 1.0) -> Tensor:
    r"""CPL's estimate of a segment's discounted regret score, :math:`\sum_t\gamma^t\alpha\log\pi_\theta(a_t|s_t)`.

    ``logp, mask: (N, T)`` per-step log-probs of the segment's actions and valid steps → ``(N,)``.
    ``gamma = 1`` is what the official code does (``segment_adv = (alpha * lp).sum(-1)``).
    """
    _check_same_shape(logp=logp, mask=mask)
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T), got shape {tuple(logp.shape)}")
    disc = gamma ** torch.arange(logp.shape[-1], dtype=logp.dtype, device=logp.device)  # (T,)
    return alpha * (logp * mask.to(logp.dtype) * disc).sum(-1)


def cpl_loss(
    logp_pos: Tensor,
    mask_pos: Tensor,
    logp_neg: Tensor,
    mask_neg: Tensor,
    alpha: float,
    lam: float = 1.0,
    gamma: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The CPL(λ) loss (Sec. 3.1 for λ = 1; the conservative variant of Sec. 3.2 for λ < 1).

    .. math:: \mathcal L_{CPL(\lambda)} = -\mathbb E\Big[\log
              \frac{\exp\sum_t\gamma^t\alpha\log\pi_\theta(a^+_t|s^+_t)}
                   {\exp\sum_t\gamma^t\alpha\log\pi_\theta(a^+_t|s^+_t)
                    + \exp\lambda\sum_t\gamma^t\alpha\log\pi_\theta(a^-_t|s^-_t)}\Big]
              = -\mathbb E\big[\log\sigma\big(S_\theta(\sigma^+) - \lambda S_\theta(\sigma^-)\big)\big]

    with :math:`S_\theta` from :func:`segment_score`. ``lam`` is the official code's
    ``contrastive_bias`` (``biased_bce_with_logits``: ``logit = adv_pos - bias * adv_neg``,
    ``0 < bias <= 1``); ``lam = 1`` is the maximum-likelihood estimator of the regret
    preference model. Since :math:`\log\pi\le 0`, ``lam < 1`` raises the negative segment's
    score, so the loss is only small when the positive segment is *likely*: a push towards
    actions in the data (the paper's conservative regulariser for finite offline data).

    Shapes: ``logp_pos, mask_pos: (N, T+)``, ``logp_neg, mask_neg: (N, T-)`` → ``loss: ()``;
    diagnostics ``score_pos, score_neg: (N,)`` and ``accuracy`` (share with score_pos > score_neg).
    """
    if not 0.0 < lam <= 1.0:
        raise ValueError(f"lam (contrastive_bias) must be in (0, 1], got {lam}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    s_pos = segment_score(logp_pos, mask_pos, alpha, gamma)
    s_neg = segment_score(logp_neg, mask_neg, alpha, gamma)
    loss = -F.logsigmoid(s_pos - lam * s_neg).mean()
    acc = (s_pos > s_neg).to(s_pos.dtype).mean()
    return loss, {"score_pos": s_pos.detach(), "score_neg": s_neg.detach(), "accuracy": acc.detach()}
