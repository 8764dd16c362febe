r"""Chapter "A Technical Survey of Reinforcement Learning Techniques for Large Language Models" (arXiv 2507.04136).

The survey organises RL for LLMs along three axes: the *reward source* (human preferences,
AI feedback, verifiable outcomes), the *feedback mechanism* (pairwise comparisons, a
learned scalar reward, a binary verifier) and the *optimiser* (PPO with a reward model and
a critic, direct preference optimisation, critic-free group methods). The smoke profile
runs four pipelines, one per cell of that table that the survey dwells on, on ONE shared
contextual bandit built from integer-addition prompts (:class:`World`):

- **RLHF**: human pairwise preferences → Bradley-Terry reward model → PPO (clipped
  surrogate, per-prompt critic, KL to the base folded into the reward);
- **RLAIF**: the same pipeline, the preferences coming from a noisy AI judge;
- **DPO**: the same human preferences, no reward model, no sampling;
- **GRPO**: a verifiable exact-match reward, group-normalised advantages, no critic.

The policy is a tabular softmax over each prompt's candidate answers (a "language model"
whose every response is one arm), so gold accuracy, KL and mean length are exact sums.

Full profile (:func:`run_full`): the same four optimisers with TRL on a real model
(``GRPOTrainer`` on GSM8K, ``DPOTrainer`` on UltraFeedback pairs, ``RewardTrainer`` then
``RLOOTrainer``), scored by GSM8K exact match and response length.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rlbook import hub
from rlbook import bandits
from rlbook.config import check
from rlbook.rewards import fit_bt_linear
from rlbook.tasks import AdditionTask

PIPELINES = ("rlhf", "rlaif", "dpo", "grpo")
"""the four pipelines of the smoke profile"""

ANSWER_OFFSETS = (0, 1, 2, 10, 11, 20)
"""candidate answers of a prompt: the sum plus each offset (offset 0 is the correct one)"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_prompts: int = 40
    """addition prompts ``a+b=`` (operands 10..49)"""
    base_accuracy_logit: float = 1.0
    """logit bonus of the correct candidates under the base policy (sets base accuracy near 0.4)"""
    ref_logit_std: float = 0.6
    """std of the random part of the base logits"""
    filler_min: int = 3
    """fewest filler tokens of a padded candidate"""
    filler_max: int = 8
    """most filler tokens of a padded candidate"""
    human_correct: float = 2.5
    """Bradley-Terry weight of correctness in the human labels"""
    human_length: float = 0.3
    """Bradley-Terry weight per filler token in the human labels (the verbosity bias)"""
    judge_agreement: float = 0.7
    """probability that the AI judge prefers the correct answer of a mixed pair (ties: a coin)"""
    rm_noise_features: int = 4
    """random style features the linear reward model also sees (gold weight 0)"""
    n_pairs: int = 1000
    """preference pairs (both responses from the base policy)"""
    beta: float = 0.05
    """KL strength of PPO (in the reward), of GRPO (k3 term) and of DPO"""
    updates: int = 150
    """optimiser updates of every pipeline (PPO/GRPO: one fresh batch each)"""
    group: int = 8
    """``G``: samples per prompt and update (PPO and GRPO)"""
    epochs: int = 2
    """PPO/GRPO epochs over each batch (2 keeps the smoke profile fast; 4 gives the same claims)"""
    clip_eps: float = 0.2
    """``ε`` of the clipped surrogate"""
    lr: float = 0.05
    """Adam learning rate of the policy logits (all pipelines)"""
    critic_lr: float = 0.1
    """Adam learning rate of PPO's per-prompt value table"""
    rm_steps: int = 300
    """Adam steps of the Bradley-Terry reward-model fit"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: policy (and reference), a Hub name or a local folder"""
    full_math_data: str = "openai/gsm8k"
    """*full*: verifiable-reward data set (``question``/``answer`` with ``#### n``), Hub name or ``save_to_disk`` folder"""
    full_math_config: str = "main"
    """*full*: configuration name of the GSM8K data set on the Hub"""
    full_pref_data: str = "HuggingFaceH4/ultrafeedback_binarized"
    """*full*: preference data set (``prompt``/``chosen``/``rejected``), Hub name or folder"""
    full_pref_split: str = "train_prefs"
    """*full*: split of the preference data set"""
    full_pairs: int = 5000
    """*full*: preference pairs for DPO and for the reward model"""
    full_grpo_steps: int = 200
    """*full*: GRPOTrainer steps (catalog: ~25 min on one H100)"""
    full_rloo_steps: int = 200
    """*full*: RLOOTrainer steps"""
    full_group: int = 8
    """*full*: completions per prompt (GRPO and RLOO)"""
    full_prompts_per_step: int = 16
    """*full*: prompts per optimiser step (GRPO and RLOO)"""
    full_lr: float = 1e-6
    """*full*: learning rate of GRPO and RLOO"""
    full_dpo_lr: float = 5e-7
    """*full*: learning rate of DPO"""
    full_rm_lr: float = 1e-5
    """*full*: learning rate of the reward model"""
    full_beta: float = 0.04
    """*full*: KL strength (GRPO/RLOO ``beta``); DPO uses 0.1"""
    full_max_completion: int = 256
    """*full*: generated tokens per completion"""
    full_eval_problems: int = 500
    """*full*: GSM8K test problems for accuracy and length"""
    full_per_device_batch: int = 8
    """*full*: per-device batch of DPO and the reward model"""
    full_max_length: int = 1024
    """*full*: maximum prompt+completion tokens for DPO and the reward model"""

    def __post_init__(self) -> None:
        check(self.n_prompts >= 2, "n_prompts must be >= 2")
        check(1 <= self.filler_min <= self.filler_max <= 20, "need 1 <= filler_min <= filler_max <= 20")
        check(self.human_correct > 0 and self.human_length >= 0, "human_correct > 0 and human_length >= 0")
        check(0.5 <= self.judge_agreement <= 1.0, "judge_agreement must be in [0.5, 1]")
        check(self.rm_noise_features >= 0, "rm_noise_features must be >= 0")
        check(self.n_pairs >= 10, "n_pairs must be >= 10")
        check(self.beta > 0, "beta must be > 0")
        check(self.updates >= 1 and self.epochs >= 1, "updates and epochs must be >= 1")
        check(self.group >= 2, "group must be >= 2 (GRPO normalises within a group)")
        check(0 < self.clip_eps < 1, "clip_eps must be in (0, 1)")
        check(self.lr > 0 and self.critic_lr > 0, "learning rates must be > 0")
        check(self.rm_steps >= 1, "rm_steps must be >= 1")


