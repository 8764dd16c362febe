r"""Chapter "Tapered Off-Policy REINFORCE" (TOPR, Le Roux et al. 2025, arXiv 2503.14286).

Fully offline RL from a fixed data set sampled once from a base policy :math:`\mu`: naive off-policy
REINFORCE, SFT on the positives, truncated importance sampling, offline PPO-clip and TOPR
(:mod:`rlbook.losses.topr`), plus TOPR's baseline-:math:`c` sweep.

The world (smoke profile): 2-digit addition ``a + b`` (operands 0-99) answered by a small GRU
decoder (:class:`AdditionPolicy`, 33k parameters, no transformers import) that writes digits and EOS
with **no constrained decoding**, so an answer can be *malformed* (no EOS within 4 tokens, empty, or a
leading zero). The base :math:`\mu` is the GRU trained by SFT for 300 steps to partial competence
(exact pass@1 about 0.4 on held-out prompts), committed as ``rlbook/zoo/tapered-off-policy-reinforce.pt``
(built by :func:`build_base`, deterministic). Why not the book's ``countdown4`` tiny Llama: it was
trained with constrained decoding, so every sample is well-formed by construction (unconstrained it
writes garbage: measured 100% malformed), and the catalog's central effect -- naive off-policy
REINFORCE collapsing into malformed outputs -- could not appear.

Full profile (:func:`run_full`): a plain torch loop on a Hub instruct model and MATH: sample ``G``
solutions per training problem once (the behaviour policy), label them by the boxed answer, train
offline with TOPR (and the baselines), evaluate pass@1.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rlbook import math_data
from rlbook.config import check
from rlbook.models import zoo
from rlbook.losses.ppo import ppo_clip_loss
from rlbook.losses.topr import offpolicy_reinforce_loss, topr_loss, truncated_is_loss

METHODS = ("REINFORCE", "SFT+", "TIS", "PPO", "TOPR")
"""naive off-policy REINFORCE (±1, no IS), SFT on positives, truncated IS on all samples, offline PPO-clip, TOPR"""

V, EOS, BOS, L = 11, 10, 11, 4
"""output vocabulary (digits 0-9 and EOS), the EOS id, the BOS input id, the answer length budget"""

ZOO = Path(__file__).resolve().parent.parent / "zoo"
ZOO_NAME = "tapered-off-policy-reinforce"


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    base_steps: int = 300
    """SFT steps of the base policy mu (the committed checkpoint used 300)"""
    data_prompts: int = 200
    """training prompts of the offline data set (the catalog: 500)"""
    data_samples: int = 32
    """answers sampled from mu per prompt, once (the catalog: 64)"""
    steps: int = 100
    """offline gradient steps per method (the catalog: 200)"""
    batch: int = 128
    """samples per gradient step, drawn from the fixed data set (the catalog: 256)"""
    lr: float = 3e-4
    """Adam learning rate (the same for every method)"""
    baseline: float = 0.0
    """REINFORCE baseline c subtracted from the +-1 rewards of TOPR, naive REINFORCE and TIS"""
    c_sweep: str = "-0.5,0.5"
    """extra TOPR runs with these baselines c (comma-separated; empty for none)"""
    ppo_eps: float = 0.2
    """offline PPO's clip range"""
    methods: str = "REINFORCE,SFT+,TIS,PPO,TOPR"
    """methods to train (comma-separated)"""
    eval_prompts: int = 200
    """held-out prompts for the exact pass@1 and the malformed rate"""
    eval_samples: int = 8
    """samples per held-out prompt for the malformed rate"""
    eval_every: int = 25
    """evaluate every this many steps"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """*full*: model, a Hub name or a local folder (the paper: Llama 3 8B)"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: training problems (prompt, answer), Hub name or save_to_disk folder (the paper: GSM8K and MATH)"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems"""
    full_methods: str = "TOPR,SFT+,REINFORCE"
    """*full*: methods trained offline on the same data set, one run each"""
    full_problems: int = 2000
    """*full*: training problems sampled once"""
    full_group: int = 8
    """*full*: solutions sampled per problem from the behaviour policy"""
    full_batch: int = 16
    """*full*: sequences per gradient step"""
    full_epochs: int = 1
    """*full*: passes over the offline data set"""
    full_lr: float = 2e-6
    """*full*: AdamW learning rate"""
    full_max_completion: int = 512
    """*full*: max new tokens"""
    full_eval_problems: int = 200
    """*full*: MATH-500 problems evaluated"""
    full_eval_samples: int = 4
    """*full*: samples per evaluation problem"""

    def __post_init__(self):
        check(self.base_steps >= 0 and self.steps >= 1, "steps must be positive")
        check(self.data_prompts >= 1 and self.data_samples >= 1 and self.batch >= 1, "data sizes must be positive")
        check(self.lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(-1.0 < self.baseline < 1.0, "baseline c must be in (-1, 1) so that rewards keep their sign")
        check(all(-1.0 < c < 1.0 for c in parse_floats(self.c_sweep)), "c_sweep values must be in (-1, 1)")
        check(0.0 < self.ppo_eps < 1.0, "ppo_eps must be in (0, 1)")
        check(self.eval_prompts >= 1 and self.eval_samples >= 1 and self.eval_every >= 1, "eval sizes must be positive")
        for name in ("methods", "full_methods"):
            bad = [m for m in math_data.split_list(getattr(self, name)) if m not in METHODS]
            check(not bad, f"{name}: unknown method(s) {bad}; choose from {', '.join(METHODS)}")


def parse_floats(s: str) -> list[float]:
    """``"-0.5, 0.5"`` → ``[-0.5, 0.5]`` (empty string → ``[]``)."""
    return [float(x) for x in math_data.split_list(s)] if s.strip() else []


# ---------------------------------------------------------------------------------
# the world: 2-digit addition, a GRU decoder without constrained decoding
# ---------------------------------------------------------------------------------
class AdditionPolicy(nn.Module):
    r"""A GRU decoder :math:`\pi_\theta(y|a,b)=\prod_t\pi_\theta(y_t|a,b,y_{<t})` over digits and EOS.

    The prompt's four digits (tens and units of ``a`` and ``b``) are embedded (one table per
    position), concatenated and mapped to the initial hidden state; every answer token is
    predicted from the GRU state (vocabulary ``V = 11``: digits 0-9 and EOS). All prompts share
    every parameter, as in a language model: the EOS logit is one output row for everyone.
    """

    def __init__(self, emb: int = 32, hidden: int = 64):
        super().__init__()
        self.prompt_emb = nn.Embedding(40, emb)
        self.enc = nn.Sequential(nn.Linear(4 * emb, hidden), nn.Tanh())
        self.tok_emb = nn.Embedding(V + 1, emb)  # digits, EOS, BOS
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, V)

    def h0(self, a: Tensor, b: Tensor) -> Tensor:
        """Initial state ``(1, N, H)`` from operands ``a, b: (N,)``."""
        d = torch.stack([a // 10, a % 10 + 10, b // 10 + 20, b % 10 + 30], 1)  # (N, 4)
        return self.enc(self.prompt_emb(d).flatten(1))[None]

    def logits(self, a: Tensor, b: Tensor, y: Tensor) -> Tensor:
        """Next-token logits ``(N, L, V)`` for answers ``y: (N, L)`` (teacher forcing)."""
        inp = torch.cat([torch.full_like(y[:, :1], BOS), y[:, :-1]], 1)  # (N, L)
        o, _ = self.gru(self.tok_emb(inp), self.h0(a, b))
        return self.out(o)


def answer_tokens(a: Tensor, b: Tensor) -> Tensor:
    """The correct answers ``str(a+b)`` + EOS, padded with EOS, ``(N, L)``."""
    s = a + b  # (N,) at most 198
    n = 1 + (s >= 10).long() + (s >= 100).long()  # digits
    y = torch.full((len(a), L), EOS, dtype=torch.long)
    for t in range(L - 1):
        p = n - 1 - t  # power of ten of digit t
        digit = torch.div(s, 10 ** p.clamp(min=0), rounding_mode="floor") % 10
        y[:, t] = torch.where(t < n, digit, y[:, t])
    return y


def completion_mask(y: Tensor) -> Tensor:
    """1 on tokens up to and including the first EOS, ``(N, L)`` float."""
    is_eos = (y == EOS).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).float()


def malformed(y: Tensor) -> Tensor:
    """``(N,)`` bool: no EOS within ``L`` tokens, an empty answer, or a leading zero."""
    is_eos = y == EOS
    has = is_eos.any(1)
    pos = torch.where(has, is_eos.float().argmax(1), torch.full_like(y[:, 0], L))  # answer length
    return ~(has & (pos >= 1) & ~((pos > 1) & (y[:, 0] == 0)))


def reward(y: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``+1`` for a well-formed correct sum, ``-1`` otherwise, ``(N,)`` float."""
    tgt = answer_tokens(a, b)
    ok = ((y == tgt) | (completion_mask(tgt) == 0)).all(1)  # equal up to and including the target's EOS
    return torch.where(ok, 1.0, -1.0)


