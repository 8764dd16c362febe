r"""Chapter "Co-Reward: Self-supervised RL for LLM Reasoning via Contrastive Agreement" (arXiv 2508.00410).

Label-free RLVR: the reward of a rollout for question :math:`q` is whether its answer agrees with the
majority answer of the rollouts for an analogous question :math:`q'` (and vice versa), instead of
the majority of its own group (self-voting) or a verifier (ground truth). The rewards are in
:mod:`rlbook.losses.co_reward`; the toy task and base policy in :mod:`rlbook.tasks.paraphrase`.

Smoke profile (:func:`run_toy`): a shared-parameter strategy policy on paired two-digit additions
``"a+b="`` / ``"b+a="`` whose base prefers a wording-dependent shortcut (copy the first operand)
on one surface cell; GRPO with each of the three rewards, same budget (60 steps x 32 pairs x
8 rollouts per question), exact accuracy on 300 held-out pairs.

Full profile (:func:`run_full`): TRL ``GRPOTrainer`` on original + rephrased MATH questions
(``TMLR-Group-HF/Co-rewarding-RephrasedMATH``) with the cross-question reward computed in a TRL
reward function over each generation batch (:func:`trl_pair_reward`), then pass@k on MATH-500.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlbook import hub, math_data
from rlbook.config import check
from rlbook.losses import group_normalise, grpo_loss
from rlbook.losses.co_reward import answer_ids, co_reward, ground_truth_reward, self_voting_reward
from rlbook.tasks import paraphrase as P

REWARDS = ("ground_truth", "self_voting", "co_reward")
"""the rewards compared (paper Sec. 4: GT reward, Self-Certainty/Entropy/Majority-Voting, Co-Reward)"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    steps: int = 60
    """toy: GRPO steps (one fresh batch each)"""
    pairs: int = 32
    """toy: question pairs per step (64 questions)"""
    group: int = 8
    """toy: G, rollouts per question (the paper's rollout.n=8)"""
    lr: float = 0.05
    """toy: Adam learning rate on the shared strategy logits"""
    eval_pairs: int = 300
    """toy: held-out pairs for the exact accuracy"""
    eval_every: int = 5
    """toy: evaluate every this many steps (curves)"""
    offset_std: float = 0.8
    """toy: spread of the per-question offsets of the base policy"""
    no_carry_logit: float = -0.3
    """toy: base logit of the wording-independent error (drop the carry) in the two carry cells"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen3-1.7B-Base"
    """*full*: base model, a Hub name or a local folder"""
    full_train_data: str = "TMLR-Group-HF/Co-rewarding-RephrasedMATH"
    """*full*: paired MATH questions (original_question, rephrased_question, solution), Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer), Hub name or save_to_disk folder"""
    full_methods: str = "co_reward,self_voting,ground_truth"
    """*full*: rewards to train with, one run each"""
    full_steps: int = 150
    """*full*: optimiser steps per run"""
    full_pairs_per_step: int = 16
    """*full*: question pairs per step (32 questions; the paper: train_batch_size=128 pairs)"""
    full_group: int = 8
    """*full*: rollouts per question ("rollout.n=8", math_co_reward.sh)"""
    full_lr: float = 3e-6
    """*full*: learning rate ("optim.lr=3e-6", math_co_reward.sh)"""
    full_beta: float = 0.005
    """*full*: k3 KL coefficient ("kl_loss_coef=0.005", "kl_loss_type=low_var_kl")"""
    full_max_completion: int = 1024
    """*full*: max new tokens (the paper: 3072)"""
    full_eval_problems: int = 100
    """*full*: MATH-500 problems for pass@k"""
    full_eval_samples: int = 8
    """*full*: samples per problem for the unbiased pass@k"""

    def __post_init__(self):
        check(self.steps >= 1 and self.full_steps >= 1, "steps must be positive")
        check(self.pairs >= 1 and self.full_pairs_per_step >= 1, "pairs per step must be positive")
        check(self.group >= 2 and self.full_group >= 2, "group sizes: G >= 2 (a majority needs several votes)")
        check(self.lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(1 <= self.eval_pairs <= 700, "eval_pairs must be in 1..700 (the held-out split has ~770 pairs)")
        check(1 <= self.eval_every <= self.steps, "eval_every must be in 1..steps")
        check(self.offset_std >= 0, "offset_std must be >= 0")
        check(self.full_beta >= 0, "full_beta must be >= 0")
        bad = [m for m in math_data.split_list(self.full_methods) if m not in REWARDS]
        check(not bad, f"full_methods: unknown reward(s) {bad}; choose from {', '.join(REWARDS)}")


# ---------------------------------------------------------------------------------
# rewards on a paired batch
# ---------------------------------------------------------------------------------
def paired_rewards(kind: str, ans: Tensor, truth: Tensor) -> Tensor:
    """Rewards ``r: (2B, G)`` of a batch whose rows alternate ``q_0, q'_0, q_1, q'_1, ...``.

    ``ans: (2B, G)`` long answers, ``truth: (2B,)`` (used by ``"ground_truth"`` only).
    ``"co_reward"``: each view against the *other* view's majority; ``"self_voting"``: against
    its own majority.
    """
    if kind == "ground_truth":
        return ground_truth_reward(ans, truth)
    if kind == "self_voting":
        return self_voting_reward(ans)
    if kind == "co_reward":
        r_q, r_q2 = co_reward(ans[0::2], ans[1::2])  # (B, G) each
        r = torch.empty(ans.shape, dtype=r_q.dtype)
        r[0::2], r[1::2] = r_q, r_q2
        return r
    raise ValueError(f"unknown reward {kind!r}; choose from {', '.join(REWARDS)}")


# ---------------------------------------------------------------------------------
# the toy
# ---------------------------------------------------------------------------------
def base_policy(cfg: Config) -> P.StrategyPolicy:
    """The toy's base: :data:`rlbook.tasks.paraphrase.BASE_LOGITS` with ``cfg.no_carry_logit`` in the carry cells."""
    logits = [list(row) for row in P.BASE_LOGITS]
    for c in (2, 3):
        logits[c][P.STRATEGIES.index("no_carry")] = cfg.no_carry_logit
    return P.StrategyPolicy(offset_std=cfg.offset_std, base_logits=logits)


