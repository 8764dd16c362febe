r"""Chapter "BNPO: Beta Normalization Policy Optimization" (arXiv 2506.02864).

BNPO divides the group-centred binary reward by a Beta density at the group success rate,
:math:`A=(R-\hat p)/f_N(\hat p;\alpha,\beta)`, with :math:`(\alpha,\beta)=(1+a/3,1+b/3)` from a
method-of-moments Beta(a, b) fit of the batch's success rates (:mod:`rlbook.losses.bnpo`).

Smoke profile, three measurements (no language model):

- **variance lab**: prompts with :math:`p\sim\mathrm{Beta}(a,b)`, the closed-form gradient second
  moment :math:`V(\alpha,\beta)` against Monte Carlo, and the minimiser against :math:`(1+a/3,1+b/3)`;
- **tabular gradient variance** (:mod:`rlbook.tabular_policy`): the variance of the batch policy
  gradient of REINFORCE (group-mean baseline), GRPO and BNPO at a fixed policy, by Monte Carlo over
  many independent batches;
- **tabular training**: the three advantages trained with Adam from the same base, with the fitted
  :math:`(a,b,\alpha,\beta)` traced over training.

Full profile (:func:`run_full`): a TRL ``GRPOTrainer`` subclass whose advantages are BNPO's, on
``Qwen/Qwen2.5-Math-1.5B`` and MATH, evaluated on MATH-500.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlbook import math_data
from rlbook import hub
from rlbook import tabular_policy as tp
from rlbook.config import check
from rlbook.losses.bnpo import bnpo_advantage, bnpo_params, bnpo_variance, beta_pdf
from rlbook.losses.policy_gradient import weighted_logprob_loss

METHODS = ("REINFORCE", "GRPO", "BNPO")
"""the advantage estimators compared: Beta(1,1), Beta(3/2,3/2) (GRPO up to a constant), fitted Beta"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    # variance lab
    lab_sets: str = "0.8/3,3/0.8,2/2"
    """variance lab: Beta(a, b) of the prompts' success rates, 'a/b' comma-separated (hard, easy, middle)"""
    lab_draws: int = 200_000
    """variance lab: Monte-Carlo draws (prompt, answer) per (a, b) and estimator"""
    lab_group: int = 8
    """variance lab: G, answers per prompt for the estimated-p version"""
    lab_batch: int = 64
    """variance lab: prompts per batch for the method-of-moments fit in the estimated-p version"""
    # tabular world
    tab_prompts: int = 200
    """tabular: prompts (one free logit vector each)"""
    tab_candidates: int = 20
    """tabular: answers per prompt"""
    tab_max_correct: int = 6
    """tabular: each prompt has 1..tab_max_correct correct answers"""
    tab_max_offset: float = 3.0
    """tabular: correct answers' logits lowered by U(0, tab_max_offset) (mostly hard prompts)"""
    tab_group: int = 8
    """tabular: G, samples per prompt per step (the paper's rollout.n=8)"""
    tab_batches: int = 200
    """tabular: independent batches for the Monte-Carlo gradient variance"""
    tab_steps: int = 100
    """tabular: Adam steps of the training comparison"""
    tab_lr: float = 0.05
    """tabular: Adam learning rate"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-Math-1.5B"
    """*full*: base model, a Hub name or a local folder"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: MATH training problems (fields problem, solution, level), Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer), Hub name or save_to_disk folder"""
    full_methods: str = "BNPO,GRPO,REINFORCE"
    """*full*: advantage estimators to train, one run each"""
    full_steps: int = 200
    """*full*: optimiser steps per run"""
    full_prompts_per_step: int = 32
    """*full*: prompts per step (the method-of-moments fit runs over these)"""
    full_group: int = 8
    """*full*: samples per prompt (G)"""
    full_lr: float = 1e-6
    """*full*: learning rate"""
    full_max_completion: int = 1024
    """*full*: max new tokens"""
    full_eval_problems: int = 500
    """*full*: MATH-500 problems for the evaluation"""
    full_eval_samples: int = 4
    """*full*: samples per problem (pass@1 averaged over them)"""
    full_levels: str = "Level 3,Level 4,Level 5"
    """*full*: MATH difficulty levels kept for training"""

    def __post_init__(self):
        check(self.lab_draws >= 1000 and self.lab_group >= 2 and self.lab_batch >= 2, "variance lab sizes too small")
        check(len(self.ab_sets) >= 1 and all(a > 0 and b > 0 for a, b in self.ab_sets), "lab_sets: a, b must be > 0")
        check(self.tab_prompts >= 2 and self.tab_candidates >= 2 and self.tab_max_correct >= 1, "tabular sizes")
        check(self.tab_max_correct < self.tab_candidates, "tab_max_correct must be below tab_candidates")
        check(self.tab_group >= 2 and self.full_group >= 2, "group sizes: G >= 2")
        check(self.tab_batches >= 10 and self.tab_steps >= 1 and self.full_steps >= 1, "counts must be positive")
        check(self.tab_lr > 0 and self.full_lr > 0 and self.tab_max_offset >= 0, "learning rates must be > 0")
        bad = [m for m in math_data.split_list(self.full_methods) if m not in METHODS]
        check(not bad, f"full_methods: unknown method(s) {bad}; choose from {', '.join(METHODS)}")

    @property
    def ab_sets(self) -> list[tuple[float, float]]:
        """``lab_sets`` parsed to [(a, b), ...]."""
        try:
            return [tuple(float(x) for x in s.split("/")) for s in math_data.split_list(self.lab_sets)]  # type: ignore[misc]
        except ValueError:
            return []