# ----------------------------------------------------------------------------- the shared testbed


@dataclass
class World:
    """The shared testbed: ``X`` addition prompts with ``Y = 12`` candidate responses each."""

    prompts: list
    """``(X,)`` the prompt strings ``"a+b="``"""
    texts: list
    """``X`` lists of ``Y`` candidate response strings"""
    correct: np.ndarray
    """``(X, Y)`` bool: the exact-match verifier's verdict"""
    kind: np.ndarray
    """``(X, Y)`` int: which answer (index into :data:`ANSWER_OFFSETS`, 0 = correct)"""
    filler: np.ndarray
    """``(X, Y)`` int: filler tokens appended to the answer (0 = bare)"""
    length: np.ndarray
    """``(X, Y)`` response length in tokens (characters)"""
    phi: np.ndarray
    """``(X, Y, d)`` the reward model's features: answer one-hot, filler/4, random style"""
    ref_logits: np.ndarray
    """``(X, Y)`` the base (SFT) policy's logits"""

    @property
    def ref_probs(self) -> np.ndarray:
        return bandits.softmax(self.ref_logits)


def verify(prompt: str, response: str) -> bool:
    """Exact match of the first number of ``response`` with ``a+b`` (filler ignored)."""
    m = re.match(r"\s*(\d+)", response)
    a, b = (int(t) for t in prompt.rstrip("=").split("+"))
    return m is not None and int(m.group(1)) == a + b