def evaluate(policy: P.StrategyPolicy, problems) -> dict:
    """Exact accuracy, shortcut share and per-cell accuracy of ``policy`` on ``problems``."""
    acc = policy.accuracy(problems)
    c = torch.as_tensor(P.cells(problems))
    return {
        "accuracy": float(acc.mean()),
        "shortcut": float(policy.shortcut_share(problems).mean()),
        "cell_accuracy": np.array([float(acc[c == k].mean()) for k in range(len(P.CELLS))]),
        "strategy_probs": torch.softmax(policy.theta.detach(), -1).numpy().copy(),
    }


def train_toy(kind: str, cfg: Config, seed: int) -> dict:
    """GRPO on the strategy policy with reward ``kind``; returns curves and the final evaluation.

    One step: ``cfg.pairs`` pairs → ``2·pairs`` questions, ``G`` rollouts each; rewards by
    :func:`paired_rewards`; GRPO advantages per question group (:func:`rlbook.losses.group_normalise`,
    the official code's ``compute_grpo_outcome_advantage`` on each view); one on-policy step of
    :func:`rlbook.losses.grpo_loss` (ratio 1, so the clip is inactive; no KL).
    """
    task = P.PairedAdditionTask()
    policy = base_policy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([seed, 2])
    gen = torch.Generator().manual_seed(seed)
    ev = task.eval_problems(cfg.eval_pairs)
    out = {"reward": [], "eval_step": [], "accuracy": [], "shortcut": []}
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0:
            e = evaluate(policy, ev)
            out["eval_step"].append(step)
            out["accuracy"].append(e["accuracy"])
            out["shortcut"].append(e["shortcut"])
        if step == cfg.steps:
            break
        problems = task.sample(cfg.pairs, rng)  # [q_0, q'_0, ...]
        s, ans = policy.sample(problems, cfg.group, gen)  # (2B, G)
        r = paired_rewards(kind, ans, torch.tensor([p.target for p in problems]))
        adv = group_normalise(r.double()).flatten()  # (2B*G,)
        logp = policy.logprob(problems, s).reshape(-1, 1)  # (2B*G, 1): one "token", the strategy
        loss, _ = grpo_loss(logp, logp.detach(), adv, torch.ones_like(logp))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out["reward"].append(r.mean().item())
    out["final"] = evaluate(policy, ev)
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in out.items()}


