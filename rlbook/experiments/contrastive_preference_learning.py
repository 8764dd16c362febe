r"""Chapter "Contrastive Preference Learning" (Hejna et al. 2023, arXiv 2310.13639).

Smoke profile: a 6x6 gridworld (:mod:`rlbook.gridworld`) with a goal, a lava strip and a
detour, solved exactly by soft value iteration. Offline data: segments of a fixed length
from a behaviour mixture (half ε-greedy around π*, half uniform), random start states,
pairs labelled by the paper's *regret* preference model
:math:`P(\sigma^1\succ\sigma^2)=\sigma\big(\sum_t\gamma^tA^*(s^1_t,a^1_t)-\sum_t\gamma^tA^*(s^2_t,a^2_t)\big)`.
Learners on the same pairs, each a tabular softmax policy (``S x A`` logits) trained with Adam:

- **CPL** (λ = 1) and **CPL(λ)** (the conservative bias), :func:`rlbook.losses.cpl.cpl_loss`;
- **SFT on preferred** segments (behaviour cloning of the positives);
- **BC on all** segments;
- **reward model + RL**: a tabular reward :math:`\hat r(s,a)` fitted by Bradley-Terry on
  discounted reward *sums* (the usual RLHF preference model), then exact soft value iteration.

All learners of one seed are trained together (rows of one tensor, losses summed: the same
as independent Adam runs). Metrics: the exact normalised return of each policy.

Full profile: the LLM special case (segments = whole responses, γ = 1): CPL vs DPO vs SFT with
TRL machinery on a preference data set (:func:`run_full`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rlbook import gridworld as GW
from rlbook.config import check

LAYOUT = (
    "G.....",
    "......",
    "LLLL..",
    "......",
    "......",
    "......",
)
"""the chapter's grid: goal top-left, a lava strip with a gap on the right (the detour)"""

LEARNERS = ("cpl", "cpl_lambda", "sft_pos", "bc_all", "rm_rl")
"""learners, in plotting order"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    gamma: float = 0.9
    """discount of the MDP and of the segment scores"""
    alpha: float = 1.0
    """entropy temperature α of the MDP and of CPL (A* = α log π*)"""
    lava_reward: float = -10.0
    """extra reward per step spent on lava"""
    goal_reward: float = 5.0
    """reward for entering the goal"""
    n_pairs: int = 1500
    """preference pairs (two independent segments each, no shared start state)"""
    segment_length: int = 8
    """steps per segment"""
    eps: float = 0.5
    """ε of the ε-greedy half of the behaviour mixture"""
    lam: float = 0.5
    """λ of the conservative CPL(λ) (official code: contrastive_bias; their MetaWorld configs use 0.5)"""
    steps: int = 500
    """Adam steps of every learner"""
    batch_size: int = 128
    """pairs per step"""
    lr: float = 0.05
    """Adam learning rate"""
    eval_every: int = 25
    """steps between evaluations of the normalised return"""
    # full profile (LLM special case, one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: policy (and DPO's reference), a Hub name or a local folder"""
    dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: preference data set, a Hub name or a local ``save_to_disk`` folder"""
    reward_model: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: reward model that scores greedy outputs (evaluation only)"""
    full_pairs: int = 10_000
    """*full*: training pairs"""
    full_alpha: float = 0.1
    """*full*: CPL's α and DPO's β (TRL's default β)"""
    full_lam: float = 0.5
    """*full*: λ of CPL(λ)"""
    full_lr: float = 5e-7
    """*full*: learning rate (the chapter's choice)"""
    full_batch: int = 32
    """*full*: global batch"""
    full_per_device_batch: int = 8
    """*full*: per-device batch"""
    full_max_length: int = 1024
    """*full*: maximum prompt + completion tokens"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts decoded greedily and scored"""
    full_max_new_tokens: int = 256
    """*full*: generation length"""
    full_methods: tuple = ("cpl", "cpl_lambda", "dpo", "sft")
    """*full*: learners, each trained from the initial model"""
    full_max_steps: int = -1
    """*full*: cap on optimiser steps (-1: one epoch; the dry-run test uses 2)"""
    layout: tuple = field(default=LAYOUT)
    """the grid (see :mod:`rlbook.gridworld`)"""

    def __post_init__(self) -> None:
        check(0 < self.gamma < 1, "gamma must be in (0, 1)")
        check(self.alpha > 0, "alpha must be > 0")
        check(self.n_pairs >= 10 and self.segment_length >= 1, "n_pairs must be >= 10 and segment_length >= 1")
        check(0 <= self.eps <= 1, "eps must be in [0, 1]")
        check(0 < self.lam <= 1 and 0 < self.full_lam <= 1, "lam and full_lam must be in (0, 1]")
        check(self.steps >= 1 and self.batch_size >= 1 and self.lr > 0, "steps, batch_size and lr must be positive")
        check(1 <= self.eval_every <= self.steps, "eval_every must be in 1..steps")
        check(self.full_alpha > 0 and self.full_lr > 0, "full_alpha and full_lr must be > 0")
        check(set(self.full_methods) <= {"cpl", "cpl_lambda", "dpo", "sft"}, "full_methods: cpl, cpl_lambda, dpo, sft")


