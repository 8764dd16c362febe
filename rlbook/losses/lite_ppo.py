r"""Lite PPO (Liu et al. 2025, "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning", arXiv 2508.08221).

Lite PPO is the vanilla clipped PPO surrogate without a critic, with two of the "tricks" the
paper studies switched on: (1) the advantage is the reward centred by its **group** mean and
scaled by the **batch** standard deviation, and (2) the loss is a **token-level** mean over the
whole batch.

.. math::
   A_i=\frac{r_i-\operatorname{mean}_{j\in\mathcal G(q)}r_j}{\operatorname{std}_{j\in\mathcal B}r_j+\varepsilon}
   \quad\text{(Lite PPO)}\qquad\text{vs}\qquad
   A_i=\frac{r_i-\operatorname{mean}_{\mathcal G(q)}r}{\operatorname{std}_{\mathcal G(q)}r+\varepsilon}
   \quad\text{(GRPO)}

.. math::
   \mathcal L_{token}=-\frac{1}{\sum_i|o_i|}\sum_i\sum_t\min\big(\rho_{i,t}A_i,\
   \operatorname{clip}(\rho_{i,t},1-\varepsilon_{low},1+\varepsilon_{high})A_i\big)
   \qquad\text{vs}\qquad
   \mathcal L_{seq}=-\frac1N\sum_i\frac{1}{|o_i|}\sum_t(\cdot)

Checked against the official code, github.com/alibaba/ROLL: ``reward_norm`` in
``roll/utils/functionals.py`` (``norm_mean_type="group"``, ``norm_std_type="batch"``: the batch
std is ``torch.std`` -- Bessel-corrected -- of the *raw* rewards of the whole batch, plus 1e-6),
``agg_loss`` in the same file (``loss_agg_mode="token-mean"`` vs ``"seq-mean-token-mean"``) and
``ActorWorker.loss_func`` in ``roll/pipeline/rlvr/actor_worker.py`` (``ratio.clamp(1 - pg_clip_low,
1 + pg_clip_high)``, ``-min(surr1, surr2)``). TRL 1.16's ``GRPOTrainer`` implements the same
advantage with ``scale_rewards="batch"`` (``nanstd`` of all rewards, Bessel, + 1e-4) and the
token-level mean with ``loss_type="bnpo"`` (per device batch) or ``"dapo"`` (per generation batch);
tests/test_tricks_or_traps_lite_ppo.py checks both against TRL's own code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, masked_mean

MEANS = ("group", "batch")
"""where the baseline (the mean) is taken"""
STDS = ("group", "batch", "none")
"""where the scale (the standard deviation) is taken; "none" only centres"""
AGGREGATIONS = ("token", "sequence")
"""how per-token losses are averaged: over all tokens of the batch, or per sequence then over sequences"""


def normalise_advantages(r: Tensor, mean: str = "group", std: str = "batch", eps: float = 1e-4,
                         unbiased: bool = True) -> Tensor:
    r"""Reward normalisation at the group or batch level (the paper's Sec. 4.1; ROLL's ``reward_norm``).

    .. math:: A_{b,g}=\frac{r_{b,g}-\mu}{\sigma+\varepsilon},\quad
              \mu\in\{\operatorname{mean}_{g'}r_{b,g'},\ \operatorname{mean}_{b',g'}r_{b',g'}\},\quad
              \sigma\in\{\operatorname{std}_{g'}r_{b,g'},\ \operatorname{std}_{b',g'}r_{b',g'},\ 1-\varepsilon\}

    ``r: (B, G)`` → ``(B, G)``. ``mean="group", std="group"`` is GRPO's advantage
    (:func:`rlbook.losses.group_normalise`); ``mean="group", std="batch"`` is Lite PPO's; ``std="none"``
    only centres (Dr. GRPO). The batch std is the std of the *raw* rewards over all ``B*G`` samples
    (ROLL, TRL), not of the centred ones. ``unbiased=True`` (Bessel, divide by ``n-1``) and
    ``eps=1e-4`` are TRL 1.16's defaults (ROLL: Bessel, 1e-6); ``unbiased=False, eps=0`` gives the
    population std used in the exact identities of :func:`group_weight`.
    """
    if r.dim() != 2:
        raise ValueError(f"r must be (B, G), got shape {tuple(r.shape)}")
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    if std not in STDS:
        raise ValueError(f"std must be one of {STDS}, got {std!r}")
    if not torch.is_floating_point(r):
        r = r.to(torch.get_default_dtype())
    mu = r.mean(dim=1, keepdim=True) if mean == "group" else r.mean()
    centred = r - mu
    if std == "none":
        return centred
    if std == "group":
        if r.shape[1] < 2:
            raise ValueError(f"std='group' needs G >= 2 samples per group, got G={r.shape[1]}")
        sigma = r.std(dim=1, keepdim=True, unbiased=unbiased)  # (B, 1)
    else:
        if r.numel() < 2:
            raise ValueError("std='batch' needs at least 2 rewards")
        sigma = r.std(unbiased=unbiased)  # ()
    return centred / (sigma + eps)


def lite_ppo_advantage(r: Tensor, eps: float = 1e-4, unbiased: bool = True) -> Tensor:
    r"""Lite PPO's advantage: group mean, batch std, ``r: (B, G)`` → ``(B, G)`` (see :func:`normalise_advantages`)."""
    return normalise_advantages(r, "group", "batch", eps=eps, unbiased=unbiased)


