r"""Attribute-vector responses: a small world for response *improvement* (PIT and self-refinement).

A response is a vector of ``A`` attributes, each an integer level in ``0..L-1`` (default 3
attributes x 5 levels = 125 responses: helpfulness, harmlessness, concision). Each prompt
``x`` has its own positive weights ``w_x``; the hidden gold quality is

.. math:: q(x,a) = w_x^\top u - \gamma\,u_{help}\,u_{conc},\qquad u = a/(L-1) \in [0,1]^A

(the interaction term: very helpful *and* very concise is hard, so pushing one attribute
alone stops paying). An *edit* moves each attribute by ``-1, 0`` or ``+1`` (27 edits),
clipped to the level range. Shapes: ``X`` prompts, ``N = L^A`` responses, ``M = 3^A`` edits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from rlbook.bandits import ContextualBandit


@dataclass
class AttributeWorld:
    """``X`` prompts with weights ``w: (X, A)``, all ``N`` attribute responses, and the gold quality."""

    w: np.ndarray
    """``(X, A)`` prompt-specific attribute weights (also the prompt's features)"""
    levels: int
    """``L``: levels per attribute"""
    gamma: float
    """interaction penalty between the first (helpfulness) and the last (concision) attribute"""
    base_logits: np.ndarray
    """``(X, N)`` logits of the base (SFT) policy over whole responses"""

    def __post_init__(self):
        self.responses = np.array(list(itertools.product(range(self.levels), repeat=self.w.shape[1])))  # (N, A)
        self.moves = np.array(list(itertools.product((-1, 0, 1), repeat=self.w.shape[1])))  # (M, A)

    @property
    def A(self) -> int:
        return self.w.shape[1]

    def index(self, a: np.ndarray) -> np.ndarray:
        """Response index of attribute vectors ``a: (..., A)`` → ``(...)``."""
        return np.ravel_multi_index(tuple(np.moveaxis(np.asarray(a), -1, 0)), (self.levels,) * self.A)

    def quality(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Gold quality ``q(x, a)``; ``x: (...)``, ``a: (..., A)`` → ``(...)``."""
        u = np.asarray(a) / (self.levels - 1)
        return (self.w[x] * u).sum(-1) - self.gamma * u[..., 0] * u[..., -1]

    def gold_table(self) -> np.ndarray:
        """``(X, N)`` gold quality of every response of every prompt."""
        return self.quality(np.arange(len(self.w))[:, None], self.responses[None])

    def bandit(self) -> ContextualBandit:
        """The world as a :class:`rlbook.bandits.ContextualBandit` (``r`` = gold, ``ref_logits`` = base)."""
        return ContextualBandit(r=self.gold_table(), ref_logits=self.base_logits)

    def apply(self, a: np.ndarray, move: np.ndarray) -> np.ndarray:
        """Apply edits (``move`` indices ``(...)`` or vectors ``(..., A)``) to responses, clipped to the levels."""
        d = self.moves[move] if np.asarray(move).ndim == np.asarray(a).ndim - 1 else move
        return np.clip(np.asarray(a) + d, 0, self.levels - 1)


def random_attribute_world(
    X: int, rng: np.random.Generator, A: int = 3, levels: int = 5, gamma: float = 1.0, base_center: float = 1.0,
    base_temp: float = 1.0,
) -> AttributeWorld:
    """Prompt weights ``w ~ U(0.3, 1)^A``; a mediocre base policy: each attribute independently
    ``softmax(-(level - base_center)^2 / (2 base_temp))`` plus a little prompt noise."""
    w = rng.uniform(0.3, 1.0, size=(X, A))
    lv = np.arange(levels)
    per_attr = -((lv - base_center) ** 2) / (2 * base_temp)  # (L,)
    world = AttributeWorld(w=w, levels=levels, gamma=gamma, base_logits=np.zeros((X, levels**A)))
    logits = per_attr[world.responses].sum(-1)[None, :] + 0.3 * rng.standard_normal((X, levels**A))
    world.base_logits = logits
    return world
