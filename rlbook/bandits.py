r"""Exact small preference worlds: K-armed and contextual bandits with closed-form optima.

A *bandit* here is one step of generation: a prompt ``x`` (a context) and a finite set
of candidate responses ``y``. Everything the preference-learning papers need can be
computed exactly in it: the reference policy, the gold reward, the KL-regularised
optimum

.. math:: \pi^*(y|x) = \frac{\pi_{ref}(y|x)\,e^{r(x,y)/\beta}}{Z(x)}

(the closed form every DPO-family derivation starts from), expected rewards, KLs, and
Bradley-Terry preference labels.

Shapes: ``X`` prompts, ``Y`` responses per prompt, ``d`` feature dimensions; policies
are probability tables ``(X, Y)`` (numpy) or logits ``(X, Y)`` (torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable ``log softmax`` along ``axis``."""
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(z, axis))


def kl_optimal_policy(ref_probs: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    r"""The maximiser of :math:`\mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})`, row by row.

    :math:`\pi^*(y|x) \propto \pi_{ref}(y|x)\exp(r(x,y)/\beta)`. ``ref_probs, r: (X, Y)`` or ``(Y,)``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return softmax(np.log(np.clip(ref_probs, 1e-300, None)) + np.asarray(r) / beta)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{KL}(p\|q)=\sum_y p\log(p/q)` along the last axis (0·log 0 = 0)."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return t.sum(-1)


def regularised_objective(probs: np.ndarray, ref_probs: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    r""":math:`\mathbb E_{\pi}[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})` per prompt ``(X,)``."""
    return (probs * r).sum(-1) - beta * kl(probs, ref_probs)


def bt_prob(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    r"""Bradley-Terry: :math:`P(a \succ b) = \sigma(r_a - r_b)`."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(r_a) - np.asarray(r_b))))


@dataclass
class Pairs:
    """Preference pairs in a bandit: prompt index, winner and loser response indices ``(n,)``."""

    x: np.ndarray
    yw: np.ndarray
    yl: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ContextualBandit:
    """``X`` prompts with ``Y`` candidate responses each.

    ``r[x, y]`` is the gold reward, ``ref_logits[x, y]`` the reference (SFT) policy's
    logits, and ``phi[x, y]`` optional response features ``(X, Y, d)`` for policies and
    reward models with shared parameters (a linear-softmax policy ``softmax(phi @ theta)``).
    A K-armed bandit is the case ``X = 1``.
    """

    r: np.ndarray
    """gold reward ``(X, Y)``"""
    ref_logits: np.ndarray
    """reference policy logits ``(X, Y)``"""
    phi: np.ndarray | None = None
    """features ``(X, Y, d)``, or None for a tabular bandit"""

    def __post_init__(self):
        self.r = np.atleast_2d(np.asarray(self.r, dtype=float))
        self.ref_logits = np.atleast_2d(np.asarray(self.ref_logits, dtype=float))
        if self.r.shape != self.ref_logits.shape:
            raise ValueError(f"r {self.r.shape} and ref_logits {self.ref_logits.shape} differ")
        if self.phi is not None and self.phi.shape[:2] != self.r.shape:
            raise ValueError(f"phi must be (X, Y, d) with (X, Y) = {self.r.shape}, got {self.phi.shape}")

    @property
    def X(self) -> int:
        return self.r.shape[0]

    @property
    def Y(self) -> int:
        return self.r.shape[1]

    @property
    def ref_probs(self) -> np.ndarray:
        return softmax(self.ref_logits)

    def optimal_policy(self, beta: float) -> np.ndarray:
        """π* of the KL-regularised objective with strength ``beta`` ``(X, Y)``."""
        return kl_optimal_policy(self.ref_probs, self.r, beta)

    def expected_reward(self, probs: np.ndarray) -> float:
        """Gold reward of a policy, averaged over prompts."""
        return float((probs * self.r).sum(-1).mean())

    def kl_to_ref(self, probs: np.ndarray) -> float:
        """KL(π‖π_ref), averaged over prompts."""
        return float(kl(probs, self.ref_probs).mean())

    def sample(self, probs: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One response per prompt index in ``x`` from the policy ``probs: (X, Y)`` (inverse CDF)."""
        cdf = np.cumsum(probs[x], axis=-1)
        u = rng.random((len(x), 1)) * cdf[:, -1:]
        return np.minimum((u > cdf).sum(-1), self.Y - 1)

    def sample_pairs(
        self, n: int, rng: np.random.Generator, probs: np.ndarray | None = None, distinct: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` prompts uniformly, two responses each from ``probs`` (default π_ref)."""
        probs = self.ref_probs if probs is None else probs
        x = rng.integers(0, self.X, size=n)
        y1 = self.sample(probs, x, rng)
        y2 = self.sample(probs, x, rng)
        if distinct:
            same = y1 == y2
            while same.any():
                y2[same] = self.sample(probs, x[same], rng)
                same = y1 == y2
        return x, y1, y2

    def label(
        self, x: np.ndarray, y1: np.ndarray, y2: np.ndarray, rng: np.random.Generator, scale: float = 1.0
    ) -> Pairs:
        r"""Bradley-Terry labels from the gold reward: :math:`P(y_1\succ y_2)=\sigma(s\,(r_1-r_2))`."""
        p = bt_prob(scale * self.r[x, y1], scale * self.r[x, y2])
        first = rng.random(len(x)) < p
        return Pairs(x=x, yw=np.where(first, y1, y2), yl=np.where(first, y2, y1))


def random_contextual_bandit(
    X: int,
    Y: int,
    rng: np.random.Generator,
    d: int | None = None,
    ref_scale: float = 1.0,
    reward_scale: float = 1.0,
) -> ContextualBandit:
    """A random bandit: rewards ``N(0, reward_scale²)`` (linear in features when ``d`` is given)
    and reference logits ``N(0, ref_scale²)`` (linear in features too)."""
    if d is None:
        return ContextualBandit(
            r=reward_scale * rng.standard_normal((X, Y)), ref_logits=ref_scale * rng.standard_normal((X, Y))
        )
    phi = rng.standard_normal((X, Y, d))
    w = rng.standard_normal(d)
    theta = rng.standard_normal(d)
    return ContextualBandit(
        r=reward_scale * phi @ (w / np.linalg.norm(w)),
        ref_logits=ref_scale * phi @ (theta / np.linalg.norm(theta)),
        phi=phi,
    )
