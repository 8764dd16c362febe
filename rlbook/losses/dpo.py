"""Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.common import _check_same_shape, sequence_logprob


def implicit_reward(logp: Tensor, logp_ref: Tensor, beta: float) -> Tensor:
    r"""DPO's implicit reward :math:`\beta\log\frac{\pi_\theta}{\pi_{ref}}`, elementwise.

    On per-token log-probs ``(N, T)`` it is the per-token implicit reward of
    Rafailov et al. 2024 ("From r to Q*", eq. 6 area); on sequence log-probs ``(N,)``
    the sequence-level reward :math:`r_\theta(x,y)` of DPO (eq. 5).
    """
    return beta * (logp - logp_ref)


def dpo_loss(
    logp_w: Tensor, logp_ref_w: Tensor, logp_l: Tensor, logp_ref_l: Tensor, beta: float
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The DPO loss on sequence log-probs (DPO paper, eq. 7).

    .. math:: \mathcal{L}_{DPO} = -\mathbb{E}\Big[\log\sigma\Big(\beta\log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
              - \beta\log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)\Big]

    Args: ``logp_w, logp_ref_w, logp_l, logp_ref_l: (N,)`` sequence log-probs of the
    chosen (w) and rejected (l) responses under the policy and the reference.
    Returns ``(loss: (), diagnostics)`` with the implicit rewards ``reward_w, reward_l: (N,)``
    and the preference ``margin: (N,)`` (what TRL logs as rewards/chosen, rejected, margins).
    Equal to TRL 1.16 ``DPOTrainer`` with ``loss_type=["sigmoid"]`` (its default) and the
    default ``f_divergence_type="reverse_kl"``, ``use_weighting=False``, ``ld_alpha=None``
    (tests/test_trl_agreement.py): the mean over the N pairs of ``-logsigmoid(margin)``.
    """
    for name, t in dict(logp_w=logp_w, logp_ref_w=logp_ref_w, logp_l=logp_l, logp_ref_l=logp_ref_l).items():
        if t.dim() != 1:
            raise ValueError(f"{name} must be (N,) sequence log-probs, got shape {tuple(t.shape)}")
    _check_same_shape(logp_w=logp_w, logp_ref_w=logp_ref_w, logp_l=logp_l, logp_ref_l=logp_ref_l)
    reward_w = implicit_reward(logp_w, logp_ref_w, beta)
    reward_l = implicit_reward(logp_l, logp_ref_l, beta)
    margin = reward_w - reward_l
    loss = -F.logsigmoid(margin).mean()
    return loss, {"reward_w": reward_w.detach(), "reward_l": reward_l.detach(), "margin": margin.detach()}


def dpo_token_loss(
    logp_w: Tensor,
    logp_ref_w: Tensor,
    mask_w: Tensor,
    logp_l: Tensor,
    logp_ref_l: Tensor,
    mask_l: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""DPO from per-token log-probs: the token-level form of "From r to Q*" (eq. 9).

    .. math:: \mathcal{L} = -\mathbb{E}\Big[\log\sigma\Big(\sum_t \beta\log\frac{\pi_\theta(a^w_t|s^w_t)}{\pi_{ref}(a^w_t|s^w_t)}
              - \sum_t \beta\log\frac{\pi_\theta(a^l_t|s^l_t)}{\pi_{ref}(a^l_t|s^l_t)}\Big)\Big]

    Identical to :func:`dpo_loss` on the summed log-probs (a unit test checks it): the
    sum of per-token implicit rewards telescopes to the sequence-level reward.
    Shapes: ``logp_*, mask_*: (N, T)`` (chosen and rejected may differ in ``T``).
    """
    for name, t in dict(logp_w=logp_w, logp_l=logp_l).items():
        if t.dim() != 2:
            raise ValueError(f"{name} must be (N, T) per-token log-probs, got shape {tuple(t.shape)}")
    return dpo_loss(
        sequence_logprob(logp_w, mask_w),
        sequence_logprob(logp_ref_w, mask_w),
        sequence_logprob(logp_l, mask_l),
        sequence_logprob(logp_ref_l, mask_l),
        beta,
    )
