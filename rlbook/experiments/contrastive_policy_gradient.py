r"""Chapter "Contrastive Policy Gradient" (Flet-Berliac et al. 2024, arXiv 2406.19185).

Smoke profile: a K-armed bandit (one prompt, ``K`` responses) with an arbitrary reward
``R ~ U[0, 1]`` (not a preference), a random reference policy and the closed-form
KL-regularised optimum :math:`\pi^*\propto\pi_{ref}e^{R/\beta}`. Offline data come from a
*fixed* behaviour distribution ``mu`` (three choices). Learners, all tabular softmax logits
trained with Adam from :math:`\pi_{ref}` on the same sample stream:

- **CoPG** on pairs ``y, y' ~ mu`` (:func:`rlbook.losses.copg.copg_loss`);
- **naive off-policy PG**: REINFORCE on ``y ~ mu`` with the regularised reward and the batch
  mean as baseline, no importance weights;
- **IS-PG**: the same with importance weights ``pi(y)/mu(y)`` (unbiased, high variance);
- **IPO** and **DPO** on the same pairs binarised by ``R`` (winner = larger reward).

All runs of one seed are trained *together*: their logits are rows of one tensor and the
losses are summed, which is exactly independent Adam runs (Adam is elementwise).

Full profile: TRL ``DPOTrainer`` machinery (:class:`rlbook.pair_trainer.PairLossTrainer`) on
offline pairs scored by a reward model: CoPG vs IPO vs DPO (:func:`run_full`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import bandits as B
from rlbook.config import check

METHODS = ("copg", "naive_pg", "is_pg", "ipo", "dpo")
"""learners, in plotting order"""
BEHAVIOURS = ("uniform", "skewed", "ref")
"""behaviour distributions mu"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    arms: int = 20
    """``K``: responses of the single prompt"""
    beta: float = 0.2
    """``β``: KL strength of the objective, of CoPG and of the PG baselines; IPO's ``τ`` and DPO's ``β`` too"""
    ref_logit_std: float = 1.0
    """std of the random π_ref logits"""
    skew: float = 4.0
    """the skewed behaviour: ``mu ∝ exp(-skew * R)`` (mass on low-reward arms)"""
    steps: int = 1500
    """Adam steps of every learner"""
    batch_size: int = 256
    """pairs (or single samples for PG) per step"""
    lr: float = 0.05
    """Adam learning rate of every learner"""
    eval_every: int = 25
    """steps between evaluations of KL(π_θ‖π*)"""
    # full profile (paper scale, one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: policy and reference model, a Hub name or a local folder"""
    dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: offline pairs (the two responses ``y, y'`` of a prompt), a Hub name or a local ``save_to_disk`` folder"""
    reward_model: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: the reward R(x, y) treated as ground truth (scores both responses once, before training)"""
    full_pairs: int = 5_000
    """*full*: training pairs"""
    full_beta: float = 0.1
    """*full*: β of CoPG, τ of IPO, β of DPO (the chapter's choice)"""
    full_lr: float = 5e-7
    """*full*: learning rate (the chapter's choice)"""
    full_batch: int = 32
    """*full*: global batch (per-device batch × gradient accumulation)"""
    full_per_device_batch: int = 8
    """*full*: per-device batch"""
    full_max_length: int = 1024
    """*full*: maximum prompt + completion tokens"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts decoded greedily and scored by the reward model"""
    full_max_new_tokens: int = 256
    """*full*: generation length"""
    full_methods: tuple = ("copg", "ipo", "dpo")
    """*full*: learners, each trained from the initial model"""
    full_max_steps: int = -1
    """*full*: cap on optimiser steps (-1: one epoch; the dry-run test uses 2)"""

    def __post_init__(self) -> None:
        check(2 <= self.arms <= 10_000, "arms must be in 2..10000")
        check(self.beta > 0, "beta must be > 0")
        check(self.ref_logit_std >= 0 and self.skew >= 0, "ref_logit_std and skew must be >= 0")
        check(self.steps >= 1 and self.batch_size >= 2, "steps must be >= 1 and batch_size >= 2")
        check(self.lr > 0, "lr must be > 0")
        check(1 <= self.eval_every <= self.steps, "eval_every must be in 1..steps")
        check(self.full_beta > 0 and self.full_lr > 0, "full_beta and full_lr must be > 0")
        check(set(self.full_methods) <= {"copg", "ipo", "dpo"}, "full_methods must be among copg, ipo, dpo")


# ----------------------------------------------------------------------------- world


@dataclass
class World:
    """One bandit and its behaviour distributions (all probability vectors ``(K,)``)."""

    R: np.ndarray
    """``(K,)`` reward"""
    ref: np.ndarray
    """``(K,)`` π_ref"""
    opt: np.ndarray
    """``(K,)`` π* ∝ π_ref exp(R/β)"""
    mu: dict
    """behaviour name → ``(K,)`` sampling distribution"""
    beta: float
    """β"""


def make_world(cfg: Config, rng: np.random.Generator) -> World:
    """``R ~ U[0,1]``, π_ref = softmax(N(0, std²) logits), π* in closed form, three behaviours."""
    R = rng.random(cfg.arms)
    ref = B.softmax(cfg.ref_logit_std * rng.standard_normal(cfg.arms))
    mu = {"uniform": np.full(cfg.arms, 1.0 / cfg.arms), "skewed": B.softmax(-cfg.skew * R), "ref": ref}
    return World(R=R, ref=ref, opt=B.kl_optimal_policy(ref, R, cfg.beta), mu=mu, beta=cfg.beta)


def regularised_objective(probs: np.ndarray, w: World) -> float:
    r""":math:`J(\pi)=\mathbb E_\pi[R]-\beta\,\mathrm{KL}(\pi\|\pi_{ref})` (maximised by π*)."""
    return float(B.regularised_objective(probs, w.ref, w.R, w.beta))


# ----------------------------------------------------------------------------- exact (population) quantities


def population_copg_loss(logits, R, logp_ref, mu, beta: float):
    r"""Exact CoPG objective under ``y, y' ~ mu`` by enumerating all ``K²`` pairs (torch, differentiable).

    .. math:: \frac{1}{4\beta}\sum_{y,y'}\mu(y)\mu(y')\big(R^\beta_\pi(y)-R^\beta_\pi(y')\big)^2

    ``logits, R, logp_ref, mu: (K,)`` tensors → ``()``.
    """
    import torch

    rb = R - beta * (torch.log_softmax(logits, -1) - logp_ref)  # (K,)
    d = rb[:, None] - rb[None, :]  # (K, K)
    return (mu[:, None] * mu[None, :] * d**2).sum() / (4 * beta)


def expected_copg_direction(logits, R, logp_ref, mu, beta: float):
    r"""Exact :math:`\mathbb E_{y,y'\sim\mu}[\hat g]` with :math:`\hat g=\tfrac12(R^\beta_\pi(y)-R^\beta_\pi(y'))(\nabla\log\pi(y)-\nabla\log\pi(y'))`.

    Gradients with respect to the logits (softmax: :math:`\nabla_z\log\pi(y)=e_y-\pi`). ``(K,)`` tensors → ``(K,)``.
    """
    import torch

    p = torch.softmax(logits, -1)
    rb = R - beta * (torch.log(p) - logp_ref)
    eye = torch.eye(len(p), dtype=p.dtype)
    score = eye - p[None, :]  # (K, K): row y is ∇_z log π(y)
    d = rb[:, None] - rb[None, :]  # (K, K)
    w = mu[:, None] * mu[None, :] * d / 2  # (K, K)
    # Σ_{y,y'} w[y,y'] (score[y] - score[y'])
    return (w.sum(1)[:, None] * score).sum(0) - (w.sum(0)[:, None] * score).sum(0)


# ----------------------------------------------------------------------------- training


@dataclass
class Runs:
    """All learners × behaviours of one seed."""

    names: list
    """``(M,)`` run names ``method/behaviour``"""
    probs: np.ndarray
    """``(M, K)`` final policies"""
    steps: np.ndarray
    """``(E,)`` evaluation steps"""
    kl: np.ndarray
    """``(M, E)`` KL(π_θ‖π*) at each evaluation"""
    seconds: float
    """wall time of the joint training"""

    def final_kl(self, method: str, behaviour: str) -> float:
        return float(self.kl[self.names.index(f"{method}/{behaviour}"), -1])


def train_all(w: World, cfg: Config, seed: int, methods=METHODS, behaviours=BEHAVIOURS) -> Runs:
    r"""Train every (method, behaviour) run from π_ref with Adam on its own behaviour's samples.

    Each step draws, per behaviour, ``batch_size`` pairs ``(y, y') ~ mu × mu``; CoPG uses both
    responses with their rewards, IPO/DPO the pair ordered by reward, the PG baselines ``y``
    only. A pair with ``y = y'`` has zero gradient in CoPG, IPO and DPO, so it is kept (it only
    rescales the mean). All methods of a behaviour see the same samples (common random
    numbers), so their differences are not sampling noise. The PG baselines use the
    regularised reward :math:`R^\beta_\pi(y)` (no gradient through it):

    - ``naive_pg``: :math:`-\frac1n\sum R^\beta_\pi(y)\log\pi(y)`, no baseline, no importance weight;
    - ``is_pg``: :math:`-\frac1n\sum \frac{\pi(y)}{\mu(y)}\big(R^\beta_\pi(y)-\bar b\big)\log\pi(y)`,
      :math:`\bar b` the weighted batch mean.
    """
    import torch

    from rlbook.losses.copg import copg_loss
    from rlbook.losses.dpo import dpo_loss
    from rlbook.losses.ipo import ipo_loss

    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}: choose from {METHODS}")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    R = torch.as_tensor(w.R, dtype=dt)
    logp_ref = torch.log(torch.as_tensor(w.ref, dtype=dt))
    logp_opt = torch.log(torch.as_tensor(w.opt, dtype=dt))
    names = [f"{m}/{b}" for m in methods for b in behaviours]
    nb, n, beta = len(behaviours), cfg.batch_size, cfg.beta
    theta = logp_ref.repeat(len(names), 1).clone().requires_grad_(True)  # (M, K), M = methods x behaviours
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    mu = torch.stack([torch.as_tensor(w.mu[b], dtype=dt) for b in behaviours])  # (nb, K)
    rows = torch.arange(nb)[:, None]  # (nb, 1)
    evals, kls = [], []

    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                lp = torch.log_softmax(theta, -1)
                kls.append((lp.exp() * (lp - logp_opt)).sum(-1).numpy().copy())
            evals.append(step)
        if step == cfg.steps:
            break
        y = torch.multinomial(mu, n, replacement=True, generator=g)  # (nb, n)
        yp = torch.multinomial(mu, n, replacement=True, generator=g)  # (nb, n)
        first = R[y] >= R[yp]
        win, lose = torch.where(first, y, yp), torch.where(first, yp, y)
        lp_all = torch.log_softmax(theta, -1).view(len(methods), nb, -1)  # (methods, nb, K)
        total = 0.0
        for i, m in enumerate(methods):
            lp = lp_all[i]  # (nb, K)
            at = lambda t, idx: t[rows, idx].reshape(-1) if t.dim() == 2 else t[idx].reshape(-1)  # noqa: E731
            if m == "copg":
                loss, _ = copg_loss(at(lp, y), at(logp_ref, y), at(R, y), at(lp, yp), at(logp_ref, yp), at(R, yp), beta)
            elif m == "ipo":
                loss, _ = ipo_loss(at(lp, win), at(logp_ref, win), at(lp, lose), at(logp_ref, lose), beta)
            elif m == "dpo":
                loss, _ = dpo_loss(at(lp, win), at(logp_ref, win), at(lp, lose), at(logp_ref, lose), beta)
            else:
                ly = lp[rows, y]  # (nb, n)
                rb = (R[y] - beta * (ly - logp_ref[y])).detach()  # R^β_π(y), (nb, n)
                if m == "naive_pg":
                    loss = -(rb * ly).mean()
                else:  # is_pg
                    wts = (ly.detach().exp() / mu[rows, y])  # (nb, n)
                    b = (wts * rb).sum(1, keepdim=True) / wts.sum(1, keepdim=True)
                    loss = -(wts * (rb - b) * ly).mean()
            total = total + nb * loss  # the sum over behaviours of each run's own mean loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    with torch.no_grad():
        probs = torch.softmax(theta, -1).numpy()
    return Runs(names, probs, np.array(evals), np.stack(kls, 1), time.perf_counter() - t0)


def run_smoke(cfg: Config, seed: int) -> dict:
    """The whole smoke experiment for one seed: world, joint training, final KLs ``{run: KL(π‖π*)}``."""
    w = make_world(cfg, np.random.default_rng([seed, 0]))
    runs = train_all(w, cfg, seed)
    return {"world": w, "runs": runs, "final_kl": {n: float(runs.kl[i, -1]) for i, n in enumerate(runs.names)}}


def gradient_variance(w: World, logits: np.ndarray, behaviour: str) -> dict[str, float]:
    r"""Exact total variance (trace of the covariance) of two one-pair gradient estimators at ``logits``.

    Both estimate a direction with respect to the softmax logits ``z`` (``∇_z log π(y) = e_y - π``):

    - CoPG, one pair ``y, y' ~ mu``: :math:`\hat g=\tfrac12(R^\beta_\pi(y)-R^\beta_\pi(y'))(e_y-e_{y'})`;
    - IS-PG, one sample ``y ~ mu``: :math:`\frac{\pi(y)}{\mu(y)}\big(R^\beta_\pi(y)-b\big)(e_y-\pi)`
      with the exact baseline :math:`b=\mathbb E_\pi[R^\beta_\pi]`.

    Enumerates all outcomes; ``logits: (K,)``. Returns ``{"copg": ..., "is_pg": ...}``.
    """
    mu = w.mu[behaviour]
    p = B.softmax(logits)
    rb = w.R - w.beta * (np.log(p) - np.log(w.ref))  # (K,)
    K = len(p)
    eye = np.eye(K)
    # CoPG: outcomes (y, y') with probability mu(y) mu(y')
    d = rb[:, None] - rb[None, :]  # (K, K)
    g = 0.5 * d[:, :, None] * (eye[:, None, :] - eye[None, :, :])  # (K, K, K)
    pw = mu[:, None] * mu[None, :]
    mean = (pw[:, :, None] * g).sum((0, 1))
    var_copg = float((pw * ((g - mean) ** 2).sum(-1)).sum())
    # IS-PG: outcomes y with probability mu(y)
    b = float((p * rb).sum())
    gi = (p / mu * (rb - b))[:, None] * (eye - p[None, :])  # (K, K)
    mean_i = (mu[:, None] * gi).sum(0)
    var_is = float((mu * ((gi - mean_i) ** 2).sum(-1)).sum())
    return {"copg": var_copg, "is_pg": var_is}


# ----------------------------------------------------------------------------- full profile


def _last_text(msgs) -> str:
    """The text of a response: a string, or the last message of a conversation."""
    return msgs if isinstance(msgs, str) else msgs[-1]["content"]


def score_pairs(ds, reward_model: str, device: str, batch: int = 16):
    """Add ``reward_chosen, reward_rejected`` (reward-model scores) to a preference data set, then order
    each pair so that ``chosen`` has the larger score (the binarisation IPO and DPO need; CoPG is symmetric)."""
    from rlbook import hub

    rm, rm_tok = hub.load_reward_model(reward_model, device)
    q = [hub.user_text(ex) for ex in ds]
    s_c = hub.score(rm, rm_tok, q, [_last_text(ex["chosen"]) for ex in ds], device, batch)
    s_r = hub.score(rm, rm_tok, q, [_last_text(ex["rejected"]) for ex in ds], device, batch)
    del rm

    def order(ex, i):
        swap = s_r[i] > s_c[i]
        return {
            "chosen": ex["rejected"] if swap else ex["chosen"],
            "rejected": ex["chosen"] if swap else ex["rejected"],
            "reward_chosen": float(max(s_c[i], s_r[i])),
            "reward_rejected": float(min(s_c[i], s_r[i])),
        }

    return ds.map(order, with_indices=True)


def full_pair_loss(method: str, beta: float):
    """The :class:`rlbook.pair_trainer.PairLossTrainer` loss of ``method`` (copg, ipo or dpo) on summed log-probs."""
    from rlbook.losses.common import sequence_logprob
    from rlbook.losses.copg import copg_loss
    from rlbook.losses.dpo import dpo_loss
    from rlbook.losses.ipo import ipo_loss

    def loss_fn(lw, rw, mw, ll, rl, ml, inputs):
        sw, sl = sequence_logprob(lw, mw), sequence_logprob(ll, ml)  # (N,)
        srw, srl = sequence_logprob(rw, mw), sequence_logprob(rl, ml)
        if method == "copg":
            r_w = inputs["reward_chosen"].to(sw)
            r_l = inputs["reward_rejected"].to(sw)
            loss, d = copg_loss(sw, srw, r_w, sl, srl, r_l, beta)
            return loss, {"copg/adv_abs": d["adv"].abs().mean()}
        if method == "ipo":
            loss, d = ipo_loss(sw, srw, sl, srl, beta)
            return loss, {"ipo/h": d["h"].mean()}
        loss, d = dpo_loss(sw, srw, sl, srl, beta)
        return loss, {"rewards/margins": d["margin"].mean()}

    if method not in ("copg", "ipo", "dpo"):
        raise ValueError(f"unknown method {method!r}")
    return loss_fn


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The paper-scale run: offline pairs scored by a reward model, CoPG vs IPO vs DPO with TRL.

    1. ``cfg.full_pairs`` pairs of ``cfg.dataset`` (its two responses are the offline samples
       ``y, y'``), both scored once by ``cfg.reward_model`` (the ground-truth reward ``R``).
    2. For each method in ``cfg.full_methods``: ``cfg.model`` trained from scratch for one epoch
       by :class:`rlbook.pair_trainer.PairLossTrainer` with that method's loss
       (CoPG on the rewards; IPO and DPO on the pairs binarised by the rewards), same β.
    3. ``cfg.full_eval_prompts`` held-out prompts decoded greedily by the initial and every
       trained model, scored by the same reward model.

    Returns ``{"reward": {name: mean score}, "reward_se": ..., "train_seconds": ..., "logs": ...}``.
    """
    from rlbook import hub
    from rlbook.models import load_pretrained
    from rlbook.pair_trainer import greedy_reward, train_with_pair_loss

    ds = hub.load_dataset(cfg.dataset).shuffle(seed=seed)
    need = cfg.full_pairs + cfg.full_eval_prompts
    if len(ds) < need:
        raise ValueError(f"{cfg.dataset} has {len(ds)} rows, need {need}")
    keep = [c for c in ("prompt", "chosen", "rejected") if c in ds.column_names]
    train_ds = score_pairs(ds.select(range(cfg.full_pairs)).select_columns(keep), cfg.reward_model, device)
    held = ds.select(range(cfg.full_pairs, need))
    import torch

    initial, tok = load_pretrained(cfg.model, device=device, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
    models, train_s, logs = {"initial": initial.eval()}, {}, {}
    for method in cfg.full_methods:
        models[method], tok, logs[method], train_s[method] = train_with_pair_loss(
            cfg.model, train_ds, full_pair_loss(method, cfg.full_beta), reference_free=False, beta=cfg.full_beta,
            lr=cfg.full_lr, batch=cfg.full_batch, per_device_batch=cfg.full_per_device_batch,
            max_length=cfg.full_max_length, max_steps=cfg.full_max_steps, seed=seed, device=device,
            output_dir=f"{output_dir}/{method}",
        )
    out = greedy_reward(models, tok, held, cfg.reward_model, device, cfg.full_max_new_tokens)
    return {**out, "train_seconds": train_s, "logs": logs}
