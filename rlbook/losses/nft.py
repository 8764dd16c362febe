r"""Negative-aware Fine-Tuning (Chen et al. 2025, "Bridging Supervised Learning and Reinforcement
Learning in Math Reasoning", arXiv 2505.18116, Sec. 3, eqs. 6-9; official code NVlabs/NFT ``dp_actor.py``).

Answers sampled from :math:`\pi_{old}` split into positives and negatives,
:math:`\pi_{old}(y|q)=r_q\,\pi^+(y|q)+(1-r_q)\,\pi^-(y|q)`, with :math:`r_q` the question's
accuracy. NFT lets the trained model :math:`\pi_\theta` play :math:`\pi^+`, which *implicitly*
defines a negative policy :math:`\pi^-_\theta=(\pi_{old}-r_q\pi_\theta)/(1-r_q)`, and fits both by
maximum likelihood, positives under :math:`\pi_\theta`, negatives under :math:`\pi^-_\theta`:

.. math::
   \mathcal L_{NFT}(\theta) = \sum_{(q,y)} \omega(\hat r_q)\,\frac{1}{|y|}\sum_t\Big[
   -r(q,y)\log R^\theta_{t} - (1-r(q,y))\,\lambda_{neg}\,
   \log\operatorname{max}_{\nabla}\Big(\frac{1-\hat r_q R^\theta_{t}}{1-\hat r_q},\ \epsilon\Big)\Big],
   \qquad R^\theta_t=\frac{\pi_\theta(y_t|q,y_{<t})}{\pi_{old}(y_t|q,y_{<t})}

(token-level ratios, the paper's practical form). :math:`\operatorname{max}_\nabla` is the official
code's ``clamp_preserve_grad``: the value is clamped from below at :math:`\epsilon`, the gradient is
the unclamped one (``x + (clamp(x) - x).detach()``). :math:`\hat r_q` is clamped to
``[0.02, 0.98]`` as in the official code. :math:`\lambda_{neg}=0` is rejection-sampling
fine-tuning (RFT). Prompt weights :math:`\omega`: ``"dr_grpo"`` :math:`1-\hat r_q` (official
``normalize=1``, the default), ``"grpo"`` :math:`\sqrt{(1-\hat r_q)/\hat r_q}` (``normalize=2``),
``"none"`` 1. At :math:`R=1` (strictly on-policy) the gradient equals Dr. GRPO's / GRPO's
policy gradient with the group advantage (paper Sec. 4.2, Proposition 4.1;
tests/test_negative_aware_fine_tuning.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, masked_mean

PROMPT_WEIGHTS = ("dr_grpo", "grpo", "none")
"""prompt weightings omega(r_hat) of the official code (normalize = 1, 2, 0)"""


def clamp_preserve_grad(x: Tensor, min_val: float) -> Tensor:
    """The value of ``clamp(x, min=min_val)`` with the gradient of ``x`` (official ``clamp_preserve_grad``)."""
    return x + (x.clamp(min=min_val) - x).detach()


def nft_prompt_weights(r: Tensor, prompt_weight: str = "dr_grpo", r_hat_clamp: float = 0.02) -> tuple[Tensor, Tensor]:
    r"""Per-prompt accuracy :math:`\hat r_q` (clamped to ``[r_hat_clamp, 1 - r_hat_clamp]``) and weight :math:`\omega`.

    ``r: (B, G)`` 0/1 rewards → ``(r_hat: (B,), w: (B,))``. ``w`` is 0 for a group whose rewards
    are all equal (the official runs filter such groups out).
    """
    if prompt_weight not in PROMPT_WEIGHTS:
        raise ValueError(f"prompt_weight must be one of {PROMPT_WEIGHTS}, got {prompt_weight!r}")
    if r.dim() != 2:
        raise ValueError(f"r must be (B, G), got shape {tuple(r.shape)}")
    r = r.to(torch.get_default_dtype()) if not torch.is_floating_point(r) else r
    keep = (r.max(1).values > r.min(1).values).to(r.dtype)  # (B,) mixed groups only
    r_hat = r.mean(1).clamp(r_hat_clamp, 1.0 - r_hat_clamp)  # (B,)
    if prompt_weight == "dr_grpo":
        w = 1.0 - r_hat
    elif prompt_weight == "grpo":
        w = ((1.0 - r_hat) / r_hat).sqrt()
    else:
        w = torch.ones_like(r_hat)
    return r_hat, w * keep


def nft_sample_loss(
    logp: Tensor,
    logp_old: Tensor,
    mask: Tensor,
    correct: Tensor,
    r_hat: Tensor,
    w: Tensor,
    neg_weight: float = 1.0,
    eps: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The NFT loss with per-sequence statistics: ``correct, r_hat, w: (N,)`` (see :func:`nft_loss`).

    ``logp, logp_old, mask: (N, T)``. Used directly by the TRL trainer of the full profile,
    where a device's micro-batch need not hold whole groups.
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, logp_old=logp_old, mask=mask)
    for name, v in (("correct", correct), ("r_hat", r_hat), ("w", w)):
        if v.shape != logp.shape[:1]:
            raise ValueError(f"{name} must be (N,)={tuple(logp.shape[:1])}, got {tuple(v.shape)}")
    pos = correct.detach().to(logp.dtype)[:, None]  # (N, 1)
    rh = r_hat.detach().to(logp.dtype)[:, None]  # (N, 1)
    ww = w.detach().to(logp.dtype)[:, None]  # (N, 1)
    log_ratio = logp - logp_old.detach()  # (N, T)
    ratio = torch.exp(log_ratio.clamp(max=10.0))  # official: exp(clamp(log R, max=10))
    neg_ratio = (1.0 - rh * ratio) / (1.0 - rh)  # (N, T): pi^-_theta / pi_old per token
    neg_term = -torch.log(clamp_preserve_grad(neg_ratio, eps))
    pos_term = -log_ratio
    per_token = ww * (pos * pos_term + (1.0 - pos) * neg_weight * neg_term)
    loss = masked_mean(per_token, mask, dim=-1).mean()  # mean over tokens, then sequences
    neg_mask = mask.to(logp.dtype) * (1.0 - pos) * (ww > 0).to(logp.dtype)
    n_neg = neg_mask.sum().clamp(min=1.0)
    diag = {
        "clamp_frac": ((neg_ratio < eps).to(logp.dtype) * neg_mask).sum().detach() / n_neg,
        "neg_ratio": neg_ratio.detach(),
        "neg_mask": neg_mask.detach(),
    }
    return loss, diag


def nft_loss(
    logp: Tensor,
    logp_old: Tensor,
    mask: Tensor,
    r: Tensor,
    neg_weight: float = 1.0,
    prompt_weight: str = "dr_grpo",
    eps: float = 1.0,
    r_hat_clamp: float = 0.02,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The NFT loss (the module docstring's equation; paper eqs. 8-9, official ``dp_actor.py``).

    ``logp, logp_old, mask: (N, T)`` with ``N = B*G`` (rows ``b*G + g``; ``logp_old`` is a
    constant), ``r: (B, G)`` 0/1 verifier rewards; :math:`\hat r_q` is the group's mean reward.
    ``neg_weight``: :math:`\lambda_{neg}` (1 = NFT, 0 = RFT). ``prompt_weight``: ``"dr_grpo"``,
    ``"grpo"`` or ``"none"``. ``eps``: the lower clamp of the negative ratio
    :math:`(1-\hat r R)/(1-\hat r)` (the official 7B script's ``clamp_negative=1.0``; a
    gradient-preserving clamp). Aggregation: mean over each sequence's valid tokens, then mean
    over the ``N`` sequences, as :func:`rlbook.losses.grpo_loss` (the official code sums tokens
    and divides by a constant 1000). Groups whose rewards are all equal contribute nothing
    (the official runs drop them: DAPO's dynamic sampling, ``enable_filter_groups=True``).

    Returns ``(loss: (), diagnostics)``: ``clamp_frac``, the fraction of valid negative tokens
    whose negative ratio is below ``eps``; ``neg_ratio`` ``(N, T)`` and ``neg_mask`` ``(N, T)``.
    """
    if r.dim() != 2 or r.numel() != logp.shape[0]:
        raise ValueError(f"r must be (B, G) with B*G = N = {logp.shape[0]}, got {tuple(r.shape)}")
    G = r.shape[1]
    r_hat, w = nft_prompt_weights(r.to(logp.dtype), prompt_weight, r_hat_clamp)
    return nft_sample_loss(logp, logp_old, mask, r.flatten(), r_hat.repeat_interleave(G), w.repeat_interleave(G),
                           neg_weight, eps)
