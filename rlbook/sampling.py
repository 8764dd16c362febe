r"""Statistical rejection sampling from the KL-regularised optimal policy (RSO, arXiv 2309.06657).

The target is :math:`\pi_r(y|x)=\pi_{sft}(y|x)\,e^{r(x,y)/\beta}/Z(x)` (RSO eq. 4, 11); the
proposal is :math:`\pi_{sft}` itself. The density ratio is
:math:`\pi_r/\pi_{sft}=e^{r/\beta}/Z`, bounded by :math:`M=e^{r_{max}/\beta}/Z` (eq. 13), so the
acceptance probability of a proposal :math:`y` is

.. math:: \frac{\pi_r(y|x)}{M\,\pi_{sft}(y|x)}=\exp\Big(\frac{r(x,y)-r_{max}(x)}{\beta}\Big)\qquad\text{(eq. 14)}

in which :math:`Z` cancels: only rewards are needed. Accepted proposals are exact samples of
:math:`\pi_r` (eqs. 15-17) and a proposal is accepted with probability :math:`1/M=Z e^{-r_{max}/\beta}`
(eq. 18). RSO's practical algorithm (Algorithm 1) replaces :math:`r_{max}` by the largest reward
among the *finite* candidate list not yet accepted, which biases the sample towards
:math:`\pi_{sft}` when the list is short.

Shapes: ``X`` prompts, ``Y`` responses per prompt (a bandit), ``N`` candidates per prompt.
"""

from __future__ import annotations

import numpy as np


def acceptance_probability(r: np.ndarray, r_max: np.ndarray | float, beta: float) -> np.ndarray:
    r""":math:`\exp((r-r_{max})/\beta)` (RSO eq. 14), clipped to ``[0, 1]``; broadcasts."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return np.exp(np.minimum(0.0, (np.asarray(r, dtype=float) - r_max) / beta))


def acceptance_rate(ref_probs: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    r"""Exact acceptance rate of the exact-envelope sampler, :math:`1/M = \mathbb E_{\pi_{sft}}[e^{(r-r_{max})/\beta}]` (eq. 18).

    ``ref_probs, r: (X, Y)`` → ``(X,)``; :math:`r_{max}` is the maximum over all ``Y`` responses.
    """
    r = np.atleast_2d(r)
    return (np.atleast_2d(ref_probs) * acceptance_probability(r, r.max(-1, keepdims=True), beta)).sum(-1)


def exact_rejection_sample(
    ref_probs: np.ndarray, r: np.ndarray, beta: float, n_proposals: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    r"""Rejection sampling with the exact envelope, vectorised, for one prompt.

    Draws ``n_proposals`` responses from ``ref_probs: (Y,)`` and accepts each with
    probability :math:`\exp((r(y)-\max_{y'}r(y'))/\beta)`, the maximum taken over *all* ``Y``
    responses. Returns ``(accepted: (n_acc,) response indices, proposals: (n_proposals,))``;
    ``accepted`` are i.i.d. samples of :math:`\pi_r\propto\pi_{sft}e^{r/\beta}`.
    """
    ref_probs, r = np.asarray(ref_probs, dtype=float), np.asarray(r, dtype=float)
    if ref_probs.ndim != 1 or ref_probs.shape != r.shape:
        raise ValueError(f"ref_probs and r must be (Y,) of the same shape, got {ref_probs.shape}, {r.shape}")
    y = rng.choice(len(r), size=n_proposals, p=ref_probs / ref_probs.sum())
    keep = rng.random(n_proposals) < acceptance_probability(r[y], r.max(), beta)
    return y[keep], y


def rso_rejection_sample(
    rewards: np.ndarray, num_samples: int, beta: float, rng: np.random.Generator
) -> np.ndarray:
    r"""RSO's Algorithm 1, vectorised over prompts: pick ``num_samples`` of ``N`` candidates.

    ``rewards: (B, N)`` rewards of ``N`` candidates per prompt (drawn from :math:`\pi_{sft}`).
    Passes over the candidates in order; in each pass, every candidate not yet accepted is
    accepted with probability :math:`\exp((r_i - r_{max})/\beta)`, where :math:`r_{max}` is the
    largest reward among the candidates *not yet accepted*, and the pass stops as soon as
    ``num_samples`` are accepted; accepted candidates leave the pool. The candidate with the
    largest remaining reward is always accepted, so every pass accepts at least one.
    Returns ``(B, num_samples)`` candidate positions (in order of acceptance).

    This is the paper's Python listing (Appendix A.1) with candidates identified by position
    (the listing keys a dict by response text, which merges duplicate samples).
    """
    rewards = np.asarray(rewards, dtype=float)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (B, N), got shape {rewards.shape}")
    B, N = rewards.shape
    if not 1 <= num_samples <= N:
        raise ValueError(f"num_samples must be in 1..N={N}, got {num_samples}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    pool = np.ones((B, N), dtype=bool)  # not yet accepted
    out = np.full((B, num_samples), -1, dtype=np.int64)
    count = np.zeros(B, dtype=np.int64)
    while (count < num_samples).any():
        active = count < num_samples  # (B,)
        r_max = np.where(pool, rewards, -np.inf).max(-1, keepdims=True)  # (B, 1)
        acc = pool & (rng.random((B, N)) < acceptance_probability(rewards, r_max, beta)) & active[:, None]
        # stop the pass once num_samples are accepted: keep the first (num_samples - count) in order
        rank = np.cumsum(acc, axis=-1)  # (B, N)
        acc &= rank <= (num_samples - count)[:, None]
        b, n = np.nonzero(acc)  # row-major: candidates of a row in order
        out[b, count[b] + rank[b, n] - 1] = n
        count += acc.sum(-1)
        pool &= ~acc
    return out


def first_round_pairs(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RSO's "first-round-rank" pairing: ``n`` candidates → ``n/2`` disjoint pairs (0,1), (2,3), ...

    ``order: (B, n)`` candidate identifiers in random order → ``(first: (B, n//2), second: (B, n//2))``;
    a ranker then labels each pair.
    """
    order = np.asarray(order)
    n = order.shape[-1] - order.shape[-1] % 2
    return order[..., 0:n:2], order[..., 1:n:2]


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{TV}(p,q)=\tfrac12\sum_y|p(y)-q(y)|` along the last axis."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1)


def empirical_distribution(samples: np.ndarray, Y: int) -> np.ndarray:
    """Frequencies of the response indices ``samples`` over ``Y`` responses: ``(Y,)``."""
    c = np.bincount(np.asarray(samples).ravel(), minlength=Y).astype(float)
    return c / max(c.sum(), 1.0)
