r"""Chapter "Unpacking DPO and PPO" (Ivison et al. 2024, arXiv 2406.09279).

Smoke profile: a one-factor-at-a-time "mini-study" in a feature bandit with two domains.
Every prompt has ``Y`` responses with features :math:`\phi(x,y)\in\mathbb R^d`; the gold reward
is linear on *general* prompts and has an extra product term on *math* prompts,

.. math:: r^*(x,y) = w^\top\phi(x,y) + \kappa\,\mathbb 1[x\in\text{math}]\;\phi_0(x,y)\,\phi_1(x,y).

The SFT policy is mediocre. Preference pairs are drawn from it on the *labelled* prompts and
labelled by the gold reward with a flip rate (label noise). The policy has one logit per
(prompt, response) (an expressive policy, like a language model), initialised at π_sft.
Learners (:func:`run_study`):

- **DPO** on the pairs (:func:`rlbook.losses.dpo_loss`);
- **PPO-style online RL** against a Bradley-Terry reward model trained on the same pairs
  (:func:`fit_reward_model`, linear or MLP), on-policy REINFORCE with a group-mean baseline and
  the KL penalty folded into the reward, as in InstructGPT/Tulu's PPO (:func:`train_online_rl`,
  :func:`rlbook.losses.reinforce_loss`).

Factors (the paper's four): preference data quality, algorithm, reward-model capacity, and
the prompts of online RL (labelled pool vs. pool + unlabelled math prompts).

Full profile (:func:`run_full`): TRL ``RewardTrainer``, ``DPOTrainer`` and ``RLOOTrainer`` (TRL
1.16 has no PPOTrainer; RLOO is its on-policy policy-gradient trainer with a KL penalty)
on UltraFeedback, evaluated on GSM8K and by reward-model win rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import hub
from rlbook import bandits as B
from rlbook.config import check

RUNS = (
    ("dpo", "low", "linear", "labelled"),
    ("dpo", "high", "linear", "labelled"),
    ("ppo", "low", "linear", "labelled"),
    ("ppo", "high", "linear", "labelled"),
    ("ppo", "high", "mlp", "labelled"),
    ("ppo", "high", "mlp", "labelled+math"),
)
"""the study's runs: (algorithm, data quality, reward model, online-RL prompts); the RM and
prompt fields are ignored by DPO"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_general: int = 80
    """labelled general-domain prompts"""
    n_math: int = 80
    """labelled math prompts"""
    n_math_unlabelled: int = 80
    """math prompts without preference labels (only online RL can use them)"""
    n_responses: int = 32
    """``Y``: responses per prompt"""
    d: int = 8
    """feature dimensions"""
    kappa: float = 1.0
    """strength of the math domain's product term φ0·φ1"""
    sft_skill: float = 0.3
    """π_sft logits = sft_skill · wᵀφ + noise: how much the SFT model already prefers good responses"""
    sft_noise: float = 1.0
    """std of the π_sft logit noise"""
    n_pairs: int = 1_500
    """preference pairs, drawn from π_sft on the labelled prompts"""
    noise_high: float = 0.10
    """label flip rate of the high-quality data"""
    noise_low: float = 0.35
    """label flip rate of the low-quality data"""
    dpo_beta: float = 0.1
    """DPO β"""
    dpo_steps: int = 300
    """DPO Adam steps"""
    dpo_lr: float = 0.05
    """DPO learning rate"""
    kl_coef: float = 0.1
    """online RL: KL penalty coefficient, folded into the reward (the same β as DPO: both target the same π*)"""
    rl_steps: int = 150
    """online RL: policy steps"""
    rl_group: int = 8
    """online RL: samples per prompt per step (the group of the baseline)"""
    rl_lr: float = 0.1
    """online RL: Adam learning rate"""
    rm_hidden: int = 32
    """hidden units of the MLP reward model"""
    rm_steps: int = 300
    """reward-model Adam steps (full batch)"""
    rm_lr: float = 0.03
    """reward-model learning rate"""
    rm_l2: float = 3e-3
    """reward-model L2 penalty on all weights (sum of squares)"""
    batch_size: int = 256
    """DPO pairs per step"""
    # full profile (one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: initial policy, reference and reward-model backbone, a Hub name or a local folder"""
    dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: preference pairs (chosen/rejected), a Hub name or a local ``save_to_disk`` folder"""
    gsm8k: str = "openai/gsm8k"
    """*full*: math evaluation set (``question``, ``answer`` with ``#### n``), Hub name (config ``main``) or local folder"""
    full_pairs: int = 20_000
    """*full*: preference pairs for the reward model and DPO"""
    full_rl_prompts: int = 10_000
    """*full*: prompts for online RL (from the same data set, after the pairs)"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts for the reward-model win rate"""
    full_gsm8k: int = 500
    """*full*: GSM8K test problems"""
    full_dpo_beta: float = 0.1
    """*full*: DPO β (the paper's DPO runs: "β = 0.1")"""
    full_kl_coef: float = 0.05
    """*full*: RLOO KL coefficient (the chapter's choice, the paper's PPO range)"""
    full_lr: float = 5e-7
    """*full*: DPO and reward-model learning rate"""
    full_rl_lr: float = 1e-6
    """*full*: RLOO learning rate"""
    full_rl_steps: int = 300
    """*full*: RLOO optimiser steps"""
    full_group: int = 4
    """*full*: RLOO samples per prompt"""
    full_batch: int = 32
    """*full*: global batch of RM and DPO training"""
    full_per_device_batch: int = 8
    """*full*: per-device batch"""
    full_max_length: int = 1024
    """*full*: maximum prompt + completion tokens (RM, DPO)"""
    full_max_new_tokens: int = 256
    """*full*: generation length (RLOO, evaluation)"""
    full_max_steps: int = -1
    """*full*: cap on RM and DPO steps (-1: one epoch; the dry-run test uses 1)"""

    def __post_init__(self) -> None:
        check(self.n_general >= 1 and self.n_math >= 1 and self.n_math_unlabelled >= 0, "prompt counts must be >= 1 (unlabelled >= 0)")
        check(self.n_responses >= 2 and self.d >= 2, "n_responses and d must be >= 2")
        check(self.kappa >= 0 and self.sft_noise >= 0, "kappa and sft_noise must be >= 0")
        check(0 <= self.noise_high < 0.5 and 0 <= self.noise_low < 0.5, "flip rates must be in [0, 0.5)")
        check(self.n_pairs >= 10, "n_pairs must be >= 10")
        check(self.dpo_beta > 0 and self.kl_coef > 0, "dpo_beta and kl_coef must be > 0")
        check(min(self.dpo_steps, self.rl_steps, self.rm_steps, self.batch_size, self.rm_hidden) >= 1, "steps, batch, hidden must be >= 1")
        check(self.rl_group >= 2, "rl_group must be >= 2 (the baseline is the group mean)")
        check(min(self.dpo_lr, self.rl_lr, self.rm_lr) > 0, "learning rates must be > 0")
        check(self.full_group >= 2, "full_group must be >= 2")


# ----------------------------------------------------------------------------- world and data


@dataclass
class World:
    """Two-domain feature bandit."""

    bandit: B.ContextualBandit
    """gold reward ``r: (X, Y)``, π_sft logits ``(X, Y)``, features ``phi: (X, Y, d)``"""
    math: np.ndarray
    """``(X,)`` bool: math prompt"""
    labelled: np.ndarray
    """``(X,)`` bool: prompt has preference pairs"""

    def domain_reward(self, probs: np.ndarray) -> dict[str, float]:
        """Exact gold reward E_π[r*] averaged over the general and over all math prompts."""
        v = (probs * self.bandit.r).sum(-1)
        return {"general": float(v[~self.math].mean()), "math": float(v[self.math].mean())}


def build_world(cfg: Config, rng: np.random.Generator) -> World:
    """Prompts ordered: general (labelled), math (labelled), math (unlabelled)."""
    X = cfg.n_general + cfg.n_math + cfg.n_math_unlabelled
    phi = rng.standard_normal((X, cfg.n_responses, cfg.d))
    w = rng.standard_normal(cfg.d)
    w /= np.linalg.norm(w)
    math = np.r_[np.zeros(cfg.n_general, bool), np.ones(cfg.n_math + cfg.n_math_unlabelled, bool)]
    labelled = np.r_[np.ones(cfg.n_general + cfg.n_math, bool), np.zeros(cfg.n_math_unlabelled, bool)]
    r = phi @ w + cfg.kappa * math[:, None] * phi[..., 0] * phi[..., 1]
    logits = cfg.sft_skill * (phi @ w) + cfg.sft_noise * rng.standard_normal(r.shape)
    return World(B.ContextualBandit(r=r, ref_logits=logits, phi=phi), math, labelled)


def make_pairs(world: World, cfg: Config, flip: float, rng: np.random.Generator) -> B.Pairs:
    """``cfg.n_pairs`` pairs from π_sft on labelled prompts, ranked by r* then flipped with probability ``flip``."""
    bd = world.bandit
    xs = np.flatnonzero(world.labelled)
    x = xs[rng.integers(0, len(xs), cfg.n_pairs)]
    y1 = bd.sample(bd.ref_probs, x, rng)
    y2 = bd.sample(bd.ref_probs, x, rng)
    same = y1 == y2
    while same.any():
        y2[same] = bd.sample(bd.ref_probs, x[same], rng)
        same = y1 == y2
    first = (bd.r[x, y1] >= bd.r[x, y2]) ^ (rng.random(cfg.n_pairs) < flip)
    return B.Pairs(x=x, yw=np.where(first, y1, y2), yl=np.where(first, y2, y1))


# ----------------------------------------------------------------------------- reward models


def _rm_inputs(world: World):
    import torch

    phi = torch.as_tensor(world.bandit.phi)  # (X, Y, d)
    dom = torch.as_tensor(world.math, dtype=phi.dtype)[:, None, None].expand(*phi.shape[:2], 1)
    return torch.cat([phi, dom], -1)  # (X, Y, d + 1): features and the domain flag


def fit_reward_model(world: World, pairs: B.Pairs, kind: str, cfg: Config, seed: int) -> np.ndarray:
    r"""Bradley-Terry reward model on ``pairs`` (:func:`rlbook.rewards.bt_loss`); returns scores ``(X, Y)``.

    ``kind="linear"``: :math:`r_\phi = v^\top[\phi;\ \text{domain}]` (it cannot express the math
    product term); ``kind="mlp"``: a 2-layer tanh MLP with ``cfg.rm_hidden`` units on the same
    inputs. Full-batch Adam, ``cfg.rm_steps`` steps, L2 ``cfg.rm_l2``. Scores are centred per prompt.
    """
    import torch

    from rlbook.rewards import bt_loss

    if kind not in ("linear", "mlp"):
        raise ValueError(f"unknown reward model {kind!r}: choose linear or mlp")
    torch.manual_seed(seed)
    z = _rm_inputs(world)
    k = z.shape[-1]
    if kind == "linear":
        net = torch.nn.Linear(k, 1, dtype=z.dtype)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(k, cfg.rm_hidden, dtype=z.dtype), torch.nn.Tanh(),
                                  torch.nn.Linear(cfg.rm_hidden, 1, dtype=z.dtype))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.rm_lr)
    zw = z[pairs.x, pairs.yw]  # (n, k)
    zl = z[pairs.x, pairs.yl]
    for _ in range(cfg.rm_steps):
        loss = bt_loss(net(zw)[:, 0], net(zl)[:, 0]) + cfg.rm_l2 * sum((p**2).sum() for p in net.parameters())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = net(z)[..., 0].numpy()
    return s - s.mean(-1, keepdims=True)