def group_weight(p: Tensor, G: int, std: str = "group", batch_var: Tensor | float | None = None) -> Tensor:
    r"""Closed form of :math:`\sum_{i\in\mathcal G}A_i^2` for binary rewards with group success rate ``p = k/G``.

    .. math:: \sum_{i\in\mathcal G}A_i^2=\begin{cases}G & \text{group std (population)}\\[2pt]
              \dfrac{G\,p(1-p)}{\sigma_{\mathcal B}^2} & \text{batch std}\\[6pt]
              G\,p(1-p) & \text{no std}\end{cases}

    for a non-degenerate group (:math:`0<p<1`; a degenerate group has weight 0 under all three).
    The population std (``unbiased=False, eps=0`` in :func:`normalise_advantages`) is assumed; with
    Bessel's correction the group-std value is :math:`G-1`. ``p: (B,)`` → ``(B,)``; ``batch_var``:
    :math:`\sigma_{\mathcal B}^2` (needed for ``std="batch"``).
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    pq = p * (1 - p)
    nondeg = (pq > 0).to(p.dtype)
    if std == "group":
        return G * nondeg
    if std == "none":
        return G * pq
    if std == "batch":
        if batch_var is None:
            raise ValueError("std='batch' needs batch_var")
        return G * pq / torch.as_tensor(batch_var, dtype=p.dtype)
    raise ValueError(f"std must be one of {STDS}, got {std!r}")


def aggregation_weights(mask: Tensor, agg: str = "token") -> Tensor:
    r"""The weight each token's loss gets in the aggregated loss, ``mask: (N, T)`` → ``(N, T)``.

    .. math:: w^{token}_{i,t}=\frac{m_{i,t}}{\sum_{j,s}m_{j,s}}=\frac{m_{i,t}}{\sum_j|o_j|},\qquad
              w^{seq}_{i,t}=\frac{m_{i,t}}{N\,|o_i|}

    so that :math:`\mathcal L=\sum_{i,t}w_{i,t}\ell_{i,t}`. Token-level: every token of the batch
    counts the same; sequence-level: every *sequence* counts the same, so a long response's tokens
    are each weighted less. Both sum to 1 (sequences with no valid token aside). Equal when all
    lengths are equal.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    m = mask.to(torch.get_default_dtype() if not torch.is_floating_point(mask) else mask.dtype)
    if agg == "token":
        return m / m.sum().clamp(min=1.0)
    return m / (m.shape[0] * m.sum(-1, keepdim=True).clamp(min=1.0))


def clipped_pg_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.2,
                    eps_high: float = 0.2, agg: str = "token") -> tuple[Tensor, dict[str, Tensor]]:
    r"""The critic-free clipped PPO loss with token- or sequence-level aggregation and clip-higher.

    .. math:: \ell_{i,t}=-\min\big(\rho_{i,t}A_i,\ \operatorname{clip}(\rho_{i,t},1-\varepsilon_{low},
              1+\varepsilon_{high})A_i\big),\quad \rho_{i,t}=e^{\log\pi_\theta-\log\pi_{old}},\qquad
              \mathcal L=\sum_{i,t}w^{agg}_{i,t}\,\ell_{i,t}

    with the weights of :func:`aggregation_weights` (the paper's Sec. 4.3 losses; ROLL's ``agg_loss``
    ``"token-mean"`` / ``"seq-mean-token-mean"``). ``eps_high > eps_low`` is clip-higher (DAPO:
    0.2 / 0.28). ``logp, logp_old, mask: (N, T)``, ``adv: (N,)`` one advantage per sequence
    (flatten ``(B, G)``). ``logp_old`` and ``adv`` are constants (detached). ``agg="sequence"`` with
    GRPO's advantage is :func:`rlbook.losses.grpo_loss`; ``agg="token"`` is TRL's ``"bnpo"``.

    Returns ``(loss: (), diag)`` with ``clip_frac``, the token fraction (token mean) whose gradient the
    clip removes, ``clip_high_frac`` (:math:`\rho>1+\varepsilon_{high}`, :math:`A>0`) and
    ``clip_low_frac`` (:math:`\rho<1-\varepsilon_{low}`, :math:`A<0`).
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, logp_old=logp_old, mask=mask)
    if adv.shape != logp.shape[:1]:
        raise ValueError(f"adv must be (N,)={tuple(logp.shape[:1])}, got {tuple(adv.shape)}")
    if not (0.0 <= eps_low < 1.0 and eps_high >= 0.0):
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    ratio = torch.exp(logp - logp_old.detach())  # (N, T)
    a = adv.detach()[:, None].to(logp.dtype)  # (N, 1)
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a)  # (N, T)
    w = aggregation_weights(mask.to(logp.dtype), agg)
    loss = (w * per_token).sum()
    hi = ((ratio > 1.0 + eps_high) & (a > 0)).to(logp.dtype)
    lo = ((ratio < 1.0 - eps_low) & (a < 0)).to(logp.dtype)
    diag = {"clip_frac": masked_mean(hi + lo, mask).detach(), "clip_high_frac": masked_mean(hi, mask).detach(),
            "clip_low_frac": masked_mean(lo, mask).detach()}
    return loss, diag
