r"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, eq. 3).

.. math::
   \mathcal{J} = \frac1G\sum_{i=1}^G\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}\Big\{\min\big(\rho_{i,t}A_{i},
   \operatorname{clip}(\rho_{i,t},1-\varepsilon,1+\varepsilon)A_{i}\big)
   - \beta\,\mathbb{D}_{KL}^{k3}[\pi_\theta\|\pi_{ref}]_{i,t}\Big\},\qquad
   \rho_{i,t}=\frac{\pi_\theta(o_{i,t}|q,o_{i,<t})}{\pi_{\theta_{old}}(o_{i,t}|q,o_{i,<t})}

with :math:`A_i` from :func:`rlbook.losses.common.group_normalise` and the k3 KL of
:func:`rlbook.losses.common.kl_k3` (DeepSeekMath eq. 4). The loss is :math:`-\mathcal{J}`:
a mean over each sequence's tokens, then over sequences (the paper's aggregation; TRL
calls it ``loss_type="grpo"``, and TRL 1.16's *default* is ``"dapo"``, a token mean over
the batch: always set it explicitly).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, kl_k3, masked_mean


def grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    logp_ref: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""GRPO's clipped surrogate with an optional k3 KL penalty (the negative of eq. 3).

    .. math:: \mathcal L = \frac1N\sum_{n}\frac{\sum_t m_{n,t}\,\ell_{n,t}}{\max(1,\sum_t m_{n,t})},\quad
              \ell_{n,t} = -\min\big(\rho_{n,t}A_n,\ \operatorname{clip}(\rho_{n,t},1-\varepsilon_{low},1+\varepsilon_{high})A_n\big)
              + \beta\,k_3(n,t)

    ``logp, logp_old, mask: (N, T)``; ``adv: (N,)`` one advantage per sequence (flatten
    ``(B, G)`` to ``N = B*G``); ``logp_ref: (N, T)`` required when ``beta != 0``.
    ``logp_old`` and ``logp_ref`` are treated as constants (detach them upstream; the
    ratio's gradient flows through ``logp`` only). A sequence with no valid token adds 0
    but still counts in the mean over ``N`` (as in TRL).

    Returns ``(loss: (), diagnostics)``: ``clip_frac``, the fraction of valid tokens whose
    gradient the clip removes (:math:`\rho>1+\varepsilon_{high}` with :math:`A>0`, or
    :math:`\rho<1-\varepsilon_{low}` with :math:`A<0`; TRL's ``clip_ratio/region_mean``),
    and, when ``beta != 0``, ``kl``, the mean k3 over valid tokens (TRL's ``kl``).
    Equal to TRL 1.16 ``GRPOTrainer._compute_loss`` with ``loss_type="grpo"``,
    ``importance_sampling_level="token"``, ``delta=None`` (tests/test_trl_agreement.py).
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, logp_old=logp_old, mask=mask)
    if adv.shape != logp.shape[:1]:
        raise ValueError(f"adv must be (N,)={tuple(logp.shape[:1])}, got {tuple(adv.shape)}")
    ratio = torch.exp(logp - logp_old)  # (N, T)
    a = adv.detach()[:, None].to(logp.dtype)  # (N, 1)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a
    per_token = -torch.min(unclipped, clipped)  # (N, T)
    diag: dict[str, Tensor] = {}
    if beta != 0.0:
        if logp_ref is None:
            raise ValueError("beta != 0 needs logp_ref")
        kl = kl_k3(logp, logp_ref)  # (N, T)
        per_token = per_token + beta * kl
        diag["kl"] = masked_mean(kl, mask).detach()
    loss = masked_mean(per_token, mask, dim=-1).mean()  # mean over tokens, then sequences
    region_clipped = ((ratio > 1.0 + eps_high) & (a > 0)) | ((ratio < 1.0 - eps_low) & (a < 0))
    diag["clip_frac"] = masked_mean(region_clipped.to(logp.dtype), mask).detach()
    return loss, diag
