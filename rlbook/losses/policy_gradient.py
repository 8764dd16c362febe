r"""REINFORCE and its decomposition into positive and negative sample reinforcement.

Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM
Reasoning" (arXiv 2506.01347), eqs. 3-5 and 7: with rewards ``r ∈ {+1, -1}``,

.. math::
   \mathcal{L}_{PSR} = -\mathbb{E}\big[\mathbb 1\{r=1\}\log\pi_\theta(y|x)\big],\quad
   \mathcal{L}_{NSR} = \mathbb{E}\big[\mathbb 1\{r=-1\}\log\pi_\theta(y|x)\big],\quad
   \mathcal{L}_{RLVR} = \mathcal{L}_{PSR}+\mathcal{L}_{NSR},\quad
   \mathcal{L}_{W} = \lambda\mathcal{L}_{PSR}+\mathcal{L}_{NSR}.

All of them are one primitive, :func:`weighted_logprob_loss`, with a different weight
per sequence. Aggregation: the sum over every valid token of the batch divided by the
number of valid tokens (token-level mean).
"""

from __future__ import annotations

from torch import Tensor

from rlbook.losses.common import _check_same_shape


def weighted_logprob_loss(logp: Tensor, mask: Tensor, w: Tensor) -> Tensor:
    r"""The surrogate :math:`-\frac{1}{\sum m}\sum_{n,t} w_n\, m_{n,t}\log\pi_\theta(y_{n,t}|\cdot)`.

    Its gradient is the REINFORCE estimator with sequence weights ``w`` (a reward or an
    advantage; treated as a constant). ``logp, mask: (N, T)``, ``w: (N,)`` → ``()``.
    Note the aggregation: a token-level mean over the whole batch, so a long sequence
    weighs more than a short one (GRPO's :func:`rlbook.losses.grpo_loss` averages each
    sequence first); with equal lengths the two coincide.
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T) per-token log-probs, got shape {tuple(logp.shape)}")
    _check_same_shape(logp=logp, mask=mask)
    if w.shape != logp.shape[:1]:
        raise ValueError(f"w must be (N,)={tuple(logp.shape[:1])}, got {tuple(w.shape)}")
    m = mask.to(logp.dtype)
    return -(w.detach()[:, None].to(logp.dtype) * logp * m).sum() / m.sum().clamp(min=1.0)


def reinforce_loss(logp: Tensor, mask: Tensor, r: Tensor, baseline: Tensor | float = 0.0) -> Tensor:
    r"""REINFORCE with a baseline: weights :math:`w_n = r_n - b_n`.

    ``baseline`` is a scalar or ``(N,)`` (e.g. the group mean reward). With ``r = ±1``
    and no baseline this is :math:`\mathcal{L}_{PSR}+\mathcal{L}_{NSR}`.
    """
    return weighted_logprob_loss(logp, mask, r - baseline)


def psr_loss(logp: Tensor, mask: Tensor, correct: Tensor) -> Tensor:
    """Positive sample reinforcement: raise the likelihood of correct samples only (w = 1{correct}).

    ``correct: (N,)`` bool or 0/1 (Zhu et al. 2025, L_PSR).
    """
    return weighted_logprob_loss(logp, mask, correct.to(logp.dtype))


def nsr_loss(logp: Tensor, mask: Tensor, correct: Tensor) -> Tensor:
    r"""Negative sample reinforcement: lower the likelihood of wrong samples only (w = -1{wrong}).

    ``correct: (N,)`` bool or 0/1 (Zhu et al. 2025, L_NSR). Its gradient with respect to
    the logits :math:`z_{t,\cdot}` of a wrong sample's token :math:`y_t` (softmax policy
    :math:`\pi = \operatorname{softmax}(z)`, one token, weight 1) is
    :math:`-\partial\mathcal L/\partial z_{v} = -(1-\pi_{y_t})` for :math:`v = y_t` and
    :math:`+\pi_v` otherwise: it pushes the sampled token down and redistributes mass to
    every other token in proportion to its current probability (tested to 1e-8).
    """
    return weighted_logprob_loss(logp, mask, -(~correct.bool()).to(logp.dtype))


def w_reinforce_loss(logp: Tensor, mask: Tensor, correct: Tensor, lam: float = 0.1) -> Tensor:
    r"""Weighted REINFORCE: :math:`\lambda\mathcal{L}_{PSR}+\mathcal{L}_{NSR}`, w = λ if correct else -1.

    The paper's choice is ``lam = 0.1`` ("we set λ = 0.1", Sec. 5).
    """
    c = correct.to(logp.dtype)
    return weighted_logprob_loss(logp, mask, lam * c - (1.0 - c))
