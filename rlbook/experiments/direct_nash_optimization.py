r"""Chapter "Direct Nash Optimization" (DNO, arXiv 2404.03715).

Smoke profile: a general-preference contextual bandit, ``X`` prompts with ``K`` responses.
Each response has a point-wise score ``s ~ N(0, 1)``; the oracle is Bradley-Terry on
``s`` plus a rock-paper-scissors bonus among the three best responses
(:func:`rlbook.games.bt_plus_cycle`), so the preference is intransitive where it matters.
A fixed "teacher" puts most of its mass on the best-by-score response (good, but
exploitable), and ``π_0`` is a weak SFT policy. Learners:

- **DNO-Prct** (Algorithm 2): each iteration samples responses from ``π_t`` plus one
  teacher response per candidate set, estimates each one's win rate against the others
  with noisy oracle judgments, keeps the (best, worst) pair when the margin is large,
  and trains with the DPO loss against ``π_t`` (:func:`rlbook.losses.dpo_loss`);
- **iterative DPO, point-wise judge** -- the same pipeline with a Bradley-Terry judge on
  ``s`` (what a point-wise reward model sees);
- **SFT on the teacher** -- imitation of the teacher's responses.

Exact side computations: DNO's soft policy iteration (Algorithm 1) in closed form
(:func:`rlbook.games.mwu_step` with ``lr = 1/η``) and its minimiser check
(:func:`rlbook.losses.dno.dno_loss`).

Full profile: :func:`run_full` -- DNO-Prct on a language model with TRL's
``DPOTrainer`` and the previous iterate as reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import games as G
from rlbook.config import check


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_prompts: int = 50
    """``X``: prompts"""
    n_responses: int = 20
    """``K``: candidate responses per prompt"""
    cycle_bonus: float = 0.3
    """rock-paper-scissors bonus among the three best-scored responses (the intransitive part)"""
    teacher_mass: float = 0.9
    """teacher's probability on the best-by-score response (the rest uniform)"""
    iterations: int = 6
    """DNO-Prct iterations"""
    candidate_sets: int = 8
    """candidate sets per prompt per iteration"""
    samples: int = 5
    """responses drawn from ``π_t`` per candidate set (plus one teacher response)"""
    judgments: int = 16
    """noisy oracle judgments per pair of candidates"""
    margin: float = 0.2
    """minimum win-rate margin between the kept (best, worst) pair"""
    beta: float = 0.1
    """DPO ``β`` (the paper's DNO-Prct uses a DPO-style loss against ``π_t``)"""
    steps: int = 100
    """Adam steps per iteration"""
    lr: float = 0.1
    """Adam learning rate (tabular logits; the catalog's 200 steps at 0.05 give the same iterates to 0.005)"""
    eta: float = 0.5
    """``η`` of the exact soft policy iteration :math:`\\pi_{t+1}\\propto\\pi_t e^{r_t/\\eta}` (derivation only)"""
    exact_iterations: int = 300
    """iterations of the exact soft policy iteration (derivation only)"""
    # full profile (one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: initial policy, a Hub name or a local folder"""
    dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: prompts, a Hub name or a local ``save_to_disk`` folder"""
    judge: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: reward model used as a pairwise judge P(y ≻ y') = σ(r(y) - r(y')) (a BT proxy; the paper uses GPT-4)"""
    full_prompts: int = 2000
    """*full*: training prompts per iteration"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts for the win rate against the initial model"""
    full_iterations: int = 3
    """*full*: DNO-Prct iterations"""
    full_samples: int = 4
    """*full*: responses per prompt sampled from ``π_t``"""
    full_margin: float = 0.2
    """*full*: minimum judge win-rate margin of a kept pair"""
    full_beta: float = 0.1
    """*full*: DPO β (the chapter's choice, TRL's default; the paper's value was not checked)"""
    full_lr: float = 5e-7
    """*full*: learning rate"""
    full_batch: int = 32
    """*full*: global batch"""
    full_per_device_batch: int = 8
    """*full*: per-device batch"""
    full_max_new_tokens: int = 256
    """*full*: generation length"""
    full_max_length: int = 1024
    """*full*: maximum prompt + completion tokens in training"""
    full_max_steps: int = -1
    """*full*: cap on optimiser steps per iteration (-1: one epoch; the dry-run test uses 1)"""

    def __post_init__(self) -> None:
        check(self.n_prompts >= 1 and self.n_responses >= 4, "need n_prompts >= 1 and n_responses >= 4")
        check(0 <= self.cycle_bonus < 0.5, "cycle_bonus must be in [0, 0.5)")
        check(0 < self.teacher_mass <= 1, "teacher_mass must be in (0, 1]")
        check(self.iterations >= 1 and self.candidate_sets >= 1, "iterations and candidate_sets must be >= 1")
        check(self.samples >= 1 and self.judgments >= 1, "samples and judgments must be >= 1")
        check(0 <= self.margin < 1, "margin must be in [0, 1)")
        check(self.beta > 0 and self.lr > 0 and self.eta > 0, "beta, lr and eta must be > 0")
        check(self.steps >= 1 and self.exact_iterations >= 1, "steps and exact_iterations must be >= 1")
        check(self.full_samples >= 2, "full_samples must be >= 2")


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """The general-preference bandit of one seed."""

    scores: np.ndarray
    """``(X, K)`` point-wise scores ``s``"""
    P: np.ndarray
    """``(X, K, K)`` general (intransitive) oracle"""
    P_bt: np.ndarray
    """``(X, K, K)`` Bradley-Terry oracle on ``s`` alone (the point-wise judge)"""
    teacher: np.ndarray
    """``(X, K)`` the fixed teacher policy"""
    pi0: np.ndarray
    """``(X, K)`` the initial (SFT) policy"""


