r"""Chapter "Implicit Reward as the Bridge: A Unified View of SFT and DPO Connections" (arXiv 2507.00018).

Smoke profile: a contextual bandit with shared features (a linear-softmax "language model"),
``X`` prompts × ``Y`` candidate responses, features :math:`\phi(x,y)\sim\mathcal N(0,I_d)`, a gold
reward :math:`r^*=w^{*\top}\phi` and a "pretrained" :math:`\pi_{ref}=\mathrm{softmax}(\theta_{ref}^\top\phi)`.
Two-stage post-training, everything evaluated by exact expectation:

1. **SFT** on one demonstration per training prompt, drawn from
   :math:`\pi_E\propto\pi_{ref}e^{r^*/\beta_E}`, at several learning rates (full-batch Adam),
   plus an f-divergence SFT variant (:mod:`rlbook.losses.implicit_reward_sft`);
2. **DPO** on on-policy pairs of each SFT model (Bradley-Terry labels on :math:`r^*`), with
   :math:`\pi_{ref}:=` that SFT model.

Full profile (:func:`run_full`): TRL ``SFTTrainer`` at a standard and a reduced learning rate,
then TRL ``DPOTrainer`` from each SFT model, scored by a reward model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rlbook import hub
from rlbook.bandits import ContextualBandit, kl, softmax
from rlbook.config import check


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_prompts: int = 200
    """``X``: prompts (split into SFT, DPO and held-out evaluation prompts)"""
    n_responses: int = 32
    """``Y``: candidate responses per prompt"""
    dim: int = 64
    """``d``: feature dimensions (more than the demonstrations, so SFT can drift without bound)"""
    ref_norm: float = 0.5
    """norm of the pretrained parameter θ_ref"""
    ref_cos: float = 0.5
    """cosine between θ_ref and the gold reward direction w* (|w*| = 1)"""
    demo_beta: float = 0.3
    """β_E: demonstrations come from π_E ∝ π_ref exp(r*/β_E)"""
    n_demo_prompts: int = 40
    """SFT prompts, one demonstration each"""
    n_dpo_prompts: int = 60
    """DPO prompts (disjoint from the SFT prompts)"""
    sft_steps: int = 300
    """full-batch Adam steps of SFT"""
    sft_lrs: tuple = (0.3, 0.03, 0.003)
    """SFT learning rates: the first is the 'standard' one, the last the 'reduced' one"""
    fdiv: str = "chi2"
    """f-divergence of the SFT variant: "chi2" or "hellinger" (trained at the standard lr)"""
    fdiv_beta: float = 1.0
    """β of the f-divergence SFT loss (only scales the loss; Adam is nearly scale-free)"""
    dpo_pairs: int = 2000
    """on-policy preference pairs from each SFT model"""
    dpo_beta: float = 0.1
    """β of DPO"""
    dpo_lr: float = 0.03
    """Adam learning rate of DPO"""
    dpo_steps: int = 300
    """full-batch Adam steps of DPO"""
    log_every: int = 10
    """steps between logged points of the SFT curves"""
    # full profile (paper scale, one GPU)
    model: str = "Qwen/Qwen2.5-0.5B"
    """*full*: base model, a Hub name or a local folder"""
    sft_dataset: str = "HuggingFaceH4/ultrachat_200k"
    """*full*: SFT data set with a ``messages`` column (Hub name or local ``save_to_disk`` folder)"""
    sft_split: str = "train_sft"
    """*full*: split of the SFT data set"""
    pref_dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: preference data set (chosen/rejected), Hub name or local folder"""
    reward_model: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: reward model that judges the final models, Hub name or local folder"""
    full_sft_examples: int = 10000
    """*full*: SFT examples"""
    full_dpo_pairs: int = 10000
    """*full*: DPO pairs"""
    full_lrs: tuple = (2e-5, 2e-6)
    """*full*: (standard, reduced) SFT learning rates; the paper reduces the usual SFT lr"""
    full_dpo_lr: float = 5e-7
    """*full*: DPO learning rate"""
    full_dpo_beta: float = 0.1
    """*full*: DPO β (TRL's default)"""
    full_batch: int = 32
    """*full*: global batch of both stages"""
    full_per_device_batch: int = 8
    """*full*: per-device batch (gradient accumulation makes up ``full_batch``)"""
    full_max_length: int = 1024
    """*full*: maximum tokens per training example"""
    full_eval_prompts: int = 300
    """*full*: held-out instruction prompts for the win rate"""
    full_max_new_tokens: int = 256
    """*full*: generation length at evaluation"""
    full_max_steps: int = -1
    """*full*: cap on optimiser steps of each stage (-1: one epoch; the dry-run test uses 2)"""

    def __post_init__(self) -> None:
        check(self.n_responses >= 2 and self.dim >= 2, "n_responses and dim must be >= 2")
        check(self.n_demo_prompts >= 1 and self.n_dpo_prompts >= 1, "n_demo_prompts and n_dpo_prompts must be >= 1")
        check(self.n_prompts > self.n_demo_prompts + self.n_dpo_prompts, "n_prompts must exceed the SFT + DPO prompts")
        check(self.ref_norm > 0 and -1 < self.ref_cos < 1, "ref_norm must be > 0 and ref_cos in (-1, 1)")
        check(self.demo_beta > 0 and self.dpo_beta > 0 and self.fdiv_beta > 0, "betas must be > 0")
        check(len(self.sft_lrs) >= 2 and all(lr > 0 for lr in self.sft_lrs), "sft_lrs needs >= 2 positive rates")
        check(self.fdiv in ("chi2", "hellinger"), "fdiv must be 'chi2' or 'hellinger'")
        check(self.sft_steps >= 1 and self.dpo_steps >= 1 and self.dpo_pairs >= 1, "steps and pairs must be >= 1")
        check(self.dpo_lr > 0 and 1 <= self.log_every <= self.sft_steps, "dpo_lr > 0, log_every in 1..sft_steps")
        check(len(self.full_lrs) == 2 and all(lr > 0 for lr in self.full_lrs), "full_lrs must be two positive rates")


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """The bandit, the gold direction, the pretrained parameter and the prompt split."""

    bandit: ContextualBandit
    """``r: (X, Y)`` gold reward, ``ref_logits: (X, Y)``, ``phi: (X, Y, d)``"""
    w_star: np.ndarray
    """``(d,)`` gold reward direction"""
    theta_ref: np.ndarray
    """``(d,)`` pretrained parameter"""
    demo_prompts: np.ndarray
    """``(n_demo,)`` SFT prompt indices"""
    demos: np.ndarray
    """``(n_demo,)`` the demonstrated response of each SFT prompt"""
    dpo_prompts: np.ndarray
    """``(n_dpo,)`` DPO prompt indices"""
    eval_prompts: np.ndarray
    """held-out prompt indices"""
    demo_probs: np.ndarray
    """``(X, Y)`` the demonstrator π_E ∝ π_ref exp(r*/β_E)"""


def build_world(cfg: Config, rng: np.random.Generator) -> World:
    """Features, gold reward, pretrained policy at a fixed angle to the reward, demonstrations."""
    X, Y, d = cfg.n_prompts, cfg.n_responses, cfg.dim
    phi = rng.standard_normal((X, Y, d))
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    v = rng.standard_normal(d)
    v -= (v @ w) * w
    v /= np.linalg.norm(v)
    theta_ref = cfg.ref_norm * (cfg.ref_cos * w + np.sqrt(1 - cfg.ref_cos**2) * v)
    bandit = ContextualBandit(r=phi @ w, ref_logits=phi @ theta_ref, phi=phi)
    perm = rng.permutation(X)
    a, b = cfg.n_demo_prompts, cfg.n_demo_prompts + cfg.n_dpo_prompts
    demo_probs = bandit.optimal_policy(cfg.demo_beta)
    demo_prompts = np.sort(perm[:a])
    demos = bandit.sample(demo_probs, demo_prompts, rng)
    return World(bandit, w, theta_ref, demo_prompts, demos, np.sort(perm[a:b]), np.sort(perm[b:]), demo_probs)


def policy_probs(world: World, theta: np.ndarray) -> np.ndarray:
    """``(X, Y)``: the linear-softmax policy softmax(φ θ)."""
    return softmax(world.bandit.phi @ theta)


def evaluate(world: World, theta: np.ndarray, ref_theta: np.ndarray | None = None) -> dict[str, float]:
    r"""Exact held-out metrics of the policy θ (means over the evaluation prompts).

    ``gold``: :math:`\mathbb{E}_\pi[r^*]`; ``win``: :math:`\mathbb{E}_{y\sim\pi,y'\sim\pi_{ref}}[\sigma(r^*(y)-r^*(y'))]`
    against the *original* π_ref; ``kl``: KL(π‖π_ref (or the given ``ref_theta``)); ``entropy``.
    """
    e = world.eval_prompts
    p = policy_probs(world, theta)[e]
    ref = world.bandit.ref_probs[e] if ref_theta is None else policy_probs(world, ref_theta)[e]
    r = world.bandit.r[e]
    win = 1.0 / (1.0 + np.exp(-(r[:, :, None] - r[:, None, :])))  # (E, Y, Y)
    return {
        "gold": float((p * r).sum(-1).mean()),
        "win": float(np.einsum("ey,eyz,ez->e", p, win, world.bandit.ref_probs[e]).mean()),
        "kl": float(kl(p, ref).mean()),
        "entropy": float(-(p * np.log(np.clip(p, 1e-300, None))).sum(-1).mean()),
    }


def implicit_reward_corr(world: World, theta: np.ndarray) -> float:
    r"""Mean over held-out prompts of corr(:math:`\log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}`, :math:`r^*(x,y)`) across the ``Y`` responses.

    The demonstrator's own implicit reward is :math:`\beta_E\log\frac{\pi_E}{\pi_{ref}}=r^*-\beta_E\log Z`,
    so a correlation near 1 means SFT has learnt the demonstrator's reward (up to scale) on unseen prompts.
    """
    e = world.eval_prompts
    imp = np.log(policy_probs(world, theta)[e]) - np.log(world.bandit.ref_probs[e])  # (E, Y)
    r = world.bandit.r[e]
    return float(np.mean([np.corrcoef(imp[i], r[i])[0, 1] for i in range(len(e))]))


# ----------------------------------------------------------------------------- training


@dataclass
class SFTRun:
    """One SFT run: its final parameter and its curves."""

    name: str
    """label"""
    theta: np.ndarray
    """``(d,)`` final parameter"""
    steps: list = field(default_factory=list)
    """logged steps"""
    kl: list = field(default_factory=list)
    """held-out KL(π_θ‖π_ref)"""
    nll: list = field(default_factory=list)
    """demonstration NLL (mean over demos)"""
    gold: list = field(default_factory=list)
    """held-out gold reward"""


def sft(world: World, cfg: Config, lr: float, loss_kind: str = "nll", log: bool = True) -> SFTRun:
    r"""Full-batch Adam from θ_ref on the demonstrations.

    ``loss_kind``: ``"nll"`` (:func:`rlbook.losses.sft_loss`, plain SFT), ``"implicit"``
    (:func:`rlbook.losses.implicit_reward_sft.implicit_reward_sft_loss`, the same gradient up to β)
    or an f-divergence (``"chi2"``, ``"hellinger"``), whose reference term is computed exactly
    by enumerating the ``Y`` responses of the SFT prompts under π_ref.
    """
    import torch

    from rlbook.losses import sft_loss
    from rlbook.losses import implicit_reward_sft as F

    phi = torch.as_tensor(world.bandit.phi[world.demo_prompts])  # (N, Y, d)
    idx = torch.as_tensor(world.demos)
    ref_logp = torch.log_softmax(phi @ torch.as_tensor(world.theta_ref), -1)  # (N, Y)
    w_ref = ref_logp.exp()
    theta = torch.tensor(world.theta_ref, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    run = SFTRun(f"{loss_kind} lr {lr:g}", world.theta_ref.copy())
    ar = torch.arange(len(idx))
    for step in range(cfg.sft_steps + 1):
        logp = torch.log_softmax(phi @ theta, -1)  # (N, Y)
        lp_demo = logp[ar, idx]  # (N,)
        if log and (step % cfg.log_every == 0 or step == cfg.sft_steps):
            m = evaluate(world, theta.detach().numpy())
            run.steps.append(step)
            run.kl.append(m["kl"])
            run.gold.append(m["gold"])
            run.nll.append(float(-lp_demo.detach().mean()))
        if step == cfg.sft_steps:
            break
        if loss_kind == "nll":
            loss = sft_loss(lp_demo[:, None], torch.ones(len(idx), 1, dtype=lp_demo.dtype))
        elif loss_kind == "implicit":
            loss = F.implicit_reward_sft_loss(lp_demo, ref_logp[ar, idx], cfg.fdiv_beta)
        elif loss_kind in ("chi2", "hellinger"):
            fn = F.chi2_sft_loss if loss_kind == "chi2" else F.hellinger_sft_loss
            loss = fn(lp_demo - ref_logp[ar, idx], logp - ref_logp, w_ref, cfg.fdiv_beta)
        else:
            raise ValueError(f"unknown SFT loss {loss_kind!r}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    run.theta = theta.detach().numpy().copy()
    return run


def dpo(world: World, cfg: Config, theta_sft: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """DPO from an SFT model (which is also its π_ref) on ``cfg.dpo_pairs`` on-policy pairs; returns θ."""
    import torch

    from rlbook.losses import dpo_loss

    b = world.bandit
    probs = policy_probs(world, theta_sft)
    x = rng.choice(world.dpo_prompts, size=cfg.dpo_pairs)
    y1, y2 = b.sample(probs, x, rng), b.sample(probs, x, rng)
    pairs = b.label(x, y1, y2, rng)
    phi_w = torch.as_tensor(b.phi[pairs.x, pairs.yw])  # (M, d)
    phi_l = torch.as_tensor(b.phi[pairs.x, pairs.yl])
    uniq, row = np.unique(pairs.x, return_inverse=True)
    phi_x = torch.as_tensor(b.phi[uniq])  # (n_dpo, Y, d): log Z once per prompt
    row = torch.as_tensor(row)  # (M,) row of each pair's prompt in phi_x
    th0 = torch.as_tensor(theta_sft)
    with torch.no_grad():
        lse0 = torch.logsumexp(phi_x @ th0, -1)[row]
        ref_w, ref_l = phi_w @ th0 - lse0, phi_l @ th0 - lse0
    theta = th0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.dpo_lr)
    for _ in range(cfg.dpo_steps):
        lse = torch.logsumexp(phi_x @ theta, -1)[row]  # (M,)
        loss, _ = dpo_loss(phi_w @ theta - lse, ref_w, phi_l @ theta - lse, ref_l, cfg.dpo_beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return theta.detach().numpy().copy()


def run_smoke(cfg: Config, seed: int) -> dict:
    """SFT at every learning rate and with the f-divergence loss, then DPO from each; all metrics."""
    t0 = time.perf_counter()
    world = build_world(cfg, np.random.default_rng([seed, 0]))
    runs = {f"SFT lr {lr:g}": sft(world, cfg, lr) for lr in cfg.sft_lrs}
    runs[f"{cfg.fdiv}-SFT lr {cfg.sft_lrs[0]:g}"] = sft(world, cfg, cfg.sft_lrs[0], loss_kind=cfg.fdiv)
    rows = {}
    for i, (name, run) in enumerate(runs.items()):
        th_dpo = dpo(world, cfg, run.theta, np.random.default_rng([seed, 1, i]))
        m_sft, m_dpo = evaluate(world, run.theta), evaluate(world, th_dpo)
        rows[name] = {
            "sft_gold": m_sft["gold"], "sft_win": m_sft["win"], "sft_kl": m_sft["kl"], "sft_entropy": m_sft["entropy"],
            "sft_reward_corr": implicit_reward_corr(world, run.theta),
            "dpo_gold": m_dpo["gold"], "dpo_win": m_dpo["win"], "dpo_kl": m_dpo["kl"],
        }
    ref = evaluate(world, world.theta_ref)
    opt_gold = float((world.demo_probs[world.eval_prompts] * world.bandit.r[world.eval_prompts]).sum(-1).mean())
    return {"world": world, "runs": runs, "rows": rows, "ref": ref, "demo_gold": opt_gold,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- full profile


def _common_args(cfg: Config, seed: int, cuda: bool, output_dir: str) -> dict:
    """TRL/transformers arguments shared by both stages (CPU-safe when ``cuda`` is False)."""
    return dict(
        output_dir=output_dir,
        num_train_epochs=1,
        max_steps=cfg.full_max_steps,
        per_device_train_batch_size=cfg.full_per_device_batch,
        gradient_accumulation_steps=max(1, cfg.full_batch // cfg.full_per_device_batch),
        max_length=cfg.full_max_length,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        logging_steps=1 if cfg.full_max_steps > 0 else 10,
        **hub.trl_offline(cuda, seed),
    )


def _completion_logprob(model, tok, prompts: list[str], completions: list[str], device: str) -> np.ndarray:
    """``(n,)``: summed log-probability of each completion given its prompt (text, template applied)."""
    import torch

    out = []
    with torch.no_grad():
        for p, c in zip(prompts, completions):
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            ids = tok(p + c, add_special_tokens=False)["input_ids"]
            start = max(1, len(p_ids))
            t = torch.tensor([ids], device=device)
            lp = torch.log_softmax(model(input_ids=t).logits[0, :-1].float(), -1)
            lp = lp.gather(-1, t[0, 1:, None])[:, 0]
            out.append(float(lp[start - 1 :].sum()))
    return np.array(out)


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The paper-scale run: SFT (TRL) at the standard and the reduced lr, DPO (TRL) from each.

    1. ``SFTTrainer`` on ``cfg.full_sft_examples`` conversations of ``cfg.sft_dataset`` from
       ``cfg.model``, once at each learning rate of ``cfg.full_lrs``.
    2. ``DPOTrainer`` on ``cfg.full_dpo_pairs`` pairs of ``cfg.pref_dataset``, policy and frozen
       reference both initialised from that SFT model.
    3. On ``cfg.full_eval_prompts`` held-out prompts (from the preference set): greedy-free
       temperature-1 decodes of both post-DPO models, scored by ``cfg.reward_model``; the win rate
       of the reduced-lr pipeline over the standard one; and a Monte-Carlo KL(π_SFT‖π_base) from
       the SFT model's own samples.

    Names are Hub names or local folders (the dry-run test passes tiny local ones).
    """
    import torch
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    sft_ds = hub.load_dataset(cfg.sft_dataset, cfg.sft_split).shuffle(seed=seed).select(range(cfg.full_sft_examples))
    sft_ds = sft_ds.select_columns(["messages"])
    prefs = hub.load_dataset(cfg.pref_dataset, "train").shuffle(seed=seed)
    if len(prefs) < cfg.full_dpo_pairs + cfg.full_eval_prompts:
        raise ValueError(f"{cfg.pref_dataset} has {len(prefs)} rows, need {cfg.full_dpo_pairs + cfg.full_eval_prompts}")
    dpo_ds = prefs.select(range(cfg.full_dpo_pairs)).select_columns(
        [c for c in ("prompt", "chosen", "rejected") if c in prefs.column_names]
    )
    held = prefs.select(range(cfg.full_dpo_pairs, cfg.full_dpo_pairs + cfg.full_eval_prompts))
    base, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
    base.eval()
    prompts = [hub.as_text(ex, tok)["prompt"] for ex in held]
    questions = [hub.user_text(ex) for ex in held]
    rm, rm_tok = hub.load_reward_model(cfg.reward_model, device)
    out: dict = {"lrs": list(cfg.full_lrs), "pipelines": {}}
    scores = {}
    for lr in cfg.full_lrs:
        t0 = time.perf_counter()
        model, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
        args = SFTConfig(learning_rate=lr, **_common_args(cfg, seed, cuda, f"{output_dir}/sft-{lr:g}"))
        tr = SFTTrainer(model=model, args=args, train_dataset=sft_ds, processing_class=tok)
        tr.train()
        sft_model = tr.model.eval()
        sft_loss = [h["loss"] for h in tr.state.log_history if "loss" in h]
        torch.manual_seed(seed)
        comp = hub.generate(sft_model, tok, prompts, device, cfg.full_max_new_tokens, 1, sample=True)
        kl_sft = float(np.mean(_completion_logprob(sft_model, tok, prompts, comp, device)
                               - _completion_logprob(base, tok, prompts, comp, device)))
        ref_model, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
        ref_model.load_state_dict(sft_model.state_dict())
        ref_model.eval()
        dargs = DPOConfig(
            learning_rate=cfg.full_dpo_lr, beta=cfg.full_dpo_beta, loss_type=["sigmoid"],
            **_common_args(cfg, seed, cuda, f"{output_dir}/dpo-{lr:g}"),
        )
        dtr = DPOTrainer(model=sft_model, ref_model=ref_model, args=dargs, train_dataset=dpo_ds, processing_class=tok)
        dtr.train()
        final = dtr.model.eval()
        torch.manual_seed(seed)
        comp = hub.generate(final, tok, prompts, device, cfg.full_max_new_tokens, 1, sample=True)
        scores[lr] = hub.score(rm, rm_tok, questions, comp, device)
        out["pipelines"][f"{lr:g}"] = {
            "sft_loss": sft_loss,
            "kl_sft_base": kl_sft,
            "reward": float(scores[lr].mean()),
            "seconds": time.perf_counter() - t0,
        }
        del model, sft_model, ref_model, final, tr, dtr
        if cuda:
            torch.cuda.empty_cache()
    std, red = cfg.full_lrs
    out["win_rate_reduced_vs_standard"] = float(np.mean(scores[red] > scores[std]) + 0.5 * np.mean(scores[red] == scores[std]))
    return out
