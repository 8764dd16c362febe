"""Primitives shared by the objectives: masked means, sequence log-probs, KL, groups."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_same_shape(**tensors: Tensor) -> None:
    """Raise ``ValueError`` naming every shape unless all ``tensors`` have the same shape."""
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
    r"""Log-probability of whole sequences: :math:`\log\pi(y|x)=\sum_t m_t\log\pi(y_t|x,y_{<t})`.

    ``logp, mask: (N, T)`` → ``(N,)`` (more generally ``(..., T)`` → ``(...)``).
    """
    _check_same_shape(logp=logp, mask=mask)
    if logp.dim() < 1:
        raise ValueError("logp must have a token axis (..., T), got a scalar")
    return (logp * mask.to(logp.dtype)).sum(-1)


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    r"""Per-token k3 estimator of KL(π_θ ‖ π_ref) (Schulman 2020, "Approximating KL
    divergence"; DeepSeekMath eq. 4), used by GRPO and by TRL's GRPOTrainer.

    .. math:: k_3 = e^{\log\pi_{ref}-\log\pi_\theta} - (\log\pi_{ref}-\log\pi_\theta) - 1 \ge 0

    It is 0 exactly where the two log-probs agree, never negative (:math:`e^d \ge 1+d`),
    and unbiased for KL(π_θ‖π_ref) when tokens are sampled from π_θ:
    :math:`\mathbb E_{\pi_\theta}[\pi_{ref}/\pi_\theta - 1] = 0`.
    ``logp, logp_ref: (N, T)`` (any equal shapes) → same shape.
    """
    _check_same_shape(logp=logp, logp_ref=logp_ref)
    d = logp_ref - logp
    return torch.exp(d) - d - 1.0


def group_normalise(r: Tensor, scale: bool = True, eps: float = 1e-4) -> Tensor:
    r"""GRPO's group-relative advantage (Shao et al. 2024, DeepSeekMath, Sec. 4.1.2).

    .. math:: A_{b,g} = \frac{r_{b,g} - \operatorname{mean}_{g'} r_{b,g'}}{\operatorname{std}_{g'} r_{b,g'} + \varepsilon}

    ``std`` is the unbiased (Bessel-corrected, divide by ``G-1``) sample standard
    deviation and ``eps = 1e-4`` is added to it, exactly as TRL 1.16's GRPOTrainer
    (``scale_rewards="group"``, ``trl.trainer.utils.nanstd``; tests/test_trl_agreement.py
    checks it). The paper writes ``std(r)`` without saying which. A group whose rewards
    are all equal gets advantage 0. ``scale=False`` drops the division (Dr. GRPO; TRL's
    ``scale_rewards="none"``): then each row sums to 0.

    ``r: (B, G)`` → ``(B, G)``; ``G >= 2`` when ``scale`` (a one-sample group has no std).
    """
    if r.dim() != 2:
        raise ValueError(f"r must be (B, G), got shape {tuple(r.shape)}")
    if not torch.is_floating_point(r):
        r = r.to(torch.get_default_dtype())
    centred = r - r.mean(dim=1, keepdim=True)  # (B, G)
    if not scale:
        return centred
    if r.shape[1] < 2:
        raise ValueError(f"group_normalise with scale=True needs G >= 2 samples per group, got G={r.shape[1]}")
    return centred / (r.std(dim=1, keepdim=True) + eps)  # std: (B, 1), unbiased


def grad_wrt(loss_fn, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
    """Gradient of the scalar ``loss_fn(*inputs)`` with respect to each input.

    The inputs are copied into fresh leaves (the originals are untouched), so a loss may
    use ``x.detach()`` for a stop-gradient term, e.g. ``logp_old = logp.detach()`` for an
    on-policy ratio of 1. Returns one tensor for one input, else a tuple; an input the
    loss does not use gets zeros. The notebooks use it to check gradient identities
    between objectives (the family tree's edges).
    """
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    grads = torch.autograd.grad(loss_fn(*xs), xs, allow_unused=True)
    grads = tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads))
    return grads[0] if len(grads) == 1 else grads
