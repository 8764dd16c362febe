r"""Proximal Policy Optimization for language models: the clipped surrogate and the critic's loss.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), eq. 7
(the clipped surrogate) and eq. 9 (the value-function term); as used for RLHF by
Ouyang et al. 2022 (InstructGPT, arXiv 2203.02155, eq. 2, where the KL to the SFT model is
folded into the reward).

.. math::
   L^{CLIP}(\theta) = \hat{\mathbb E}_t\Big[\min\big(\rho_t A_t,\ \operatorname{clip}(\rho_t,1-\varepsilon,1+\varepsilon)A_t\big)\Big],
   \qquad \rho_t = \frac{\pi_\theta(a_t|s_t)}{\pi_{\theta_{old}}(a_t|s_t)}

Unlike :func:`rlbook.losses.grpo_loss` (one advantage per *sequence*, averaged per
sequence first), PPO takes one advantage per *token* (from a learned critic, e.g. GAE) and
averages over all valid tokens of the batch. With equal lengths and a per-sequence
advantage broadcast over tokens the two are the same function (tested:
``tests/test_survey_rl_techniques_llms.py::test_edge_grpo_is_ppo_with_group_baseline``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, masked_mean


def ppo_clip_loss(
    logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, eps: float = 0.2
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The negative PPO clipped surrogate (Schulman et al. 2017, eq. 7), token-level mean.

    .. math:: \mathcal L = -\frac{1}{\sum_{n,t} m_{n,t}}\sum_{n,t} m_{n,t}\,
              \min\big(\rho_{n,t}A_{n,t},\ \operatorname{clip}(\rho_{n,t},1-\varepsilon,1+\varepsilon)A_{n,t}\big)

    ``logp, logp_old, adv, mask: (N, T)`` (per-token advantages; ``logp_old`` and ``adv``
    are constants, detached here) → ``loss: ()``. At ``logp == logp_old`` (the first
    epoch on fresh samples) its gradient is the REINFORCE gradient
    :math:`-\frac{1}{\sum m}\sum m\,A\,\nabla\log\pi_\theta` (tested). Diagnostics:
    ``clip_frac`` (fraction of valid tokens whose gradient the clip removes) and
    ``approx_kl`` (mean of :math:`\log\pi_{old}-\log\pi_\theta`, the usual PPO monitor).
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, logp_old=logp_old, adv=adv, mask=mask)
    a = adv.detach().to(logp.dtype)
    ratio = torch.exp(logp - logp_old.detach())  # (N, T)
    surr = torch.min(ratio * a, torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * a)  # (N, T)
    loss = -masked_mean(surr, mask)
    clipped = ((ratio > 1.0 + eps) & (a > 0)) | ((ratio < 1.0 - eps) & (a < 0))
    diag = {
        "clip_frac": masked_mean(clipped.to(logp.dtype), mask).detach(),
        "approx_kl": masked_mean((logp_old.detach() - logp).detach(), mask),
    }
    return loss, diag


def value_loss(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    r"""The critic's squared error (Schulman et al. 2017, eq. 9, :math:`L^{VF}`), token-level mean.

    .. math:: \mathcal L_V = \frac{1}{\sum m}\sum_{n,t} m_{n,t}\,\tfrac12\big(V_\phi(s_{n,t}) - \hat R_{n,t}\big)^2

    ``values, returns, mask: (N, T)`` → ``()``; ``returns`` is a constant (detached).
    """
    _check_same_shape(values=values, returns=returns, mask=mask)
    return masked_mean(0.5 * (values - returns.detach()) ** 2, mask)
