r"""Chapter "Harnessing Negative Signals: Reinforcement Distillation from Teacher Data" (REDI, arXiv 2505.24850).

Offline distillation from a teacher's traces, keeping the verifier-rejected ones. Stage 1 is SFT
on the positive traces (rejection-sampling SFT); stage 2 trains on (positive, negative) pairs
of the same problem with the REDI loss (:func:`rlbook.losses.redi.redi_loss`), against
continuing SFT (:math:`\alpha=0`), symmetric REDI (:math:`\alpha=1`), DPO (reference = the
stage-1 model) and SimPO.

Smoke profile: the scratchpad-addition task and scripted noisy teacher of
:mod:`rlbook.tasks.scratchpad`, a tiny autoregressive MLP policy (:class:`ScratchpadPolicy`, torch
only: no transformers import), stage 1 committed as ``rlbook/zoo/redi-reinforcement-distillation.pt``
(rebuilt by :func:`build_stage1` if missing), stage 2 run in the notebook.

Full profile (:func:`run_full`): a Hub instruct/math model, Open-R1-Math-style data (problems
with several R1 generations and their ``correctness_math_verify`` flags) turned into
(positive, negative) pairs, stage-1 SFT and stage-2 REDI in a plain torch loop, MATH-500
pass@k (:func:`rlbook.math_data.evaluate_full`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlbook.config import check
from rlbook.models import zoo
from rlbook.losses.common import masked_mean
from rlbook.losses.dpo import dpo_loss
from rlbook.losses.redi import redi_loss, simpo_loss
from rlbook.tasks import scratchpad as sp

METHODS = ("RS-SFT", "REDI", "REDI-sym", "DPO", "SimPO")
"""stage-2 objectives: REDI with alpha 0 (continued rejection-sampling SFT), REDI with cfg.alpha,
REDI with alpha 1 (symmetric), DPO (reference = the stage-1 model), SimPO"""

ZOO = Path(__file__).resolve().parent.parent / "zoo" / "redi-reinforcement-distillation"
"""the committed stage-1 checkpoint (``.pt`` state dict + ``.json`` recipe and competence)"""

PAD, BOS, EOS = 0, 1, 2
VOCAB = ["<pad>", "<bos>", "<eos>"] + list(sp.ALPHABET)
STOI = {c: i for i, c in enumerate(VOCAB)}


@dataclass
class Stage1Recipe:
    """How the committed stage-1 model was built (deterministic; :func:`build_stage1`)."""

    n_digits: int = 3
    """operand digits of the scratchpad task (the catalog's 2 digits: too few carries to learn from)"""
    n_pairs: int = 2000
    """problems in the teacher data set (one positive and one negative trace each; the catalog's 2,000)"""
    p_correct: float = 0.6
    """the noisy teacher's accuracy (the catalog's 60%)"""
    data_seed: int = 0
    """seed of the problems and of the teacher's traces"""
    hidden: int = 128
    """hidden width of the policy's MLP"""
    window: int = 4
    """k, the policy's window on its own last tokens"""
    steps: int = 600
    """stage-1 SFT steps on the positives (the catalog's 300)"""
    batch: int = 64
    """stage-1 batch (positive traces)"""
    lr: float = 3e-3
    """stage-1 Adam learning rate"""
    model_seed: int = 0
    """seed of the initial weights and of the batch order"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    alpha: float = 0.5
    """REDI's negative weight (official reinforce_rejected_coef; 0.8 in the released recipe, the catalog's 0.5)"""
    methods: str = "RS-SFT,REDI,REDI-sym,DPO,SimPO"
    """stage-2 objectives to run (comma-separated, from METHODS)"""
    steps: int = 60
    """stage-2 gradient steps per method (the catalog's 200)"""
    batch: int = 32
    """stage-2 batch (pairs)"""
    optimizer: str = "adam"
    """stage-2 optimiser, "sgd" or "adam" (see the chapter: Adam's per-parameter scaling undoes alpha)"""
    lr: float = 3e-4
    """stage-2 learning rate (the same for every method; stage 1 used 3e-3, the paper also lowers it for stage 2)"""
    dpo_beta: float = 0.1
    """DPO's beta (the catalog's 0.1; the REDI paper sweeps 0.001-0.1 for its DPO baseline)"""
    simpo_beta: float = 2.0
    """SimPO's beta (the catalog's 2)"""
    simpo_gamma: float = 0.5
    """SimPO's target margin gamma (the catalog's 0.5)"""
    eval_every: int = 20
    """evaluate greedy accuracy and held-out log-likelihoods every this many steps"""
    eval_problems: int = 300
    """held-out test problems for greedy accuracy and log-likelihoods (the catalog's 500)"""
    # full profile
    full_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """*full*: student model, Hub name or local folder (the paper: Qwen2.5-Math-1.5B)"""
    full_data: str = "open-r1/OpenR1-Math-220k"
    """*full*: teacher traces (fields problem, generations, correctness_math_verify), Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer), Hub name or save_to_disk folder"""
    full_pairs: int = 3000
    """*full*: problems with at least one correct and one incorrect trace (the paper: 53k pairs in stage 2)"""
    full_max_len: int = 4096
    """*full*: longest prompt+trace in tokens kept (the paper: 19,800 in stage 2)"""
    full_sft_steps: int = 200
    """*full*: stage-1 SFT optimiser steps on the positives (official sft_landmv_5ep config: 3 epochs on 78k)"""
    full_redi_steps: int = 100
    """*full*: stage-2 REDI optimiser steps (the paper: 1 epoch on 53k pairs)"""
    full_batch: int = 32
    """*full*: sequences (SFT) or pairs (REDI) per optimiser step ("Global batch size of 32", redi config.yaml)"""
    full_micro_batch: int = 1
    """*full*: sequences or pairs per forward pass (gradient accumulation up to full_batch)"""
    full_sft_lr: float = 5e-5
    """*full*: stage-1 learning rate ("learning_rate: 5.0e-05", sft_landmv_5ep/config.yaml)"""
    full_redi_lr: float = 1e-6
    """*full*: stage-2 learning rate ("learning_rate: 1.0e-06", redi_1_08_1e-6/config.yaml)"""
    full_alpha: float = 0.8
    """*full*: REDI's negative weight ("reinforce_rejected_coef: 0.8", redi_1_08_1e-6/config.yaml)"""
    full_eval_problems: int = 100
    """*full*: MATH-500 problems evaluated"""
    full_eval_samples: int = 4
    """*full*: samples per problem (pass@1 = mean accuracy)"""
    full_max_new_tokens: int = 4096
    """*full*: generation budget at evaluation (the catalog: 4k)"""

    def __post_init__(self):
        check(0.0 <= self.alpha <= 1.0 and 0.0 <= self.full_alpha <= 1.0, "alpha must be in [0, 1]")
        bad = [m for m in _split(self.methods) if m not in METHODS]
        check(not bad and _split(self.methods), f"methods: unknown {bad}; choose from {', '.join(METHODS)}")
        check(self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'")
        check(self.steps >= 1 and self.batch >= 1 and self.eval_every >= 1, "steps, batch, eval_every must be >= 1")
        check(self.lr > 0 and self.full_sft_lr > 0 and self.full_redi_lr > 0, "learning rates must be > 0")
        check(self.dpo_beta > 0 and self.simpo_beta > 0 and self.simpo_gamma >= 0, "beta > 0 and gamma >= 0")
        check(self.eval_problems >= 1, "eval_problems must be >= 1")
        check(self.full_pairs >= 1 and self.full_batch >= 1 and self.full_micro_batch >= 1, "full sizes must be >= 1")
        check(self.full_batch % self.full_micro_batch == 0, "full_batch must be a multiple of full_micro_batch")


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ---------------------------------------------------------------------------------
# the student: a tiny autoregressive policy
# ---------------------------------------------------------------------------------
class ScratchpadPolicy(nn.Module):
    r"""A tiny autoregressive policy over :data:`VOCAB` for column addition: an MLP on the scratchpad's state.

    The next-token distribution after prefix :math:`y_{\le t}` is
    :math:`\mathrm{softmax}\,f_\theta(s_t)`, a 2-layer MLP shared by all positions, where the
    state :math:`s_t` is one-hot: the last ``k`` tokens, the position inside the current step,
    the step (column) index :math:`i` (the number of ``;`` written), and the prompt digits of
    column :math:`i` and of column :math:`i-1` (a perfect "attention" to the digits the step
    needs; whether there is a carry must still be *computed* from column :math:`i-1`'s digits).
    It generalises from a few thousand traces and trains in parallel over positions (one matrix
    product), which keeps the smoke profile within seconds.
    ``ids: (N, L)`` (``BOS``, ``2 n + 2`` prompt characters, trace...) → logits ``(N, L, V)``,
    ``logits[:, t]`` predicting token ``t+1``.
    """

    def __init__(self, n_digits: int = 2, k: int = 4, hidden: int = 128, max_step_pos: int = 10):
        super().__init__()
        V = len(VOCAB)
        self.n, self.k, self.max_step_pos = n_digits, k, max_step_pos
        d_in = 4 * V + k * V + max_step_pos + n_digits + 1
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, V))

    def features(self, ids: Tensor) -> Tensor:
        """One-hot state of every position, ``(N, L, d_in)``."""
        N, L = ids.shape
        V, n, P = len(VOCAB), self.n, 2 * self.n + 2
        ar = torch.arange(L).expand(N, L)
        sep = (ids == STOI[";"]) & (ar > P)
        col = sep.long().cumsum(1).clamp(max=n)  # (N, L) column being worked
        bound = sep | (ar == P)
        last = torch.where(bound, ar, torch.zeros_like(ar)).cummax(1).values
        step_pos = (ar - last).clamp(max=self.max_step_pos - 1)
        # prompt digits of every column (units first), PAD beyond the last column / before the first
        a = torch.stack([ids[:, n - i] for i in range(n)] + [torch.full((N,), PAD)], 1)  # (N, n+1)
        b = torch.stack([ids[:, 2 * n + 1 - i] for i in range(n)] + [torch.full((N,), PAD)], 1)
        prev = torch.where(col > 0, col - 1, torch.full_like(col, n))
        digs = torch.stack([a.gather(1, col), b.gather(1, col), a.gather(1, prev), b.gather(1, prev)], -1)
        window = F.pad(ids, (self.k - 1, 0), value=PAD).unfold(1, self.k, 1)  # (N, L, k)
        return torch.cat([F.one_hot(digs, V).float().reshape(N, L, -1), F.one_hot(window, V).float().reshape(N, L, -1),
                          F.one_hot(step_pos, self.max_step_pos).float(), F.one_hot(col, n + 1).float()], -1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(self.features(ids))


def encode(prompts: list[str], traces: list[str]) -> tuple[Tensor, Tensor]:
    """``BOS prompt trace EOS``, right-padded: ``ids: (N, L)`` and the completion mask ``(N, L)``.

    ``mask[n, t] = 1`` where token ``t`` belongs to the trace or its EOS (the tokens the loss
    scores; the prompt and padding are 0).
    """
    seqs = [[BOS] + [STOI[c] for c in p + y] + [EOS] for p, y in zip(prompts, traces)]
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), PAD, dtype=torch.long)
    mask = torch.zeros(len(seqs), L)
    for n, (s, p) in enumerate(zip(seqs, prompts)):
        ids[n, : len(s)] = torch.tensor(s)
        mask[n, 1 + len(p) : len(s)] = 1.0
    return ids, mask