def build_world(cfg: Config, rng: np.random.Generator) -> World:
    """Prompts from :class:`rlbook.tasks.AdditionTask`; candidates = 6 answers × {bare, padded}.

    A padded candidate is the answer followed by ``f ~ U{filler_min..filler_max}`` filler
    tokens (``" ..."``-style); its correctness is unchanged. Base logits: ``N(0, std²)`` plus
    ``base_accuracy_logit`` on the correct candidates; bare and padded are equally likely a
    priori, so the base policy has no length preference.
    """
    task = AdditionTask(max_operand=49)
    probs = [p for p in task.sample(4 * cfg.n_prompts, rng) if min(p.numbers) >= 10][: cfg.n_prompts]
    while len(probs) < cfg.n_prompts:  # pragma: no cover - 4x oversampling practically always suffices
        probs += [p for p in task.sample(cfg.n_prompts, rng) if min(p.numbers) >= 10]
    probs = probs[: cfg.n_prompts]
    X, A = cfg.n_prompts, len(ANSWER_OFFSETS)
    Y = 2 * A
    kind = np.tile(np.arange(A), 2)[None, :].repeat(X, 0)  # (X, Y)
    filler = np.zeros((X, Y), dtype=int)
    filler[:, A:] = rng.integers(cfg.filler_min, cfg.filler_max + 1, size=(X, A))
    texts, correct = [], np.zeros((X, Y), dtype=bool)
    for x, p in enumerate(probs):
        row = []
        for y in range(Y):
            ans = str(p.target + ANSWER_OFFSETS[kind[x, y]])
            row.append(ans + (" " + "." * (filler[x, y] - 1) if filler[x, y] else ""))
            correct[x, y] = verify(p.prompt, row[-1])
        texts.append(row)
    length = np.array([[len(t) for t in row] for row in texts])
    onehot = np.eye(A)[kind]  # (X, Y, A)
    noise = rng.standard_normal((X, Y, cfg.rm_noise_features))
    phi = np.concatenate([onehot, filler[..., None] / 4.0, noise], axis=-1)
    ref_logits = rng.normal(0.0, cfg.ref_logit_std, size=(X, Y)) + cfg.base_accuracy_logit * correct
    return World([p.prompt for p in probs], texts, correct, kind, filler, length, phi, ref_logits)


def human_pairs(world: World, cfg: Config, rng: np.random.Generator) -> bandits.Pairs:
    r"""``n_pairs`` pairs from the base policy, labelled by a human Bradley-Terry rater.

    :math:`P(y_1\succ y_2)=\sigma\big(a\,(c_1-c_2)+b\,(f_1-f_2)\big)`: ``a = human_correct``
    on correctness ``c`` and ``b = human_length`` per filler token ``f`` (the rater likes
    longer answers: a reward the gold verifier does not share).
    """
    cb = bandits.ContextualBandit(r=cfg.human_correct * world.correct + cfg.human_length * world.filler,
                                  ref_logits=world.ref_logits)
    x, y1, y2 = cb.sample_pairs(cfg.n_pairs, rng)
    return cb.label(x, y1, y2, rng)


def ai_judge_relabel(world: World, pairs: bandits.Pairs, agreement: float, rng: np.random.Generator) -> bandits.Pairs:
    """The same response pairs relabelled by a noisy AI judge (RLAIF).

    On a pair that mixes a correct and a wrong answer the judge prefers the correct one with
    probability ``agreement``; on a pair of equal correctness it flips a coin. No length bias.
    """
    y1, y2 = pairs.yw, pairs.yl  # order is irrelevant: relabelled from scratch
    c1, c2 = world.correct[pairs.x, y1], world.correct[pairs.x, y2]
    p_first = np.where(c1 == c2, 0.5, np.where(c1, agreement, 1.0 - agreement))
    first = rng.random(len(pairs)) < p_first
    return bandits.Pairs(x=pairs.x, yw=np.where(first, y1, y2), yl=np.where(first, y2, y1))


def fit_reward_model(world: World, pairs: bandits.Pairs, cfg: Config, seed: int) -> np.ndarray:
    """Linear Bradley-Terry reward model on :attr:`World.phi` (:func:`rlbook.rewards.fit_bt_linear`).

    Returns the proxy reward table ``(X, Y)``.
    """
    w = fit_bt_linear(world.phi[pairs.x, pairs.yw], world.phi[pairs.x, pairs.yl], steps=cfg.rm_steps, seed=seed)
    return world.phi @ w


# ----------------------------------------------------------------------------- optimisers


@dataclass
class Run:
    """One pipeline's training trace (exact metrics after every update)."""

    name: str
    """pipeline name"""
    logits: np.ndarray = None
    """``(X, Y)`` final policy logits"""
    accuracy: list = field(default_factory=list)
    """gold accuracy :math:`\\mathbb E_\\pi[c]`, mean over prompts, index 0 = base"""
    kl: list = field(default_factory=list)
    """KL(π‖π_base), mean over prompts"""
    length: list = field(default_factory=list)
    """mean response length in tokens"""
    proxy: list = field(default_factory=list)
    """expected score of the pipeline's own reward (RM score, or verifier for GRPO)"""
    seconds: float = 0.0
    """wall time"""


