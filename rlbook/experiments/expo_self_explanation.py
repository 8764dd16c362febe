r"""Chapter "ExPO: Unlocking Hard Reasoning with Self-Explanation-Guided Reinforcement Learning" (arXiv 2507.02834).

When a prompt is so hard that the policy never samples a correct answer, every GRPO
group is all-zero and carries no gradient. ExPO conditions the policy on the ground-truth
answer, :math:`\tilde c\sim\pi_\theta(\cdot|q,a^*)`, keeps the self-explanations that end
in :math:`a^*`, and adds their likelihood *without* the answer in the prompt to GRPO:
ExP-GRPO (:func:`rlbook.losses.expo.exp_grpo_loss`).

Smoke profile (no transformers import):

- the task :mod:`rlbook.tasks.explain` (3-digit scratchpad addition; the question masks
  the answer slot, the rationalisation prompt fills it in; an unfamiliar "expert"
  notation of the same chain of thought);
- a tiny character policy (:class:`PrefixPolicy`: a running sum of position-token
  embeddings and one small MLP head per completion position), pre-trained once by
  :func:`build_base` on questions of the *easy* subset (operands < 100) and on
  rationalisations of all problems, committed as ``rlbook/zoo/expo-self-explanation.pt``;
- RL on the *hard* subset (:func:`train`): GRPO, GRPO + SFT on expert CoTs, ExP-GRPO.

Full profile (:func:`run_full`): a TRL ``GRPOTrainer`` subclass (:func:`make_trainer_class`)
adding :math:`\beta_t` times the NLL of a self-explanation of each prompt, on
``Qwen/Qwen2.5-1.5B-Instruct`` and MATH levels 3-5.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rlbook import math_data
from rlbook.config import check
from rlbook.models import zoo
from rlbook.losses.common import group_normalise, masked_mean
from rlbook.losses.expo import exp_grpo_loss, linear_anneal
from rlbook.tasks import explain as X

METHODS = ("GRPO", "GRPO+expert-SFT", "ExP-GRPO")
"""the methods compared: GRPO; GRPO plus the NLL of expert CoTs; GRPO plus the NLL of self-explanations"""
ZOO = Path(__file__).resolve().parent.parent / "zoo"
BASE_NAME = "expo-self-explanation"


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    methods: str = "GRPO,GRPO+expert-SFT,ExP-GRPO"
    """methods to train, comma-separated (any of GRPO, GRPO+expert-SFT, ExP-GRPO)"""
    steps: int = 60
    """RL steps per method"""
    prompts: int = 16
    """B, hard prompts per step"""
    group: int = 8
    """G, samples per prompt (the paper's GRPO uses 8 generations)"""
    lr: float = 1e-3
    """Adam learning rate, the same for every method"""
    beta: float = 0.5
    """β0, initial weight of the likelihood term (ExP-SFT or expert SFT)"""
    beta_final: float = 0.1
    """β at the last step, as a fraction of β0 (linear annealing; 1.0 disables it)"""
    expert_notation: str = "expert"
    """notation of the expert solutions: "expert" (unfamiliar to the base) or "self" (the base's own)"""
    explain_samples: int = 4
    """self-explanations sampled per prompt from π(·|q, a*) each step; those that end in a* are positives"""
    max_operand: int = 299
    """largest operand of the hard problems trained and evaluated on (hundreds digits 1-2: a table small enough
    to learn in the smoke budget; the base was pre-trained on operands up to 999)"""
    eval_prompts: int = 200
    """held-out hard problems for the accuracy"""
    eval_every: int = 10
    """evaluate every this many steps"""
    nll_prompts: int = 200
    """hard training problems for the step-0 NLL and answer-likelihood diagnostics"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """*full*: base model, a Hub name or a local folder (the paper: Qwen2.5-3B-Instruct, Llama-3.2-3B-Instruct)"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: MATH training problems (fields problem, solution, level), Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer, level), Hub name or save_to_disk folder"""
    full_levels: str = "Level 3,Level 4,Level 5"
    """*full*: MATH levels kept for training"""
    full_methods: str = "GRPO,GRPO+expert-SFT,ExP-GRPO"
    """*full*: methods, one run each"""
    full_steps: int = 200
    """*full*: optimiser steps per run"""
    full_group: int = 8
    """*full*: samples per prompt"""
    full_prompts_per_step: int = 16
    """*full*: prompts per optimiser step"""
    full_lr: float = 1e-6
    """*full*: learning rate"""
    full_beta: float = 0.1
    """*full*: β0 of the likelihood term, linearly annealed to beta_final·β0"""
    full_max_completion: int = 1024
    """*full*: max new tokens"""
    full_explain_samples: int = 4
    """*full*: self-explanations sampled per training problem (the first that ends in a* is kept)"""
    full_train_problems: int = 2000
    """*full*: training problems (self-explanations are generated for each, once, before training)"""
    full_eval_problems: int = 500
    """*full*: MATH-500 problems evaluated (accuracy per level)"""

    def __post_init__(self):
        check(self.steps >= 0 and self.full_steps >= 1, "steps must be >= 0 (full_steps >= 1)")
        check(self.prompts >= 1 and self.group >= 2 and self.full_group >= 2, "need prompts >= 1 and group >= 2")
        check(self.lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(self.beta >= 0 and self.full_beta >= 0, "beta must be >= 0")
        check(0.0 <= self.beta_final <= 1.0, "beta_final is a fraction of beta, in [0, 1]")
        check(self.expert_notation in X.NOTATIONS, f"expert_notation must be one of {', '.join(X.NOTATIONS)}")
        check(self.explain_samples >= 1 and self.full_explain_samples >= 1, "explain_samples must be >= 1")
        check(100 <= self.max_operand <= 999, "max_operand must be in 100..999 (hard problems have an operand >= 100)")
        check(self.eval_prompts >= 1 and self.eval_every >= 1 and self.nll_prompts >= 1, "eval sizes must be >= 1")
        for name in ("methods", "full_methods"):
            bad = [m for m in math_data.split_list(getattr(self, name)) if m not in METHODS]
            check(not bad, f"{name}: unknown method(s) {bad}; choose from {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------
# a tiny character policy (no transformers import: the smoke profile stays fast)
# ---------------------------------------------------------------------------------
VOCAB = ["<bos>"] + list(X.ALPHABET)
STOI = {c: i for i, c in enumerate(VOCAB)}


def encode(texts: list[str], bos: bool = True) -> Tensor:
    """Token ids ``(N, L)`` of equal-length strings (BOS first when ``bos``)."""
    rows = [([0] if bos else []) + [STOI[c] for c in t] for t in texts]
    return torch.tensor(rows, dtype=torch.long)


def decode(ids: Tensor) -> list[str]:
    """Strings of token ids ``(N, T)`` (BOS dropped)."""
    return ["".join(VOCAB[i] for i in row if i != 0) for row in ids.tolist()]


class PrefixPolicy(nn.Module):
    r"""A tiny autoregressive character policy over fixed-length prompts and completions.

    The prefix up to position :math:`t` is summarised by a sum of (position, token)
    embeddings, :math:`h_t=\sum_{s\le t}E[s, x_s]` (a running sum, so sampling is
    incremental), and completion position :math:`k` has its own one-hidden-layer head:

    .. math:: \pi_\theta(y_k\,|\,x, y_{<k}) = \operatorname{softmax}\big(W_2^{(k)}\,
              \operatorname{gelu}(W_1^{(k)}\,\mathrm{LN}(h_{P-1+k}) + b_1^{(k)}) + b_2^{(k)}\big)

    Every head sees the whole prefix, so the *same* parameters serve the question and the
    rationalisation prompt: what the policy learns with the answer in the prompt is what it
    has available without it. No transformers import, ~0.5 ms per sampled token for a
    batch of 128 on one CPU thread.

    ``logits(ids: (N, P+T)) -> (N, T, V)``: the distributions of completion tokens ``0..T-1``.
    """

    def __init__(self, vocab: int = len(VOCAB), embed: int = 64, hidden: int = 192,
                 prompt_len: int = X.PROMPT_LEN + 1, completion_len: int = X.COMPLETION_LEN):
        super().__init__()
        self.V, self.P, self.T = vocab, prompt_len, completion_len
        L = prompt_len + completion_len
        self.emb = nn.Embedding(L * vocab, embed)
        self.norm = nn.LayerNorm(embed)
        self.w1 = nn.Parameter(torch.randn(completion_len, embed, hidden) / embed**0.5)
        self.b1 = nn.Parameter(torch.zeros(completion_len, hidden))
        self.w2 = nn.Parameter(torch.randn(completion_len, hidden, vocab) / hidden**0.5)
        self.b2 = nn.Parameter(torch.zeros(completion_len, vocab))

    def _head(self, h: Tensor, k: slice) -> Tensor:
        """Logits of heads ``k`` from prefix summaries ``h: (N, K, d)`` → ``(N, K, V)``."""
        z = torch.nn.functional.gelu(torch.einsum("nkd,kdh->nkh", self.norm(h), self.w1[k]) + self.b1[k])
        return torch.einsum("nkh,khv->nkv", z, self.w2[k]) + self.b2[k]

    def summaries(self, ids: Tensor) -> Tensor:
        """Running sums ``(N, L, d)`` of the position-token embeddings of ``ids: (N, L)``."""
        pos = torch.arange(ids.shape[1], device=ids.device)[None] * self.V
        return self.emb(pos + ids).cumsum(1)

    def logits(self, ids: Tensor) -> Tensor:
        """``ids: (N, P+T')`` (prompt and the first ``T'`` completion tokens) → logits ``(N, T', V)``."""
        Tp = ids.shape[1] - self.P
        h = self.summaries(ids)[:, self.P - 1 : self.P - 1 + Tp]  # (N, T', d): the prefix before each token
        return self._head(h, slice(0, Tp))


def token_logprobs(policy: PrefixPolicy, prompt_ids: Tensor, comp_ids: Tensor) -> Tensor:
    r"""Per-token :math:`\log\pi_\theta(y_t|x,y_{<t})`: ``prompt_ids: (N, P)``, ``comp_ids: (N, T)`` → ``(N, T)``.

    ``P`` is the task's prompt (with BOS, 14 tokens) or longer: a prompt that already holds the
    first completion tokens (e.g. the CoT, to score the answer alone) works too.
    """
    T = comp_ids.shape[1]
    logits = policy.logits(torch.cat([prompt_ids, comp_ids], 1))[:, -T:]  # (N, T, V)
    return torch.log_softmax(logits, -1).gather(-1, comp_ids[..., None]).squeeze(-1)


@torch.no_grad()
def sample(policy: PrefixPolicy, prompt_ids: Tensor, T: int = X.COMPLETION_LEN,
           generator: torch.Generator | None = None) -> Tensor:
    """Ancestral sampling (temperature 1) of ``T`` tokens after ``prompt_ids: (N, P)`` → ``(N, T)``."""
    h = policy.summaries(prompt_ids)[:, -1]  # (N, d)
    P, V = prompt_ids.shape[1], policy.V
    out = []
    for k in range(T):
        z = policy._head(h[:, None], slice(k, k + 1))[:, 0]  # (N, V)
        y = torch.multinomial(torch.softmax(z.float(), -1), 1, generator=generator)  # (N, 1)
        out.append(y)
        h = h + policy.emb((P + k) * V + y[:, 0])
    return torch.cat(out, 1)


def questions(problems) -> Tensor:
    """Prompt ids ``(N, 14)`` of the plain questions."""
    return encode([p.question() for p in problems])


def rationalisations(problems) -> Tensor:
    """Prompt ids ``(N, 14)`` of the answer-conditioned prompts."""
    return encode([p.rationalisation() for p in problems])


# ---------------------------------------------------------------------------------
# the base policy: pre-trained once, committed to rlbook/zoo
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseRecipe:
    """How the base policy is built (everything that determines its weights)."""

    embed: int = 64
    """embedding width"""
    hidden: int = 192
    """hidden units of each position's head"""
    steps: int = 1500
    """SFT steps"""
    batch: int = 256
    """sequences per step"""
    lr: float = 3e-3
    """Adam learning rate (cosine-decayed to 0)"""
    expert_frac: float = 0.05
    """fraction of the easy questions whose target is written in the expert notation (rare, not absent)"""
    rational_frac: float = 0.5
    """fraction of each batch that is rationalisations (all levels); the rest are questions"""
    hard_question_frac: float = 0.0
    """fraction of the questions drawn from the hard subset (rare: a weak, not absent, skill)"""
    seed: int = 0
    """seed of the initialisation and the data order"""


def corpus_batch(recipe: BaseRecipe, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """One pre-training batch: prompt ids ``(N, 14)`` and target completions ``(N, 14)``.

    Rationalisations ``(q, a*) -> c, a*`` of problems of every level in the base's own
    notation, and questions ``q -> c, a*`` of mostly *easy* problems (a fraction
    ``hard_question_frac`` hard), a few in the expert notation.
    """
    n_r = int(recipe.batch * recipe.rational_frac)
    rat = X.sample(n_r, rng, "all")
    n_q = recipe.batch - n_r
    n_h = int(rng.binomial(n_q, recipe.hard_question_frac)) if recipe.hard_question_frac > 0 else 0
    easy = X.sample(n_q - n_h, rng, "easy") + X.sample(n_h, rng, "hard")
    notation = np.where(rng.random(len(easy)) < recipe.expert_frac, "expert", "self")
    prompts = [p.rationalisation() for p in rat] + [p.question() for p in easy]
    targets = [X.solution(p) for p in rat] + [X.solution(p, str(n)) for p, n in zip(easy, notation)]
    return encode(prompts), encode(targets, bos=False)


def build_base(recipe: BaseRecipe = BaseRecipe(), steps: int | None = None, log_every: int = 0) -> PrefixPolicy:
    """Pre-train the base policy by SFT on :func:`corpus_batch` (deterministic on the CPU)."""
    torch.manual_seed(recipe.seed)
    policy = PrefixPolicy(embed=recipe.embed, hidden=recipe.hidden)
    rng = np.random.default_rng([recipe.seed, 7])
    n = recipe.steps if steps is None else steps
    opt = torch.optim.Adam(policy.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * s / max(1, n))))
    for step in range(n):
        ids, comp = corpus_batch(recipe, rng)
        loss = -token_logprobs(policy, ids, comp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(f"step {step:5d}  sft loss {loss.item():.4f}", flush=True)
    policy.eval()
    return policy


def base_competence(policy: PrefixPolicy, n: int = 400, samples: int = 8, seed: int = 0, max_operand: int = 299) -> dict:
    """Accuracy of the base on test problems: questions of each level, rationalisations of hard problems, and
    on the chapter's hard subset (operands up to ``max_operand``) the accuracy and pass@``samples`` of questions."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 3])
    out = {}
    for level in ("easy", "hard"):
        out[f"question_{level}"] = accuracy(policy, X.sample(n, rng, level, "test"), samples, g)["acc"]
    out["rationalisation_hard"] = accuracy(policy, X.sample(n, rng, "hard", "test"), 1, g, rational=True)["acc"]
    sub = accuracy(policy, X.sample(n, rng, "hard", "test", max_operand), samples, g)
    out[f"question_hard_upto_{max_operand}"] = sub["acc"]
    out[f"pass@{samples}_hard_upto_{max_operand}"] = sub["pass"]
    return out


def save_base(policy: PrefixPolicy, recipe: BaseRecipe, folder: Path = ZOO) -> dict:
    """Write ``expo-self-explanation.pt`` (fp16: < 1 MB) and ``.json`` (recipe and measured competence)."""
    info = {"name": BASE_NAME, "recipe": asdict(recipe), "competence": base_competence(policy)}
    return zoo.save_state(policy, info, BASE_NAME, folder, half=True)


def load_base(folder: Path = ZOO) -> tuple[PrefixPolicy, dict]:
    """The committed base policy ``(policy, info)`` (or, when absent, a freshly built one: ~50 s of CPU)."""
    found = zoo.load_state(BASE_NAME, folder)
    if found is not None:
        state, info = found
        r = BaseRecipe(**info["recipe"])
        policy = PrefixPolicy(embed=r.embed, hidden=r.hidden)
        policy.load_state_dict(state)
        policy.eval()
        return policy, info
    recipe = BaseRecipe()
    policy = build_base(recipe)
    return policy, {"name": BASE_NAME, "recipe": asdict(recipe), "competence": None}


# ---------------------------------------------------------------------------------
# evaluation and the step-0 diagnostics (the paper's two properties)
# ---------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(policy: PrefixPolicy, problems, samples: int, generator: torch.Generator, rational: bool = False) -> dict:
    """Mean accuracy over ``samples`` samples per problem (``acc``) and the fraction solved at least once (``pass``)."""
    ids = (rationalisations if rational else questions)(problems).repeat_interleave(samples, 0)
    texts = decode(sample(policy, ids, generator=generator))
    ok = np.array([X.verify(p, t) for p, t in zip([p for p in problems for _ in range(samples)], texts)])
    ok = ok.reshape(len(problems), samples)
    return {"acc": float(ok.mean()), "pass": float(ok.any(1).mean())}


@torch.no_grad()
def self_explanations(policy: PrefixPolicy, problems, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    r"""Sample ``k`` self-explanations :math:`\tilde c\sim\pi_\theta(\cdot|q,a^*)` per problem; mark those ending in :math:`a^*`.

    Returns ``comp: (B*k, 14)`` (row ``b*k+j`` explains problem ``b``) and ``keep: (B*k,)``
    float, 1 where the self-explanation's answer is :math:`a^*` (the paper's filter). Every
    kept one is a positive; score them under ``questions(problems).repeat_interleave(k, 0)``.
    """
    comp = sample(policy, rationalisations(problems).repeat_interleave(k, 0), generator=generator)  # (B*k, T)
    keep = torch.tensor([float(X.verify(problems[i // k], t)) for i, t in enumerate(decode(comp))])
    return comp, keep


@torch.no_grad()
def positive_diagnostics(policy: PrefixPolicy, problems, seed: int) -> dict:
    r"""The paper's two properties of a positive sample, at the current policy, on ``problems``.

    - ``nll_self`` / ``nll_expert``: mean per-token NLL :math:`-\frac1{|y|}\log\pi_\theta(y|q)`
      of the kept self-explanations and of the expert solutions (CoT + answer) under the
      *plain* question (property 1: likely under the policy);
    - ``logp_answer_*``: mean :math:`\log\pi_\theta(a^*|q,c)` after a self-explanation CoT,
      after the policy's own sampled CoT, after the expert CoT (property 2: the CoT raises the
      probability of the correct answer);
    - ``kept``: fraction of the self-explanations (one per problem) that end in :math:`a^*`.
    """
    g = torch.Generator().manual_seed(seed)
    q = questions(problems)
    sx, keep = self_explanations(policy, problems, 1, g)  # one per problem
    expert = encode([X.solution(p, "expert") for p in problems], bos=False)
    own = sample(policy, q, generator=g)
    answer_ids = encode([p.answer for p in problems], bos=False)

    def nll(comp):
        return -token_logprobs(policy, q, comp).mean(1)  # (B,)

    def logp_answer(comp):  # log π(a*|q, c): teacher-force the CoT and ">" and score the true answer
        c = torch.cat([comp[:, : X.COT_LEN + 1], answer_ids], 1)
        return token_logprobs(policy, q, c)[:, X.COT_LEN + 1 :].sum(1)  # (B,)

    m = keep.bool()
    return {
        "nll_self": float(nll(sx)[m].mean()),
        "nll_expert": float(nll(expert).mean()),
        "logp_answer_self": float(logp_answer(sx)[m].mean()),
        "logp_answer_own": float(logp_answer(own).mean()),
        "logp_answer_expert": float(logp_answer(expert).mean()),
        "kept": float(keep.mean()),
    }


# ---------------------------------------------------------------------------------
# RL on the hard subset: GRPO, GRPO + expert SFT, ExP-GRPO
# ---------------------------------------------------------------------------------
def train(policy: PrefixPolicy, method: str, cfg: Config, seed: int, eval_problems=None) -> dict:
    r"""Train ``policy`` in place with ``method`` on hard training problems; return the history.

    Each step: ``B`` hard prompts, ``G`` samples each, 0/1 outcome rewards, GRPO's
    advantages (:func:`rlbook.losses.group_normalise`); ExP-GRPO adds
    :math:`\beta_t\cdot` the NLL of fresh self-explanations (``explain_samples`` per prompt,
    those that end in :math:`a^*`; online: regenerated from the current policy every step);
    GRPO+expert-SFT adds the same term on the expert solutions. One gradient step per batch
    (``logp_old = logp.detach()``), Adam. Loss: :func:`rlbook.losses.expo.exp_grpo_loss`
    with :math:`\beta_t` from :func:`rlbook.losses.expo.linear_anneal` (``beta`` to ``beta * beta_final``).
    History: ``step``, ``acc`` (held-out hard accuracy), ``zero_frac`` (fraction of all-zero
    groups), ``reward``, ``kept`` (fraction of self-explanations that end in :math:`a^*`),
    ``nll_pos`` (per-token NLL of the positive used, before the step).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    rng = np.random.default_rng([seed, 11])
    g = torch.Generator().manual_seed(seed)
    g_sx = torch.Generator().manual_seed(seed + 10_000)  # self-explanations: their own stream (beta = 0 is then GRPO exactly)
    g_eval = torch.Generator()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    hist = {k: [] for k in ("step", "acc", "zero_frac", "reward", "kept", "nll_pos")}

    def evaluate(step):
        if eval_problems is not None:
            g_eval.manual_seed(12345)
            hist["step"].append(step)
            hist["acc"].append(accuracy(policy, eval_problems, 2, g_eval)["acc"])

    evaluate(0)
    for step in range(cfg.steps):
        problems = X.sample(cfg.prompts, rng, "hard", "train", cfg.max_operand)
        q = questions(problems)
        comp = sample(policy, q.repeat_interleave(cfg.group, 0), generator=g)  # (B*G, T)
        texts = decode(comp)
        r = torch.tensor([float(X.verify(problems[i // cfg.group], t)) for i, t in enumerate(texts)])
        r = r.view(cfg.prompts, cfg.group)  # (B, G)
        adv = group_normalise(r).flatten()  # (B*G,)
        if method == "ExP-GRPO":
            pos, keep = self_explanations(policy, problems, cfg.explain_samples, g_sx)  # (B*k, T), (B*k,)
        elif method == "GRPO+expert-SFT":
            pos = encode([X.solution(p, cfg.expert_notation) for p in problems], bos=False)
            keep = torch.ones(cfg.prompts)
        else:
            pos, keep = None, None
        beta = linear_anneal(step, cfg.steps, cfg.beta, cfg.beta * cfg.beta_final) if pos is not None else 0.0
        policy.train()
        logp = token_logprobs(policy, q.repeat_interleave(cfg.group, 0), comp)  # (B*G, T)
        mask = torch.ones_like(logp)
        if pos is not None:
            q_pos = q.repeat_interleave(pos.shape[0] // cfg.prompts, 0)
            logp_pos = token_logprobs(policy, q_pos, pos)  # (B*k, T): the positive *without* a* in the prompt
            mask_pos = keep[:, None].expand_as(logp_pos)
            loss, diag = exp_grpo_loss(logp, logp.detach(), adv, mask, logp_pos, mask_pos, beta=beta)
            hist["nll_pos"].append(float(-masked_mean(logp_pos.detach(), mask_pos)))
            hist["kept"].append(float(keep.mean()))
        else:
            loss, diag = exp_grpo_loss(logp, logp.detach(), adv, mask, beta=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.eval()
        hist["zero_frac"].append(float((r.sum(1) == 0).float().mean()))
        hist["reward"].append(float(r.mean()))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            evaluate(step + 1)
    return {k: np.array(v) for k, v in hist.items()}


def run(cfg: Config, seed: int, base: PrefixPolicy | None = None) -> dict:
    """Every method of ``cfg.methods`` from the same base; returns histories, diagnostics and seconds."""
    t0 = time.time()
    base = base if base is not None else load_base()[0]
    eval_problems = X.sample(cfg.eval_prompts, np.random.default_rng(12345), "hard", "test", cfg.max_operand)
    diag_problems = X.sample(cfg.nll_prompts, np.random.default_rng([seed, 5]), "hard", "train", cfg.max_operand)
    out = {"diag0": positive_diagnostics(base, diag_problems, seed), "seconds": {}}
    for m in math_data.split_list(cfg.methods):
        t1 = time.time()
        torch.manual_seed(seed)
        policy = copy.deepcopy(base)
        out[m] = train(policy, m, cfg, seed, eval_problems)
        out["seconds"][m] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: a TRL GRPOTrainer subclass with the ExP-SFT term
# ---------------------------------------------------------------------------------
EXPLAIN_PROMPT = ("{problem}\nThe final answer is {answer}. Please explain step by step how to reach it, "
                  "and put the final answer within \\boxed{{}}.\n")
"""the answer-conditioned (self-explanation) prompt of the full profile: the paper's idea, our wording"""


def make_trainer_class():
    r"""A ``trl.GRPOTrainer`` subclass that adds :math:`\beta_t` times the NLL of each prompt's positive.

    The train set carries a text column ``positive`` (a self-explanation :math:`(\tilde c, a^*)`
    for ExP-GRPO, the data set's solution for GRPO + expert SFT, ``""`` for none). After TRL
    samples and scores a batch, the positives of its rows are tokenised and stored beside
    TRL's tensors (so TRL's shuffling and splitting keep them aligned with their prompts);
    the loss is TRL's GRPO loss plus :math:`\beta_t\cdot` the per-token NLL of the positives
    *under the plain prompt* (:func:`rlbook.losses.expo.exp_grpo_loss`), with
    :math:`\beta_t` annealed linearly from ``beta`` to ``beta_end`` over ``max_steps``.
    """
    from trl import GRPOTrainer

    from rlbook.losses.expo import linear_anneal

    class ExPGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, beta_sft: float = 0.1, beta_sft_end: float = 0.01, max_positive_tokens: int = 1024,
                     **kwargs):
            self.beta_sft, self.beta_sft_end, self.max_positive_tokens = beta_sft, beta_sft_end, max_positive_tokens
            super().__init__(*args, **kwargs)

        def current_beta(self) -> float:
            return linear_anneal(self.state.global_step, max(1, self.args.max_steps), self.beta_sft, self.beta_sft_end)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            tok = self.processing_class
            rows = []
            for x in inputs:  # one row per completion, aligned with out["prompt_ids"]
                text = x.get("positive") or ""
                ids = tok(text, add_special_tokens=False)["input_ids"][: self.max_positive_tokens] if text else []
                rows.append(ids + [tok.eos_token_id] if ids else [])
            T = max(1, max(len(r) for r in rows))
            pos_ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
            pos_mask = torch.zeros((len(rows), T), dtype=torch.long)
            for i, r in enumerate(rows):
                pos_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                pos_mask[i, : len(r)] = 1
            dev = out["prompt_ids"].device
            out["positive_ids"], out["positive_mask"] = pos_ids.to(dev), pos_mask.to(dev)
            return out

        def _compute_loss(self, model, inputs):
            loss = super()._compute_loss(model, inputs)
            beta = self.current_beta()
            pos_mask = inputs["positive_mask"]
            if beta == 0.0 or pos_mask.sum() == 0:
                return loss
            ids = torch.cat([inputs["prompt_ids"], inputs["positive_ids"]], 1)
            am = torch.cat([inputs["prompt_mask"], pos_mask], 1)
            logp, _, _ = self._get_per_token_logps_and_entropies(model, ids, am, inputs["positive_ids"].size(1))
            nll = -masked_mean(logp, pos_mask)  # the ExP-SFT term, per token
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["expo/nll_positive"].append(nll.item())
            self._metrics[mode]["expo/beta"].append(beta)
            # TRL divides its loss by the gradient-accumulation steps in training (the micro-batches' gradients
            # are summed); the ExP-SFT term is a per-micro-batch mean too, so it gets the same normaliser
            normalizer = getattr(self, "current_gradient_accumulation_steps", 1) if mode == "train" else 1.0
            return loss + beta * nll / normalizer

    return ExPGRPOTrainer


def generate_self_explanations(model, tok, ds, k: int, max_new_tokens: int, batch: int = 16) -> list[str]:
    r"""For each row of ``ds`` (columns ``problem``, ``answer``), sample ``k`` self-explanations
    :math:`\tilde c\sim\pi(\cdot|q,a^*)` with :data:`EXPLAIN_PROMPT`; return the first whose last
    ``\boxed{}`` equals :math:`a^*` (:func:`rlbook.math_data.math_reward`), ``""`` if none."""
    from rlbook import hub

    dev = str(next(model.parameters()).device)
    prompts = [EXPLAIN_PROMPT.format(problem=p, answer=a) for p, a in zip(ds["problem"], ds["answer"])]
    texts = hub.generate(model, tok, [p for p in prompts for _ in range(k)], dev, max_new_tokens, 1, True, batch)
    out = []
    for i, a in enumerate(ds["answer"]):
        cands = texts[i * k : (i + 1) * k]
        ok = math_data.math_reward(cands, [a] * k)
        out.append(next((c for c, r in zip(cands, ok) if r > 0), ""))
    return out


def accuracy_by_level(model, tok, evalset, max_new_tokens: int, batch: int = 16) -> dict:
    """Pass@1 (one sample at temperature 1) per MATH level of ``evalset`` (``"all"`` when it has no level column)."""
    levels = sorted({str(v) for v in evalset["level"]}) if "level" in evalset.column_names else ["all"]
    out = {}
    for lv in levels:
        sub = evalset if lv == "all" else evalset.filter(lambda e: str(e["level"]) == lv)
        out[lv] = math_data.evaluate_full(model, tok, sub, 1, max_new_tokens, batch)[1]
    return out


def run_full(cfg: Config, seed: int, output_dir: str = "expo_full", cpu: bool = False, max_steps: int | None = None,
             train_problems: int | None = None, eval_problems: int | None = None, max_completion: int | None = None,
             generation_batch: int = 16) -> dict:
    """Paper-scale run: self-explanations from the base, then GRPO / GRPO+expert-SFT / ExP-GRPO, accuracy by level.

    Not timed on a GPU here (the catalog's estimate: ~45 min per 200-step run on an H100
    with vLLM generation inside the trainer). ``cpu`` and the overrides exist for the dry-run
    test (a tiny local model and data set). Returns ``{"base": {level: acc}, method: {level: acc},
    "kept": fraction of training problems with a valid self-explanation}``.
    """
    from trl import GRPOConfig

    from rlbook import hub
    from rlbook.models import load_pretrained

    steps = max_steps or cfg.full_steps
    max_new = max_completion or cfg.full_max_completion
    train = math_data.load_math(cfg.full_train_data, "train", levels=math_data.split_list(cfg.full_levels),
                                n=train_problems or cfg.full_train_problems)
    evalset = math_data.load_math(cfg.full_eval_data, "test", n=eval_problems or cfg.full_eval_problems)
    device, dtype, use_vllm = hub.full_device(cpu)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": accuracy_by_level(model, tok, evalset, max_new, generation_batch)}
    explanations = generate_self_explanations(model, tok, train, cfg.full_explain_samples, max_new, generation_batch)
    results["kept"] = float(np.mean([e != "" for e in explanations]))
    expert = list(train["solution"]) if "solution" in train.column_names else [""] * len(train)
    positives = {"GRPO": [""] * len(train), "GRPO+expert-SFT": expert, "ExP-GRPO": explanations}
    Trainer = make_trainer_class()
    for m in math_data.split_list(cfg.full_methods):
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        ds = train.remove_columns([c for c in ("positive",) if c in train.column_names]).add_column("positive", positives[m])
        args = GRPOConfig(
            output_dir=f"{output_dir}/{m}",
            learning_rate=cfg.full_lr,
            beta=0.0,  # no KL penalty to a reference (the ExP-SFT term is the only addition)
            loss_type="grpo",  # the paper's GRPO: per-sequence token mean, then mean over sequences
            scale_rewards="group",
            num_generations=cfg.full_group,
            per_device_train_batch_size=cfg.full_group * (1 if cpu else 2),
            gradient_accumulation_steps=1 if cpu else max(1, cfg.full_prompts_per_step // 2),
            num_iterations=1,
            max_completion_length=max_new,
            temperature=1.0,
            max_steps=steps,
            logging_steps=1,
            **hub.trl_offline(not cpu, seed),
            **hub.vllm_kw(use_vllm),
        )
        trainer = Trainer(model=model, reward_funcs=math_data.math_reward, args=args, train_dataset=ds,
                          processing_class=tok, beta_sft=cfg.full_beta if m != "GRPO" else 0.0,
                          beta_sft_end=cfg.full_beta * cfg.beta_final if m != "GRPO" else 0.0,
                          max_positive_tokens=max_new)
        trainer.train()
        results[m] = accuracy_by_level(trainer.model, tok, evalset, max_new, generation_batch)
    return results