def make_world(cfg: Config, rng: np.random.Generator) -> World:
    """Scores, oracles, teacher and ``π_0`` (see the module docstring)."""
    X, K = cfg.n_prompts, cfg.n_responses
    s = rng.normal(size=(X, K))
    P = np.stack([G.bt_plus_cycle(s[x], top=3, bonus=cfg.cycle_bonus) for x in range(X)])
    P_bt = np.stack([G.bt_plus_cycle(s[x], top=3, bonus=0.0) for x in range(X)])
    teacher = np.full((X, K), (1 - cfg.teacher_mass) / (K - 1))
    teacher[np.arange(X), s.argmax(1)] = cfg.teacher_mass
    z = 0.5 * s + rng.normal(size=(X, K))
    pi0 = np.exp(z - z.max(1, keepdims=True))
    return World(s, P, P_bt, teacher, pi0 / pi0.sum(1, keepdims=True))


def win_rate(P: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    r"""Mean over prompts of :math:`\mathcal P(p\succ q|x)=p_x^\top P_x q_x`; ``P: (X, K, K)``, ``p, q: (X, K)``."""
    return float(np.einsum("xi,xij,xj->x", p, P, q).mean())


def exploitability(P: np.ndarray, pi: np.ndarray) -> float:
    r"""Mean over prompts of :math:`\max_y\mathcal P(y\succ\pi|x)-\tfrac12`."""
    return float((G.win_rates(P, pi).max(-1) - 0.5).mean())


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``probs: (..., K)`` → ``(...)`` (inverse CDF)."""
    c = np.cumsum(probs, -1)
    u = rng.random(probs.shape[:-1] + (1,)) * c[..., -1:]
    return np.minimum((u > c).sum(-1), probs.shape[-1] - 1)


def collect_pairs(P: np.ndarray, pi: np.ndarray, teacher: np.ndarray, cfg: Config, rng: np.random.Generator):
    r"""DNO-Prct's data step (Algorithm 2, lines "sample", "rank", "select").

    For every prompt and candidate set: ``cfg.samples`` responses from ``π_t`` and one from
    the teacher; each candidate's win rate against the other candidates is estimated from
    ``cfg.judgments`` Bernoulli(``P``) judgments per pair; the (best, worst) pair is kept
    when the estimated win-rate margin is at least ``cfg.margin``. Returns
    ``(x, y_plus, y_minus)``, each ``(n,)``.
    """
    X, K = pi.shape
    S, n = cfg.candidate_sets, cfg.samples + 1
    xs = np.repeat(np.arange(X), S)  # (X*S,)
    cand = np.concatenate([_sample_rows(np.repeat(pi, S, 0)[:, None, :].repeat(cfg.samples, 1), rng),
                           _sample_rows(np.repeat(teacher, S, 0), rng)[:, None]], axis=1)  # (X*S, n)
    p = P[xs[:, None, None], cand[:, :, None], cand[:, None, :]]  # (X*S, n, n)
    wins = rng.binomial(cfg.judgments, p) / cfg.judgments  # noisy judgments, i vs j
    wins = np.triu(wins, 1) + np.transpose(1 - np.triu(wins, 1), (0, 2, 1)) * np.tri(n, k=-1)  # one judge per pair
    est = (wins.sum(-1) - np.diagonal(wins, 0, 1, 2)) / (n - 1)  # (X*S, n) estimated win rates
    best, worst = est.argmax(1), est.argmin(1)
    r = np.arange(len(xs))
    keep = (est[r, best] - est[r, worst] >= cfg.margin) & (cand[r, best] != cand[r, worst])
    return xs[keep], cand[r, best][keep], cand[r, worst][keep]


def dpo_fit(pi_t: np.ndarray, x, yp, ym, beta: float, steps: int, lr: float) -> np.ndarray:
    """Tabular logits trained with the DPO loss against reference ``π_t`` (full batch, Adam), started at ``π_t``."""
    import torch

    from rlbook.losses import dpo_loss

    lt = torch.log(torch.as_tensor(pi_t).clamp_min(1e-300))  # (X, K)
    theta = lt.clone().requires_grad_(True)
    x, yp, ym = (torch.as_tensor(a) for a in (x, yp, ym))
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        lp = torch.log_softmax(theta, -1)
        loss, _ = dpo_loss(lp[x, yp], lt[x, yp], lp[x, ym], lt[x, ym], beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(theta.detach(), -1).numpy()


def sft_fit(pi0: np.ndarray, x, y, steps: int, lr: float) -> np.ndarray:
    """Tabular logits trained by maximum likelihood on responses ``y`` of prompts ``x``, started at ``π_0``."""
    import torch

    theta = torch.log(torch.as_tensor(pi0)).requires_grad_(True)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        loss = -torch.log_softmax(theta, -1)[x, y].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(theta.detach(), -1).numpy()


def iterate(world: World, cfg: Config, judge: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """DNO-Prct's outer loop with the given judge ``(X, K, K)``; returns ``[π_0, ..., π_T]``."""
    pis = [world.pi0]
    for _ in range(cfg.iterations):
        x, yp, ym = collect_pairs(judge, pis[-1], world.teacher, cfg, rng)
        pis.append(dpo_fit(pis[-1], x, yp, ym, cfg.beta, cfg.steps, cfg.lr))
    return pis


def ladder(world: World, pis: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Exact metrics per iterate under the general oracle: vs previous, vs ``π_0``, vs teacher, exploitability."""
    P = world.P
    return {
        "vs_prev": np.array([np.nan] + [win_rate(P, pis[t], pis[t - 1]) for t in range(1, len(pis))]),
        "vs_pi0": np.array([win_rate(P, p, world.pi0) for p in pis]),
        "vs_teacher": np.array([win_rate(P, p, world.teacher) for p in pis]),
        "exploit": np.array([exploitability(P, p) for p in pis]),
    }


def soft_policy_iteration(world: World, eta: float, iterations: int) -> np.ndarray:
    r"""DNO's exact iteration (Algorithm 1): :math:`\pi_{t+1}\propto\pi_t e^{r_t/\eta}`, :math:`r_t=\mathcal P(y\succ\pi_t)`; ``(T+1, X, K)``."""
    out = [world.pi0]
    for _ in range(iterations):
        out.append(G.mwu_step(world.P, out[-1], 1.0 / eta))
    return np.stack(out)


def run_smoke(cfg: Config, seed: int) -> dict:
    """The whole smoke experiment for one seed."""
    t0 = time.perf_counter()
    world = make_world(cfg, np.random.default_rng([seed, 0]))
    dno = iterate(world, cfg, world.P, np.random.default_rng([seed, 1]))
    bt = iterate(world, cfg, world.P_bt, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    n_teacher = cfg.iterations * cfg.candidate_sets
    xs = np.repeat(np.arange(cfg.n_prompts), n_teacher)
    sft = sft_fit(world.pi0, xs, _sample_rows(world.teacher[xs], rng), cfg.steps, cfg.lr)
    exact = soft_policy_iteration(world, cfg.eta, cfg.exact_iterations)
    avg = G.running_average(exact)
    return {
        "world": world, "dno": dno, "bt": bt, "sft": sft,
        "ladder": {"dno": ladder(world, dno), "bt": ladder(world, bt)},
        "sft_vs_teacher": win_rate(world.P, sft, world.teacher),
        "exact_exploit_last": np.array([exploitability(world.P, p) for p in exact]),
        "exact_exploit_avg": np.array([exploitability(world.P, p) for p in avg]),
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- full profile


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """DNO-Prct on a language model (Algorithm 2), ``cfg.full_iterations`` iterations.

    Each iteration: ``cfg.full_samples`` completions per training prompt from ``π_t``; the
    judge (:class:`rlbook.lm_selfplay.PairwiseJudge`) scores them and each completion's expected
    win rate against the others ranks them (:func:`rlbook.lm_selfplay.group_win_rates`); the
    (best, worst) pair is kept when the margin is at least ``cfg.full_margin``; then TRL's
    ``DPOTrainer`` (``β = cfg.full_beta``, sigmoid loss) with the *previous iterate* as frozen
    reference. After each iteration: the judge's win rate of ``π_{t+1}`` against ``π_0`` on
    held-out prompts. ``cfg.model``, ``cfg.dataset``, ``cfg.judge``: Hub names or local folders.
    Returns ``{"history": [...], "pairs_kept": [...]}``.
    """
    import copy

    import datasets
    import torch
    from trl import DPOConfig, DPOTrainer

    from rlbook import lm_selfplay as S
    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
    init, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
    init.eval()
    judge = S.PairwiseJudge(cfg.judge, device)
    prompts, questions = S.load_prompts(cfg.dataset, cfg.full_prompts, seed, tok)
    ev_prompts, ev_q = S.load_prompts(cfg.dataset, cfg.full_eval_prompts, seed, tok, offset=cfg.full_prompts)
    torch.manual_seed(seed)
    init_comp = [c[0] for c in S.generate(init, tok, ev_prompts, 1, cfg.full_max_new_tokens, device)]
    history, kept = [], []
    for t in range(cfg.full_iterations):
        comps = S.generate(model, tok, prompts, cfg.full_samples, cfg.full_max_new_tokens, device)
        rows = []
        for p, q, cs in zip(prompts, questions, comps):
            w = S.group_win_rates(judge.scores([q] * len(cs), cs))
            b, l_ = int(np.argmax(w)), int(np.argmin(w))
            if w[b] - w[l_] >= cfg.full_margin:
                rows.append({"prompt": p, "chosen": cs[b], "rejected": cs[l_]})
        kept.append(len(rows))
        if not rows:
            raise RuntimeError(f"iteration {t}: no pair passed the margin {cfg.full_margin}")
        ref = copy.deepcopy(model).eval()  # the previous iterate pi_t is the reference
        args = DPOConfig(
            **S.trl_cpu_safe_kwargs(cuda, seed + t, f"{output_dir}/iter{t}"),
            beta=cfg.full_beta, learning_rate=cfg.full_lr, num_train_epochs=1, max_steps=cfg.full_max_steps,
            per_device_train_batch_size=cfg.full_per_device_batch,
            gradient_accumulation_steps=max(1, cfg.full_batch // cfg.full_per_device_batch),
            max_length=cfg.full_max_length, loss_type=["sigmoid"],
        )
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tok)
        trainer.train()
        model = trainer.model
        del ref, trainer
        comp = [c[0] for c in S.generate(model, tok, ev_prompts, 1, cfg.full_max_new_tokens, device)]
        history.append({"iteration": t + 1, "pairs": len(rows), "win_rate_vs_init": S.win_rate(judge, ev_q, comp, init_comp)})
    return {"history": history, "pairs_kept": kept}
