r"""Chapter "A Minimaximalist Approach to RLHF" (SPO, arXiv 2401.04056).

Self-Play Preference Optimization: sample a group of trajectories from the current policy,
let the rater compare them, and use each trajectory's *win proportion* in its group as
its reward for an ordinary RL update. No reward model, no adversary.

Smoke profile, two worlds, both with an exact preference matrix over whole trajectories:

- **(A) a preference bandit** -- the 6-response intransitive game
  (:func:`rlbook.games.intransitive_game` with ``0.8`` cycle wins and a "BT favourite"
  that loses 0.3 to each cycle member). SPO vs RM-RLHF (a Bradley-Terry reward fit
  to labelled pairs, then maximised).
- **(B) a sequential, non-Markovian rater** -- trajectories of 5 tokens from 3 actions
  (243 of them, a :class:`rlbook.mdp.TokenTree`); the rater compares two *whole*
  trajectories by a majority vote over three criteria (which one uses token 0 more,
  token 1 more, token 2 more: a Colonel-Blotto game) with 10% label noise: it is
  intransitive and no per-step reward explains it. SPO (REINFORCE with a group baseline
  on the win-proportion reward, :func:`rlbook.losses.reinforce_loss`) vs a BT reward model
  on trajectory features followed by the same REINFORCE.

Both learners are tabular softmax policies (one logit vector per tree state); the
exploitability of the time-averaged policy is exact (enumeration).

Full profile: :func:`run_full` -- SPO for a language model: TRL ``GRPOTrainer`` whose reward
for each group of completions is the win proportion under a pairwise judge, next to GRPO
on the judge's point-wise score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import games as G
from rlbook.config import check
from rlbook.mdp import TokenTree


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    # (A) the preference bandit
    bandit_iterations: int = 2000
    """(A) SPO iterations"""
    bandit_group: int = 8
    """(A) responses sampled per iteration (the group whose win proportions are the rewards)"""
    bandit_lr: float = 0.2
    """(A) SGD learning rate on the logits"""
    bandit_pairs: int = 5000
    """(A) labelled pairs of the Bradley-Terry reward model"""
    # (B) the sequential, non-Markovian rater
    vocab: int = 3
    """(B) actions per step"""
    horizon: int = 5
    """(B) steps per trajectory (``vocab**horizon`` trajectories)"""
    noise: float = 0.1
    """(B) probability that the rater's label is flipped"""
    iterations: int = 400
    """(B) REINFORCE iterations of both learners"""
    group: int = 8
    """(B) trajectories per iteration"""
    lr: float = 1.0
    """(B) SGD learning rate on the tabular logits"""
    rm_pairs: int = 2000
    """(B) labelled pairs (uniformly random trajectories) of the BT reward model"""
    # full profile (one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: policy, a Hub name or a local folder"""
    dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: prompts, a Hub name or a local ``save_to_disk`` folder"""
    judge: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: reward model used as the rater, P(y ≻ y') = σ(r(y) - r(y')) (a BT proxy)"""
    full_prompts: int = 2000
    """*full*: training prompts"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts for the head-to-head win rate"""
    full_group: int = 8
    """*full*: completions per prompt (the SPO group)"""
    full_steps: int = 200
    """*full*: optimiser steps of each run"""
    full_lr: float = 1e-6
    """*full*: learning rate"""
    full_per_device_batch: int = 16
    """*full*: completions per device batch (a multiple of ``full_group``)"""
    full_max_new_tokens: int = 256
    """*full*: generation length"""
    full_beta: float = 0.0
    """*full*: KL coefficient of GRPOTrainer (SPO has no reference term)"""

    def __post_init__(self) -> None:
        check(self.bandit_iterations >= 1 and self.iterations >= 1, "iterations must be >= 1")
        check(self.bandit_group >= 2 and self.group >= 2, "a group needs >= 2 samples")
        check(self.bandit_lr > 0 and self.lr > 0, "learning rates must be > 0")
        check(self.bandit_pairs >= 10 and self.rm_pairs >= 10, "pair counts must be >= 10")
        check(2 <= self.vocab <= 4 and 1 <= self.horizon <= 6, "vocab in 2..4 and horizon in 1..6 (enumerated)")
        check(0 <= self.noise < 0.5, "noise must be in [0, 0.5)")
        check(self.full_group >= 2 and self.full_per_device_batch % self.full_group == 0,
              "full_per_device_batch must be a multiple of full_group >= 2")


# ----------------------------------------------------------------------------- the rater of world (B)


def criteria(tree: TokenTree) -> np.ndarray:
    """``(N, V)`` per trajectory: how many times each token occurs in it."""
    a = tree.path_actions
    return np.stack([(a == k).sum(1) for k in range(tree.vocab)], axis=1)


