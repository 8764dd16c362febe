r"""Chapter "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning" (arXiv 2506.01347).

RLVR with rewards :math:`r\in\{+1,-1\}` splits into Positive Sample Reinforcement
(PSR: raise the likelihood of correct samples) and Negative Sample Reinforcement
(NSR: lower the likelihood of wrong samples); Weighted-REINFORCE is
:math:`\lambda\,\mathrm{PSR}+\mathrm{NSR}` with :math:`\lambda=0.1`
(:mod:`rlbook.losses.policy_gradient`).

Smoke profile, two experiments:

- **tabular** (:mod:`rlbook.tabular_policy`): one free softmax per prompt over 50
  answers, trained with Adam (and, as a control, with SGD) -- reproduces the paper's
  pass@k picture and shows *why* it happens;
- **tiny LM** (:mod:`rlbook.rl_lm`): the ``countdown4`` base policy of
  :mod:`rlbook.models.zoo`, trained with PSR (and optionally NSR, W-REINFORCE, REINFORCE;
  8 prompts x 8 samples x 120 steps, Adam 1e-4), evaluated by *exact* pass@k on 200
  held-out prompts.

Full profile (:func:`run_full`): TRL ``GRPOTrainer`` subclass whose advantages are
the paper's PSR / NSR / W-REINFORCE weights, on ``Qwen/Qwen2.5-Math-1.5B`` and MATH,
then unbiased pass@k on MATH-500.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlbook import hub
from rlbook import math_data, rl_lm, rollout
from rlbook import tabular_policy as tp
from rlbook.config import check
from rlbook.losses import nsr_loss, psr_loss, reinforce_loss, w_reinforce_loss

METHODS = ("PSR", "NSR", "W-REINFORCE", "REINFORCE")
"""the objectives compared (the paper's Sec. 3-5)"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    # tabular experiment
    tab_prompts: int = 200
    """tabular: prompts (one free logit vector each)"""
    tab_candidates: int = 50
    """tabular: answers per prompt"""
    tab_steps: int = 100
    """tabular: optimiser steps (every prompt, G samples each, per step)"""
    tab_group: int = 8
    """tabular: G, samples per prompt per step (the paper's rollout.n=8)"""
    tab_lr: float = 0.05
    """tabular: Adam learning rate"""
    tab_sgd_lr: float = 100.0
    """tabular: SGD learning rate of the control (the loss is a mean over X*G samples)"""
    lam: float = 0.1
    """λ of W-REINFORCE ("we set λ = 0.1", paper Sec. 5)"""
    # tiny-LM experiment
    base: str = "countdown4"
    """tiny LM: zoo entry of the base policy (rlbook.models.zoo)"""
    lm_methods: str = "PSR"
    """tiny LM: comma-separated objectives to train (any of PSR, NSR, W-REINFORCE, REINFORCE; ~7 s each)"""
    lm_steps: int = 120
    """tiny LM: RL steps"""
    lm_prompts: int = 8
    """tiny LM: B, prompts per step (16 moves NSR further, at twice the cost)"""
    lm_group: int = 8
    """tiny LM: G, samples per prompt (the paper's rollout.n=8)"""
    lm_lr: float = 1e-4
    """tiny LM: Adam learning rate (3e-4 and above made NSR unstable in prototypes)"""
    eval_prompts: int = 200
    """tiny LM: held-out prompts for the exact pass@k"""
    max_k: int = 256
    """largest k of the pass@k grid 1, 2, 4, ..., max_k (the paper goes to 256)"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-Math-1.5B"
    """*full*: base model, a Hub name or a local folder"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: MATH training problems (fields problem, solution, level), Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer), Hub name or save_to_disk folder"""
    full_methods: str = "NSR,PSR,W-REINFORCE"
    """*full*: objectives to train, one run each"""
    full_steps: int = 120
    """*full*: optimiser steps per run"""
    full_prompts_per_step: int = 32
    """*full*: prompts per step (the paper: 1024 prompts per rollout batch, mini-batch 256)"""
    full_group: int = 8
    """*full*: samples per prompt ("rollout.n=8")"""
    full_lr: float = 1e-6
    """*full*: learning rate ("lr=1e-6", run_qwen2.5-math-7b_psr_nsr.sh)"""
    full_max_completion: int = 1024
    """*full*: max new tokens (the paper: 3072)"""
    full_eval_problems: int = 100
    """*full*: MATH-500 problems for pass@k"""
    full_eval_samples: int = 64
    """*full*: samples per problem for the unbiased pass@k (k up to this)"""
    full_levels: str = "Level 3,Level 4,Level 5"
    """*full*: MATH difficulty levels kept for training"""

    def __post_init__(self):
        check(self.tab_prompts >= 1 and self.tab_candidates >= 2, "tabular sizes must be positive")
        check(self.tab_steps >= 1 and self.lm_steps >= 0 and self.full_steps >= 1, "steps must be positive")
        check(self.tab_group >= 1 and self.lm_group >= 2 and self.full_group >= 2, "group sizes: G >= 2 for the LM")
        check(self.tab_lr > 0 and self.tab_sgd_lr > 0 and self.lm_lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(0.0 < self.lam <= 1.0, "lam (λ) must be in (0, 1]")
        check(self.max_k >= 1 and (self.max_k & (self.max_k - 1)) == 0, "max_k must be a power of two")
        for field_name in ("lm_methods", "full_methods"):
            bad = [m for m in math_data.split_list(getattr(self, field_name)) if m not in METHODS]
            check(not bad, f"{field_name}: unknown method(s) {bad}; choose from {', '.join(METHODS)}")

    @property
    def ks(self) -> list[int]:
        """The pass@k grid 1, 2, 4, ..., max_k."""
        return [2**i for i in range(int(np.log2(self.max_k)) + 1)]


# ---------------------------------------------------------------------------------
# objectives: (logp (N, T), mask (N, T), r (B, G) in {0, 1}) -> loss
# ---------------------------------------------------------------------------------
def objective(name: str, lam: float = 0.1) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The loss of method ``name`` in the signature of :func:`rlbook.rl_lm.train`.

    ``r`` is the verifier's 0/1 reward; the paper's ±1 reward is ``2r - 1``.
    PSR: weight 1{correct}; NSR: -1{wrong}; W-REINFORCE: λ·1{correct} - 1{wrong};
    REINFORCE: ±1 (= PSR + NSR).
    """
    if name == "PSR":
        return lambda logp, mask, r: psr_loss(logp, mask, r.flatten() > 0)
    if name == "NSR":
        return lambda logp, mask, r: nsr_loss(logp, mask, r.flatten() > 0)
    if name == "W-REINFORCE":
        return lambda logp, mask, r: w_reinforce_loss(logp, mask, r.flatten() > 0, lam=lam)
    if name == "REINFORCE":
        return lambda logp, mask, r: reinforce_loss(logp, mask, 2.0 * r.flatten() - 1.0)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------
# tabular experiment
# ---------------------------------------------------------------------------------
def tabular_metrics(z: Tensor, correct: Tensor, ks: list[int]) -> dict:
    """Exact pass@k over the grid, expected distinct correct answers in 64 samples, entropy."""
    p = tp.prob_correct(z, correct).numpy()
    return {
        "pass@k": np.array([rollout.pass_at_k_exact(p, k).mean() for k in ks]),
        "distinct@64": float(tp.expected_distinct(z, correct, 64).mean()),
        "entropy": float(tp.entropy(z).mean()),
    }


def run_tabular(cfg: Config, seed: int) -> dict:
    """Base + every method with Adam, and PSR/NSR with SGD (the control). Returns metrics per run."""
    t0 = time.time()
    bc = tp.BanditConfig(prompts=cfg.tab_prompts, candidates=cfg.tab_candidates)
    z0, correct = tp.make_bandit(bc, np.random.default_rng([seed, 10]))
    out = {"base": tabular_metrics(z0, correct, cfg.ks), "traces": {}}
    for m in METHODS:
        run = tp.train(z0, correct, objective(m, cfg.lam), cfg.tab_steps, cfg.tab_group, cfg.tab_lr, "adam", seed)
        out[m] = tabular_metrics(run.z, correct, cfg.ks)
        out["traces"][m] = np.array(run.mean_p)
    for m in ("PSR", "NSR"):
        run = tp.train(z0, correct, objective(m, cfg.lam), cfg.tab_steps, cfg.tab_group, cfg.tab_sgd_lr, "sgd", seed)
        out[f"{m} (SGD)"] = tabular_metrics(run.z, correct, cfg.ks)
    out["z0"], out["correct"], out["seconds"] = z0, correct, time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# tiny-LM experiment
# ---------------------------------------------------------------------------------
def evaluate_lm(model, tok, task, problems, ks: list[int], entropy_samples: int = 4) -> dict:
    r"""Exact pass@k over ``ks``, expected distinct correct answers in 64 samples, and policy entropy.

    From :math:`\pi(y|x)` of every correct answer (:func:`rlbook.models.zoo.answer_probs`):
    :math:`p(x)=\sum_y\pi(y|x)`, pass@k :math:`=1-(1-p)^k`, distinct@64
    :math:`=\sum_y 1-(1-\pi(y|x))^{64}`. ``entropy``: mean next-token entropy (nats) along
    ``entropy_samples`` sampled answers per problem (fixed sampler seed, so models compare).
    """
    from rlbook.models.zoo import answer_probs

    probs = answer_probs(model, tok, task, problems)
    p = np.array([a.sum() for a in probs])
    mask_fn = task.logits_mask(tok)
    ids, _ = rollout.encode_prompts(tok, [q.prompt for q in problems])
    g = rollout.group_sample(model, ids, entropy_samples, task.answer_len + 1, tok.eos_token_id, tok.pad_token_id,
                             mask_fn, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, ent = rollout.token_logprobs(model, g.prompt_ids, g.completion_ids, mask_fn, with_entropy=True)
    m = g.mask.to(ent.dtype)
    return {
        "p": p,
        "pass@k": np.array([rollout.pass_at_k_exact(p, k).mean() for k in ks]),
        "distinct@64": float(np.mean([(1.0 - (1.0 - a) ** 64).sum() for a in probs])),
        "entropy": float((ent * m).sum() / m.sum()),
    }


def run_lm(cfg: Config, seed: int, base=None) -> dict:
    """Train a copy of the base policy with each of ``cfg.lm_methods``; evaluate base and each.

    ``base``: an already loaded ``(model, tok, task, info)`` from :func:`rlbook.models.zoo.load`.
    """
    from rlbook.models import zoo

    t0 = time.time()
    model0, tok, task, info = base if base is not None else zoo.load(cfg.base)
    mask_fn = task.logits_mask(tok)
    problems = zoo.eval_problems(task, cfg.eval_prompts)
    out = {"base": evaluate_lm(model0, tok, task, problems, cfg.ks), "traces": {}, "seconds": {}}
    rlc = rl_lm.RLConfig(steps=cfg.lm_steps, prompts=cfg.lm_prompts, group=cfg.lm_group, lr=cfg.lm_lr,
                         max_new_tokens=task.answer_len + 1, seed=seed)
    for m in math_data.split_list(cfg.lm_methods):
        t1 = time.time()
        torch.manual_seed(seed)
        model = copy.deepcopy(model0)
        hist = rl_lm.train(model, tok, task, objective(m, cfg.lam), rlc, mask_fn=mask_fn)
        out[m] = evaluate_lm(model, tok, task, problems, cfg.ks)
        out["traces"][m] = hist.as_arrays()
        out["seconds"][m] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer with the paper's advantages
# ---------------------------------------------------------------------------------
def paper_advantages(r: Tensor, method: str, lam: float = 0.1) -> Tensor:
    """Advantages of the official code (``compute_psr_nsr_outcome_advantage``) from 0/1 scores ``r: (N,)``.

    PSR: ``A = r`` (1 on correct, 0 on wrong); NSR: ``A = r - 1`` (0, -1);
    W-REINFORCE: ``A = λ`` on correct, ``-1`` on wrong; REINFORCE: ``A = 2r - 1``.
    No group baseline, no standard-deviation scaling.
    """
    r = r.float()
    if method == "PSR":
        return r
    if method == "NSR":
        return r - 1.0
    if method == "W-REINFORCE":
        return lam * r - (1.0 - r)
    if method == "REINFORCE":
        return 2.0 * r - 1.0
    raise ValueError(f"unknown method {method!r}")


def make_trainer_class():
    """A ``trl.GRPOTrainer`` subclass whose advantages are :func:`paper_advantages` of the 0/1 reward.

    It keeps TRL's sampling, log-probs and loss, and replaces only the advantage
    (GRPO's ``(r - mean)/std``) by the paper's per-sample weight. With
    ``loss_type="dapo"`` (token-level mean over the batch, as verl's ``masked_mean``),
    ``beta=0`` (the paper's ``kl_coef=0.0``) and one update per batch (ratio = 1),
    the loss equals :func:`rlbook.losses.weighted_logprob_loss`.
    """
    from trl import GRPOTrainer

    class PSRNSRTrainer(GRPOTrainer):
        def __init__(self, *args, method: str = "NSR", lam: float = 0.1, **kwargs):
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}")
            self.method, self.lam = method, lam
            super().__init__(*args, **kwargs)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards_per_func  # (all processes' samples, reward funcs)
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            w = self.reward_weights.to(self._last_rewards.device)
            r = torch.nan_to_num(self._last_rewards * w[None], nan=0.0).sum(1)  # (all samples,)
            n = out["advantages"].shape[0]
            start = self.accelerator.process_index * n
            out["advantages"] = paper_advantages(r[start : start + n], self.method, self.lam).to(out["advantages"].device)
            return out

    return PSRNSRTrainer


def run_full(cfg: Config, seed: int, output_dir: str = "nsr_full", cpu: bool = False,
             max_steps: int | None = None, eval_problems: int | None = None, eval_samples: int | None = None,
             max_completion: int | None = None, generation_batch: int = 64) -> dict:
    """Paper-scale run: for each method, GRPOTrainer with the paper's advantages, then pass@k.

    Not timed on a GPU here: the catalog's estimate is ~15 min per 120-step run with vLLM
    generation (``pip install vllm``; used automatically when present) and ~5 min per evaluation.

    ``cpu`` and the ``max_*``/``eval_*`` overrides exist for the dry-run test (a tiny
    local model and data set). Returns ``{"base": pass@k, method: pass@k, ...}`` where
    pass@k is a dict ``k -> unbiased estimate`` over the evaluation problems.
    """
    from trl import GRPOConfig

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
    Trainer = make_trainer_class()
    for m in math_data.split_list(cfg.full_methods):
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        args = GRPOConfig(
            output_dir=f"{output_dir}/{m}",
            learning_rate=cfg.full_lr,  # "lr=1e-6"
            beta=0.0,  # "kl_coef=0.0"
            loss_type="dapo",  # token-level mean over the batch (verl masked_mean)
            scale_rewards="none",  # irrelevant: the advantages are replaced
            num_generations=cfg.full_group,  # "rollout.n=8"
            # completions per device step: 4 prompts x G; accumulate to full_prompts_per_step prompts
            per_device_train_batch_size=cfg.full_group * (1 if cpu else 4),
            gradient_accumulation_steps=1 if cpu else max(1, cfg.full_prompts_per_step // 4),
            num_iterations=1,
            max_completion_length=max_new,
            temperature=1.0,
            max_steps=steps,
            logging_steps=1,
            **hub.trl_offline(not cpu, seed),
            # generation with vLLM inside the trainer when installed (GPU): HF generate is far slower
            **hub.vllm_kw(use_vllm),
        )
        trainer = Trainer(model=model, reward_funcs=math_data.math_reward, args=args, train_dataset=train,
                          processing_class=tok, method=m, lam=cfg.lam)
        trainer.train()
        results[m] = math_data.evaluate_full(trainer.model, tok, evalset, n_samp, max_new, generation_batch)
    return results