def _log(run: Run, z: Tensor, world: World, proxy: np.ndarray) -> None:
    p = bandits.softmax(z.detach().double().numpy())
    run.accuracy.append(float((p * world.correct).sum(-1).mean()))
    run.kl.append(float(bandits.kl(p, world.ref_probs).mean()))
    run.length.append(float((p * world.length).sum(-1).mean()))
    run.proxy.append(float((p * proxy).sum(-1).mean()))


def _sample(z: Tensor, G: int, gen: torch.Generator) -> Tensor:
    """``(X, G)`` responses drawn from the softmax of ``z: (X, Y)``."""
    with torch.no_grad():
        return torch.multinomial(torch.softmax(z, -1), G, replacement=True, generator=gen)


def train_ppo(world: World, reward: np.ndarray, cfg: Config, seed: int, name: str = "rlhf") -> Run:
    r"""RLHF's optimiser: PPO on a learned reward with a per-prompt critic and a KL-penalised reward.

    Per update: draw ``G`` responses per prompt; reward
    :math:`\tilde r = r_\phi(x,y) - \beta\,(\log\pi_{old}(y|x)-\log\pi_{ref}(y|x))` (InstructGPT
    eq. 2); advantage :math:`A=\tilde r - V_\psi(x)`, whitened over the batch; then ``epochs``
    passes of :func:`rlbook.losses.ppo.ppo_clip_loss` on the logits and
    :func:`rlbook.losses.ppo.value_loss` on the critic table ``V_ψ: (X,)``.
    """
    from rlbook.losses.ppo import ppo_clip_loss, value_loss

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    z = torch.tensor(world.ref_logits).requires_grad_(True)
    v = torch.zeros(world.ref_logits.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    opt_v = torch.optim.Adam([v], lr=cfg.critic_lr)
    logp_ref = torch.log_softmax(torch.tensor(world.ref_logits), -1)
    r_table = torch.tensor(reward)
    X, G = z.shape[0], cfg.group
    rows = torch.arange(X)[:, None].expand(X, G)
    run = Run(name)
    _log(run, z, world, reward)
    for _ in range(cfg.updates):
        y = _sample(z, G, gen)  # (X, G)
        with torch.no_grad():
            logp_old = torch.log_softmax(z, -1)[rows, y]  # (X, G)
            r = r_table[rows, y] - cfg.beta * (logp_old - logp_ref[rows, y])  # (X, G)
            adv = r - v[:, None]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ones = torch.ones(X * G, 1, dtype=torch.float64)
        for _ in range(cfg.epochs):
            logp = torch.log_softmax(z, -1)[rows, y]
            loss, _ = ppo_clip_loss(logp.reshape(-1, 1), logp_old.reshape(-1, 1), adv.reshape(-1, 1), ones, cfg.clip_eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
            lv = value_loss(v[:, None].expand(X, G).reshape(-1, 1), r.reshape(-1, 1), ones)
            opt_v.zero_grad()
            lv.backward()
            opt_v.step()
        _log(run, z, world, reward)
    run.logits = z.detach().numpy()
    run.seconds = time.perf_counter() - t0
    return run


def train_grpo(world: World, cfg: Config, seed: int) -> Run:
    r"""RLVR's optimiser: GRPO with the exact-match verifier, no reward model, no critic.

    Per update: ``G`` responses per prompt, reward :math:`r=\mathbb 1\{\text{verify}(x,y)\}`,
    advantage :func:`rlbook.losses.group_normalise`, then ``epochs`` passes of
    :func:`rlbook.losses.grpo_loss` with the k3 KL to the base (strength ``beta``).
    """
    from rlbook.losses import grpo_loss, group_normalise

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    z = torch.tensor(world.ref_logits).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    logp_ref = torch.log_softmax(torch.tensor(world.ref_logits), -1)
    c = torch.tensor(world.correct, dtype=torch.float64)
    X, G = z.shape[0], cfg.group
    rows = torch.arange(X)[:, None].expand(X, G)
    run = Run("grpo")
    _log(run, z, world, world.correct.astype(float))
    for _ in range(cfg.updates):
        y = _sample(z, G, gen)
        with torch.no_grad():
            logp_old = torch.log_softmax(z, -1)[rows, y].reshape(-1, 1)  # (X*G, 1)
            adv = group_normalise(c[rows, y]).reshape(-1)  # (X*G,)
        ones = torch.ones(X * G, 1, dtype=torch.float64)
        for _ in range(cfg.epochs):
            logp = torch.log_softmax(z, -1)[rows, y].reshape(-1, 1)
            loss, _ = grpo_loss(logp, logp_old, adv, ones, cfg.clip_eps, cfg.clip_eps, cfg.beta,
                                logp_ref[rows, y].reshape(-1, 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        _log(run, z, world, world.correct.astype(float))
    run.logits = z.detach().numpy()
    run.seconds = time.perf_counter() - t0
    return run


def train_dpo(world: World, pairs: bandits.Pairs, cfg: Config, proxy: np.ndarray) -> Run:
    """Direct preference optimisation on the human pairs: full-batch Adam on :func:`rlbook.losses.dpo_loss`.

    ``proxy`` (the RLHF reward model) is only used to log the proxy reward, for comparison.
    """
    from rlbook.losses import dpo_loss

    t0 = time.perf_counter()
    z = torch.tensor(world.ref_logits).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    logp_ref = torch.log_softmax(torch.tensor(world.ref_logits), -1)
    x, w, l_ = (torch.as_tensor(a) for a in (pairs.x, pairs.yw, pairs.yl))
    run = Run("dpo")
    _log(run, z, world, proxy)
    for _ in range(cfg.updates):
        logp = torch.log_softmax(z, -1)
        loss, _ = dpo_loss(logp[x, w], logp_ref[x, w], logp[x, l_], logp_ref[x, l_], cfg.beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _log(run, z, world, proxy)
    run.logits = z.detach().numpy()
    run.seconds = time.perf_counter() - t0
    return run


def run_smoke(cfg: Config, seed: int) -> dict:
    """All four pipelines on one world for one seed.

    Returns ``{"world", "pairs", "ai_pairs", "rm", "rm_ai", "runs": {name: Run}}``.
    """
    world = build_world(cfg, np.random.default_rng([seed, 0]))
    pairs = human_pairs(world, cfg, np.random.default_rng([seed, 1]))
    ai_pairs = ai_judge_relabel(world, pairs, cfg.judge_agreement, np.random.default_rng([seed, 2]))
    rm = fit_reward_model(world, pairs, cfg, seed)
    rm_ai = fit_reward_model(world, ai_pairs, cfg, seed)
    runs = {
        "rlhf": train_ppo(world, rm, cfg, seed, "rlhf"),
        "rlaif": train_ppo(world, rm_ai, cfg, seed, "rlaif"),
        "dpo": train_dpo(world, pairs, cfg, rm),
        "grpo": train_grpo(world, cfg, seed),
    }
    return {"world": world, "pairs": pairs, "ai_pairs": ai_pairs, "rm": rm, "rm_ai": rm_ai, "runs": runs}


def summary(run: Run) -> dict:
    """Start and end values of a run: accuracy gain, relative length change, proxy gain, final KL."""
    return {
        "accuracy": run.accuracy[-1],
        "accuracy_gain": run.accuracy[-1] - run.accuracy[0],
        "length_change": run.length[-1] / run.length[0] - 1.0,
        "proxy_gain": run.proxy[-1] - run.proxy[0],
        "kl": run.kl[-1],
    }


# ----------------------------------------------------------------------------- the derivation


def dpo_population_optimum(ref_probs: np.ndarray, r: np.ndarray, beta: float, iters: int = 200) -> np.ndarray:
    r"""Minimise the *population* DPO loss on a K-armed bandit exactly (float64 L-BFGS).

    Pairs :math:`y_1,y_2\sim\pi_{ref}` labelled by Bradley-Terry on ``r``:
    :math:`\mathcal L(\theta)=-\sum_{i,j}\pi_{ref}(i)\pi_{ref}(j)\big[\sigma(r_i-r_j)\log\sigma(h_i-h_j)\big]`
    with :math:`h=\beta\log\frac{\pi_\theta}{\pi_{ref}}`. Its minimiser is
    :math:`\pi_{ref}e^{r/\beta}/Z` (DPO paper, Sec. 4-5), the KL-regularised RLHF optimum.
    ``ref_probs, r: (K,)`` → the minimising policy ``(K,)``.
    """
    import torch.nn.functional as F

    ref = torch.tensor(ref_probs, dtype=torch.float64)
    rr = torch.tensor(r, dtype=torch.float64)
    wgt = ref[:, None] * ref[None, :]  # (K, K)
    p_first = torch.sigmoid(rr[:, None] - rr[None, :])  # (K, K): P(i beats j)
    theta = torch.log(ref).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=iters, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        h = beta * (torch.log_softmax(theta, -1) - torch.log(ref))
        d = h[:, None] - h[None, :]
        loss = -(wgt * p_first * F.logsigmoid(d)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta, -1).detach().numpy()


def kl_regularised_ascent(ref_probs: np.ndarray, r: np.ndarray, beta: float, iters: int = 200) -> np.ndarray:
    r"""Maximise :math:`\mathbb E_\pi[r]-\beta\,\mathrm{KL}(\pi\|\pi_{ref})` by L-BFGS on the logits (the RLHF objective).

    ``ref_probs, r: (K,)`` → the maximising policy ``(K,)`` (compare with
    :func:`rlbook.bandits.kl_optimal_policy`).
    """
    ref = torch.tensor(ref_probs, dtype=torch.float64)
    rr = torch.tensor(r, dtype=torch.float64)
    theta = torch.zeros_like(ref).requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=iters, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(theta, -1)
        p = logp.exp()
        loss = -((p * rr).sum() - beta * (p * (logp - torch.log(ref))).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta, -1).detach().numpy()


# ----------------------------------------------------------------------------- full profile (TRL, one GPU)

GSM8K_INSTRUCTION = "Solve the problem. End your answer with '#### <number>'."
"""*full*: the instruction appended to every GSM8K question"""


def gsm8k_target(answer: str) -> str:
    """The number after ``####`` in a GSM8K solution (commas removed)."""
    return answer.split("####")[-1].strip().replace(",", "")


def extract_number(text: str) -> str | None:
    """The number after the last ``####`` of a completion, else its last number (commas removed)."""
    tail = text.split("####")[-1] if "####" in text else text
    nums = re.findall(r"-?\d[\d,]*\.?\d*", tail)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def exact_match_reward(completions, target, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when the completion's final number equals ``target`` (GSM8K exact match)."""
    out = []
    for c, t in zip(completions, target):
        text = c if isinstance(c, str) else c[-1]["content"]
        n = extract_number(text)
        try:
            ok = n is not None and float(n) == float(t)
        except ValueError:
            ok = False
        out.append(1.0 if ok else 0.0)
    return out


def load_gsm8k(name_or_path: str, split: str, config: str = "main", n: int | None = None):
    """GSM8K as conversational ``prompt`` + ``target`` (the exact-match answer)."""
    ds = hub.load_dataset(name_or_path, split, config)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return ds.map(lambda e: {"prompt": [{"role": "user", "content": f"{e['question']}\n{GSM8K_INSTRUCTION}"}],
                             "target": gsm8k_target(e["answer"])}, remove_columns=ds.column_names)


def load_pairs(name_or_path: str, split: str, n: int, seed: int):
    """``n`` preference pairs, shuffled by ``seed``, as conversational ``chosen``/``rejected`` (implicit prompt).

    UltraFeedback's ``chosen``/``rejected`` are whole conversations (user turn included), so
    its separate ``prompt`` string column is dropped and TRL extracts the shared prefix.
    """
    ds = hub.load_dataset(name_or_path, split).shuffle(seed=seed)
    ds = ds.select(range(min(n, len(ds))))
    return ds.select_columns(["chosen", "rejected"])


@torch.no_grad()
def evaluate_gsm8k(model, tok, evalset, max_new_tokens: int, batch: int = 32) -> dict:
    """Greedy decoding on GSM8K problems: exact-match accuracy and mean completion length (tokens)."""
    model.eval()
    dev = next(model.parameters()).device
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in evalset["prompt"]]
    correct, lengths = [], []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        comp = gen[:, enc["input_ids"].shape[1] :]
        lengths += (comp != tok.pad_token_id).sum(1).tolist()
        outs = tok.batch_decode(comp, skip_special_tokens=True)
        correct += exact_match_reward(outs, evalset["target"][i : i + batch])
    return {"accuracy": float(np.mean(correct)), "length": float(np.mean(lengths))}


def run_full(cfg: Config, seed: int, device: str, output_dir: str, max_steps: int | None = None) -> dict:
    """The survey's optimisers at scale with TRL, all evaluated on GSM8K (accuracy, length).

    (a) RLVR: ``GRPOTrainer`` with :func:`exact_match_reward` on GSM8K train
    (``cfg.full_grpo_steps`` steps of ``full_prompts_per_step`` prompts × ``full_group``).
    (b) Direct preference: ``DPOTrainer`` on ``cfg.full_pairs`` UltraFeedback pairs (β = 0.1).
    (c) RLHF: ``RewardTrainer`` on the same pairs, then ``RLOOTrainer`` with that reward model
    on the pairs' prompts. ``max_steps`` caps every trainer (the dry-run test uses 1-2).
    Models and data are Hub names or local folders. Returns ``{pipeline: {"accuracy", "length"}}``
    with ``"base"`` for the untrained model.
    """
    from transformers import AutoModelForSequenceClassification
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer

    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    train_math = load_gsm8k(cfg.full_math_data, "train", cfg.full_math_config)
    evalset = load_gsm8k(cfg.full_math_data, "test", cfg.full_math_config, n=cfg.full_eval_problems)
    pairs = load_pairs(cfg.full_pref_data, cfg.full_pref_split, cfg.full_pairs, seed)
    results = {}
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results["base"] = evaluate_gsm8k(model, tok, evalset, cfg.full_max_completion)
    per_dev = cfg.full_group * (1 if not cuda else 2)
    accum = max(1, cfg.full_prompts_per_step * cfg.full_group // per_dev)
    rl_kw = dict(learning_rate=cfg.full_lr, beta=cfg.full_beta, num_generations=cfg.full_group,
                 per_device_train_batch_size=per_dev, gradient_accumulation_steps=accum,
                 max_completion_length=cfg.full_max_completion, temperature=1.0)
    # (a) GRPO with the verifiable reward
    args = GRPOConfig(**hub.trl_common(f"{output_dir}/grpo", seed, cuda, max_steps or cfg.full_grpo_steps), **rl_kw,
                      loss_type="grpo", scale_rewards="group")  # the paper's aggregation and std scaling
    tr = GRPOTrainer(model=model, reward_funcs=exact_match_reward, args=args, train_dataset=train_math,
                     processing_class=tok)
    tr.train()
    results["grpo"] = evaluate_gsm8k(tr.model, tok, evalset, cfg.full_max_completion)
    # (b) DPO on preference pairs
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    ref, _ = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    dargs = DPOConfig(**hub.trl_common(f"{output_dir}/dpo", seed, cuda, max_steps or -1), beta=0.1,
                      learning_rate=cfg.full_dpo_lr, loss_type=["sigmoid"], num_train_epochs=1,
                      per_device_train_batch_size=cfg.full_per_device_batch, max_length=cfg.full_max_length)
    tr = DPOTrainer(model=model, ref_model=ref, args=dargs, train_dataset=pairs, processing_class=tok)
    tr.train()
    results["dpo"] = evaluate_gsm8k(tr.model, tok, evalset, cfg.full_max_completion)
    # (c) RLHF: Bradley-Terry reward model, then RLOO against it
    rm = AutoModelForSequenceClassification.from_pretrained(cfg.full_model, num_labels=1, dtype=dtype).to(device)
    rm.config.pad_token_id = tok.pad_token_id
    rargs = RewardConfig(**hub.trl_common(f"{output_dir}/rm", seed, cuda, max_steps or -1), learning_rate=cfg.full_rm_lr,
                         num_train_epochs=1, per_device_train_batch_size=cfg.full_per_device_batch,
                         max_length=cfg.full_max_length)
    tr = RewardTrainer(model=rm, args=rargs, train_dataset=pairs, processing_class=tok)
    tr.train()
    rm = tr.model.eval()
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    prompts = pairs.map(lambda e: {"prompt": e["chosen"][:-1]}).select_columns(["prompt"])  # the user turns
    oargs = RLOOConfig(**hub.trl_common(f"{output_dir}/rloo", seed, cuda, max_steps or cfg.full_rloo_steps), **rl_kw)
    tr = RLOOTrainer(model=model, reward_funcs=rm, args=oargs, train_dataset=prompts, processing_class=tok,
                     reward_processing_classes=tok)
    tr.train()
    results["rlhf_rloo"] = evaluate_gsm8k(tr.model, tok, evalset, cfg.full_max_completion)
    return results