def token_logprobs(model: ScratchpadPolicy, ids: Tensor, mask: Tensor, feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-token log-probs of ``ids[:, 1:]`` given the prefix: ``(logp, mask)``, both ``(N, L-1)``.

    ``feats``: ``model.features(ids[:, :-1])`` if already computed (they do not depend on the weights).
    """
    logits = model.net(feats) if feats is not None else model(ids[:, :-1])  # (N, L-1, V)
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = mask[:, 1:]
    return logp * m, m


@torch.no_grad()
def greedy(model: ScratchpadPolicy, prompts: list[str], max_len: int) -> list[str]:
    """Greedy traces (at most ``max_len`` characters) for prompts of equal length."""
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("greedy() expects prompts of equal length")
    ids = torch.tensor([[BOS] + [STOI[c] for c in p] for p in prompts])
    done = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(max_len):
        nxt = model.net(model.features(ids)[:, -1]).argmax(-1)  # (N,) last position only
        nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    texts = []
    for row in ids[:, 1 + len(prompts[0]) :].tolist():
        out = []
        for i in row:
            if i == EOS:
                break
            out.append(VOCAB[i] if i > EOS else "?")
        texts.append("".join(out))
    return texts


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------
def make_policy(recipe: Stage1Recipe) -> ScratchpadPolicy:
    """A fresh policy of the recipe's size (prompt of ``2 n_digits + 2`` characters)."""
    return ScratchpadPolicy(recipe.n_digits, k=recipe.window, hidden=recipe.hidden)


def teacher_data(recipe: Stage1Recipe) -> dict:
    """The teacher's data set: pairs, and the teacher's accuracy over the samples drawn."""
    task = sp.ScratchpadAddition(recipe.n_digits)
    rng = np.random.default_rng([recipe.data_seed, 2505])
    problems = task.sample(recipe.n_pairs, rng, "train")
    pairs, drawn = sp.NoisyTeacher(task, recipe.p_correct).pairs(problems, rng)
    return {"task": task, "pairs": pairs, "draws_per_problem": drawn / max(1, len(pairs)),
            "error_counts": {e: sum(p.error == e for p in pairs) for e in sp.ERRORS}}


def eval_set(task: sp.ScratchpadAddition, n: int, pairs_seed: int = 1) -> dict:
    """``n`` fixed held-out problems with a teacher positive and negative each (for log-likelihoods)."""
    rng = np.random.default_rng([pairs_seed, 77])
    problems = task.sample(min(n, len(task._split["test"])), rng, "test")
    pairs, _ = sp.NoisyTeacher(task).pairs(problems, rng)
    prompts = [p.problem.prompt for p in pairs]
    ids_w, m_w = encode(prompts, [p.positive for p in pairs])
    ids_l, m_l = encode(prompts, [p.negative for p in pairs])
    return {"problems": problems, "ids_w": ids_w, "m_w": m_w, "ids_l": ids_l, "m_l": m_l}


@torch.no_grad()
def evaluate(model: ScratchpadPolicy, task: sp.ScratchpadAddition, ev: dict) -> dict:
    """Greedy accuracy and held-out per-token log-likelihood of positive and negative traces."""
    model.eval()
    traces = greedy(model, [p.prompt for p in ev["problems"]], task.max_trace_len + 1)
    acc = float(np.mean([task.verify(p, t) for p, t in zip(ev["problems"], traces)]))
    lw, mw = token_logprobs(model, ev["ids_w"], ev["m_w"])
    ll, ml = token_logprobs(model, ev["ids_l"], ev["m_l"])
    model.train()
    return {"acc": acc, "ll_pos": float(masked_mean(lw, mw)), "ll_neg": float(masked_mean(ll, ml))}


# ---------------------------------------------------------------------------------
# stage 1: SFT on the positives (committed)
# ---------------------------------------------------------------------------------
def build_stage1(recipe: Stage1Recipe = Stage1Recipe(), out: Path | None = None) -> tuple[ScratchpadPolicy, dict]:
    """Train the stage-1 model deterministically; save ``out.pt`` / ``out.json`` if ``out`` is given."""
    t0 = time.time()
    data = teacher_data(recipe)
    torch.manual_seed(recipe.model_seed)
    model = make_policy(recipe)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    pos = [(p.problem.prompt, p.positive) for p in data["pairs"]]
    rng = np.random.default_rng([recipe.model_seed, 1])
    ids_all, mask_all = encode([p for p, _ in pos], [y for _, y in pos])
    feats = model.features(ids_all[:, :-1])
    for _ in range(recipe.steps):
        idx = torch.as_tensor(rng.choice(len(pos), recipe.batch, replace=False))
        logp, m = token_logprobs(model, ids_all[idx], mask_all[idx], feats[idx])
        loss = -masked_mean(logp, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev = evaluate(model, data["task"], eval_set(data["task"], 500))
    info = {"recipe": asdict(recipe), "competence": ev, "draws_per_problem": data["draws_per_problem"],
            "seconds": time.time() - t0}
    if out is not None:
        zoo.save_state(model, info, Path(out).name, Path(out).parent)
    return model, info


def load_stage1(recipe: Stage1Recipe = Stage1Recipe()) -> tuple[ScratchpadPolicy, dict]:
    """The committed stage-1 model if its recipe matches ``recipe``, else built now (same function)."""
    found = zoo.load_state(ZOO.name, ZOO.parent)
    if found is not None and found[1]["recipe"] == asdict(recipe):
        state, info = found
        model = make_policy(recipe)
        model.load_state_dict(state)
        return model, info
    return build_stage1(recipe)


# ---------------------------------------------------------------------------------
# stage 2: the pair objectives
# ---------------------------------------------------------------------------------
def pair_objective(name: str, cfg: Config):
    """``(logp_w, m_w, logp_l, m_l, ref_w, ref_l) -> loss`` of method ``name`` (:data:`METHODS`).

    ``logp_*, m_*: (N, T)`` per-token log-probs and masks; ``ref_w, ref_l: (N,)`` the stage-1
    model's sequence log-probs (used by DPO only).
    """
    if name in ("RS-SFT", "REDI", "REDI-sym"):
        a = {"RS-SFT": 0.0, "REDI": cfg.alpha, "REDI-sym": 1.0}[name]
        return lambda lw, mw, ll, ml, rw, rl: redi_loss(lw, mw, ll, ml, alpha=a)[0]
    if name == "DPO":
        return lambda lw, mw, ll, ml, rw, rl: dpo_loss(lw.sum(-1), rw, ll.sum(-1), rl, cfg.dpo_beta)[0]
    if name == "SimPO":
        return lambda lw, mw, ll, ml, rw, rl: simpo_loss(lw, mw, ll, ml, cfg.simpo_beta, cfg.simpo_gamma)[0]
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def prepare_pairs(base: ScratchpadPolicy, data: dict) -> tuple:
    """Encoded pairs, their (weight-independent) features and the reference (stage-1) sequence log-probs.

    ``(ids_w, m_w, f_w, ref_w, ids_l, m_l, f_l, ref_l)``; computed once and shared by every method.
    """
    prompts = [p.problem.prompt for p in data["pairs"]]
    ids_w, m_w = encode(prompts, [p.positive for p in data["pairs"]])
    ids_l, m_l = encode(prompts, [p.negative for p in data["pairs"]])
    f_w, f_l = base.features(ids_w[:, :-1]), base.features(ids_l[:, :-1])
    with torch.no_grad():
        rw = token_logprobs(base, ids_w, m_w, f_w)[0].sum(-1)  # (P,) reference = stage 1
        rl = token_logprobs(base, ids_l, m_l, f_l)[0].sum(-1)
    return ids_w, m_w, f_w, rw, ids_l, m_l, f_l, rl


def train_stage2(base: ScratchpadPolicy, data: dict, ev: dict, method: str, cfg: Config, seed: int,
                 recipe: Stage1Recipe) -> dict:
    """Stage 2 from a copy of ``base``: ``cfg.steps`` optimiser steps on random batches of ``cfg.batch`` pairs.

    ``data`` is :func:`teacher_data`'s dict; :func:`prepare_pairs` of ``base`` is cached in it
    (``data["prepared"]``), so pass a fresh dict for a different ``base``. Returns the evaluation
    history (``step``, ``acc``, ``ll_pos``, ``ll_neg``: lists), the ``seconds`` taken and the
    trained ``model``.
    """
    t0 = time.time()
    model = make_policy(recipe)
    model.load_state_dict(base.state_dict())
    opt = (torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=cfg.lr)
    loss_fn = pair_objective(method, cfg)
    if "prepared" not in data:
        data["prepared"] = prepare_pairs(base, data)
    ids_w, m_w, f_w, rw_all, ids_l, m_l, f_l, rl_all = data["prepared"]
    rng = np.random.default_rng([seed, 2])
    hist = {"step": [0], **{k: [v] for k, v in evaluate(model, data["task"], ev).items()}}
    for step in range(1, cfg.steps + 1):
        idx = torch.as_tensor(rng.choice(len(ids_w), min(cfg.batch, len(ids_w)), replace=False))
        lw, mw = token_logprobs(model, ids_w[idx], m_w[idx], f_w[idx])
        ll, ml = token_logprobs(model, ids_l[idx], m_l[idx], f_l[idx])
        loss = loss_fn(lw, mw, ll, ml, rw_all[idx], rl_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            hist["step"].append(step)
            for k, v in evaluate(model, data["task"], ev).items():
                hist[k].append(v)
    hist["seconds"] = time.time() - t0
    hist["model"] = model
    return hist


def run_smoke(cfg: Config, seed: int, recipe: Stage1Recipe = Stage1Recipe(), base: ScratchpadPolicy | None = None,
              data: dict | None = None) -> dict:
    """Stage 1 (committed) then every method of ``cfg.methods`` from it; histories by method.

    ``base`` / ``data``: the stage-1 model and teacher data if already loaded (:func:`load_stage1`,
    :func:`teacher_data` of ``recipe``).
    """
    torch.manual_seed(seed)
    if base is None:
        base, info = load_stage1(recipe)
    else:
        info = json.loads(ZOO.with_suffix(".json").read_text()) if ZOO.with_suffix(".json").exists() else {}
    data = data if data is not None else teacher_data(recipe)
    ev = eval_set(data["task"], cfg.eval_problems)
    out = {"stage1": info, "draws_per_problem": data["draws_per_problem"], "error_counts": data["error_counts"],
           "base": base, "data": data, "eval": ev}
    for m in _split(cfg.methods):
        out[m] = train_stage2(base, data, ev, m, cfg, seed, recipe)
    return out


# ---------------------------------------------------------------------------------
# the derivation: gradient weights as a function of the margin, on the real model
# ---------------------------------------------------------------------------------
def gradient_vs_margin(base: ScratchpadPolicy, data: dict, beta: float = 0.1, n: int = 64) -> dict:
    """On ``n`` training pairs: the DPO loss's and REDI's gradient norms as the DPO margin grows.

    The policy is the stage-1 model; the reference is the same model with its sequence
    log-probs shifted so that every pair's DPO margin equals ``m`` (an exact way of placing
    the pairs at a chosen margin). Returns margins, per-margin gradient norms of DPO and of
    symmetric REDI, and their ratio.
    """
    pairs = data["pairs"][:n]
    prompts = [p.problem.prompt for p in pairs]
    ids_w, m_w = encode(prompts, [p.positive for p in pairs])
    ids_l, m_l = encode(prompts, [p.negative for p in pairs])
    params = [p for p in base.parameters()]
    margins = torch.linspace(-4, 12, 9)
    g_dpo, g_redi = [], []
    for m in margins:
        lw, mw = token_logprobs(base, ids_w, m_w)
        ll, ml = token_logprobs(base, ids_l, m_l)
        sw, sl = lw.sum(-1), ll.sum(-1)
        ref_w = sw.detach() - m / beta  # so that beta * (sw - ref_w - (sl - ref_l)) = m
        ref_l = sl.detach()
        ld = dpo_loss(sw, ref_w, sl, ref_l, beta)[0]
        gd = torch.autograd.grad(ld, params, retain_graph=True)
        lr_ = redi_loss(lw, mw, ll, ml, alpha=1.0)[0]
        gr = torch.autograd.grad(lr_, params)
        g_dpo.append(float(torch.cat([g.flatten() for g in gd]).norm()))
        g_redi.append(float(torch.cat([g.flatten() for g in gr]).norm()))
    return {"margin": margins.numpy(), "dpo": np.array(g_dpo), "redi": np.array(g_redi)}


# ---------------------------------------------------------------------------------
# full profile: a Hub model, Open-R1-style pairs, SFT then REDI, MATH-500
# ---------------------------------------------------------------------------------
def openr1_pairs(ds, n: int, tok, max_len: int) -> list[dict]:
    """``{"prompt", "chosen", "rejected"}`` from rows with ``problem``, ``generations``, ``correctness_math_verify``.

    Keeps the first correct and the first incorrect generation of each problem that has both
    and whose prompt+trace fit ``max_len`` tokens, up to ``n`` problems (the paper's data
    preparation keeps such problems from OpenR1-Math-220k ``default``).
    """
    out = []
    for ex in ds:
        gens, ok = list(ex["generations"]), list(ex["correctness_math_verify"])
        pos = [g for g, c in zip(gens, ok) if c]
        neg = [g for g, c in zip(gens, ok) if not c]
        if not pos or not neg:
            continue
        prompt = chat_prompt(tok, ex["problem"])
        plen = len(tok(prompt, add_special_tokens=False)["input_ids"])
        if plen + max(len(tok(y, add_special_tokens=False)["input_ids"]) for y in (pos[0], neg[0])) + 1 > max_len:
            continue
        out.append({"prompt": prompt, "chosen": pos[0], "rejected": neg[0]})
        if len(out) >= n:
            break
    return out


def chat_prompt(tok, problem: str) -> str:
    """The problem as the model's chat prompt (plain text if the tokenizer has no chat template)."""
    msg = [{"role": "user", "content": problem + "\nPlease reason step by step, and put your final answer within \\boxed{}."}]
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
    return msg[0]["content"] + "\n"


def hf_encode(tok, prompts: list[str], completions: list[str], device) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids, attention_mask`` and a completion mask (completion + EOS tokens)."""
    seqs, cmask = [], []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    for p, c in zip(prompts, completions):
        pi = tok(p, add_special_tokens=False)["input_ids"]
        ci = tok(c, add_special_tokens=False)["input_ids"] + eos
        seqs.append(pi + ci)
        cmask.append([0] * len(pi) + [1] * len(ci))
    L = max(map(len, seqs))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    att = torch.zeros(len(seqs), L, dtype=torch.long)
    cm = torch.zeros(len(seqs), L)
    for n, (s, m) in enumerate(zip(seqs, cmask)):
        ids[n, : len(s)] = torch.tensor(s)
        att[n, : len(s)] = 1
        cm[n, : len(s)] = torch.tensor(m, dtype=torch.float)
    return ids.to(device), att.to(device), cm.to(device)


def hf_token_logprobs(model, ids: Tensor, att: Tensor, cm: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log-probs of the completion tokens: ``(N, L-1)`` and their mask."""
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = cm[:, 1:]
    return logp * m, m


def _loop(model, batches, loss_of, lr: float, steps: int, accum: int, log: list, name: str) -> None:
    """``steps`` AdamW steps (``accum`` micro-batches each), linear warm-up 10% then decay, as the recipes."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, int(0.1 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    model.train()
    for step in range(steps):
        opt.zero_grad()
        tot = 0.0
        for _ in range(accum):
            loss = loss_of(next(batches)) / accum
            loss.backward()
            tot += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.append({"stage": name, "step": step + 1, "loss": tot})


def _cycle(items: list, micro: int, rng: np.random.Generator):
    while True:
        order = rng.permutation(len(items))
        for s in range(0, len(order) - micro + 1, micro):
            yield [items[i] for i in order[s : s + micro]]


def run_full(cfg: Config, seed: int, device: str | None = None) -> dict:
    """Stage 1 (SFT on positives) then stage 2 (REDI) on a Hub model; MATH-500 pass@k after each.

    Every path is "a Hub name or a local folder" (the dry-run test passes tiny local ones).
    Returns ``{"stage1": pass@k dict, "redi": pass@k dict, "log": [...], "pairs": int}``.
    """
    from rlbook import hub, math_data
    from rlbook.models import load_pretrained

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else None
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    tok.padding_side = "right"
    if device == "cuda":
        model.gradient_checkpointing_enable()
    pairs = openr1_pairs(hub.load_dataset(cfg.full_data, "train"), cfg.full_pairs, tok, cfg.full_max_len)
    if not pairs:
        raise RuntimeError("no problem has both a correct and an incorrect trace")
    ev = hub.load_dataset(cfg.full_eval_data, "test")
    ev = ev.select(range(min(cfg.full_eval_problems, len(ev))))
    ev = ev.map(lambda ex: {"prompt": chat_prompt(tok, ex["problem"]), "answer": str(ex["answer"])})
    rng = np.random.default_rng(seed)
    accum = cfg.full_batch // cfg.full_micro_batch
    log: list[dict] = []

    def sft_of(batch):
        ids, att, cm = hf_encode(tok, [b["prompt"] for b in batch], [b["chosen"] for b in batch], device)
        logp, m = hf_token_logprobs(model, ids, att, cm)
        return -masked_mean(logp, m)

    def redi_of(batch):
        p = [b["prompt"] for b in batch]
        lw, mw = hf_token_logprobs(model, *hf_encode(tok, p, [b["chosen"] for b in batch], device))
        ll, ml = hf_token_logprobs(model, *hf_encode(tok, p, [b["rejected"] for b in batch], device))
        return redi_loss(lw, mw, ll, ml, alpha=cfg.full_alpha)[0]

    _loop(model, _cycle(pairs, cfg.full_micro_batch, rng), sft_of, cfg.full_sft_lr, cfg.full_sft_steps, accum, log,
          "sft")
    tok.padding_side = "left"
    res1 = math_data.evaluate_full(model, tok, ev, cfg.full_eval_samples, cfg.full_max_new_tokens)
    tok.padding_side = "right"
    _loop(model, _cycle(pairs, cfg.full_micro_batch, rng), redi_of, cfg.full_redi_lr, cfg.full_redi_steps, accum,
          log, "redi")
    tok.padding_side = "left"
    res2 = math_data.evaluate_full(model, tok, ev, cfg.full_eval_samples, cfg.full_max_new_tokens)
    return {"stage1": res1, "redi": res2, "log": log, "pairs": len(pairs)}


def main() -> None:  # pragma: no cover - rebuilds the committed checkpoint
    """``python -m rlbook.experiments.redi_reinforcement_distillation``: rebuild the stage-1 checkpoint."""
    torch.set_num_threads(1)
    _, info = build_stage1(Stage1Recipe(), ZOO)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