# ----------------------------------------------------------------------------- data


@dataclass
class Segments:
    """Preference pairs of segments: states/actions ``(n, L)`` of the preferred (pos) and other (neg) segment."""

    s_pos: np.ndarray
    """``(n, L)`` states of the preferred segments"""
    a_pos: np.ndarray
    """``(n, L)`` actions of the preferred segments"""
    s_neg: np.ndarray
    """``(n, L)`` states of the dispreferred segments"""
    a_neg: np.ndarray
    """``(n, L)`` actions of the dispreferred segments"""


def regret_score(adv: np.ndarray, states: np.ndarray, actions: np.ndarray, gamma: float) -> np.ndarray:
    r"""``(n,)``: :math:`\sum_t\gamma^tA(s_t,a_t)` of segments ``(n, L)`` under an advantage table ``adv: (S, A)``."""
    disc = gamma ** np.arange(states.shape[1])
    return (disc * adv[states, actions]).sum(1)


def regret_preferences(g: GW.GridWorld, sol: GW.SoftSolution, cfg: Config, rng: np.random.Generator) -> Segments:
    """Sample ``2 n`` behaviour segments, pair them, label each pair by the regret preference model."""
    S = g.n_states
    beh = np.stack([GW.epsilon_soft(sol.logp, cfg.eps), np.full((S, g.n_actions), -np.log(g.n_actions))])
    which = rng.integers(0, 2, 2 * cfg.n_pairs)
    st, ac = GW.sample_segments(g, beh, which, cfg.segment_length, rng)
    sc = regret_score(sol.adv, st, ac, g.gamma)
    n = cfg.n_pairs
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-(sc[:n] - sc[n:])))
    i1, i2 = np.arange(n), np.arange(n, 2 * n)
    pos, neg = np.where(first, i1, i2), np.where(first, i2, i1)
    return Segments(st[pos], ac[pos], st[neg], ac[neg])


# ----------------------------------------------------------------------------- training


@dataclass
class Runs:
    """All learners of one seed."""

    names: list
    """learner names"""
    logp: np.ndarray
    """``(M, S, A)`` final log-policies"""
    steps: np.ndarray
    """``(E,)`` evaluation steps"""
    norm_return: np.ndarray
    """``(M, E)`` normalised soft return at each evaluation"""
    r_hat: np.ndarray
    """``(S, A)`` the reward model of ``rm_rl``"""
    seconds: float
    """wall time of the joint training"""


