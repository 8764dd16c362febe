r"""Critique-GRPO (Zhang et al. 2025, "Critique-GRPO: Advancing LLM Reasoning with Natural Language and
Numerical Feedback", arXiv 2506.03106, Sec. 3; official code zhangxy-2019/critique-GRPO,
``verl/verl/critique_grpo/critique_core_algos.py::compute_token_on_off_policy_loss``).

For a question :math:`q` the group holds :math:`n` on-policy answers :math:`y_i\sim\pi_{\theta_{old}}(\cdot|q)`
and :math:`k` refinements :math:`y^{ref}_j\sim\pi_{\theta_{old}}(\cdot|q,y_{i_j},c_{i_j})` of failed answers
:math:`y_{i_j}` given critiques :math:`c_{i_j}`. Advantages are group-relative over all :math:`n+k`
(:func:`critique_group_advantage`); the refinement tokens are scored *under the bare question* and pass
through the policy-shaping function :math:`f(x)=x/(x+\gamma)` (LUFFY's ``p_div_p_0.1``):

.. math::
   \mathcal J(\theta)=\frac1Z\Big[\sum_{i=1}^{n}\sum_t\min\big(\rho_{i,t}A_i,\operatorname{clip}(\rho_{i,t},1\pm\varepsilon)A_i\big)
   +\sum_{j=1}^{k}\sum_t f\big(\pi_\theta(y^{ref}_{j,t}|q,y^{ref}_{j,<t})\big)A_j\Big],\qquad
   f(x)=\frac{x}{x+\gamma}.

The gradient of a refinement token is :math:`A_j\,\frac{\pi\gamma}{(\pi+\gamma)^2}\nabla\log\pi`
(:func:`shaping_weight`): small-probability tokens keep a gradient of order :math:`\pi/\gamma` instead of
:math:`\pi`, which is what lets the model learn a refinement it would almost never sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, masked_mean

AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "token-sum-norm")
"""loss aggregations: GRPO's (mean over each answer's tokens, then over answers), verl's ``token-mean``
(one mean over every valid token of the batch), and the official script's ``loss_remove_token_mean=True``
(sum over tokens divided by the padded length ``T``)"""


def shaping(p: Tensor, gamma: float) -> Tensor:
    r"""The policy-shaping function :math:`f(p)=p/(p+\gamma)` (paper Sec. 3; official ``off_policy_reshape="p_div_p_0.1"``)."""
    return p / (p + gamma)


def shaping_weight(p: Tensor, gamma: float) -> Tensor:
    r""":math:`\partial f(\pi)/\partial\log\pi = \pi\gamma/(\pi+\gamma)^2`: the shaped term's weight on :math:`\nabla\log\pi`.

    Maximal (1/4) at :math:`\pi=\gamma`; :math:`\approx\pi/\gamma` for :math:`\pi\ll\gamma`; the unshaped term
    :math:`f(\pi)=\pi` has weight :math:`\pi`, the log-likelihood (SFT) weight 1.
    """
    return p * gamma / (p + gamma) ** 2


def critique_group_advantage(r: Tensor, valid: Tensor | None = None, scale: bool = False, eps: float = 1e-6) -> Tensor:
    r"""Group-relative advantage over initial answers *and* refinements.

    :math:`A=(r-\bar r_{\mathcal G})/(\sigma_{\mathcal G}+\epsilon)` (the catalog's form).

    ``r: (B, n+k)`` rewards of the group :math:`\mathcal G(q)` (initial answers first, then refinements);
    ``valid: (B, n+k)`` marks the members that exist (a prompt with no failed answer gets no refinement).
    Mean and (unbiased) std over the valid members only; invalid members get advantage 0.
    ``scale=False`` is the official run's ``algorithm.grpo_use_std=False`` (no division by the std);
    ``scale=True`` is verl's ``compute_grpo_outcome_advantage`` with std (``eps = 1e-6``).
    """
    if r.dim() != 2:
        raise ValueError(f"r must be (B, n+k), got shape {tuple(r.shape)}")
    r = r.to(torch.get_default_dtype()) if not torch.is_floating_point(r) else r
    v = torch.ones_like(r) if valid is None else valid.to(r.dtype)
    cnt = v.sum(1, keepdim=True).clamp(min=1.0)
    mean = (r * v).sum(1, keepdim=True) / cnt
    adv = (r - mean) * v
    if scale:
        var = ((r - mean) ** 2 * v).sum(1, keepdim=True) / (cnt - 1.0).clamp(min=1.0)
        adv = adv / (var.sqrt() + eps)
    return adv


def critique_grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    refinement: Tensor,
    gamma: float = 0.1,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    clip: bool = True,
    agg: str = "seq-mean-token-mean",
    reshape: str = "p_div_p",
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The negative of the Critique-GRPO objective (module docstring; paper Sec. 3).

    ``logp, logp_old, mask: (N, T)`` per-token log-probs of the ``N`` group members *given the bare
    question* (``logp_old`` is a constant; it is ignored on refinement rows); ``adv: (N,)``;
    ``refinement: (N,)`` bool, True for refinement rows. On-policy rows: GRPO's clipped surrogate
    (``clip=False``: :math:`-\rho A`, the official ``loss_remove_clip=True``); refinement rows:
    :math:`-A\,f(\pi_\theta)` with :math:`f(p)=p/(p+\gamma)` (``reshape="p_div_p"``, the official
    ``off_policy_reshape="p_div_p_0.1"``) or the unshaped :math:`f(p)=p` (``reshape="none"``, the official
    ``"no_reshape"``: an importance weight against a behaviour probability of 1).
    ``agg`` (:data:`AGGREGATIONS`) sets the normaliser :math:`Z`; the default is GRPO's, so that with no refinement rows the loss *is*
    :func:`rlbook.losses.grpo_loss` (``tests/test_critique_grpo.py``). Returns ``(loss, diagnostics)``
    with ``off_prob`` (mean :math:`\pi_\theta` of valid refinement tokens) and ``off_weight`` (mean
    :func:`shaping_weight`).
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, logp_old=logp_old, mask=mask)
    N = logp.shape[0]
    if adv.shape != (N,) or refinement.shape != (N,):
        raise ValueError(f"adv and refinement must be (N,)=({N},), got {tuple(adv.shape)}, {tuple(refinement.shape)}")
    if gamma <= 0:
        raise ValueError("gamma must be > 0")
    if reshape not in ("p_div_p", "none"):
        raise ValueError(f"reshape must be 'p_div_p' or 'none', got {reshape!r}")
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    a = adv.detach()[:, None].to(logp.dtype)  # (N, 1)
    off = refinement.to(torch.bool)[:, None]  # (N, 1)
    ratio = torch.exp(logp - logp_old.detach())  # (N, T)
    on_tok = -ratio * a
    if clip:
        on_tok = torch.maximum(on_tok, -torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a)
    p = torch.exp(logp)
    off_tok = -(shaping(p, gamma) if reshape == "p_div_p" else p) * a
    per_token = torch.where(off, off_tok, on_tok)  # (N, T)
    m = mask.to(logp.dtype)
    if agg == "seq-mean-token-mean":
        loss = masked_mean(per_token, m, dim=-1).mean()
    elif agg == "token-mean":
        loss = masked_mean(per_token, m)
    else:
        loss = (per_token * m).sum() / logp.shape[1]
    off_m = m * off.to(m.dtype)
    n_off = off_m.sum().clamp(min=1.0)
    diag = {
        "off_prob": ((p * off_m).sum() / n_off).detach(),
        "off_weight": ((shaping_weight(p, gamma) * off_m).sum() / n_off).detach(),
    }
    return loss, diag
