r"""Beta Normalization Policy Optimization (Xiao et al. 2025, BNPO, arXiv 2506.02864).

For a binary reward :math:`R(q,o)\in\{0,1\}` and the group estimate of the success rate
:math:`\hat p(q)=\frac1G\sum_i R(q,o_i)`, BNPO's advantage is the centred reward divided by a
Beta *density* evaluated at :math:`\hat p(q)`:

.. math:: A_{\alpha,\beta}(q,o)=\frac{R(q,o)-\hat p(q)}{f_N(\hat p(q);\alpha,\beta)},\qquad
          f_N(p;\alpha,\beta)=\frac{p^{\alpha-1}(1-p)^{\beta-1}}{B(\alpha,\beta)}

(the paper's normalised advantage; the paper's equation numbers were not checked here, the official
code was). :math:`(a,b)` of the Beta model
:math:`p(q)\sim\mathrm{Beta}(a,b)` are re-estimated every batch by the method of moments over the
group means, and :math:`\alpha=\max(1,1+a/3)`, :math:`\beta=\max(1,1+b/3)` minimise the gradient
variance (the paper's variance theorem; the official code ``compute_bnpo_outcome_advantage`` in
``recipe/bnpo/src/bnpo_ray_trainer.py`` of github.com/changyi7231/BNPO). With
:math:`\alpha=\beta=1` this is REINFORCE with the group-mean baseline; with
:math:`\alpha=\beta=3/2` it is :math:`\pi/8` times GRPO's advantage with the population std.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def beta_pdf(p: Tensor, alpha: float | Tensor, beta: float | Tensor) -> Tensor:
    r""":math:`f_N(p;\alpha,\beta)=p^{\alpha-1}(1-p)^{\beta-1}/B(\alpha,\beta)`, elementwise, any shape.

    Uses ``xlogy`` so that :math:`0^0=1` (the uniform density is 1 at the end points, where
    ``torch.distributions.Beta.log_prob`` returns ``nan``).
    """
    p = torch.as_tensor(p, dtype=torch.get_default_dtype() if not torch.is_floating_point(torch.as_tensor(p)) else None)
    a = torch.as_tensor(alpha, dtype=p.dtype)
    b = torch.as_tensor(beta, dtype=p.dtype)
    log_b = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return torch.exp(torch.xlogy(a - 1, p) + torch.xlogy(b - 1, 1 - p) - log_b)


def beta_moments(p_hat: Tensor) -> tuple[Tensor, Tensor]:
    r"""Method-of-moments fit of :math:`\mathrm{Beta}(a,b)` to the group means ``p_hat: (B,)``.

    .. math:: m=\overline{\hat p},\ v=\mathrm{Var}(\hat p),\quad
              a=\Big(\frac{m(1-m)}{v}-1\Big)m,\quad b=\Big(\frac{m(1-m)}{v}-1\Big)(1-m)

    ``v`` is the unbiased variance (``torch.var``, as the official code). With one prompt the
    official code uses ``m = 0, v = 1`` (then :math:`a=0, b=-1` and :math:`\alpha=\beta=1`); a zero
    variance gives infinite ``a, b`` (any finite batch: the caller clamps). Returns scalars.
    """
    if p_hat.dim() != 1:
        raise ValueError(f"p_hat must be (B,), got shape {tuple(p_hat.shape)}")
    if p_hat.numel() > 1:
        m, v = p_hat.mean(), p_hat.var()
    else:
        m, v = torch.zeros((), dtype=p_hat.dtype), torch.ones((), dtype=p_hat.dtype)
    k = m * (1 - m) / v - 1
    return k * m, k * (1 - m)


def bnpo_params(a: Tensor | float, b: Tensor | float) -> tuple[Tensor, Tensor]:
    r"""The variance-minimising normalisation of the paper: :math:`\alpha=\max(1,1+a/3)`, :math:`\beta=\max(1,1+b/3)`."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.clamp(1 + a / 3, min=1.0), torch.clamp(1 + b / 3, min=1.0)