def run_toy(cfg: Config, seed: int) -> dict:
    """The base policy's evaluation and one :func:`train_toy` run per reward in :data:`REWARDS`."""
    t0 = time.time()
    task = P.PairedAdditionTask()
    out = {"base": evaluate(base_policy(cfg), task.eval_problems(cfg.eval_pairs))}
    for kind in REWARDS:
        out[kind] = train_toy(kind, cfg, seed)
    out["seconds"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer with the cross-question reward
# ---------------------------------------------------------------------------------
def load_paired_math(name_or_path: str, split: str = "train", n_pairs: int | None = None, seed: int = 0,
                     q_col: str = "original_question", q2_col: str = "rephrased_question",
                     answer_col: str = "solution"):
    """Paired MATH questions as a flat data set whose rows alternate ``q_0, q'_0, q_1, q'_1, ...``.

    Columns: ``prompt`` (the Qwen2.5-Math prompt of :mod:`rlbook.math_data`), ``answer`` (the
    reference, only the GT reward reads it), ``pair_id`` and ``view`` (0 original, 1 rephrased).
    Pairs are shuffled once with ``seed``; train with ``shuffle_dataset=False`` so a generation
    batch holds both views of each pair. Column names are those of the official ``train_pairs``
    files (``original_question``, ``rephrased_question``, ``solution``).
    """
    from datasets import Dataset

    ds = hub.load_dataset(name_or_path, split)
    order = np.random.default_rng(seed).permutation(len(ds))
    if n_pairs is not None:
        order = order[:n_pairs]
    rows = []
    for pid, i in enumerate(order):
        ex = ds[int(i)]
        ans = str(ex[answer_col])
        ans = math_data.last_boxed(ans) or ans
        for view, col in enumerate((q_col, q2_col)):
            rows.append({"prompt": math_data.PROMPT.format(problem=ex[col]), "answer": ans,
                         "pair_id": pid, "view": view})
    return Dataset.from_list(rows)


def _extract(completion) -> str:
    text = completion if isinstance(completion, str) else completion[-1]["content"]
    got = math_data.last_boxed(text)
    return "" if got is None else math_data.normalise_answer(got)


def trl_pair_reward(kind: str):
    """A TRL reward function ``f(completions, pair_id, view, answer, **kw) -> list[float]``.

    It sees the whole generation batch: groups the completions by ``(pair_id, view)``, takes each
    group's majority ``\\boxed{}`` answer (string-normalised), and rewards each completion with
    :func:`rlbook.losses.co_reward.agreement_reward` against the *other* view's majority
    (``"co_reward"``), its own (``"self_voting"``), or the reference (``"ground_truth"``). A completion
    whose partner view is not in the batch gets 0 (does not happen with ``shuffle_dataset=False``
    and an even number of prompts per generation batch).
    """
    from rlbook.losses.co_reward import NO_ANSWER, agreement_reward, majority_label

    if kind not in REWARDS:
        raise ValueError(f"unknown reward {kind!r}")

    def reward(completions, pair_id, view, answer, **kwargs) -> list[float]:
        texts = [_extract(c) for c in completions]
        refs = [math_data.normalise_answer(a) for a in answer]
        ids = answer_ids(texts + refs)
        a_ids, ref_ids = ids[: len(texts)], ids[len(texts):]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, key in enumerate(zip(pair_id, view)):
            groups.setdefault((int(key[0]), int(key[1])), []).append(i)
        maj = {key: int(majority_label(a_ids[idx].view(1, -1))[0]) for key, idx in groups.items()}
        out = [0.0] * len(texts)
        for (pid, v), idx in groups.items():
            if kind == "ground_truth":
                label = int(ref_ids[idx[0]])
            elif kind == "self_voting":
                label = maj[(pid, v)]
            else:
                label = maj.get((pid, 1 - v), NO_ANSWER)
            r = agreement_reward(a_ids[idx].view(1, -1), torch.tensor([label]))[0]
            for j, i in enumerate(idx):
                out[i] = float(r[j])
        return out

    reward.__name__ = f"{kind}_reward"
    return reward


def run_full(cfg: Config, seed: int, output_dir: str = "co_reward_full", cpu: bool = False,
             max_steps: int | None = None, train_pairs: int | None = None, eval_problems: int | None = None,
             eval_samples: int | None = None, max_completion: int | None = None, generation_batch: int = 64) -> dict:
    """Paper-scale run: for each reward in ``cfg.full_methods``, TRL ``GRPOTrainer`` on paired MATH, then pass@k.

    Not timed on a GPU here (the catalog's estimate: ~45 min per 150-step run on an H100 with vLLM).
    ``cpu`` and the ``max_*``/``eval_*``/``train_pairs`` overrides are for the dry-run test (tiny
    local model and data). Returns ``{"base": pass@k, reward: pass@k, ...}`` (dicts ``k -> value``).
    """
    from trl import GRPOConfig, GRPOTrainer

    from rlbook.models import load_pretrained

    steps = max_steps or cfg.full_steps
    max_new = max_completion or cfg.full_max_completion
    train = load_paired_math(cfg.full_train_data, "train", n_pairs=train_pairs, seed=seed)
    evalset = math_data.load_math(cfg.full_eval_data, "test", n=eval_problems or cfg.full_eval_problems)
    n_samp = eval_samples or cfg.full_eval_samples
    device, dtype, use_vllm = hub.full_device(cpu)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch)}
    G = cfg.full_group
    pairs_per_device_step = 1 if cpu else 2  # 2 pairs = 4 questions x G completions per forward
    for kind in math_data.split_list(cfg.full_methods):
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        args = GRPOConfig(
            output_dir=f"{output_dir}/{kind}",
            learning_rate=cfg.full_lr,  # "optim.lr=3e-6"
            lr_scheduler_type="cosine", warmup_steps=0.1,  # "warmup_style=cosine", "lr_warmup_steps_ratio=0.1" (a float: a ratio)
            beta=cfg.full_beta,  # "kl_loss_coef=0.005", k3 ("low_var_kl")
            loss_type="dapo",  # verl's default token-mean aggregation
            scale_rewards="group",  # GRPO's std normalisation per question group
            num_generations=G,  # "rollout.n=8"
            per_device_train_batch_size=2 * G * pairs_per_device_step,
            gradient_accumulation_steps=max(1, cfg.full_pairs_per_step // pairs_per_device_step) if not cpu else 1,
            shuffle_dataset=False,  # keep q and q' of a pair in the same generation batch
            num_iterations=1,
            max_completion_length=max_new,
            temperature=1.0,
            max_steps=steps,
            logging_steps=1,
            **hub.trl_offline(not cpu, seed),
            **hub.vllm_kw(use_vllm),
        )
        trainer = GRPOTrainer(model=model, reward_funcs=trl_pair_reward(kind), args=args, train_dataset=train,
                              processing_class=tok)
        trainer.train()
        results[kind] = math_data.evaluate_full(trainer.model, tok, evalset, n_samp, max_new, generation_batch)
    return results
