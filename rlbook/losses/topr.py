r"""Tapered Off-Policy REINFORCE (Le Roux et al. 2025, "Tapered Off-Policy REINFORCE: Stable and
efficient reinforcement learning for LLMs", arXiv 2503.14286; no official code).

Trajectories :math:`\tau` sampled from a behaviour policy :math:`\mu` (possibly long ago: fully
offline), reward :math:`R(\tau)`. TOPR's gradient (the paper's main equation, as given in the
abstract's description and the book's catalog) is

.. math::
   \nabla J_{TOPR}(\pi)=\sum_{\tau:R(\tau)\ge0}\mu(\tau)R(\tau)\nabla\log\pi(\tau)
   +\sum_{\tau:R(\tau)<0}\mu(\tau)\Big[\frac{\pi(\tau)}{\mu(\tau)}\Big]_0^1R(\tau)\nabla\log\pi(\tau),

i.e. the surrogate loss :math:`-\mathbb E_{\tau\sim\mu}[\operatorname{sg}(\rho(\tau))R(\tau)\log\pi_\theta(\tau)]`
with :math:`\rho=1` on non-negative rewards and :math:`\rho=\operatorname{clip}(\pi_\theta/\mu,0,1)`
on negative ones (:math:`[x]_0^1` clips to :math:`[0,1]`, ``sg`` stops the gradient). The ratio is
*sequence-level*: :math:`\pi(\tau)=\prod_t\pi(y_t|x,y_{<t})`.

Three baselines live here too (rlbook's :func:`rlbook.losses.reinforce_loss` averages per *token*;
the off-policy methods below are per *sequence*, as in the paper):

- :func:`offpolicy_reinforce_loss`, naive off-policy REINFORCE (:math:`\rho\equiv1`: the on-policy
  formula applied to data from :math:`\mu`);
- :func:`truncated_is_loss`, truncated importance sampling on every sample
  (:math:`\rho=\operatorname{clip}(\pi/\mu,0,1)` whatever the sign of :math:`R`);
- :func:`is_weights` gives the three weightings side by side.

Shapes: ``logp, logp_mu, mask: (N, T)`` per-token log-probs of the trained policy, of the behaviour
policy and the valid-token mask; ``r: (N,)`` sequence rewards (already minus any baseline
:math:`c`). Aggregation: sum over each sequence's tokens (the sequence log-prob), mean over the
``N`` sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, sequence_logprob

WEIGHTINGS = ("none", "truncated", "tapered")
"""importance weightings: naive REINFORCE (1), truncated IS on all samples, TOPR (truncated on negatives)"""


def is_weights(logp: Tensor, logp_mu: Tensor, mask: Tensor, r: Tensor, weighting: str = "tapered") -> Tensor:
    r"""The sequence weights :math:`\rho_n` (detached), ``(N,)``.

    ``"none"``: 1; ``"truncated"``: :math:`\min(1,\pi_\theta(\tau_n)/\mu(\tau_n))`;
    ``"tapered"`` (TOPR): 1 where :math:`r_n\ge0`, else :math:`\min(1,\pi_\theta(\tau_n)/\mu(\tau_n))`.
    The ratio is computed in log space, :math:`\exp(\min(0,\sum_t m_t(\log\pi_t-\log\mu_t)))`.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, logp_mu=logp_mu, mask=mask)
    if r.shape != logp.shape[:1]:
        raise ValueError(f"r must be (N,)={tuple(logp.shape[:1])}, got {tuple(r.shape)}")
    if weighting == "none":
        return torch.ones_like(r, dtype=logp.dtype)
    log_ratio = sequence_logprob(logp.detach(), mask) - sequence_logprob(logp_mu.detach(), mask)  # (N,)
    trunc = log_ratio.clamp(max=0.0).exp()  # clip(pi/mu, 0, 1): the ratio is never negative
    if weighting == "truncated":
        return trunc
    return torch.where(r >= 0, torch.ones_like(trunc), trunc)