# ---------------------------------------------------------------------------------
# the three estimators as advantages and as objectives
# ---------------------------------------------------------------------------------
def advantages(name: str, r: Tensor) -> tuple[Tensor, dict]:
    """Advantages ``(B, G)`` of estimator ``name`` from 0/1 rewards ``r: (B, G)`` (and BNPO's fitted parameters).

    REINFORCE: Beta(1, 1) (= r - group mean); GRPO: Beta(3/2, 3/2) (= π/8 x GRPO with the population
    std); BNPO: fitted Beta.
    """
    if name == "REINFORCE":
        return bnpo_advantage(r, 1.0, 1.0)
    if name == "GRPO":
        return bnpo_advantage(r, 1.5, 1.5)
    if name == "BNPO":
        return bnpo_advantage(r)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def objective(name: str, log: list | None = None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The loss of estimator ``name`` in the signature of :func:`rlbook.rl_lm.train`; appends BNPO's fit to ``log``."""

    def loss(logp: Tensor, mask: Tensor, r: Tensor) -> Tensor:
        adv, info = advantages(name, r.double())
        if log is not None:
            log.append({k: float(v) for k, v in info.items()})
        return weighted_logprob_loss(logp, mask, adv.flatten().to(logp.dtype))

    return loss


# ---------------------------------------------------------------------------------
# variance lab (no policy: p ~ Beta(a, b), unit-norm score)
# ---------------------------------------------------------------------------------
def lab_params(a: float, b: float) -> dict[str, tuple[float, float]]:
    """(alpha, beta) of each estimator for prompts p ~ Beta(a, b) (BNPO with the true a, b)."""
    al, be = bnpo_params(a, b)
    return {"REINFORCE": (1.0, 1.0), "GRPO": (1.5, 1.5), "BNPO": (float(al), float(be))}


def mc_variance(a: float, b: float, alpha: float, beta: float, n: int, rng: np.random.Generator) -> float:
    r"""Monte-Carlo :math:`\mathbb E[(R-p)^2/f_N(p;\alpha,\beta)^2]`, :math:`p\sim\mathrm{Beta}(a,b)`, :math:`R\sim\mathrm{Bern}(p)`."""
    p = rng.beta(a, b, size=n)
    r = (rng.random(n) < p).astype(float)
    f = beta_pdf(torch.tensor(p), alpha, beta).numpy()
    return float(np.mean((r - p) ** 2 / f**2))


def mc_variance_estimated(a: float, b: float, name: str, n: int, group: int, batch: int,
                          rng: np.random.Generator) -> float:
    r"""The same second moment with :math:`\hat p` from ``group`` answers and (for BNPO) a per-batch moment fit.

    ``n`` draws = ``n // (group * batch)`` batches of ``batch`` prompts x ``group`` answers;
    returns the mean of :math:`A^2` over all answers.
    """
    nb = max(1, n // (group * batch))
    p = rng.beta(a, b, size=(nb, batch, 1))
    r = torch.tensor((rng.random((nb, batch, group)) < p).astype(float))
    return float(np.mean([(advantages(name, r[i])[0] ** 2).mean().item() for i in range(nb)]))


def variance_grid(a: float, b: float, lo: float = 1.0, hi: float = 4.0, step: float = 0.02) -> tuple[float, float]:
    """Grid minimiser of :func:`rlbook.losses.bnpo.bnpo_variance` over (alpha, beta) in [lo, hi]^2."""
    grid = np.arange(lo, hi + 1e-9, step)
    v = np.array([[bnpo_variance(a, b, x, y) for y in grid] for x in grid])
    i, j = np.unravel_index(np.argmin(v), v.shape)
    return float(grid[i]), float(grid[j])


def run_lab(cfg: Config, seed: int) -> dict:
    """Closed form, Monte Carlo (true p) and Monte Carlo (estimated p) of each estimator per (a, b)."""
    t0 = time.time()
    rng = np.random.default_rng([seed, 20])
    rows = []
    for a, b in cfg.ab_sets:
        grid_min = variance_grid(a, b)
        for name, (al, be) in lab_params(a, b).items():
            rows.append({
                "a": a, "b": b, "method": name, "alpha": al, "beta": be,
                "V closed form": bnpo_variance(a, b, al, be),
                "V Monte Carlo": mc_variance(a, b, al, be, cfg.lab_draws, rng),
                f"V with p_hat (G={cfg.lab_group})": mc_variance_estimated(a, b, name, cfg.lab_draws, cfg.lab_group,
                                                                           cfg.lab_batch, rng),
                "grid minimiser": grid_min,
            })
    return {"rows": rows, "seconds": time.time() - t0}


# ---------------------------------------------------------------------------------
# tabular world
# ---------------------------------------------------------------------------------
def make_world(cfg: Config, seed: int) -> tuple[Tensor, Tensor]:
    """The base logits ``(X, K)`` and correct-answer table of the tabular world of seed ``seed``."""
    bc = tp.BanditConfig(prompts=cfg.tab_prompts, candidates=cfg.tab_candidates, max_correct=cfg.tab_max_correct,
                         max_offset=cfg.tab_max_offset)
    return tp.make_bandit(bc, np.random.default_rng([seed, 10]))


def gradient_variance(z: Tensor, correct: Tensor, group: int, batches: int, seed: int) -> dict[str, dict]:
    r"""Monte-Carlo variance of the batch policy gradient (w.r.t. the logits) of each estimator at policy ``z``.

    One batch: ``G = group`` answers for every prompt, advantages ``A: (X, G)``, gradient
    :math:`\hat g_x=\frac{1}{XG}\sum_i A_{x,i}(e_{y_i}-\pi_x)` (the last term vanishes: each group's
    advantages sum to 0). Over ``batches`` independent batches (the same samples for every estimator):
    ``var`` :math:`=\mathbb E\|\hat g-\bar g\|^2`, ``signal`` :math:`=\|\bar g\|^2`, ``nsr`` = var / signal
    (scale-free), ``cos``: cosine of :math:`\bar g` with :math:`\nabla_z\frac1X\sum_x p(x)`.
    """
    X, K = z.shape
    pi = torch.softmax(z, -1)
    gen = torch.Generator().manual_seed(seed)
    y = torch.multinomial(pi, batches * group, replacement=True, generator=gen).view(X, batches, group)
    r = correct.gather(1, y.reshape(X, -1)).view(X, batches, group).double()
    y, r = y.permute(1, 0, 2), r.permute(1, 0, 2)  # (R, X, G)
    zz = z.detach().clone().requires_grad_(True)
    tp.prob_correct(zz, correct).mean().backward()
    true_g = zz.grad
    out = {}
    for name in METHODS:
        A = torch.stack([advantages(name, r[i])[0] for i in range(batches)])  # (R, X, G)
        g = torch.zeros(batches, X, K, dtype=torch.float64).scatter_add_(2, y, A) / (X * group)
        gbar = g.mean(0)
        var = float(((g - gbar) ** 2).sum((1, 2)).mean())
        signal = float((gbar**2).sum())
        cos = float((gbar * true_g).sum() / (gbar.norm() * true_g.norm()))
        out[name] = {"var": var, "signal": signal, "nsr": var / signal, "cos": cos}
    return out


def run_tabular(cfg: Config, seed: int) -> dict:
    """Gradient variance at the base policy; Adam training of each estimator; variance again after training."""
    t0 = time.time()
    z0, correct = make_world(cfg, seed)
    out: dict = {"z0": z0, "correct": correct, "p0": tp.prob_correct(z0, correct).numpy()}
    out["var_base"] = gradient_variance(z0, correct, cfg.tab_group, cfg.tab_batches, seed)
    out["traces"], out["fits"], out["final_p"] = {}, {}, {}
    for m in METHODS:
        log: list = []
        run = tp.train(z0, correct, objective(m, log), cfg.tab_steps, cfg.tab_group, cfg.tab_lr, "adam", seed)
        out["traces"][m] = np.array(run.mean_p)
        out["final_p"][m] = float(run.mean_p[-1])
        if m == "BNPO":
            out["fits"] = {k: np.array([row[k] for row in log]) for k in ("a", "b", "alpha", "beta")}
            out["z_bnpo"] = run.z
    out["var_trained"] = gradient_variance(out["z_bnpo"], correct, cfg.tab_group, cfg.tab_batches, seed + 1000)
    out["seconds"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer with BNPO's advantages
# ---------------------------------------------------------------------------------
def make_trainer_class():
    """A ``trl.GRPOTrainer`` subclass whose advantages are :func:`advantages` of the summed reward.

    GRPO's ``(r - mean)/std`` is replaced after scoring: the rewards of the *whole* generation
    batch (all processes) are reshaped to ``(prompts, G)`` -- the method-of-moments fit needs every
    group of the batch -- and each process keeps its slice. ``decompose=True`` treats each reward
    function as one binary part and averages their BNPO advantages (the paper's advantage
    decomposition, :func:`rlbook.losses.bnpo.bnpo_decomposed_advantage`). Rewards must lie in [0, 1].
    """
    from trl import GRPOTrainer

    from rlbook.losses.bnpo import bnpo_decomposed_advantage

    class BNPOTrainer(GRPOTrainer):
        def __init__(self, *args, method: str = "BNPO", decompose: bool = False, **kwargs):
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}")
            self.method, self.decompose = method, decompose
            super().__init__(*args, **kwargs)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards_per_func  # (all processes' samples, reward funcs)
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            G = self.num_generations
            rf = torch.nan_to_num(self._last_rewards.double(), nan=0.0)  # (N_all, F)
            if self.decompose and self.method == "BNPO":
                adv = bnpo_decomposed_advantage(rf.view(-1, G, rf.shape[-1])).flatten()
            else:
                w = self.reward_weights.to(rf.device).double()
                adv = advantages(self.method, (rf * w[None]).sum(1).view(-1, G))[0].flatten()
            n = out["advantages"].shape[0]
            start = self.accelerator.process_index * n
            out["advantages"] = adv[start : start + n].to(out["advantages"].device, out["advantages"].dtype)
            return out

    return BNPOTrainer


def run_full(cfg: Config, seed: int, output_dir: str = "bnpo_full", cpu: bool = False,
             max_steps: int | None = None, eval_problems: int | None = None, eval_samples: int | None = None,
             max_completion: int | None = None, generation_batch: int = 64) -> dict:
    """Paper-scale run: for each estimator, GRPOTrainer with its advantages, then pass@1 on MATH-500.

    Not timed on a GPU here (the catalog's estimate: ~45 min per 200-step run on an H100).
    ``cpu`` and the ``max_*``/``eval_*`` overrides exist for the dry-run test. Returns
    ``{"base": {1: pass@1, ...}, method: {...}}`` (unbiased pass@k for k = 1, 2, 4, ... up to the samples).
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
            learning_rate=cfg.full_lr,
            beta=0.0,  # no KL term
            loss_type="dapo",  # token-level mean over the batch (verl's default loss aggregation)
            scale_rewards="none",  # irrelevant: the advantages are replaced
            num_generations=cfg.full_group,
            per_device_train_batch_size=cfg.full_group * (1 if cpu else 4),
            gradient_accumulation_steps=1 if cpu else max(1, cfg.full_prompts_per_step // 4),
            num_iterations=1,
            max_completion_length=max_new,
            temperature=1.0,
            max_steps=steps,
            logging_steps=1,
            **hub.trl_offline(not cpu, seed),
            **hub.vllm_kw(use_vllm),
        )
        trainer = Trainer(model=model, reward_funcs=math_data.math_reward, args=args, train_dataset=train,
                          processing_class=tok, method=m)
        trainer.train()
        results[m] = math_data.evaluate_full(trainer.model, tok, evalset, n_samp, max_new, generation_batch)
    return results