def bnpo_advantage(r: Tensor, alpha: float | Tensor | None = None, beta: float | Tensor | None = None,
                   max_weight: float = 1e6) -> tuple[Tensor, dict[str, Tensor]]:
    r"""BNPO advantages of binary (or [0, 1]) rewards ``r: (B, G)`` -> ``(B, G)``.

    .. math:: A_{b,g}=\min\Big(\frac{1}{f_N(\hat p_b;\alpha,\beta)},\ w_{max}\Big)\,(r_{b,g}-\hat p_b),
              \qquad \hat p_b=\frac1G\sum_g r_{b,g}

    ``alpha, beta``: fixed normalisation parameters; ``None`` (the paper) fits :math:`(a,b)` by
    :func:`beta_moments` over the batch's group means and uses :func:`bnpo_params`. The clamp
    ``max_weight = 1e6`` is the official code's (a group of equal rewards has advantage 0 anyway).
    Returns ``(A, info)`` with ``info = {"a", "b", "alpha", "beta"}`` (scalars; ``a, b`` are nan
    when the parameters were given).
    """
    if r.dim() != 2:
        raise ValueError(f"r must be (B, G), got shape {tuple(r.shape)}")
    if not torch.is_floating_point(r):
        r = r.to(torch.get_default_dtype())
    if (alpha is None) != (beta is None):
        raise ValueError("give both alpha and beta, or neither (fitted)")
    p_hat = r.mean(dim=1)  # (B,)
    if alpha is None:
        a, b = beta_moments(p_hat.double())
        al, be = bnpo_params(a, b)
    else:
        a = b = torch.tensor(float("nan"), dtype=torch.float64)
        al, be = torch.as_tensor(alpha, dtype=torch.float64), torch.as_tensor(beta, dtype=torch.float64)
        if bool(al < 1) or bool(be < 1):
            raise ValueError(f"alpha, beta must be >= 1 (the density must stay finite on [0, 1]), got {float(al)}, {float(be)}")
    w = torch.clamp(1.0 / beta_pdf(p_hat.double(), al, be), min=0.0, max=max_weight).to(r.dtype)  # (B,)
    adv = w[:, None] * (r - p_hat[:, None])
    return adv, {"a": a, "b": b, "alpha": al, "beta": be}


def bnpo_decomposed_advantage(r: Tensor, **kw) -> Tensor:
    r"""Advantage decomposition for a reward with ``K`` binary parts ``r: (B, G, K)`` -> ``(B, G)``.

    .. math:: A=\frac1K\sum_{k=1}^K A^{(k)}_{\alpha_k,\beta_k}

    each part normalised by its own fitted Beta (:func:`bnpo_advantage`), then averaged (the paper's
    advantage decomposition; the official ``use_advantage_decomposition`` loop sums the parts and divides by their count).
    """
    if r.dim() != 3:
        raise ValueError(f"r must be (B, G, K), got shape {tuple(r.shape)}")
    return torch.stack([bnpo_advantage(r[..., k], **kw)[0] for k in range(r.shape[-1])], -1).mean(-1)


def bnpo_variance(a: float, b: float, alpha: float, beta: float) -> float:
    r"""Closed-form gradient second moment of the normalised estimator when :math:`p\sim\mathrm{Beta}(a,b)`.

    .. math:: V(\alpha,\beta)=\mathbb E_{p\sim\mathrm{Beta}(a,b)}\Big[\frac{p(1-p)}{f_N(p;\alpha,\beta)^2}\Big]
              =\frac{B(\alpha,\beta)^2\,B(a+3-2\alpha,\,b+3-2\beta)}{B(a,b)}

    (the per-sample score taken of unit norm; derived in the chapter). ``inf`` where the integral
    diverges (:math:`a+3-2\alpha\le0` or :math:`b+3-2\beta\le0`). Its minimiser is
    :math:`(1+a/3,\,1+b/3)`.
    """
    x, y = a + 3 - 2 * alpha, b + 3 - 2 * beta
    if x <= 0 or y <= 0:
        return math.inf

    def lbeta(u, v):
        return math.lgamma(u) + math.lgamma(v) - math.lgamma(u + v)

    return math.exp(2 * lbeta(alpha, beta) + lbeta(x, y) - lbeta(a, b))
