r"""A tabular "language model": one free softmax over ``K`` candidate answers per prompt.

The smallest setting in which RLVR objectives can be compared exactly. Prompt ``x``
has logits :math:`z_x\in\mathbb R^K`, policy :math:`\pi(y|x)=\mathrm{softmax}(z_x)_y`,
and a set :math:`C_x` of correct answers; the probability of solving ``x`` in one
sample is :math:`p(x)=\sum_{y\in C_x}\pi(y|x)` and pass@k is exactly
:math:`1-(1-p(x))^k`. Nothing is shared between prompts, so every effect seen here
comes from the objective, the finite samples and the optimiser -- not from
generalisation.

Training uses the same objectives as the LM loop (:mod:`rlbook.rl_lm`): an answer is
a one-token completion, ``logp: (B*G, 1)``, ``mask`` all ones, ``r: (B, G)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class BanditConfig:
    """A random family of prompts with a few low-prior correct answers each."""

    prompts: int = 200
    """number of prompts x"""
    candidates: int = 50
    """K: answers per prompt"""
    logit_scale: float = 1.5
    """standard deviation of the base logits"""
    max_correct: int = 4
    """each prompt has 1..max_correct correct answers (uniform)"""
    max_offset: float = 2.5
    """correct answers' base logits are lowered by U(0, max_offset): hard and easy prompts"""


def make_bandit(cfg: BanditConfig, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Base logits ``z: (X, K)`` float64 and the correct-answer table ``correct: (X, K)`` bool."""
    X, K = cfg.prompts, cfg.candidates
    z = rng.normal(0.0, cfg.logit_scale, size=(X, K))
    correct = np.zeros((X, K), dtype=bool)
    n_correct = rng.integers(1, cfg.max_correct + 1, size=X)
    for x in range(X):
        correct[x, rng.choice(K, size=n_correct[x], replace=False)] = True
    offset = rng.uniform(0.0, cfg.max_offset, size=(X, 1))
    z = z - offset * correct
    return torch.tensor(z), torch.tensor(correct)


def prob_correct(z: Tensor, correct: Tensor) -> Tensor:
    """:math:`p(x)=\\sum_{y\\in C_x}\\mathrm{softmax}(z_x)_y`, shape ``(X,)``."""
    return (torch.softmax(z, -1) * correct).sum(-1)


def expected_distinct(z: Tensor, correct: Tensor, k: int) -> Tensor:
    r"""Expected number of distinct correct answers in ``k`` samples: :math:`\sum_{y\in C_x}1-(1-\pi(y|x))^k`, ``(X,)``."""
    pi = torch.softmax(z, -1)
    return ((1.0 - (1.0 - pi) ** k) * correct).sum(-1)


def entropy(z: Tensor) -> Tensor:
    """Entropy of each prompt's policy (nats), ``(X,)``."""
    logq = torch.log_softmax(z, -1)
    return -(logq.exp() * logq).sum(-1)


def expected_gradients(z: Tensor, correct: Tensor) -> dict[str, Tensor]:
    r"""Exact expected gradients (w.r.t. the logits ``z: (X, K)``) of the PSR and NSR surrogates.

    .. math:: g_{PSR} = \mathbb E_{y\sim\pi}\big[\mathbb 1\{y\in C\}\nabla\log\pi(y)\big],\qquad
              g_{NSR} = -\mathbb E_{y\sim\pi}\big[\mathbb 1\{y\notin C\}\nabla\log\pi(y)\big]

    (the *ascent* directions), and :math:`\nabla p` by autograd. Since
    :math:`\mathbb E[\nabla\log\pi]=0`, all three are equal. Each ``(X, K)``.
    """
    pi = torch.softmax(z, -1)  # (X, K)
    eye = torch.eye(z.shape[-1], dtype=z.dtype)
    score = eye[None, :, :] - pi[:, None, :]  # (X, y, v): d log pi(y) / d z_v
    c = correct.to(z.dtype)
    g_psr = (pi * c)[..., None].mul(score).sum(1)
    g_nsr = -(pi * (1 - c))[..., None].mul(score).sum(1)
    zz = z.detach().clone().requires_grad_(True)
    prob_correct(zz, correct).sum().backward()
    return {"psr": g_psr, "nsr": g_nsr, "grad_p": zz.grad}


@dataclass
class TabularRun:
    """The result of :func:`train`: final logits and per-step traces."""

    z: Tensor
    """final logits ``(X, K)``"""
    mean_p: list[float] = field(default_factory=list)
    """mean over prompts of p(x) after each step"""
    entropy: list[float] = field(default_factory=list)
    """mean policy entropy after each step"""


def train(z0: Tensor, correct: Tensor, objective: Callable[[Tensor, Tensor, Tensor], Tensor],
          steps: int = 100, group: int = 8, lr: float = 0.05, optimizer: str = "adam",
          seed: int = 0) -> TabularRun:
    """RL on every prompt at once: ``G = group`` samples per prompt per step, one optimiser step.

    ``objective(logp: (X*G, 1), mask: (X*G, 1), r: (X, G)) -> ()`` as in :mod:`rlbook.rl_lm`.
    ``optimizer``: ``"adam"`` (per-logit step normalisation, as LLM training uses) or
    ``"sgd"`` (plain gradient steps).
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr) if optimizer == "adam" else torch.optim.SGD([z], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    X = z.shape[0]
    run = TabularRun(z=z)
    rows = torch.arange(X).repeat_interleave(group)  # (X*G,)
    for _ in range(steps):
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(z, -1), group, replacement=True, generator=gen)  # (X, G)
        r = correct.gather(1, y).to(z.dtype)  # (X, G)
        logp = torch.log_softmax(z, -1)[rows, y.flatten()][:, None]  # (X*G, 1)
        loss = objective(logp, torch.ones_like(logp), r)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            run.mean_p.append(prob_correct(z, correct).mean().item())
            run.entropy.append(entropy(z).mean().item())
    run.z = z.detach()
    return run
