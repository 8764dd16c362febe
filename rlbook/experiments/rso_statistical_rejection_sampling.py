r"""Chapter "Statistical Rejection Sampling Improves Preference Optimization" (RSO, arXiv 2309.06657).

Smoke profile: a contextual bandit (:mod:`rlbook.bandits`) of ``X`` prompts × ``Y`` responses
with a gold reward :math:`r^*\in[0,1]`, an SFT policy that puts most of its mass on mediocre
responses, and a fixed noisy "reward-ranking model" :math:`r_\psi=r^*+\varepsilon`. Three ways
to build preference pairs with the *same* budget of ``num_samples`` ranked responses per prompt
and round (RSO Sec. 3.1):

- **sft-sample-rank**: ``num_samples`` draws from :math:`\pi_{sft}` (SLiC's data);
- **rso-sample-rank**: ``num_candidates`` draws from :math:`\pi_{sft}`, then Algorithm 1
  (:func:`rlbook.sampling.rso_rejection_sample`) keeps ``num_samples`` of them;
- **direct**: pairs from a uniform behaviour policy (data written by "someone else").

Each set is paired "first-round-rank" (``num_samples/2`` disjoint pairs, labelled by
:math:`r_\psi`) and fitted with the sigmoid-norm and the hinge-norm loss
(:mod:`rlbook.losses.rso`) on a tabular policy initialised at :math:`\pi_{sft}`. Metrics are
exact expectations: gold reward, KL to :math:`\pi_{sft}` and :math:`\mathrm{KL}(\pi^*\|\pi)`.

Full profile (:func:`run_full`): sample candidates from a real SFT model, score them with a
reward model, build the two pair sets, train TRL ``DPOTrainer`` with ``loss_type="sigmoid"``
(sigmoid-norm) and ``"hinge"`` (hinge-norm) on each, and evaluate reward-model scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import hub
from rlbook import bandits as B
from rlbook import sampling as S
from rlbook.config import check

SAMPLERS = ("sft-sample-rank", "rso-sample-rank", "direct")
LOSSES = ("sigmoid-norm", "hinge-norm")


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_prompts: int = 32
    """``X``: prompts"""
    n_responses: int = 64
    """``Y``: candidate responses per prompt (the whole response space of the bandit)"""
    beta: float = 0.1
    """``β`` of the KL-regularised objective and of rejection sampling (on the [0, 1] reward scale)"""
    gamma: float = 1.0
    """``γ``: temperature of the sigmoid-norm / hinge-norm losses (RSO eq. 8, 10)"""
    ranker_noise: float = 0.05
    """std of the reward-ranking model's error, r_ψ = r* + N(0, σ²), fixed per response"""
    sft_temperature: float = 1.0
    """sharpness of π_sft around mediocre responses (larger: more mass on the mode)"""
    num_candidates: int = 64
    """candidates drawn from π_sft before rejection sampling (paper: 64)"""
    num_samples: int = 8
    """responses kept per prompt and round, paired first-round (paper: 8, so 4 pairs)"""
    rounds: int = 16
    """rounds of sampling per prompt (pairs = X × rounds × num_samples/2)"""
    steps: int = 400
    """Adam steps per learner"""
    batch_size: int = 256
    """pairs per step"""
    lr: float = 0.05
    """Adam learning rate"""
    sampler_proposals: int = 2_000_000
    """proposals of the exact-envelope sampler check (one prompt)"""
    # full profile (paper scale, one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: SFT policy π_sft (and DPO reference), a Hub name or a local folder"""
    dataset: str = "trl-lib/tldr"
    """*full*: prompt data set with a ``prompt`` column, a Hub name or a local ``save_to_disk`` folder"""
    reward_model: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: reward model r_ψ that scores (prompt, response), a Hub name or a local folder"""
    full_train_prompts: int = 2_000
    """*full*: prompts used to build preference pairs"""
    full_eval_prompts: int = 500
    """*full*: held-out prompts for the reward-model evaluation"""
    full_candidates: int = 16
    """*full*: responses sampled from π_sft per prompt (the catalog's budget; the paper uses 64)"""
    full_num_samples: int = 8
    """*full*: responses kept per prompt (by π_sft order or by rejection sampling) → 4 pairs"""
    full_beta: float = 0.5
    """*full*: rejection-sampling β on standardised rewards (paper: "we set β = 0.5")"""
    full_gamma: float = 0.05
    """*full*: loss temperature γ, TRL's ``beta`` (paper: "γ = 0.05")"""
    full_lr: float = 1e-6
    """*full*: learning rate (the chapter's choice; the paper: 1e-5 with Adafactor on T5)"""
    full_batch: int = 32
    """*full*: global batch (paper: "batch size 32")"""
    full_per_device_batch: int = 8
    """*full*: per-device batch (gradient accumulation makes up ``full_batch``)"""
    full_max_new_tokens: int = 128
    """*full*: generation length of candidates and evaluation responses"""
    full_temperature: float = 0.7
    """*full*: sampling temperature of the candidates (paper: "temperature=0.7 and top_k=40")"""
    full_top_k: int = 40
    """*full*: top-k of the candidate sampling (paper: 40)"""
    full_max_length: int = 1024
    """*full*: maximum prompt + completion tokens in training"""
    full_max_steps: int = -1
    """*full*: cap on optimiser steps (-1: one epoch; the dry-run test uses 1)"""

    def __post_init__(self) -> None:
        check(self.n_prompts >= 1 and self.n_responses >= 4, "n_prompts must be >= 1 and n_responses >= 4")
        check(self.beta > 0 and self.gamma > 0, "beta and gamma must be > 0")
        check(self.ranker_noise >= 0, "ranker_noise must be >= 0")
        check(self.sft_temperature > 0, "sft_temperature must be > 0")
        check(self.num_samples >= 2 and self.num_samples % 2 == 0, "num_samples must be even and >= 2")
        check(self.num_samples <= self.num_candidates, "num_samples must be <= num_candidates")
        check(self.rounds >= 1 and self.steps >= 1 and self.batch_size >= 1, "rounds, steps, batch_size must be >= 1")
        check(self.lr > 0, "lr must be > 0")
        check(self.sampler_proposals >= 1000, "sampler_proposals must be >= 1000")
        check(2 <= self.full_num_samples <= self.full_candidates and self.full_num_samples % 2 == 0,
              "full_num_samples must be even, >= 2 and <= full_candidates")
        check(self.full_beta > 0 and self.full_gamma > 0 and self.full_lr > 0, "full_beta, full_gamma, full_lr must be > 0")


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """The chapter's bandit and its reward-ranking model."""

    bandit: B.ContextualBandit
    """gold reward ``r: (X, Y)`` in [0, 1] and π_sft logits ``(X, Y)``"""
    r_psi: np.ndarray
    """``(X, Y)`` the reward-ranking model's scores, r* plus a fixed error"""
    beta: float
    """β of the target π*"""

    @property
    def pi_sft(self) -> np.ndarray:
        return self.bandit.ref_probs

    @property
    def pi_star(self) -> np.ndarray:
        """``(X, Y)`` the gold target π* ∝ π_sft exp(r*/β)."""
        return self.bandit.optimal_policy(self.beta)

    @property
    def pi_psi(self) -> np.ndarray:
        """``(X, Y)`` what rejection sampling with r_ψ targets: π_sft exp(r_ψ/β) normalised."""
        return B.kl_optimal_policy(self.pi_sft, self.r_psi, self.beta)


def build_world(cfg: Config, rng: np.random.Generator) -> World:
    r"""Gold rewards :math:`r^*\sim U[0,1]`; :math:`\pi_{sft}` logits peak at mediocre rewards.

    :math:`\log\pi_{sft}(y|x) = \tau\,(-12\,(r^*(x,y)-0.4)^2 + \xi_{x,y}) + c`, :math:`\xi\sim N(0,1)`:
    the SFT model writes mostly average responses and rarely the best ones (the five best
    responses of a prompt get about 0.1 % of its mass each, the mode 5-10 %).
    """
    X, Y = cfg.n_prompts, cfg.n_responses
    r = rng.random((X, Y))
    logits = cfg.sft_temperature * (-12.0 * (r - 0.4) ** 2 + rng.standard_normal((X, Y)))
    r_psi = r + cfg.ranker_noise * rng.standard_normal((X, Y))
    return World(B.ContextualBandit(r=r, ref_logits=logits), r_psi, cfg.beta)


# ----------------------------------------------------------------------------- data


def make_pairs(world: World, sampler: str, cfg: Config, rng: np.random.Generator) -> B.Pairs:
    """Preference pairs of one sampler: ``X × rounds × num_samples/2`` pairs labelled by r_ψ (hard ranking).

    Every sampler spends the same labelling budget: ``num_samples`` ranked responses per
    prompt and round, paired first-round (RSO's "first-round-rank").
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    X, Y, k = world.bandit.X, world.bandit.Y, cfg.num_samples
    x = np.repeat(np.arange(X), cfg.rounds)  # (X * rounds,) one row per (prompt, round)
    if sampler == "sft-sample-rank":
        y = np.stack([world.bandit.sample(world.pi_sft, x, rng) for _ in range(k)], -1)  # (R, k)
    elif sampler == "direct":
        y = rng.integers(0, Y, size=(len(x), k))
    else:
        cand = np.stack([world.bandit.sample(world.pi_sft, x, rng) for _ in range(cfg.num_candidates)], -1)  # (R, N)
        pos = S.rso_rejection_sample(world.r_psi[x[:, None], cand], k, world.beta, rng)  # (R, k)
        y = np.take_along_axis(cand, pos, -1)
    y = y[np.arange(len(x))[:, None], rng.permuted(np.tile(np.arange(k), (len(x), 1)), axis=1)]  # random order
    a, b = S.first_round_pairs(y)  # (R, k/2) each
    xx = np.repeat(x, k // 2)
    a, b = a.ravel(), b.ravel()
    first = world.r_psi[xx, a] >= world.r_psi[xx, b]
    keep = a != b  # a pair of two identical responses carries no preference
    return B.Pairs(x=xx[keep], yw=np.where(first, a, b)[keep], yl=np.where(first, b, a)[keep])


# ----------------------------------------------------------------------------- training


def train(world: World, pairs: B.Pairs, loss: str, cfg: Config, seed: int) -> np.ndarray:
    """Fit a tabular policy (logits ``(X, Y)`` initialised at log π_sft) on ``pairs``; returns its probabilities.

    ``loss``: ``"sigmoid-norm"`` (:func:`rlbook.losses.rso.sigmoid_norm_loss`) or
    ``"hinge-norm"`` (:func:`rlbook.losses.rso.hinge_norm_loss`), temperature ``cfg.gamma``;
    Adam, ``cfg.steps`` minibatches of ``cfg.batch_size`` pairs drawn with replacement.
    """
    import torch

    from rlbook.losses import rso

    fn = {"sigmoid-norm": rso.sigmoid_norm_loss, "hinge-norm": rso.hinge_norm_loss}.get(loss)
    if fn is None:
        raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    g = torch.Generator().manual_seed(seed)
    logp_ref = torch.log_softmax(torch.as_tensor(world.bandit.ref_logits), -1)  # (X, Y)
    theta = logp_ref.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    x, w, l_ = (torch.as_tensor(a) for a in (pairs.x, pairs.yw, pairs.yl))
    for _ in range(cfg.steps):
        i = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        logp = torch.log_softmax(theta, -1)
        xi, wi, li = x[i], w[i], l_[i]
        value, _ = fn(logp[xi, wi], logp_ref[xi, wi], logp[xi, li], logp_ref[xi, li], cfg.gamma)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return torch.softmax(theta.detach(), -1).numpy()


def evaluate(world: World, probs: np.ndarray) -> dict[str, float]:
    """Exact metrics of a policy ``(X, Y)``: gold reward, KL(π‖π_sft), KL(π*‖π) (means over prompts)."""
    return {
        "gold_reward": world.bandit.expected_reward(probs),
        "kl_to_sft": world.bandit.kl_to_ref(probs),
        "kl_from_star": float(B.kl(world.pi_star, probs).mean()),
    }


def run_smoke(cfg: Config, seed: int, samplers=SAMPLERS, loss_names=LOSSES) -> dict:
    """The whole grid for one seed: world, pair sets, one learner per (sampler, loss), metrics.

    Returns ``{"world", "pairs": {sampler: Pairs}, "policies": {(sampler, loss): probs},
    "metrics": {(sampler, loss): dict}, "seconds"}``.
    """
    t0 = time.perf_counter()
    world = build_world(cfg, np.random.default_rng([seed, 0]))
    pairs = {s: make_pairs(world, s, cfg, np.random.default_rng([seed, 1, i])) for i, s in enumerate(samplers)}
    policies = {(s, lo): train(world, pairs[s], lo, cfg, seed) for s in samplers for lo in loss_names}
    metrics = {k: evaluate(world, p) for k, p in policies.items()}
    return {"world": world, "pairs": pairs, "policies": policies, "metrics": metrics,
            "seconds": time.perf_counter() - t0}


def finite_candidate_tv(world: World, prompt: int, n_candidates, reps: int, rng: np.random.Generator) -> np.ndarray:
    r"""TV between the first accepted sample of Algorithm 1 and π_r, for each candidate-list size.

    For each ``N`` in ``n_candidates``: ``reps`` independent lists of ``N`` candidates from
    :math:`\pi_{sft}` (one prompt), Algorithm 1 with ``num_samples = 1`` using the *gold* reward,
    and the TV distance of the accepted responses' histogram to the exact π* (sampling noise
    included: ``reps`` should be large). Returns ``(len(n_candidates),)``.
    """
    p, r = world.pi_sft[prompt], world.bandit.r[prompt]
    out = []
    for n in n_candidates:
        cand = rng.choice(len(r), size=(reps, n), p=p)
        pos = S.rso_rejection_sample(r[cand], 1, world.beta, rng)[:, 0]
        acc = cand[np.arange(reps), pos]
        out.append(S.total_variation(S.empirical_distribution(acc, len(r)), world.pi_star[prompt]))
    return np.array(out)


# ----------------------------------------------------------------------------- full profile


def _load_prompts(name_or_path: str, split: str = "train"):
    """A prompt data set (``prompt`` column) from the Hub or a local ``save_to_disk`` folder."""
    import os

    import datasets

    if os.path.isdir(name_or_path):
        ds = datasets.load_from_disk(name_or_path)
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    return datasets.load_dataset(name_or_path, split=split)


def _prompt_text(example: dict, tok) -> str:
    """The prompt as text (chat template applied when the prompt is a list of messages)."""
    pr = example["prompt"]
    if isinstance(pr, str):
        return pr
    return tok.apply_chat_template(pr, tokenize=False, add_generation_prompt=True)


def _sample(model, tok, prompts: list[str], n: int, cfg: Config, device: str, batch: int = 16) -> list[list[str]]:
    """``n`` sampled completions (temperature, top-k of ``cfg``) per prompt: ``[len(prompts)][n]`` text."""
    import torch

    out = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(
                **enc, do_sample=True, temperature=cfg.full_temperature, top_k=cfg.full_top_k, top_p=1.0,
                max_new_tokens=cfg.full_max_new_tokens, num_return_sequences=n, pad_token_id=tok.pad_token_id,
            )
        text = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out += [text[j * n : (j + 1) * n] for j in range(len(text) // n)]
    return out


def build_pair_sets(prompts: list[str], cands: list[list[str]], scores: np.ndarray, cfg: Config,
                    rng: np.random.Generator) -> dict[str, list[dict]]:
    """sft-sample-rank and rso-sample-rank pair sets from scored candidates.

    ``scores: (P, N)`` reward-model scores of ``cands``. Rewards are standardised per prompt
    before rejection sampling (so ``full_beta`` is on a unit scale). sft-sample-rank keeps the
    first ``full_num_samples`` candidates (i.i.d. π_sft samples); rso-sample-rank keeps the
    ``full_num_samples`` chosen by Algorithm 1. Both are paired first-round and labelled by
    the reward model. Returns ``{name: [{"prompt", "chosen", "rejected"}, ...]}``.
    """
    k = cfg.full_num_samples
    z = (scores - scores.mean(-1, keepdims=True)) / (scores.std(-1, keepdims=True) + 1e-6)
    P = len(prompts)
    picks = {
        "sft-sample-rank": np.tile(np.arange(k), (P, 1)),
        "rso-sample-rank": S.rso_rejection_sample(z, k, cfg.full_beta, rng),
    }
    sets = {}
    for name, pos in picks.items():
        rows = []
        pos = rng.permuted(pos, axis=1)
        a, b = S.first_round_pairs(pos)
        for i in range(P):
            for ia, ib in zip(a[i], b[i]):
                w, l_ = (ia, ib) if scores[i, ia] >= scores[i, ib] else (ib, ia)
                if cands[i][w] != cands[i][l_]:
                    rows.append({"prompt": prompts[i], "chosen": cands[i][w], "rejected": cands[i][l_]})
        sets[name] = rows
    return sets


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The paper-scale run: sample, score, rejection-sample, then 4 TRL ``DPOTrainer`` runs.

    1. ``cfg.full_candidates`` samples per prompt from ``cfg.model`` (= π_sft) on
       ``cfg.full_train_prompts`` prompts of ``cfg.dataset``, scored by ``cfg.reward_model``.
    2. sft-sample-rank and rso-sample-rank pair sets (:func:`build_pair_sets`).
    3. ``DPOTrainer`` with ``loss_type=["sigmoid"]`` (sigmoid-norm, RSO eq. 8) and
       ``["hinge"]`` (hinge-norm, eq. 10), ``beta = cfg.full_gamma`` (γ), one epoch each.
    4. Mean reward-model score of one temperature-``full_temperature`` sample per held-out
       prompt, and the win rate against π_sft's sample for the same prompt.

    Returns plain numbers: ``{"pairs": {set: n}, "runs": {f"{loss}/{set}": {...}}, "sft": {...}}``.
    """
    import torch
    from trl import DPOConfig, DPOTrainer

    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    ds = _load_prompts(cfg.dataset).shuffle(seed=seed)
    need = cfg.full_train_prompts + cfg.full_eval_prompts
    if len(ds) < need:
        raise ValueError(f"{cfg.dataset} has {len(ds)} rows, need {need}")
    sft, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
    sft.eval()
    rm, rm_tok = hub.load_reward_model(cfg.reward_model, device)
    train_rows = ds.select(range(cfg.full_train_prompts))
    eval_rows = ds.select(range(cfg.full_train_prompts, need))
    prompts = [_prompt_text(ex, tok) for ex in train_rows]
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    cands = _sample(sft, tok, prompts, cfg.full_candidates, cfg, device)
    flat = [c for cs in cands for c in cs]
    scores = hub.score(rm, rm_tok, [p for p in prompts for _ in range(cfg.full_candidates)], flat, device)
    scores = scores.reshape(len(prompts), cfg.full_candidates)
    sample_s = time.perf_counter() - t0
    sets = build_pair_sets(prompts, cands, scores, cfg, np.random.default_rng([seed, 1]))
    eval_prompts = [_prompt_text(ex, tok) for ex in eval_rows]
    torch.manual_seed(seed + 1)
    sft_ans = [c[0] for c in _sample(sft, tok, eval_prompts, 1, cfg, device)]
    sft_scores = hub.score(rm, rm_tok, eval_prompts, sft_ans, device)
    del sft
    import datasets

    accum = max(1, cfg.full_batch // cfg.full_per_device_batch)
    runs = {}
    for loss_type, loss_name in (("sigmoid", "sigmoid-norm"), ("hinge", "hinge-norm")):
        for set_name, rows in sets.items():
            model, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
            ref, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
            args = DPOConfig(
                output_dir=f"{output_dir}/{loss_name}-{set_name}",
                beta=cfg.full_gamma,  # RSO's γ ("γ = 0.05")
                loss_type=[loss_type],  # "sigmoid" = sigmoid-norm (eq. 8), "hinge" = hinge-norm (eq. 10)
                learning_rate=cfg.full_lr,
                num_train_epochs=1,
                max_steps=cfg.full_max_steps,
                per_device_train_batch_size=cfg.full_per_device_batch,
                gradient_accumulation_steps=accum,
                max_length=cfg.full_max_length,
                lr_scheduler_type="linear",
                warmup_steps=0.1,
                logging_steps=10,
                **hub.trl_offline(cuda, seed),
            )
            trainer = DPOTrainer(model=model, ref_model=ref, args=args,
                                 train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
            t1 = time.perf_counter()
            trainer.train()
            train_s = time.perf_counter() - t1
            policy = trainer.model.eval()
            torch.manual_seed(seed + 1)
            ans = [c[0] for c in _sample(policy, tok, eval_prompts, 1, cfg, device)]
            sc = hub.score(rm, rm_tok, eval_prompts, ans, device)
            runs[f"{loss_name}/{set_name}"] = {
                "reward": float(sc.mean()),
                "reward_se": float(sc.std(ddof=1) / np.sqrt(len(sc))) if len(sc) > 1 else float("nan"),
                "win_rate_vs_sft": float(np.mean(sc > sft_scores) + 0.5 * np.mean(sc == sft_scores)),
                "train_seconds": train_s,
            }
            del trainer, model, ref, policy
            if cuda:
                torch.cuda.empty_cache()
    return {
        "pairs": {k: len(v) for k, v in sets.items()},
        "runs": runs,
        "sft": {"reward": float(sft_scores.mean())},
        "sample_seconds": sample_s,
        "candidate_scores": scores,
    }