def normalised_return(g: GW.GridWorld, logp: np.ndarray, sol: GW.SoftSolution, alpha: float) -> float:
    r""":math:`(J(\pi)-J(\pi_{unif}))/(J(\pi^*)-J(\pi_{unif}))` with ``J`` the exact (soft if ``alpha > 0``) return."""
    unif = np.full_like(logp, -np.log(logp.shape[-1]))
    j0, j1 = GW.expected_return(g, unif, alpha), GW.expected_return(g, sol.logp, alpha)
    return (GW.expected_return(g, logp, alpha) - j0) / (j1 - j0)


def train_all(g: GW.GridWorld, sol: GW.SoftSolution, data: Segments, cfg: Config, seed: int, learners=LEARNERS) -> Runs:
    r"""Train every learner from the uniform policy with Adam on minibatches of the same pairs.

    - ``cpl`` / ``cpl_lambda``: :func:`rlbook.losses.cpl.cpl_loss` with λ = 1 / ``cfg.lam``, same α, γ as the MDP;
    - ``sft_pos``: :math:`-\mathrm{mean}\log\pi_\theta(a^+_t|s^+_t)` (behaviour cloning of the preferred segments);
    - ``bc_all``: the same on both segments of every pair;
    - ``rm_rl``: :math:`\hat r` by :func:`rlbook.rewards.bt_loss` on :math:`\sum_t\gamma^t\hat r(s_t,a_t)` (reward-sum
      preference model), then π = soft value iteration on :math:`\hat r` (its curve is evaluated the same way).
    """
    import torch

    from rlbook.losses.cpl import cpl_loss
    from rlbook.rewards import bt_loss

    for k in learners:
        if k not in LEARNERS:
            raise ValueError(f"unknown learner {k!r}: choose from {LEARNERS}")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    S, A, L = g.n_states, g.n_actions, cfg.segment_length
    theta = torch.zeros(len(learners), S, A, dtype=dt, requires_grad=True)  # uniform start; rm_rl: r_hat = 0
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    sp, ap, sn, an = (torch.as_tensor(x) for x in (data.s_pos, data.a_pos, data.s_neg, data.a_neg))
    ones = torch.ones(cfg.batch_size, L, dtype=dt)
    disc = g.gamma ** torch.arange(L, dtype=dt)
    n = len(sp)
    evals, curves = [], []

    def policies() -> np.ndarray:
        with torch.no_grad():
            out = torch.log_softmax(theta, -1).numpy().copy()
        for i, k in enumerate(learners):
            if k == "rm_rl":
                gi = GW.GridWorld(g.layout, g.cells, g.next_state, theta[i].detach().numpy().copy(), g.gamma, g.goal, g.start)
                out[i] = GW.soft_value_iteration(gi, cfg.alpha, tol=1e-9).logp
        return out

    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            lp = policies()
            evals.append(step)
            curves.append([normalised_return(g, lp[i], sol, cfg.alpha) for i in range(len(learners))])
        if step == cfg.steps:
            break
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        s1, a1, s2, a2 = sp[idx], ap[idx], sn[idx], an[idx]  # (B, L)
        lp_all = torch.log_softmax(theta, -1)  # (M, S, A)
        flat = lp_all.reshape(len(learners), S * A)  # (M, S*A)
        # (M, B, L): every learner's log-probs of the batch (index_select: a fast backward)
        pos = flat.index_select(1, (s1 * A + a1).reshape(-1)).view(len(learners), -1, L)
        neg = flat.index_select(1, (s2 * A + a2).reshape(-1)).view(len(learners), -1, L)
        total = 0.0
        for i, k in enumerate(learners):
            if k == "cpl":
                loss, _ = cpl_loss(pos[i], ones, neg[i], ones, cfg.alpha, 1.0, g.gamma)
            elif k == "cpl_lambda":
                loss, _ = cpl_loss(pos[i], ones, neg[i], ones, cfg.alpha, cfg.lam, g.gamma)
            elif k == "sft_pos":
                loss = -pos[i].mean()
            elif k == "bc_all":
                loss = -(pos[i].mean() + neg[i].mean()) / 2
            else:  # rm_rl: Bradley-Terry on discounted reward sums (theta[i] is r_hat, not logits)
                r = theta[i].reshape(-1)  # (S*A,)
                rp = r.index_select(0, (s1 * A + a1).reshape(-1)).view(-1, L)
                rn = r.index_select(0, (s2 * A + a2).reshape(-1)).view(-1, L)
                loss = bt_loss((disc * rp).sum(1), (disc * rn).sum(1))
            total = total + loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    lp = policies()
    r_hat = theta[list(learners).index("rm_rl")].detach().numpy().copy() if "rm_rl" in learners else np.zeros((S, A))
    return Runs(list(learners), lp, np.array(evals), np.array(curves).T, r_hat, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- metrics


def visit_counts(g: GW.GridWorld, data: Segments) -> np.ndarray:
    """``(S, A)``: how often each state-action occurs in the data (both segments of every pair)."""
    c = np.zeros((g.n_states, g.n_actions))
    np.add.at(c, (data.s_pos.ravel(), data.a_pos.ravel()), 1)
    np.add.at(c, (data.s_neg.ravel(), data.a_neg.ravel()), 1)
    return c


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-d arrays (average ranks for ties)."""
    import pandas as pd

    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def advantage_recovery(g: GW.GridWorld, sol: GW.SoftSolution, data: Segments, logp: np.ndarray, min_count: int = 5) -> float:
    r"""Spearman correlation of :math:`\alpha\log\pi_\theta(a|s)` with :math:`A^*(s,a)` on state-actions seen ``>= min_count`` times (goal excluded)."""
    seen = visit_counts(g, data) >= min_count
    seen[g.goal] = False
    return spearman(sol.alpha * logp[seen], sol.adv[seen])


def expected_label_cpl_grad(logp_table, data: Segments, sol: GW.SoftSolution, gamma: float):
    r"""Gradient of the CPL loss with each hard label replaced by its probability under the regret model.

    .. math:: \bar{\mathcal L}(\theta)=-\frac1n\sum_i\Big[p_i\log\sigma(\Delta_\theta^i)+(1-p_i)\log\sigma(-\Delta_\theta^i)\Big],
              \quad p_i=\sigma(\Delta_*^i),\ \Delta^i=S(\sigma^{+}_i)-S(\sigma^{-}_i)

    Its gradient is :math:`\frac1n\sum_i(\sigma(\Delta^i_\theta)-p_i)\nabla\Delta^i_\theta`, which vanishes at π* for
    *any* set of segment pairs. ``logp_table: (S, A)`` torch logits (``requires_grad``) → gradient ``(S, A)``.
    """
    import torch
    import torch.nn.functional as F

    from rlbook.losses.cpl import segment_score

    lp = torch.log_softmax(logp_table, -1)
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    ones = torch.ones(data.s_pos.shape, dtype=lp.dtype)
    d_theta = segment_score(lp[t(data.s_pos), t(data.a_pos)], ones, sol.alpha, gamma) - segment_score(
        lp[t(data.s_neg), t(data.a_neg)], ones, sol.alpha, gamma
    )
    p = torch.sigmoid(torch.as_tensor(regret_score(sol.adv, data.s_pos, data.a_pos, gamma) - regret_score(sol.adv, data.s_neg, data.a_neg, gamma)))
    loss = -(p * F.logsigmoid(d_theta) + (1 - p) * F.logsigmoid(-d_theta)).mean()
    (grad,) = torch.autograd.grad(loss, logp_table)
    return grad


def run_smoke(cfg: Config, seed: int) -> dict:
    """The whole smoke experiment for one seed."""
    g = GW.make_gridworld(cfg.layout, cfg.gamma, lava_reward=cfg.lava_reward, goal_reward=cfg.goal_reward)
    sol = GW.soft_value_iteration(g, cfg.alpha)
    data = regret_preferences(g, sol, cfg, np.random.default_rng([seed, 1]))
    runs = train_all(g, sol, data, cfg, seed)
    return {"grid": g, "sol": sol, "data": data, "runs": runs}


# ----------------------------------------------------------------------------- full profile


def full_pair_loss(method: str, alpha: float, lam: float):
    """The :class:`rlbook.pair_trainer.PairLossTrainer` loss of ``method``: ``cpl`` (λ = 1), ``cpl_lambda``
    (λ = ``lam``), both with γ = 1 on whole responses and no reference; ``dpo`` (β = ``alpha``); ``sft`` on chosen."""
    from rlbook.losses.common import sequence_logprob
    from rlbook.losses.cpl import cpl_loss
    from rlbook.losses.dpo import dpo_loss
    from rlbook.losses.sft import sft_loss

    if method not in ("cpl", "cpl_lambda", "dpo", "sft"):
        raise ValueError(f"unknown method {method!r}")

    def loss_fn(lw, rw, mw, ll, rl, ml, inputs):
        if method in ("cpl", "cpl_lambda"):
            loss, d = cpl_loss(lw, mw, ll, ml, alpha, 1.0 if method == "cpl" else lam, 1.0)
            return loss, {"cpl/accuracy": d["accuracy"]}
        if method == "dpo":
            loss, d = dpo_loss(sequence_logprob(lw, mw), sequence_logprob(rw, mw), sequence_logprob(ll, ml), sequence_logprob(rl, ml), alpha)
            return loss, {"rewards/margins": d["margin"].mean()}
        return sft_loss(lw, mw), {}

    return loss_fn


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The LLM special case of CPL (segments = whole responses, γ = 1, α = DPO's β) at paper-like scale.

    ``cfg.model`` is trained from scratch, one epoch on ``cfg.full_pairs`` pairs of ``cfg.dataset``,
    by each method of ``cfg.full_methods`` through :class:`rlbook.pair_trainer.PairLossTrainer`:
    CPL (λ = 1, which is reference-free DPO), CPL(λ), DPO (with the initial model as reference),
    SFT on the chosen responses. Then ``cfg.full_eval_prompts`` held-out prompts are decoded greedily
    by the initial and every trained model and scored by ``cfg.reward_model``.

    Returns ``{"reward": {name: mean}, "reward_se": ..., "train_seconds": ..., "logs": ...}``.
    """
    import torch

    from rlbook import hub
    from rlbook.models import load_pretrained
    from rlbook.pair_trainer import greedy_reward, train_with_pair_loss

    ds = hub.load_dataset(cfg.dataset).shuffle(seed=seed)
    need = cfg.full_pairs + cfg.full_eval_prompts
    if len(ds) < need:
        raise ValueError(f"{cfg.dataset} has {len(ds)} rows, need {need}")
    train_ds = ds.select(range(cfg.full_pairs)).select_columns([c for c in ("prompt", "chosen", "rejected") if c in ds.column_names])
    held = ds.select(range(cfg.full_pairs, need))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    initial, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
    models, train_s, logs = {"initial": initial.eval()}, {}, {}
    for method in cfg.full_methods:
        models[method], tok, logs[method], train_s[method] = train_with_pair_loss(
            cfg.model, train_ds, full_pair_loss(method, cfg.full_alpha, cfg.full_lam), reference_free=method != "dpo",
            beta=cfg.full_alpha, lr=cfg.full_lr, batch=cfg.full_batch, per_device_batch=cfg.full_per_device_batch,
            max_length=cfg.full_max_length, max_steps=cfg.full_max_steps, seed=seed, device=device,
            output_dir=f"{output_dir}/{method}",
        )
    out = greedy_reward(models, tok, held, cfg.reward_model, device, cfg.full_max_new_tokens)
    return {**out, "train_seconds": train_s, "logs": logs}