def majority_rater(tree: TokenTree, noise: float) -> np.ndarray:
    r"""``P: (N, N)``, the probability that trajectory ``ξ`` is preferred to ``ξ'``.

    One vote per token type ``k``: the trajectory that uses token ``k`` more often wins
    the vote (a tie abstains); the majority decides (a tie is a coin flip), and the label
    is flipped with probability ``noise``. This is a Colonel-Blotto game over the
    trajectory's "budget" of ``T`` tokens: every allocation is beaten by another
    (intransitive), and the verdict depends on the whole trajectory, not on a sum of
    per-step rewards (non-Markovian). The same construction as the paper's intransitive
    "majority over criteria" raters, on a token tree.
    """
    c = criteria(tree)
    vote = np.sign(np.sign(c[:, None, :] - c[None, :, :]).sum(-1))
    clean = np.where(vote > 0, 1.0, np.where(vote < 0, 0.0, 0.5))
    return G.check_preference_matrix((1 - noise) * clean + noise * (1 - clean))


# ----------------------------------------------------------------------------- learners


def win_proportion(P: np.ndarray, ys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""SPO's reward: :math:`r(\xi_i)=\frac{1}{N-1}\sum_{j\ne i}\mathbb 1[\xi_i\succ\xi_j]` from one rater draw per pair.

    ``ys: (N,)`` trajectory indices of one group → ``(N,)`` (SPO, Sec. 4: "win proportion as
    reward"; its expectation is :math:`\frac{1}{N-1}\sum_{j\ne i}\mathcal P(\xi_i\succ\xi_j)`).
    """
    n = len(ys)
    p = P[ys[:, None], ys[None, :]]
    up = rng.random((n, n)) < p
    wins = np.triu(up, 1) | np.tril(~up.T, -1)  # one Bernoulli draw per unordered pair
    return wins.sum(1) / (n - 1)


def reinforce_grad(logp: np.ndarray, states: np.ndarray, actions: np.ndarray, w: np.ndarray) -> np.ndarray:
    r"""Gradient of the REINFORCE loss :math:`-\frac1G\sum_i w_i\log\pi(\xi_i)` w.r.t. tabular logits, in closed form.

    For a softmax policy :math:`\pi(\cdot|s)=\mathrm{softmax}(\theta_s)`,
    :math:`\nabla_{\theta_s}\log\pi(a|s)=e_a-\pi(\cdot|s)`, so the gradient is
    :math:`-\frac1G\sum_{i,t} w_i\,(e_{a_{it}}-\pi(\cdot|s_{it}))` at the visited states.
    ``logp: (S, V)``, ``states, actions: (G, T)``, ``w: (G,)`` → ``(S, V)``. Equal to autograd
    on :func:`rlbook.losses.reinforce_loss` times ``T`` (its token mean; a unit test checks it);
    numpy here because the chapter runs thousands of tiny steps.
    """
    G_, T = states.shape
    g = np.zeros_like(logp)
    wt = np.repeat(w, T) / G_  # (G*T,)
    s, a = states.ravel(), actions.ravel()
    np.add.at(g, (s, a), -wt)
    np.add.at(g, s, wt[:, None] * np.exp(logp[s]))
    return g


def reinforce(tree: TokenTree, reward_of_group, iterations: int, group: int, lr: float,
              rng: np.random.Generator, seed: int) -> np.ndarray:
    r"""REINFORCE with a group-mean baseline on a tabular softmax policy; returns ``(iterations + 1, N)``.

    Each iteration: ``group`` trajectories from ``π_t``, rewards ``reward_of_group(ys, rng)``,
    one SGD step on the REINFORCE loss with weights :math:`r_i-\bar r`
    (:func:`reinforce_grad`, the gradient of :func:`rlbook.losses.reinforce_loss`). Row
    ``t`` of the result is the trajectory distribution of ``π_t`` (for exact metrics and the
    time average). ``seed`` is unused (the start is the uniform policy); kept for symmetry.
    """
    from rlbook import mdp as M

    theta = np.zeros((1, tree.n_states, tree.vocab))
    st, ac = tree.path_states, tree.path_actions
    zeros = np.zeros(group, dtype=int)
    dists = []
    for _ in range(iterations + 1):
        lp = M.log_softmax(theta)  # (1, S, V)
        dists.append(np.exp(lp[0][st, ac].sum(-1)))  # (N,) trajectory distribution
        if len(dists) > iterations:
            break
        ys = M.sample_responses(lp, zeros, tree, rng)
        r = np.asarray(reward_of_group(ys, rng), dtype=float)
        theta[0] -= lr * reinforce_grad(lp[0], st[ys], ac[ys], r - r.mean())
    return np.stack(dists)


def spo(tree, P, iterations, group, lr, rng, seed) -> np.ndarray:
    """SPO: :func:`reinforce` with the win proportion of each trajectory in its group as reward."""
    return reinforce(tree, lambda ys, g: win_proportion(P, ys, g), iterations, group, lr, rng, seed)


def label_pairs(P: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of uniformly random trajectories labelled by the rater: ``(winners, losers)``."""
    a, b = rng.integers(0, len(P), n), rng.integers(0, len(P), n)
    first = rng.random(n) < P[a, b]
    return np.where(first, a, b), np.where(first, b, a)


def features(tree: TokenTree) -> np.ndarray:
    """``(N, V)`` trajectory features of the BT reward model: the token counts the rater looks at."""
    return criteria(tree).astype(float)


def rm_rlhf(tree, P, cfg: Config, rng, seed) -> tuple[np.ndarray, np.ndarray]:
    """RM-based RLHF: fit a linear BT reward on trajectory features, then REINFORCE on it. Returns ``(dists, r_hat)``."""
    from rlbook.rewards import fit_bt_linear

    phi = features(tree)
    yw, yl = label_pairs(P, cfg.rm_pairs, rng)
    w = fit_bt_linear(phi[yw], phi[yl], steps=300, lr=0.05, seed=seed)
    r_hat = phi @ w
    r_hat = (r_hat - r_hat.mean()) / (r_hat.std() + 1e-12)  # the usual reward normalisation
    return reinforce(tree, lambda ys, g: r_hat[ys], cfg.iterations, cfg.group, cfg.lr, rng, seed), r_hat


def run_bandit(cfg: Config, seed: int) -> dict:
    """World (A): exact MWU self-play, sampled SPO, and the BT reward model's argmax."""
    from rlbook.rewards import fit_bt_table

    P = G.intransitive_game(0.8, 0.3, 0.99, 0.45)
    K = len(P)
    tree = TokenTree(K, 1)
    rng = np.random.default_rng([seed, 10])
    sampled = spo(tree, P, cfg.bandit_iterations, cfg.bandit_group, cfg.bandit_lr, rng, seed)
    exact = G.self_play(P, np.full(K, 1 / K), cfg.bandit_iterations, cfg.bandit_lr)
    yw, yl = label_pairs(P, cfg.bandit_pairs, np.random.default_rng([seed, 11]))
    r_bt = fit_bt_table(np.zeros(len(yw), dtype=int), yw, yl, 1, K, steps=400, lr=0.1, seed=seed)[0]
    rm_pi = np.eye(K)[np.argmax(r_bt)]
    return {
        "P": P, "mw": G.minimax_winner(P), "sampled": sampled, "exact": exact,
        "sampled_avg": G.running_average(sampled), "exact_avg": G.running_average(exact),
        "r_bt": r_bt, "rm_pi": rm_pi,
    }


def run_sequential(cfg: Config, seed: int) -> dict:
    """World (B): SPO vs RM-RLHF under the non-Markovian, intransitive, noisy rater."""
    tree = TokenTree(cfg.vocab, cfg.horizon)
    P = majority_rater(tree, cfg.noise)
    spo_d = spo(tree, P, cfg.iterations, cfg.group, cfg.lr, np.random.default_rng([seed, 20]), seed)
    rm_d, r_hat = rm_rlhf(tree, P, cfg, np.random.default_rng([seed, 21]), seed)
    return {"tree": tree, "P": P, "mw": G.minimax_winner(P), "spo": spo_d, "rm": rm_d, "r_hat": r_hat,
            "spo_avg": spo_d.mean(0), "rm_avg": rm_d.mean(0)}


def run_smoke(cfg: Config, seed: int) -> dict:
    """Both worlds for one seed, with the chapter's summary metrics."""
    t0 = time.perf_counter()
    a, b = run_bandit(cfg, seed), run_sequential(cfg, seed)
    P, Pb = a["P"], b["P"]
    summary = {
        "A_spo_avg_exploit": G.exploitability(P, a["sampled_avg"][-1]),
        "A_mwu_avg_exploit": G.exploitability(P, a["exact_avg"][-1]),
        "A_spo_last_exploit": G.exploitability(P, a["sampled"][-1]),
        "A_rm_exploit": G.exploitability(P, a["rm_pi"]),
        "A_tv_mw": G.tv(a["sampled_avg"][-1], a["mw"]),
        "B_spo_vs_rm": G.preference(Pb, b["spo_avg"], b["rm"][-1]),
        "B_spo_exploit": G.exploitability(Pb, b["spo_avg"]),
        "B_rm_exploit": G.exploitability(Pb, b["rm"][-1]),
        "B_spo_last_exploit": G.exploitability(Pb, b["spo"][-1]),
    }
    return {"A": a, "B": b, "summary": summary, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- full profile


def win_proportion_reward(judge, seed: int = 0):
    r"""A TRL reward function: each completion's win proportion in its group (SPO's reward, eq. :math:`r_t`).

    TRL calls it with the batch's ``prompts`` and ``completions`` (each prompt repeated
    ``num_generations`` times). Completions are grouped by identical prompt; within a group every
    pair is judged once by a Bernoulli draw from :math:`\sigma(r(y)-r(y'))`, and a completion's reward
    is the fraction of its comparisons it wins.
    """
    rng = np.random.default_rng([seed, 99])

    def reward(prompts, completions, **kwargs):
        texts = [_text(c) for c in completions]
        qs = [_question(p) for p in prompts]
        r = judge.scores(qs, texts)
        out = np.zeros(len(texts))
        groups: dict = {}
        for i, q in enumerate(qs):
            groups.setdefault(q, []).append(i)
        for idx in groups.values():
            idx = np.array(idx)
            if len(idx) < 2:
                continue
            p = judge.prob(r[idx][:, None], r[idx][None, :])
            up = rng.random(p.shape) < p
            wins = np.triu(up, 1) | np.tril(~up.T, -1)
            out[idx] = wins.sum(1) / (len(idx) - 1)
        return out.tolist()

    reward.__name__ = "win_proportion"
    return reward


def pointwise_reward(judge):
    """A TRL reward function: the judge's point-wise score (the RM-based baseline)."""

    def reward(prompts, completions, **kwargs):
        return judge.scores([_question(p) for p in prompts], [_text(c) for c in completions]).tolist()

    reward.__name__ = "judge_score"
    return reward


def _text(c) -> str:
    return c if isinstance(c, str) else c[-1]["content"]


def _question(p) -> str:
    return p if isinstance(p, str) else [m["content"] for m in p if m["role"] == "user"][-1]


def run_full(cfg: Config, seed: int, device: str, output_dir: str, max_steps: int | None = None) -> dict:
    """SPO on a language model: TRL ``GRPOTrainer`` with the win-proportion reward, vs GRPO on the point-wise score.

    Both runs: ``cfg.full_steps`` steps, ``cfg.full_group`` completions per prompt, no KL
    (``beta = cfg.full_beta``). Then the judge's head-to-head win rate of SPO's policy over the
    baseline's on held-out prompts (one sampled completion each). Returns ``{"summary": {...}}``.
    """
    import datasets
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from rlbook import lm_selfplay as S
    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    judge = S.PairwiseJudge(cfg.judge, device)
    _, tok = load_pretrained(cfg.model, device="cpu")
    _, questions = S.load_prompts(cfg.dataset, cfg.full_prompts, seed, tok)
    ev_prompts, ev_q = S.load_prompts(cfg.dataset, cfg.full_eval_prompts, seed, tok, offset=cfg.full_prompts)
    # conversational prompts: TRL applies the chat template, the reward sees the user turn
    train = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in questions])
    policies, logs = {}, {}
    for name, reward in (("spo", win_proportion_reward(judge, seed)), ("rm", pointwise_reward(judge))):
        model, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
        args = GRPOConfig(
            **S.trl_cpu_safe_kwargs(cuda, seed, f"{output_dir}/{name}"),
            learning_rate=cfg.full_lr, beta=cfg.full_beta, num_generations=cfg.full_group,
            per_device_train_batch_size=cfg.full_per_device_batch, max_completion_length=cfg.full_max_new_tokens,
            max_steps=max_steps or cfg.full_steps, temperature=1.0, loss_type="grpo", scale_rewards="group",
        )
        tr = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=train, processing_class=tok)
        tr.train()
        policies[name] = tr.model.eval()
        logs[name] = [h.get("reward") for h in tr.state.log_history if "reward" in h]
    torch.manual_seed(seed)
    comp = {k: [c[0] for c in S.generate(m, tok, ev_prompts, 1, cfg.full_max_new_tokens, device)] for k, m in policies.items()}
    return {"summary": {"spo_vs_rm_win_rate": S.win_rate(judge, ev_q, comp["spo"], comp["rm"]),
                        "spo_final_reward": (logs["spo"] or [float("nan")])[-1],
                        "rm_final_reward": (logs["rm"] or [float("nan")])[-1]},
            "reward_logs": logs}