def _weighted_sequence_loss(logp: Tensor, mask: Tensor, r: Tensor, rho: Tensor) -> Tensor:
    seq = sequence_logprob(logp, mask)  # (N,) log pi_theta(tau_n)
    return -(rho.detach() * r.to(logp.dtype) * seq).mean()


def topr_loss(logp: Tensor, logp_mu: Tensor, mask: Tensor, r: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    r"""TOPR's loss (Le Roux et al. 2025, the TOPR gradient, Sec. 3):

    .. math:: \mathcal L_{TOPR} = -\frac1N\sum_n \operatorname{sg}(\rho_n)\,r_n\,\log\pi_\theta(\tau_n),\qquad
              \rho_n=\begin{cases}1 & r_n\ge0\\ \operatorname{clip}(\pi_\theta(\tau_n)/\mu(\tau_n),0,1) & r_n<0\end{cases}

    ``logp, logp_mu, mask: (N, T)``, ``r: (N,)`` → ``(loss: (), diag)``; ``diag["rho"]: (N,)`` the
    weights and ``diag["tapered_frac"]`` the fraction of negatives whose weight is below 1. On-policy
    (:math:`\pi_\theta=\mu`) every weight is 1 and the gradient is REINFORCE's
    (``tests/test_tapered_off_policy_reinforce.py::test_edge_topr_is_reinforce_on_policy``).
    """
    rho = is_weights(logp, logp_mu, mask, r, "tapered")
    neg = r < 0
    frac = (rho[neg] < 1).to(logp.dtype).mean() if bool(neg.any()) else logp.new_zeros(())
    return _weighted_sequence_loss(logp, mask, r, rho), {"rho": rho, "tapered_frac": frac}


def offpolicy_reinforce_loss(logp: Tensor, mask: Tensor, r: Tensor) -> Tensor:
    r"""Naive off-policy REINFORCE: :math:`-\frac1N\sum_n r_n\log\pi_\theta(\tau_n)` on samples from :math:`\mu`.

    ``logp, mask: (N, T)``, ``r: (N,)`` → ``()``. Its objective :math:`\sum_n r_n\log\pi_\theta(\tau_n)`
    is unbounded above as soon as one :math:`r_n<0`: :math:`\log\pi_\theta(\tau_n)\to-\infty` pays forever.
    With ``r = 1{correct}`` (no negatives) it is SFT on the positives (rejection-sampling fine-tuning).
    """
    return _weighted_sequence_loss(logp, mask, r, torch.ones_like(r, dtype=logp.dtype))


def truncated_is_loss(logp: Tensor, logp_mu: Tensor, mask: Tensor, r: Tensor) -> Tensor:
    r"""Truncated importance sampling on every sample: :math:`\rho_n=\operatorname{clip}(\pi_\theta(\tau_n)/\mu(\tau_n),0,1)`.

    ``logp, logp_mu, mask: (N, T)``, ``r: (N,)`` → ``()``. Bounded, but it also fades the gradient of
    *positives* the model has not learned yet (:math:`\pi\ll\mu`), which TOPR keeps at weight 1.
    """
    return _weighted_sequence_loss(logp, mask, r, is_weights(logp, logp_mu, mask, r, "truncated"))


def effective_positive_fraction(p: Tensor | float, c: Tensor | float) -> Tensor:
    r"""Share of the gradient weight on positives with rewards :math:`\pm1` and baseline :math:`c`:

    .. math:: \tilde p = \frac{p(1-c)}{p(1-c)+(1-p)(1+c)} = \frac{p(1-c)}{1+(1-2p)c}

    (positives get weight :math:`1-c`, negatives :math:`|-1-c|=1+c`, for :math:`-1<c<1`). ``p``: fraction
    of positives in the data set. Shapes broadcast.
    """
    p, c = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(c, dtype=torch.float64)
    return p * (1 - c) / (1 + (1 - 2 * p) * c)