def token_logprobs(model: AdditionPolicy, a: Tensor, b: Tensor, y: Tensor) -> Tensor:
    """``log pi(y_t | a, b, y_<t)``, ``(N, L)`` (differentiable; mask positions after EOS yourself)."""
    return torch.log_softmax(model.logits(a, b, y), -1).gather(-1, y[..., None]).squeeze(-1)


@torch.no_grad()
def sample(model: AdditionPolicy, a: Tensor, b: Tensor, gen: torch.Generator | None = None,
           greedy: bool = False) -> Tensor:
    """``L`` tokens per prompt at temperature 1 (or greedy), ``(N, L)``; tokens after EOS are irrelevant."""
    h = model.h0(a, b)
    tok = torch.full((len(a), 1), BOS, dtype=torch.long)
    out = []
    for _ in range(L):
        o, h = model.gru(model.tok_emb(tok), h)
        z = model.out(o[:, 0])  # (N, V)
        tok = z.argmax(-1, keepdim=True) if greedy else torch.multinomial(torch.softmax(z, -1), 1, generator=gen)
        out.append(tok)
    return torch.cat(out, 1)


def split_prompts(split: str) -> tuple[Tensor, Tensor]:
    """All ``(a, b)`` pairs of a fixed split: 10% of the 10,000 pairs (a fixed permutation) are ``"test"``."""
    perm = torch.randperm(10000, generator=torch.Generator().manual_seed(12345))
    idx = perm[:1000] if split == "test" else perm[1000:]
    return idx // 100, idx % 100


