r"""Direct Advantage Policy Optimization (Liu et al. 2024, "Improving Multi-Step Reasoning Abilities of
Large Language Models with Direct Advantage Policy Optimization", arXiv 2412.18279; not ByteDance's DAPO;
no official code).

A step-level offline actor-critic. A critic :math:`V_\phi(s)` (trained first, separately) scores partial
solutions; a candidate next step :math:`a\sim\pi_{ref}(\cdot|s)` gets the advantage
:math:`A(s,a)=V_\phi(s\oplus a)-V_\phi(s)`. The KL-regularised step-level improvement is

.. math:: \pi^*(a|s)=\frac{\pi_{ref}(a|s)\,e^{A(s,a)/\beta}}{Z(s)},\qquad Z(s)=\sum_a\pi_{ref}(a|s)e^{A(s,a)/\beta},

i.e. :math:`\beta\log\frac{\pi^*(a|s)}{\pi_{ref}(a|s)}=A(s,a)-\beta\log Z(s)`, and the actor regresses its
log-ratio onto the advantage with a squared loss (**reconstructed**: the paper's summary describes "a
quadratic loss that aligns scaled advantages with log-policy ratios"; the exact normalisation, and how
the paper treats :math:`\log Z`, could not be checked against the paper's text here):

.. math:: \mathcal L_{DAPO}(\theta)=\mathbb E_{s\sim\mathcal D,\,a\sim\pi_{ref}(\cdot|s)}
          \Big[\Big(\beta\log\frac{\pi_\theta(a|s)}{\pi_{ref}(a|s)}-A(s,a)\Big)^2\Big].

Without a per-state constant its minimiser over normalised policies is *not* exactly :math:`\pi^*`
(the constraint :math:`\sum_a\pi_\theta=1` absorbs the :math:`\beta\log Z(s)` offset); with a free
per-state offset, or in the pairwise form :func:`dapo_pairwise_loss` (which cancels it), it is
(tests/test_dapo_direct_advantage_policy_optimization.py). Since :math:`\mathbb E_{\pi_{ref}}[A]=0`,
:math:`\beta\log Z(s)=O(\mathrm{Var}(A)/\beta)`: the plain form is the first-order approximation.

Shapes: one row per (state, candidate step): ``logp, logp_ref, adv: (N,)`` where ``logp`` is the step's
log-probability (the sum of its tokens' log-probs for a multi-token step).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(**xs: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in xs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes must match, got {shapes}")


def dapo_direct_loss(logp: Tensor, logp_ref: Tensor, adv: Tensor, beta: float,
                     offset: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The DAPO actor regression :math:`\frac1N\sum_n(\beta(\log\pi_\theta(a_n|s_n)-\log\pi_{ref}(a_n|s_n))+b_n-A_n)^2`.

    ``logp, logp_ref, adv: (N,)`` (``logp_ref`` and ``adv`` are constants, detached here); ``offset``:
    optional ``(N,)`` per-row value of a per-state constant :math:`b(s_n)` (a learnable
    :math:`\beta\log Z(s)`; ``None`` means 0, the plain form). Returns ``(loss: (), diag)`` with
    ``diag["implicit_adv"]`` :math:`=\beta\log\pi_\theta/\pi_{ref}` (N,).
    """
    _check(logp=logp, logp_ref=logp_ref, adv=adv)
    if beta <= 0:
        raise ValueError("beta must be > 0")
    h = beta * (logp - logp_ref.detach())  # (N,) implicit advantage
    pred = h if offset is None else h + offset
    loss = ((pred - adv.detach()) ** 2).mean()
    return loss, {"implicit_adv": h.detach()}


def dapo_pairwise_loss(logp_a: Tensor, logp_ref_a: Tensor, adv_a: Tensor, logp_b: Tensor, logp_ref_b: Tensor,
                       adv_b: Tensor, beta: float) -> Tensor:
    r"""Pairwise DAPO: two candidate steps :math:`a, b` at the *same* state,

    .. math:: \frac1N\sum_n\Big(\beta\log\frac{\pi_\theta(a_n|s_n)}{\pi_{ref}(a_n|s_n)}
              -\beta\log\frac{\pi_\theta(b_n|s_n)}{\pi_{ref}(b_n|s_n)}-(A(s_n,a_n)-A(s_n,b_n))\Big)^2.

    The per-state :math:`\beta\log Z(s)` cancels. It regresses DPO's implicit-reward margin
    :math:`\beta\Delta\log\frac{\pi_\theta}{\pi_{ref}}` onto the advantage margin (DPO instead pushes the
    margin of a preferred pair through :math:`-\log\sigma`). All inputs ``(N,)`` → ``()``.
    """
    _check(logp_a=logp_a, logp_ref_a=logp_ref_a, adv_a=adv_a, logp_b=logp_b, logp_ref_b=logp_ref_b, adv_b=adv_b)
    margin = beta * ((logp_a - logp_ref_a.detach()) - (logp_b - logp_ref_b.detach()))
    return ((margin - (adv_a - adv_b).detach()) ** 2).mean()


def kl_optimal_logpolicy(logp_ref: Tensor, adv: Tensor, beta: float) -> Tensor:
    r""":math:`\log\pi^*(a|s)=\log\pi_{ref}(a|s)+A(s,a)/\beta-\log Z(s)` over the last axis (all actions).

    ``logp_ref, adv: (..., V)`` → ``(..., V)``.
    """
    return torch.log_softmax(logp_ref + adv / beta, -1)
