r"""Chapter "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning" (Lite PPO, arXiv 2508.08221).

The paper isolates RL4LLM "tricks" one at a time; its minimal recipe, *Lite PPO*, is the
critic-free clipped PPO loss with group-mean / batch-std advantages and token-level loss
aggregation (:mod:`rlbook.losses.lite_ppo`). GRPO uses group-mean / group-std advantages and a
per-sequence mean.

Smoke profile, three pieces:

- **normalisation lab** (:func:`normalisation_lab`, no model): binary rewards of a batch mixing
  easy and hard prompts with label noise; the total advantage weight per group under group-std,
  batch-std and no-std normalisation, checked against the closed forms.
- **length bandit** (:func:`run_length_bandit`): a tabular autoregressive policy whose responses
  have different lengths (short direct answers, long "scratchpad" answers, long rambling wrong
  answers), with one *shared* length-preference logit; the 2x2 factorial {group std, batch std} x
  {sequence, token} aggregation plus clip-higher, PPO with several epochs per batch.
- **tiny LM** (:func:`run_lm`): GRPO vs Lite PPO on the ``countdown4`` base with
  :func:`rlbook.rl_lm.train` and ``epochs = 2`` (ratios and clipping active); countdown answers
  all have the same length, so only the normalisation differs there.

Full profile (:func:`run_full`): TRL ``GRPOTrainer`` with ``scale_rewards="group", loss_type="grpo"``
(GRPO) vs ``scale_rewards="batch", loss_type="dapo"`` (Lite PPO) on a small model and MATH.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlbook import math_data
from rlbook.config import check
from rlbook.losses.lite_ppo import clipped_pg_loss, group_weight, normalise_advantages

VARIANTS = {
    "GRPO": ("group", "sequence", False),
    "group std + token": ("group", "token", False),
    "batch std + sequence": ("batch", "sequence", False),
    "Lite PPO": ("batch", "token", False),
    "Lite PPO + clip-higher": ("batch", "token", True),
}
"""the compared objectives: name -> (std level, aggregation, clip-higher); all use the group mean"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    # normalisation lab
    lab_groups: int = 64
    """normalisation lab: prompts in the batch (half easy, half hard)"""
    group: int = 8
    """G: samples per prompt (normalisation lab and length bandit)"""
    p_easy: float = 0.9
    """success rate of the easy prompts (the catalog: about 0.9)"""
    p_hard: float = 0.1
    """success rate of the hard prompts (the catalog: about 0.1)"""
    noise: float = 0.05
    """probability that a verifier reward is flipped (label noise; the catalog: 5 percent)"""
    # length bandit
    bandit_prompts: int = 128
    """length bandit: prompts (half easy, half hard), all used every step"""
    short_answers: int = 6
    """length bandit: short candidate responses per prompt (1 to 3 tokens)"""
    long_answers: int = 6
    """length bandit: long candidate responses per prompt (12 to 20 tokens)"""
    bandit_steps: int = 15
    """length bandit: sampled batches"""
    epochs: int = 3
    """mu: gradient steps per sampled batch (PPO epochs; 1 is on-policy)"""
    lr: float = 0.1
    """length bandit: Adam learning rate"""
    eps_low: float = 0.2
    """PPO clip, lower side (the paper: 0.2)"""
    eps_high: float = 0.28
    """clip-higher's upper side (DAPO's 0.28; 0.2 without clip-higher)"""
    # tiny LM
    base: str = "countdown4"
    """tiny LM: zoo entry of the base policy"""
    lm_steps: int = 5
    """tiny LM: sampled batches (0 skips the tiny-LM run)"""
    lm_epochs: int = 2
    """tiny LM: gradient steps per sampled batch (2 makes the second one off-policy)"""
    lm_prompts: int = 8
    """tiny LM: prompts per batch"""
    lm_lr: float = 3e-4
    """tiny LM: Adam learning rate"""
    eval_prompts: int = 50
    """tiny LM: held-out prompts for the exact pass@1"""
    # full profile
    full_model: str = "Qwen/Qwen2.5-Math-1.5B"
    """*full*: base model, Hub name or local folder (the paper: Qwen3-4B/8B base)"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: MATH training problems, Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer)"""
    full_methods: str = "GRPO,Lite PPO"
    """*full*: methods to train, one run each"""
    full_steps: int = 180
    """*full*: optimiser steps per run"""
    full_group: int = 8
    """*full*: samples per prompt (the paper: 8)"""
    full_prompts_per_step: int = 32
    """*full*: prompts per optimiser step"""
    full_lr: float = 1e-6
    """*full*: learning rate (the paper: 1e-6)"""
    full_max_completion: int = 1024
    """*full*: max new tokens (the paper: up to 8k)"""
    full_eval_problems: int = 500
    """*full*: MATH-500 problems evaluated"""
    full_eval_samples: int = 4
    """*full*: samples per problem (mean accuracy is pass@1)"""
    full_levels: str = "Level 3,Level 4,Level 5"
    """*full*: MATH difficulty levels kept for training"""

    def __post_init__(self):
        check(self.lab_groups >= 2 and self.bandit_prompts >= 2, "need at least 2 prompts")
        check(self.group >= 2 and self.full_group >= 2, "group sizes must be >= 2")
        check(0.0 < self.p_hard < self.p_easy < 1.0, "need 0 < p_hard < p_easy < 1")
        check(0.0 <= self.noise < 0.5, "noise must be in [0, 0.5)")
        check(self.short_answers >= 2 and self.long_answers >= 2, "need >= 2 short and >= 2 long answers")
        check(self.bandit_steps >= 1 and self.epochs >= 1 and self.lm_epochs >= 1, "bandit_steps and epochs must be >= 1")
        check(self.lr > 0 and self.lm_lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(0.0 <= self.eps_low < 1.0 and self.eps_high >= self.eps_low, "need 0 <= eps_low < 1, eps_high >= eps_low")
        check(self.lm_steps >= 0 and self.full_steps >= 1, "steps must be non-negative")
        bad = [m for m in math_data.split_list(self.full_methods) if m not in ("GRPO", "Lite PPO")]
        check(not bad, f"full_methods: unknown method(s) {bad}; choose from GRPO, Lite PPO")


def objective(name: str, cfg: Config):
    """``(logp, mask, r, logp_old) -> loss`` of variant ``name`` (:data:`VARIANTS`), for :func:`rlbook.rl_lm.train`.

    Group mean always; std at the variant's level (:func:`rlbook.losses.lite_ppo.normalise_advantages`,
    TRL's Bessel + 1e-4); :func:`rlbook.losses.lite_ppo.clipped_pg_loss` with the variant's aggregation
    and ``eps_high = cfg.eps_high`` if clip-higher else ``cfg.eps_low``.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    std, agg, higher = VARIANTS[name]
    eh = cfg.eps_high if higher else cfg.eps_low

    def loss(logp, mask, r, logp_old):
        adv = normalise_advantages(r, "group", std).flatten().to(logp.dtype)
        return clipped_pg_loss(logp, logp_old, adv, mask, cfg.eps_low, eh, agg)[0]

    return loss


# ---------------------------------------------------------------------------------
# normalisation lab (no model)
# ---------------------------------------------------------------------------------
def normalisation_lab(cfg: Config, seed: int) -> dict:
    r"""A batch of binary rewards (half easy, half hard prompts, flipped with prob. ``noise``) and its advantages.

    Returns ``r: (B, G)``, the per-group success rate ``p``, the true (noise-free) success
    probability of each prompt ``p_true``, the sums :math:`\sum_i A_i^2` per group under group / batch /
    no std (population std, ``eps = 0``: ``weight_group``, ``weight_batch``, ``weight_none``), their
    closed forms from :func:`rlbook.losses.lite_ppo.group_weight` (``closed_*``), and the share of the
    total weight carried by groups whose only "signal" is a flipped label (``noise_share_*``).
    """
    rng = np.random.default_rng([seed, 31])
    B, G = cfg.lab_groups, cfg.group
    p_true = np.where(np.arange(B) < B // 2, cfg.p_easy, cfg.p_hard)
    clean = (rng.random((B, G)) < p_true[:, None]).astype(float)
    flip = rng.random((B, G)) < cfg.noise
    r = torch.tensor(np.where(flip, 1.0 - clean, clean))
    p = r.mean(1)
    out = {"r": r, "p": p, "p_true": torch.tensor(p_true), "flip": torch.tensor(flip)}
    var_b = r.var(unbiased=False)
    for std in ("group", "batch", "none"):
        a = normalise_advantages(r, "group", std, eps=0.0, unbiased=False).nan_to_num(0.0)
        out[f"weight_{std}"] = (a**2).sum(1)
        out[f"closed_{std}"] = group_weight(p, G, std, var_b)
        # groups that are degenerate without noise but not with it: all their weight is noise
        noisy_only = (clean.min(1) == clean.max(1)) & (flip.any(1))
        w = out[f"weight_{std}"]
        out[f"noise_share_{std}"] = float(w[torch.tensor(noisy_only)].sum() / w.sum())
    out["batch_var"] = float(var_b)
    return out


# ---------------------------------------------------------------------------------
# length bandit: a tabular autoregressive policy with variable-length responses
# ---------------------------------------------------------------------------------
@dataclass
class LengthBandit:
    """Candidate responses of every prompt: their lengths, correctness, and the base logits."""

    z0: Tensor
    """per-prompt base logits of the first token, which picks the response ``(X, K)``"""
    length: Tensor
    """response lengths in tokens (EOS included) ``(X, K)``, long ones = scratchpads or rambling"""
    correct: Tensor
    """``(X, K)`` bool: the verifier's (noise-free) verdict"""
    hard: Tensor
    """``(X,)`` bool: hard prompts (no short correct answer)"""


def make_length_bandit(cfg: Config, rng: np.random.Generator) -> LengthBandit:
    r"""Easy prompts have short and long correct answers; hard ones only long (scratchpad) answers.

    Each prompt has ``short_answers`` responses of 1-3 tokens and ``long_answers`` of 12-20 tokens.
    Easy prompt: two short and one long correct answer, base logits set so that the success rate is
    about ``p_easy``. Hard prompt: one long correct answer among many wrong ones (long rambling and
    short guesses), success rate about ``p_hard``.
    """
    X, S, Lg = cfg.bandit_prompts, cfg.short_answers, cfg.long_answers
    K = S + Lg
    length = np.concatenate([rng.integers(1, 4, (X, S)), rng.integers(12, 21, (X, Lg))], 1)
    hard = np.arange(X) >= X // 2
    correct = np.zeros((X, K), dtype=bool)
    z = rng.normal(0.0, 0.5, (X, K))
    for x in range(X):
        if hard[x]:
            c = [S + rng.integers(Lg)]
            target = cfg.p_hard
        else:
            c = list(rng.choice(S, 2, replace=False)) + [S + rng.integers(Lg)]
            target = cfg.p_easy
        correct[x, c] = True
        # shift the correct logits so that the success probability is the target
        pc = np.exp(z[x, c]).sum()
        pw = np.exp(z[x, ~correct[x]]).sum()
        z[x, c] += np.log(target / (1 - target) * pw / pc)
    return LengthBandit(torch.tensor(z), torch.tensor(length), torch.tensor(correct), torch.tensor(hard))


def bandit_logits(u: Tensor, beta: Tensor, world: LengthBandit) -> Tensor:
    r"""Logits of the first token: :math:`z_{x,y}=u_{x,y}+\beta\,\ell_{x,y}/20`, ``(X, K)``.

    :math:`u` is per prompt (tabular), :math:`\beta` one *shared* length-preference parameter, the
    only thing all prompts have in common (as a real LM's tendency to write long answers is).
    """
    return u + beta * world.length.to(u.dtype) / 20.0


def response_logps(z: Tensor, y: Tensor, world: LengthBandit) -> tuple[Tensor, Tensor]:
    r"""Per-token log-probs and mask of sampled responses ``y: (X, G)`` → ``(X*G, T_max)`` each.

    The first token picks the response (:math:`\log\pi(y|x)=\log\operatorname{softmax}(z_x)_y`); the
    following tokens are then determined (log-prob 0), so a response of length :math:`\ell` has
    :math:`\ell` valid tokens and its sequence log-prob is the first token's.
    """
    X, G = y.shape
    rows = torch.arange(X).repeat_interleave(G)
    lp = torch.log_softmax(z, -1)[rows, y.flatten()]  # (N,)
    lens = world.length[rows, y.flatten()]  # (N,)
    T = int(world.length.max())
    mask = (torch.arange(T)[None] < lens[:, None]).to(z.dtype)  # (N, T)
    logp = torch.zeros(X * G, T, dtype=z.dtype)
    logp = torch.cat([lp[:, None], logp[:, 1:]], 1)
    return logp, mask


def train_bandit(world: LengthBandit, name: str, cfg: Config, seed: int) -> dict:
    """PPO on every prompt at once: ``G`` samples each, noisy 0/1 rewards, ``cfg.epochs`` Adam steps per batch.

    Returns per-step traces of the exact success rate on easy and hard prompts (``acc_easy``,
    ``acc_hard``), the expected response length (``length``) and of wrong responses
    (``wrong_length``), the shared length logit (``beta``), and the fraction of responses whose choice token is clipped, averaged over the
    epochs after the first (``clip_frac``).
    """
    loss_fn = objective(name, cfg)
    u = world.z0.detach().clone().requires_grad_(True)
    beta = torch.zeros((), dtype=u.dtype, requires_grad=True)
    opt = torch.optim.Adam([u, beta], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    X, G = u.shape[0], cfg.group
    tr = {k: [] for k in ("acc_easy", "acc_hard", "length", "wrong_length", "beta")}
    clip = []

    def record():
        with torch.no_grad():
            pi = torch.softmax(bandit_logits(u, beta, world), -1)
            acc = (pi * world.correct).sum(-1)
            tr["acc_easy"].append(float(acc[~world.hard].mean()))
            tr["acc_hard"].append(float(acc[world.hard].mean()))
            L = world.length.to(pi.dtype)
            tr["length"].append(float((pi * L).sum(-1).mean()))
            wrong = pi * (~world.correct)
            tr["wrong_length"].append(float(((wrong * L).sum(-1) / wrong.sum(-1)).mean()))
            tr["beta"].append(float(beta))

    record()
    for _ in range(cfg.bandit_steps):
        with torch.no_grad():
            z = bandit_logits(u, beta, world)
            y = torch.multinomial(torch.softmax(z, -1), G, replacement=True, generator=gen)  # (X, G)
            clean = world.correct.gather(1, y)
            flip = torch.rand(X, G, generator=gen) < cfg.noise
            r = (clean ^ flip).to(u.dtype)
            logp_old, mask = response_logps(z, y, world)
        for k in range(cfg.epochs):
            logp, _ = response_logps(bandit_logits(u, beta, world), y, world)
            loss = loss_fn(logp, mask, r, logp_old)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if k > 0:
                with torch.no_grad():
                    std, agg, higher = VARIANTS[name]
                    a = normalise_advantages(r, "group", std).flatten()
                    eh = cfg.eps_high if higher else cfg.eps_low
                    first = torch.zeros_like(mask)
                    first[:, 0] = 1.0  # only the first token (the choice) has a ratio != 1
                    clip.append(float(clipped_pg_loss(logp.detach(), logp_old, a, first, cfg.eps_low, eh, agg)[1]["clip_frac"]))
        record()
    out = {k: np.asarray(v) for k, v in tr.items()}
    out["clip_frac"] = float(np.mean(clip)) if clip else 0.0
    return out


def run_length_bandit(cfg: Config, seed: int, variants=None) -> dict:
    """Every variant (default: all of :data:`VARIANTS`) on one random length bandit; ``out[name]`` as :func:`train_bandit`."""
    t0 = time.time()
    world = make_length_bandit(cfg, np.random.default_rng([seed, 41]))
    out = {"world": world}
    for name in variants or VARIANTS:
        out[name] = train_bandit(world, name, cfg, seed)
    out["seconds"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# tiny LM: GRPO vs Lite PPO with rlbook.rl_lm (epochs > 1: clipping active)
# ---------------------------------------------------------------------------------
def run_lm(cfg: Config, seed: int, base=None, variants=("GRPO", "Lite PPO")) -> dict:
    """Train a copy of the ``countdown4`` base with each variant, ``cfg.lm_epochs`` PPO steps per batch.

    ``base``: an already loaded ``(model, tok, task, info)`` from :func:`rlbook.models.zoo.load`.
    Countdown answers have a fixed length, so token- and sequence-level aggregation coincide here;
    only the advantage normalisation differs. Returns ``{"base": acc, name: acc, "traces": {...},
    "seconds": {...}}`` with the exact held-out pass@1.
    """
    from rlbook import rl_lm
    from rlbook.models import zoo

    t0 = time.time()
    model0, tok, task, info = base if base is not None else zoo.load(cfg.base)
    mask_fn = task.logits_mask(tok)
    problems = zoo.eval_problems(task, cfg.eval_prompts)
    acc = lambda m: float(np.mean([a.sum() for a in zoo.answer_probs(m, tok, task, problems)]))
    out = {"base": acc(model0), "traces": {}, "seconds": {}}
    rlc = rl_lm.RLConfig(steps=cfg.lm_steps, prompts=cfg.lm_prompts, group=cfg.group, lr=cfg.lm_lr,
                         max_new_tokens=task.answer_len + 1, seed=seed, epochs=cfg.lm_epochs)
    for name in variants:
        t1 = time.time()
        torch.manual_seed(seed)
        model = copy.deepcopy(model0)
        hist = rl_lm.train(model, tok, task, objective(name, cfg), rlc, mask_fn=mask_fn)
        out[name] = acc(model)
        out["traces"][name] = hist.as_arrays()
        out["seconds"][name] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer, GRPO vs Lite PPO settings
# ---------------------------------------------------------------------------------
TRL_SETTINGS = {
    "GRPO": {"scale_rewards": "group", "loss_type": "grpo"},
    "Lite PPO": {"scale_rewards": "batch", "loss_type": "dapo"},
}
"""TRL 1.16 ``GRPOConfig`` settings of each method: group/batch std, sequence/token-level mean"""


def run_full(cfg: Config, seed: int, output_dir: str = "lite_ppo_full", cpu: bool = False,
             max_steps: int | None = None, eval_problems: int | None = None, eval_samples: int | None = None,
             max_completion: int | None = None, generation_batch: int = 64) -> dict:
    """Paper-scale run: TRL ``GRPOTrainer`` for each of ``cfg.full_methods`` (:data:`TRL_SETTINGS`), then MATH-500.

    Both methods: group mean, ``beta = 0`` (no KL, as Lite PPO), symmetric clip 0.2, one PPO epoch
    per batch. Not timed on a GPU here (by analogy with the NSR/NFT chapters, about 25 min per
    180-step run of a 1.5B model on one H100 with vLLM). The ``cpu``/``max_*``/``eval_*`` overrides
    exist for the dry-run test. Returns ``{"base": pass@k dict, method: pass@k dict}``.
    """
    from trl import GRPOConfig, GRPOTrainer

    from rlbook import hub
    from rlbook.models import load_pretrained

    steps = max_steps or cfg.full_steps
    n_eval = eval_problems or cfg.full_eval_problems
    n_samp = eval_samples or cfg.full_eval_samples
    max_new = max_completion or cfg.full_max_completion
    train = math_data.load_math(cfg.full_train_data, "train", levels=math_data.split_list(cfg.full_levels))
    evalset = math_data.load_math(cfg.full_eval_data, "test", n=n_eval)
    device, dtype, use_vllm = hub.full_device(cpu)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch)}
    for m in math_data.split_list(cfg.full_methods):
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        args = GRPOConfig(
            output_dir=f"{output_dir}/{m.replace(' ', '_')}",
            learning_rate=cfg.full_lr,
            beta=0.0,
            epsilon=0.2,
            epsilon_high=0.2,
            num_generations=cfg.full_group,
            per_device_train_batch_size=cfg.full_group * (1 if cpu else 4),
            gradient_accumulation_steps=1 if cpu else max(1, cfg.full_prompts_per_step // 4),
            num_iterations=1,
            max_completion_length=max_new,
            temperature=1.0,
            max_steps=steps,
            logging_steps=1,
            **TRL_SETTINGS[m],
            **hub.trl_offline(not cpu, seed),
            **hub.vllm_kw(use_vllm),
        )
        trainer = GRPOTrainer(model=model, reward_funcs=math_data.math_reward, args=args, train_dataset=train,
                              processing_class=tok)
        trainer.train()
        results[m] = math_data.evaluate_full(trainer.model, tok, evalset, n_samp, max_new, generation_batch)
    return results