def build_base(steps: int = 300, seed: int = 0, batch: int = 256, lr: float = 3e-3) -> AdditionPolicy:
    """SFT from scratch on correct answers of training pairs (deterministic): the base policy mu."""
    torch.manual_seed(seed)
    model = AdditionPolicy()
    opt = torch.optim.Adam(model.parameters(), lr)
    ta, tb = split_prompts("train")
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(ta), (batch,), generator=g)
        y = answer_tokens(ta[i], tb[i])
        loss = nn.functional.cross_entropy(model.logits(ta[i], tb[i], y).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def load_base(steps: int = 300, rebuild: bool = False) -> tuple[AdditionPolicy, dict]:
    """The committed base (``rlbook/zoo/tapered-off-policy-reinforce.pt``) if its recipe matches, else built."""
    found = None if rebuild else zoo.load_state(ZOO_NAME, ZOO)
    if found is not None and found[1]["recipe"]["steps"] == steps:
        state, info = found
        model = AdditionPolicy()
        model.load_state_dict(state)
        return model, info
    model = build_base(steps)
    return model, {"recipe": {"steps": steps, "seed": 0, "batch": 256, "lr": 3e-3}, "competence": evaluate(model)}


def save_base(steps: int = 300, out_dir: str | Path = ZOO) -> dict:
    """Build the base and write ``NAME.pt`` + ``NAME.json`` (recipe and measured competence)."""
    model = build_base(steps)
    info = {"name": ZOO_NAME, "recipe": {"steps": steps, "seed": 0, "batch": 256, "lr": 3e-3},
            "competence": evaluate(model)}
    return zoo.save_state(model, info, ZOO_NAME, out_dir)


@torch.no_grad()
def evaluate(model: AdditionPolicy, prompts: int = 200, samples: int = 8) -> dict:
    """On the first ``prompts`` test pairs: exact pass@1 (the probability of the one correct answer,
    by teacher forcing), greedy accuracy, and the malformed rate of greedy and of sampled answers
    (``samples`` per prompt, a fixed generator)."""
    ta, tb = split_prompts("test")
    a, b = ta[:prompts], tb[:prompts]
    y = answer_tokens(a, b)
    p1 = float((token_logprobs(model, a, b, y) * completion_mask(y)).sum(1).exp().mean())
    yg = sample(model, a, b, greedy=True)
    ar, br = a.repeat_interleave(samples), b.repeat_interleave(samples)
    ys = sample(model, ar, br, torch.Generator().manual_seed(1))
    return {"pass@1": p1, "greedy_acc": float((reward(yg, a, b) > 0).float().mean()),
            "malformed_greedy": float(malformed(yg).float().mean()),
            "malformed": float(malformed(ys).float().mean())}


# ---------------------------------------------------------------------------------
# the offline data set and the offline learners
# ---------------------------------------------------------------------------------
@dataclass
class OfflineData:
    """A fixed data set sampled once from mu: ``N = prompts * samples`` rows."""

    a: Tensor
    """``(N,)`` first operands"""
    b: Tensor
    """``(N,)`` second operands"""
    y: Tensor
    """``(N, L)`` sampled answers"""
    mask: Tensor
    """``(N, L)`` valid tokens (up to and including EOS)"""
    logp_mu: Tensor
    """``(N, L)`` the behaviour policy's per-token log-probs (0 on padding)"""
    r: Tensor
    """``(N,)`` rewards +-1"""


@torch.no_grad()
def make_dataset(mu: AdditionPolicy, prompts: int, samples: int, seed: int) -> OfflineData:
    """Sample ``samples`` answers for each of ``prompts`` random training pairs from ``mu``, once."""
    gen = torch.Generator().manual_seed(seed)
    ta, tb = split_prompts("train")
    i = torch.randperm(len(ta), generator=gen)[:prompts]
    a, b = ta[i].repeat_interleave(samples), tb[i].repeat_interleave(samples)
    y = sample(mu, a, b, gen)
    mask = completion_mask(y)
    return OfflineData(a, b, y, mask, token_logprobs(mu, a, b, y) * mask, reward(y, a, b))


def method_loss(method: str, logp: Tensor, logp_mu: Tensor, mask: Tensor, r: Tensor, c: float,
                ppo_eps: float = 0.2) -> Tensor:
    """The loss of ``method`` on a mini-batch: ``logp, logp_mu, mask: (N, L)``, ``r: (N,)`` in ``{-1, +1}``.

    REINFORCE: :func:`rlbook.losses.topr.offpolicy_reinforce_loss` with ``r - c``; SFT+: the same with
    ``1{r > 0}``; TIS: :func:`rlbook.losses.topr.truncated_is_loss`; PPO:
    :func:`rlbook.losses.ppo_clip_loss` with the per-token ratio to mu and advantage ``r - c``;
    TOPR: :func:`rlbook.losses.topr.topr_loss`.
    """
    if method == "REINFORCE":
        return offpolicy_reinforce_loss(logp, mask, r - c)
    if method == "SFT+":
        return offpolicy_reinforce_loss(logp, mask, (r > 0).to(logp.dtype))
    if method == "TIS":
        return truncated_is_loss(logp, logp_mu, mask, r - c)
    if method == "PPO":
        return ppo_clip_loss(logp, logp_mu, (r - c)[:, None].expand_as(logp), mask, ppo_eps)[0]
    if method == "TOPR":
        return topr_loss(logp, logp_mu, mask, r - c)[0]
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def train_offline(mu: AdditionPolicy, data: OfflineData, method: str, cfg: Config, seed: int,
                  c: float | None = None) -> dict:
    """Train a copy of ``mu`` with ``method`` on the fixed ``data`` (mini-batches drawn with replacement).

    Returns ``{"step": (E,), metric: (E,) for each metric of :func:`evaluate`}``, evaluated at step 0
    and every ``cfg.eval_every`` steps, and ``"model"``.
    """
    c = cfg.baseline if c is None else c
    model = copy.deepcopy(mu)
    opt = torch.optim.Adam(model.parameters(), cfg.lr)
    gen = torch.Generator().manual_seed(seed + 1000)
    hist: dict[str, list] = {"step": []}

    def log(step):
        hist["step"].append(step)
        for k, v in evaluate(model, cfg.eval_prompts, cfg.eval_samples).items():
            hist.setdefault(k, []).append(v)

    log(0)
    for step in range(1, cfg.steps + 1):
        i = torch.randint(0, len(data.r), (cfg.batch,), generator=gen)
        logp = token_logprobs(model, data.a[i], data.b[i], data.y[i]) * data.mask[i]
        loss = method_loss(method, logp, data.logp_mu[i], data.mask[i], data.r[i], c, cfg.ppo_eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            log(step)
    out = {k: np.array(v) for k, v in hist.items()}
    out["model"] = model
    return out


def positive_weight_share(r: Tensor, c: float) -> float:
    r"""Empirical share of the (on-policy, :math:`\rho=1`) gradient weight :math:`|r-c|` carried by positives."""
    w = (r - c).abs()
    return float(w[r > 0].sum() / w.sum())


def run_toy(cfg: Config, seed: int, mu: AdditionPolicy | None = None) -> dict:
    """The offline experiment: one data set from mu, every method of ``cfg.methods``, the c sweep.

    Returns ``{"base": evaluate(mu), "data": {...}, "runs": {name: history}, "seconds": {...}}``;
    run names are the methods and ``"TOPR c=<c>"`` for the sweep.
    """
    t0 = time.time()
    mu = mu if mu is not None else load_base(cfg.base_steps)[0]
    data = make_dataset(mu, cfg.data_prompts, cfg.data_samples, seed)
    p = float((data.r > 0).float().mean())
    out = {"base": evaluate(mu, cfg.eval_prompts, cfg.eval_samples),
           "data": {"positives": p, "malformed": float(malformed(data.y).float().mean()), "n": len(data.r)},
           "runs": {}, "seconds": {}}
    todo = [(m, None) for m in math_data.split_list(cfg.methods)]
    todo += [("TOPR", c) for c in parse_floats(cfg.c_sweep)]
    for m, c in todo:
        t1 = time.time()
        name = m if c is None else f"TOPR c={c:g}"
        run = train_offline(mu, data, m, cfg, seed, c)
        run.pop("model")
        out["runs"][name] = run
        out["seconds"][name] = time.time() - t1
    out["shares"] = {c: (positive_weight_share(data.r, c), float(effective_fraction(p, c)))
                     for c in [cfg.baseline] + parse_floats(cfg.c_sweep)}
    out["seconds"]["total"] = time.time() - t0
    return out


def effective_fraction(p: float, c: float) -> float:
    """:func:`rlbook.losses.topr.effective_positive_fraction` as a float."""
    from rlbook.losses.topr import effective_positive_fraction

    return float(effective_positive_fraction(p, c))


# ---------------------------------------------------------------------------------
# full profile: offline TOPR on a Hub model and MATH (plain torch loop)
# ---------------------------------------------------------------------------------
def _sequence_logps(model, tok, prompts: list[str], completions: list[str], device: str) -> tuple[Tensor, Tensor]:
    """Per-token log-probs ``(N, T)`` and mask ``(N, T)`` of ``completions`` given ``prompts`` (right padding)."""
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    c_ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
    T = max(len(c) for c in c_ids)
    P = max(len(p) for p in p_ids)
    ids = torch.full((len(prompts), P + T), tok.pad_token_id, dtype=torch.long)
    am = torch.zeros_like(ids)
    mask = torch.zeros((len(prompts), T))
    for n, (p, c) in enumerate(zip(p_ids, c_ids)):
        ids[n, P - len(p) : P + len(c)] = torch.tensor(p + c)
        am[n, P - len(p) : P + len(c)] = 1
        mask[n, : len(c)] = 1
    ids, am, mask = ids.to(device), am.to(device), mask.to(device)
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=am, position_ids=pos).logits[:, P - 1 : P + T - 1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, P:, None]).squeeze(-1)  # (N, T)
    return logp * mask, mask


