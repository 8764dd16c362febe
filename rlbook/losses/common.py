"""Primitives shared by the objectives: masked means, sequence log-probs, KL, groups."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1.

    ``x, mask: (..., T)``; ``dim=None`` averages over every valid entry (→ ``()``),
    ``dim=-1`` over each row's valid tokens (→ ``(...)``). A row with no valid entry
    contributes 0 (its denominator is clamped to 1).
    """
    _check_same_shape(x=x, mask=mask)
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def sequence_logprob(logp: Tensor, mask: Tensor) -> Tensor:
    r"""Log-probability of whole sequences: :math:`\log\pi(y|x)=\sum_t \log\pi(y_t|x,y_{<t})`.

    ``logp, mask: (N, T)`` → ``(N,)``.
    """
    _check_same_shape(logp=logp, mask=mask)
    return (logp * mask.to(logp.dtype)).sum(-1)


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    r"""Per-token k3 estimator of KL(π_θ ‖ π_ref) (Schulman 2020), used by GRPO and TRL.

    .. math:: k_3 = e^{\log\pi_{ref}-\log\pi_\theta} - (\log\pi_{ref}-\log\pi_\theta) - 1 \ge 0

    Unbiased for KL(π_θ‖π_ref) when tokens are sampled from π_θ.
    ``logp, logp_ref: (N, T)`` → ``(N, T)``.
    """
    _check_same_shape(logp=logp, logp_ref=logp_ref)
    d = logp_ref - logp
    return torch.exp(d) - d - 1.0


def group_normalise(r: Tensor, scale: bool = True, eps: float = 1e-4) -> Tensor:
    r"""GRPO's group-relative advantage (Shao et al. 2024, DeepSeekMath eq. 3 area).

    .. math:: A_{b,g} = \frac{r_{b,g} - \operatorname{mean}_g r_{b,\cdot}}{\operatorname{std}_g r_{b,\cdot} + \varepsilon}

    ``std`` is the unbiased sample standard deviation, as in TRL's GRPOTrainer;
    ``scale=False`` drops the division (Dr. GRPO). ``r: (B, G)`` → ``(B, G)``.
    """
    if r.dim() != 2:
        raise ValueError(f"r must be (B, G), got shape {tuple(r.shape)}")
    centred = r - r.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (r.std(dim=1, keepdim=True) + eps)