def rm_accuracy(world: World, scores: np.ndarray, prompts: np.ndarray, n: int, rng: np.random.Generator) -> float:
    """Held-out accuracy: share of ``n`` random response pairs of ``prompts`` that ``scores`` order as r* does."""
    x = prompts[rng.integers(0, len(prompts), n)]
    a, b = rng.integers(0, world.bandit.Y, n), rng.integers(0, world.bandit.Y, n)
    keep = a != b
    x, a, b = x[keep], a[keep], b[keep]
    r = world.bandit.r
    return float(np.mean((scores[x, a] > scores[x, b]) == (r[x, a] > r[x, b])))


# ----------------------------------------------------------------------------- learners


class Policy:
    r"""Logits :math:`\log\pi_{sft}(y|x) + u_{x,y} + v^\top\psi(x,y)` with :math:`\psi=[\phi;\ \mathbb 1[\text{math}]\,\phi]`.

    A table ``u: (X, Y)`` (memorises single responses, like a large model can) plus shared
    weights ``v: (2d,)`` (generalise to responses and prompts never seen in the data, like a
    language model's shared parameters). Both start at 0, so the policy starts at π_sft.
    """

    def __init__(self, world: "World"):
        import torch

        phi = torch.as_tensor(world.bandit.phi)  # (X, Y, d)
        m = torch.as_tensor(world.math, dtype=phi.dtype)[:, None, None]
        self.psi = torch.cat([phi, m * phi], -1)  # (X, Y, 2d)
        self.logp_ref = torch.log_softmax(torch.as_tensor(world.bandit.ref_logits), -1)  # (X, Y)
        self.u = torch.zeros_like(self.logp_ref, requires_grad=True)
        self.v = torch.zeros(self.psi.shape[-1], dtype=phi.dtype, requires_grad=True)

    def params(self):
        return [self.u, self.v]

    def logp(self, rows=None):
        """``(X, Y)`` log-probabilities (or of the prompt indices ``rows``)."""
        import torch

        if rows is None:
            return torch.log_softmax(self.logp_ref + self.u + self.psi @ self.v, -1)
        return torch.log_softmax(self.logp_ref[rows] + self.u[rows] + self.psi[rows] @ self.v, -1)

    def probs(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.logp().exp().numpy()


def train_dpo(world: World, pairs: B.Pairs, cfg: Config, seed: int) -> np.ndarray:
    """DPO (:func:`rlbook.losses.dpo_loss`, β ``cfg.dpo_beta``) on a :class:`Policy`; returns probabilities ``(X, Y)``."""
    import torch

    from rlbook.losses import dpo_loss

    g = torch.Generator().manual_seed(seed)
    pol = Policy(world)
    logp_ref = pol.logp_ref
    opt = torch.optim.Adam(pol.params(), lr=cfg.dpo_lr)
    x, w, l_ = (torch.as_tensor(a) for a in (pairs.x, pairs.yw, pairs.yl))
    for _ in range(cfg.dpo_steps):
        i = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        logp = pol.logp()
        loss, _ = dpo_loss(logp[x[i], w[i]], logp_ref[x[i], w[i]], logp[x[i], l_[i]], logp_ref[x[i], l_[i]], cfg.dpo_beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return pol.probs()


def train_online_rl(world: World, scores: np.ndarray, prompts: np.ndarray, cfg: Config, seed: int) -> np.ndarray:
    r"""PPO-style online RL against reward-model ``scores: (X, Y)`` on the prompt pool ``prompts``.

    Each step samples ``G = cfg.rl_group`` responses per prompt from the current policy, scores
    them with the KL-penalised reward :math:`\tilde r = r_\phi(x,y) - \beta_{KL}\log\frac{\pi_\theta(y|x)}{\pi_{sft}(y|x)}`
    (InstructGPT eq. 2; Tulu's PPO), takes the group mean as baseline and follows
    :func:`rlbook.losses.reinforce_loss` (on-policy, one update per batch: PPO's clipped ratio
    is 1 and its gradient is this one), on a :class:`Policy`. Returns probabilities ``(X, Y)``;
    prompts outside the pool change only through the shared weights.
    """
    import torch

    from rlbook.losses import reinforce_loss

    g = torch.Generator().manual_seed(seed)
    pol = Policy(world)
    logp_ref = pol.logp_ref  # (X, Y)
    opt = torch.optim.Adam(pol.params(), lr=cfg.rl_lr)
    s = torch.as_tensor(scores)
    px = torch.as_tensor(prompts)
    G = cfg.rl_group
    for _ in range(cfg.rl_steps):
        logp = pol.logp(px)  # (P, Y)
        y = torch.multinomial(logp.detach().exp(), G, replacement=True, generator=g)  # (P, G)
        lp = logp.gather(1, y)  # (P, G)
        with torch.no_grad():
            r = s[px[:, None], y] - cfg.kl_coef * (lp - logp_ref[px[:, None], y])  # (P, G)
            baseline = r.mean(1, keepdim=True).expand_as(r)
        loss = reinforce_loss(lp.reshape(-1, 1), torch.ones(lp.numel(), 1, dtype=lp.dtype), r.reshape(-1), baseline.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return pol.probs()


def run_study(cfg: Config, seed: int, runs=RUNS) -> dict:
    """All runs of the study for one seed: world, two data sets, reward models, policies, gold rewards.

    Returns ``{"world", "pairs": {quality: Pairs}, "rm_acc": {(quality, kind): {domain: acc}},
    "results": {run: {"general", "math"}}, "sft": {...}, "seconds"}`` where a run is a
    tuple of :data:`RUNS`.
    """
    t0 = time.perf_counter()
    world = build_world(cfg, np.random.default_rng([seed, 0]))
    flips = {"high": cfg.noise_high, "low": cfg.noise_low}
    pairs = {q: make_pairs(world, cfg, f, np.random.default_rng([seed, 1, i])) for i, (q, f) in enumerate(flips.items())}
    pools = {"labelled": np.flatnonzero(world.labelled), "labelled+math": np.arange(world.bandit.X)}
    rms, rm_acc, results = {}, {}, {}
    gen, mth = np.flatnonzero(~world.math), np.flatnonzero(world.math)
    for run in runs:
        algo, q, kind, pool = run
        if algo == "dpo":
            probs = train_dpo(world, pairs[q], cfg, seed)
        elif algo == "ppo":
            if (q, kind) not in rms:
                rms[(q, kind)] = fit_reward_model(world, pairs[q], kind, cfg, seed)
                rng = np.random.default_rng([seed, 3])
                rm_acc[(q, kind)] = {"general": rm_accuracy(world, rms[(q, kind)], gen, 4000, rng),
                                     "math": rm_accuracy(world, rms[(q, kind)], mth, 4000, rng)}
            probs = train_online_rl(world, rms[(q, kind)], pools[pool], cfg, seed)
        else:
            raise ValueError(f"unknown algorithm {algo!r}: choose dpo or ppo")
        results[run] = world.domain_reward(probs)
    return {"world": world, "pairs": pairs, "rm_acc": rm_acc, "results": results,
            "sft": world.domain_reward(world.bandit.ref_probs), "seconds": time.perf_counter() - t0}


def factor_gains(results: dict) -> dict[str, dict[str, float]]:
    """The four one-factor-at-a-time gains per domain (and their mean over domains), from :data:`RUNS`.

    - data: high- minus low-quality pairs, averaged over DPO and PPO (linear RM);
    - algorithm: PPO (linear RM) minus DPO, averaged over the two data sets;
    - reward model: PPO with the MLP RM minus the linear RM (high-quality data);
    - prompts: PPO (MLP RM) with the unlabelled math prompts added minus without.
    """
    R = {k: np.array([v["general"], v["math"]]) for k, v in results.items()}
    g = {
        "data": np.mean([R[(a, "high", "linear", "labelled")] - R[(a, "low", "linear", "labelled")] for a in ("dpo", "ppo")], 0),
        "algorithm": np.mean([R[("ppo", q, "linear", "labelled")] - R[("dpo", q, "linear", "labelled")] for q in ("high", "low")], 0),
        "reward model": R[("ppo", "high", "mlp", "labelled")] - R[("ppo", "high", "linear", "labelled")],
        "prompts": R[("ppo", "high", "mlp", "labelled+math")] - R[("ppo", "high", "mlp", "labelled")],
    }
    return {k: {"general": float(v[0]), "math": float(v[1]), "mean": float(v.mean())} for k, v in g.items()}


# ----------------------------------------------------------------------------- the DPO = KL-RL edge


def population_dpo_loss(logits, ref_logits, r, beta: float, mu):
    r"""DPO's loss in expectation over *all* pairs of a K-armed bandit with Bradley-Terry labels.

    .. math:: \mathcal L(\theta)=-\sum_{y,y'}\mu(y)\mu(y')\,\sigma(r_y-r_{y'})\,
              \log\sigma\Big(\beta\log\frac{\pi_\theta(y)}{\pi_{ref}(y)}-\beta\log\frac{\pi_\theta(y')}{\pi_{ref}(y')}\Big)

    ``logits, ref_logits, r, mu: (K,)`` torch tensors (``mu`` any full-support pair distribution)
    → ``()``. Its minimiser is :math:`\pi_{ref}e^{r/\beta}/Z`, the KL-regularised RL optimum.
    """
    import torch
    import torch.nn.functional as F

    h = beta * (torch.log_softmax(logits, -1) - torch.log_softmax(ref_logits, -1))  # (K,)
    p = torch.sigmoid(r[:, None] - r[None, :])  # (K, K) P(y beats y')
    w = mu[:, None] * mu[None, :]
    return -(w * p * F.logsigmoid(h[:, None] - h[None, :])).sum()


def kl_rl_objective(logits, ref_logits, r, beta: float):
    r""":math:`\mathbb E_{\pi_\theta}[r]-\beta\,\mathrm{KL}(\pi_\theta\|\pi_{ref})` exactly, for a K-armed bandit (``(K,)`` → ``()``)."""
    import torch

    logp = torch.log_softmax(logits, -1)
    logp_ref = torch.log_softmax(ref_logits, -1)
    return (logp.exp() * (r - beta * (logp - logp_ref))).sum()


# ----------------------------------------------------------------------------- full profile


def gsm8k_answer(text: str) -> str | None:
    """The last number in ``text`` (commas removed), or None: GSM8K's answer follows ``####``."""
    import re

    if "####" in text:
        text = text.split("####")[-1]
    nums = re.findall(r"-?\d[\d,]*\.?\d*", text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def _common_args(cfg: Config, seed: int, cuda: bool) -> dict:
    return hub.trl_offline(cuda, seed)


def _generate(model, tok, prompts: list[str], device: str, max_new_tokens: int, batch: int = 32) -> list[str]:
    """Greedy completions of text prompts."""
    import torch

    outs = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        outs += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs


def _rm_scores(rm, tok, texts: list[str], device: str, batch: int = 16) -> np.ndarray:
    """Scores of a sequence-classification RM on full texts (prompt + completion), EOS appended as RewardTrainer does."""
    import torch

    out = []
    for i in range(0, len(texts), batch):
        enc = tok([t + (tok.eos_token or "") for t in texts[i : i + batch]], return_tensors="pt", padding=True,
                  truncation=True, max_length=1024, add_special_tokens=False).to(device)
        with torch.no_grad():
            out.append(rm(**enc).logits[:, 0].float().cpu().numpy())
    return np.concatenate(out)


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The paper-scale comparison on one GPU: reward model, DPO and online RL from the same pairs.

    1. TRL ``RewardTrainer`` on ``cfg.full_pairs`` pairs of ``cfg.dataset`` (backbone ``cfg.model``).
    2. TRL ``DPOTrainer`` (``loss_type=["sigmoid"]``, β ``cfg.full_dpo_beta``) on the same pairs.
    3. TRL ``RLOOTrainer`` against the trained RM on ``cfg.full_rl_prompts`` further prompts
       (KL coefficient ``cfg.full_kl_coef``, ``cfg.full_group`` samples per prompt).
    4. Evaluation of the initial, DPO and RLOO policies: GSM8K accuracy (greedy, last number vs
       ``#### n``) on ``cfg.full_gsm8k`` test problems, and mean RM score / win rate vs the initial
       policy on ``cfg.full_eval_prompts`` held-out prompts.
    """
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer

    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    common = _common_args(cfg, seed, cuda)
    accum = max(1, cfg.full_batch // cfg.full_per_device_batch)
    ds = hub.load_dataset(cfg.dataset).shuffle(seed=seed)
    need = cfg.full_pairs + cfg.full_rl_prompts + cfg.full_eval_prompts
    if len(ds) < need:
        raise ValueError(f"{cfg.dataset} has {len(ds)} rows, need {need}")
    cols = [c for c in ("prompt", "chosen", "rejected") if c in ds.column_names]
    pairs = ds.select(range(cfg.full_pairs)).select_columns(cols)
    rl_rows = ds.select(range(cfg.full_pairs, cfg.full_pairs + cfg.full_rl_prompts))
    ev_rows = ds.select(range(cfg.full_pairs + cfg.full_rl_prompts, need))
    _, tok = load_pretrained(cfg.model, device="cpu")
    seconds = {}

    # 1. reward model
    rm = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1, dtype=dtype).to(device)
    rm.config.pad_token_id = tok.pad_token_id
    t0 = time.perf_counter()
    RewardTrainer(
        model=rm, args=RewardConfig(output_dir=f"{output_dir}/rm", learning_rate=cfg.full_lr, num_train_epochs=1,
                                    max_steps=cfg.full_max_steps, per_device_train_batch_size=cfg.full_per_device_batch,
                                    gradient_accumulation_steps=accum, max_length=cfg.full_max_length, **common),
        train_dataset=pairs, processing_class=tok,
    ).train()
    seconds["reward_model"] = time.perf_counter() - t0
    rm.eval()

    # 2. DPO
    policy, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
    ref, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
    t0 = time.perf_counter()
    dpo = DPOTrainer(
        model=policy, ref_model=ref, processing_class=tok, train_dataset=pairs,
        args=DPOConfig(output_dir=f"{output_dir}/dpo", beta=cfg.full_dpo_beta, loss_type=["sigmoid"],
                       learning_rate=cfg.full_lr, num_train_epochs=1, max_steps=cfg.full_max_steps,
                       per_device_train_batch_size=cfg.full_per_device_batch, gradient_accumulation_steps=accum,
                       max_length=cfg.full_max_length, **common),
    )
    dpo.train()
    seconds["dpo"] = time.perf_counter() - t0
    dpo_model = dpo.model.eval()
    del ref, dpo

    # 3. online RL (RLOO) against the trained reward model
    rl_prompts = datasets.Dataset.from_dict({"prompt": [hub.as_text(ex, tok)["prompt"] for ex in rl_rows]})
    rl_policy, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
    t0 = time.perf_counter()
    rloo = RLOOTrainer(
        model=rl_policy, reward_funcs=rm, reward_processing_classes=tok, processing_class=tok, train_dataset=rl_prompts,
        args=RLOOConfig(output_dir=f"{output_dir}/rloo", learning_rate=cfg.full_rl_lr, beta=cfg.full_kl_coef,
                        num_generations=cfg.full_group, per_device_train_batch_size=cfg.full_group * 2,
                        max_completion_length=cfg.full_max_new_tokens, max_steps=cfg.full_rl_steps,
                        logging_steps=1, **common),
    )
    rloo.train()
    seconds["rloo"] = time.perf_counter() - t0
    rl_model = rloo.model.eval()
    del rloo

    # 4. evaluation
    init, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
    init.eval()
    gsm = hub.load_dataset(cfg.gsm8k, split="test", config="main").select(range(cfg.full_gsm8k))
    chat = getattr(tok, "chat_template", None)
    qs = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True) if chat else q
          for q in gsm["question"]]
    gold = [gsm8k_answer(a) for a in gsm["answer"]]
    ev_prompts = [hub.as_text(ex, tok)["prompt"] for ex in ev_rows]
    out = {"seconds": seconds}
    base_scores = None
    for name, m in (("initial", init), ("dpo", dpo_model), ("rloo", rl_model)):
        ans = _generate(m, tok, qs, device, cfg.full_max_new_tokens)
        acc = float(np.mean([gsm8k_answer(a) == g for a, g in zip(ans, gold)]))
        comp = _generate(m, tok, ev_prompts, device, cfg.full_max_new_tokens)
        sc = _rm_scores(rm, tok, [p + c for p, c in zip(ev_prompts, comp)], device)
        if base_scores is None:
            base_scores = sc
        out[name] = {"gsm8k": acc, "rm_score": float(sc.mean()),
                     "rm_win_rate_vs_initial": float(np.mean(sc > base_scores) + 0.5 * np.mean(sc == base_scores))}
    return out