def run_full(cfg: Config, seed: int, cpu: bool = False, problems: int | None = None, eval_problems: int | None = None,
             eval_samples: int | None = None, max_completion: int | None = None, generation_batch: int = 64) -> dict:
    """Paper-scale offline run (one GPU): sample ``full_group`` solutions per problem from the base once,
    label them +-1 with :func:`rlbook.math_data.math_reward`, train each of ``cfg.full_methods`` from the
    base for ``full_epochs`` over the fixed data set, evaluate pass@k on MATH-500.

    Not timed on a GPU here (sampling 16k solutions with vLLM and one epoch per method: roughly
    10-20 min each on one H100, by analogy with the other chapters). The keyword overrides exist for
    the CPU dry-run test. Returns ``{"base": pass@k, method: pass@k, "positives": fraction}``.
    """
    from rlbook import hub
    from rlbook.models import load_pretrained

    n_train = problems or cfg.full_problems
    n_eval = eval_problems or cfg.full_eval_problems
    n_samp = eval_samples or cfg.full_eval_samples
    max_new = max_completion or cfg.full_max_completion
    device, dtype, _ = hub.full_device(cpu)
    torch.manual_seed(seed)
    train = math_data.load_math(cfg.full_train_data, "train", n=n_train)
    evalset = math_data.load_math(cfg.full_eval_data, "test", n=n_eval)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch)}
    # the offline data set, sampled once from mu = the base model
    prompts = [p for p in train["prompt"] for _ in range(cfg.full_group)]
    answers = [a for a in train["answer"] for _ in range(cfg.full_group)]
    completions = hub.generate(model, tok, prompts, device, max_new, num_beams=1, sample=True, batch=generation_batch)
    r = torch.tensor(math_data.math_reward(completions, answers)) * 2 - 1  # (N,) +-1
    results["positives"] = float((r > 0).float().mean())
    with torch.no_grad():
        mu_logp = []
        for s in range(0, len(prompts), cfg.full_batch):
            lp, _ = _sequence_logps(model, tok, prompts[s : s + cfg.full_batch], completions[s : s + cfg.full_batch],
                                    device)
            mu_logp.append(lp.sum(1).cpu())  # only the sequence log-prob is needed for the sequence-level ratio
        mu_seq = torch.cat(mu_logp)  # (N,)
    for m in math_data.split_list(cfg.full_methods):
        if m == "PPO":
            raise ValueError("the full profile uses sequence-level ratios only (TOPR, SFT+, TIS, REINFORCE)")
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.full_lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(cfg.full_epochs):
            order = torch.randperm(len(prompts), generator=g)
            for s in range(0, len(order), cfg.full_batch):
                i = order[s : s + cfg.full_batch].tolist()
                logp, mask = _sequence_logps(model, tok, [prompts[j] for j in i], [completions[j] for j in i], device)
                # the behaviour policy's sequence log-prob placed on the first token: the losses only use its sum
                lmu = torch.zeros_like(logp)
                lmu[:, 0] = mu_seq[i].to(device)
                loss = method_loss(m, logp, lmu, mask, r[i].to(device, logp.dtype), cfg.baseline)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        model.eval()
        results[m] = math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch)
    return results


if __name__ == "__main__":  # rebuild the committed base: python -m rlbook.experiments.tapered_off_policy_reinforce
    print(save_base())
