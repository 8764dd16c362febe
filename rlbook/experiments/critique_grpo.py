r"""Chapter "Critique-GRPO: Advancing LLM Reasoning with Natural Language and Numerical Feedback" (arXiv 2506.03106).

Critique-GRPO adds, to each GRPO group of a question, refinements of the group's failed answers that the
policy writes after reading a natural-language critique; the refinements are scored under the *bare*
question and their token probabilities pass through the shaping function :math:`f(p)=p/(p+\gamma)`
(:mod:`rlbook.losses.critique_grpo`).

Smoke profile: a **tabular world** built from :mod:`rlbook.tasks.critique` (two-digit addition with a
rule-based critic). Each prompt is a free softmax over 12 candidate answers (the correct one, dropped-carry
errors, one-digit slips); the carry-chain prompts are *persistent failures* (the base puts ~0.2% on the
correct answer and most of its mass on the dropped-carry answer). The refinement policy is the *same* policy
reading the critique: with probability ``uptake`` it samples from its own distribution restricted to the
answers the critique leaves possible (:func:`rlbook.tasks.critique.consistent`), else it ignores the critique
and resamples:

.. math:: \pi(y|q,y_w,c) = (1-u)\,\pi_\theta(y|q) + u\,\frac{\pi_\theta(y|q)\,\mathbb 1[y\in S_c]}{\pi_\theta(S_c|q)}.

So one knob (``uptake``) says how often the model heeds a critique, and the *information* a critique carries
decides how much a heeded critique helps. Methods: GRPO (``n`` samples), Critique-GRPO (``n`` samples +
``k`` refinements chosen among the failed answers' refinements, correct ones first), and two ablations
(unshaped off-policy term; indicative critiques). Exact metrics: :math:`p(x)=\pi_\theta(y^\star|x)` (pass@1),
and the refinement success rate of each critique type.

Full profile (:func:`run_full`): a torch loop on a Hub model and MATH (:mod:`rlbook.math_data`): sample ``n``
answers per problem, critique the wrong ones with the ground truth, let the policy refine them, append ``k``
refinements (correct ones first) to the group and train with
:func:`rlbook.losses.critique_grpo.critique_grpo_loss`; pass@k on MATH-500.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlbook import hub, math_data, rollout
from rlbook.config import check
from rlbook.losses.critique_grpo import critique_group_advantage, critique_grpo_loss
from rlbook.tasks import critique as C

METHODS = ("GRPO", "Critique-GRPO", "Critique-GRPO (no shaping)", "Critique-GRPO (indicative)")
"""the tabular runs: GRPO, Critique-GRPO with ``critique_kind`` critiques, and two ablations"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_prompts: int = 48
    """tabular: ordinary prompts (non-carry-chain additions)"""
    n_persistent: int = 16
    """tabular: persistent-failure prompts (carry chains into the hundreds)"""
    candidates: int = 12
    """K: candidate answers per prompt (rlbook.tasks.critique.CritiqueAdditionTask.candidates)"""
    steps: int = 60
    """training steps (every prompt, ``n`` samples + refinements, one Adam step)"""
    n: int = 8
    """initial answers per prompt (the paper's 7 or 8 rollouts)"""
    k: int = 2
    """refinements added to each group (the official run replaces 1 of 8; the catalog's design adds 2)"""
    gamma: float = 0.1
    """γ of the shaping f(p) = p/(p+γ) (official off_policy_reshape="p_div_p_0.1")"""
    uptake: float = 0.5
    """u: probability that the policy heeds a critique when refining (else it resamples)"""
    critique_kind: str = "cot"
    """critique type of the Critique-GRPO run: "indicative", "ground_truth" or "cot" (catalog: CoT)"""
    scale_std: bool = False
    """divide advantages by the group std (False: the official algorithm.grpo_use_std=False)"""
    lr: float = 0.1
    """Adam learning rate on the logits"""
    methods: str = "GRPO,Critique-GRPO,Critique-GRPO (no shaping),Critique-GRPO (indicative)"
    """comma-separated tabular runs (any of METHODS)"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """*full*: policy, a Hub name or a local folder (paper: Qwen2.5-7B-Base, Qwen3-8B-Base)"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: MATH training problems (Hub name or save_to_disk folder; paper: OpenR1-Math 4k subset)"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer)"""
    full_methods: str = "GRPO,Critique-GRPO"
    """*full*: runs, one each"""
    full_steps: int = 150
    """*full*: optimiser steps"""
    full_prompts: int = 16
    """*full*: prompts per step (official train_batch_size=128)"""
    full_n: int = 7
    """*full*: initial answers per prompt (official rollout7_critique_1: 7 + 1 refinement)"""
    full_k: int = 1
    """*full*: refinements per group (official n_prefix=1)"""
    full_lr: float = 1e-6
    """*full*: AdamW learning rate (official LEARNING_RATE=1e-6)"""
    full_max_completion: int = 1024
    """*full*: max new tokens (official 6144)"""
    full_micro_batch: int = 8
    """*full*: sequences per forward/backward pass (gradient accumulation)"""
    full_eval_problems: int = 100
    """*full*: MATH-500 problems for pass@k"""
    full_eval_samples: int = 8
    """*full*: samples per problem for the unbiased pass@k"""
    full_levels: str = "Level 3,Level 4,Level 5"
    """*full*: MATH difficulty levels kept for training"""

    def __post_init__(self):
        check(self.n_prompts >= 1 and self.n_persistent >= 1, "need ordinary and persistent prompts")
        check(4 <= self.candidates <= 14, "candidates must be in 4..14")
        check(self.steps >= 1 and self.full_steps >= 1, "steps must be positive")
        check(self.n >= 2 and self.k >= 0 and self.k <= self.n, "need n >= 2 and 0 <= k <= n")
        check(self.full_n >= 2 and 0 <= self.full_k <= self.full_n, "need full_n >= 2 and 0 <= full_k <= full_n")
        check(self.gamma > 0 and self.lr > 0 and self.full_lr > 0, "gamma and learning rates must be > 0")
        check(0.0 <= self.uptake <= 1.0, "uptake must be in [0, 1]")
        check(self.critique_kind in C.KINDS, f"critique_kind must be one of {C.KINDS}")
        bad = [m for m in math_data.split_list(self.methods) if m not in METHODS]
        check(not bad, f"methods: unknown {bad}; choose from {', '.join(METHODS)}")
        bad = [m for m in math_data.split_list(self.full_methods) if m not in ("GRPO", "Critique-GRPO")]
        check(not bad, f"full_methods: unknown {bad}; choose from GRPO, Critique-GRPO")


# ---------------------------------------------------------------------------------
# the tabular world
# ---------------------------------------------------------------------------------
@dataclass
class World:
    """Prompts, base logits and the critic's consistency tables of the tabular world."""

    problems: list
    """the prompts (rlbook.tasks.Problem)"""
    answers: list
    """``answers[x]``: the K candidate strings of prompt x (index 0 is correct)"""
    persistent: Tensor
    """``(X,)`` bool: carry-chain prompt"""
    z0: Tensor
    """``(X, K)`` float64 base logits"""
    correct: Tensor
    """``(X, K)`` bool"""
    consistent: dict
    """``kind -> (X, K, K)`` bool: ``[x, w, y]`` = answer y agrees with the critique of answer w"""


def make_world(cfg: Config, seed: int) -> World:
    """Sample the prompts and the base policy; tabulate what each critique of each answer allows.

    Base: ordinary prompts put :math:`p^\\star\\sim U(0.05, 0.5)` on the correct answer; carry-chain prompts
    put :math:`U(0.0005, 0.003)` on it and :math:`U(0.6, 0.85)` on the dropped-carry answer; the rest of the
    mass is spread over the other candidates by a Dirichlet(0.5).
    """
    rng = np.random.default_rng([seed, 31])
    task = C.CritiqueAdditionTask()
    probs = task.sample(cfg.n_prompts, rng, persistent=False) + task.sample(cfg.n_persistent, rng, persistent=True)
    K = cfg.candidates
    answers = [task.candidates(p, K) for p in probs]
    pi = np.zeros((len(probs), K))
    pers = np.array([task.is_persistent(p) for p in probs])
    for x, p in enumerate(probs):
        if pers[x]:
            p_star, p_drop = rng.uniform(0.0005, 0.003), rng.uniform(0.6, 0.85)
            drop = answers[x].index(task.dropped_carry_answers(p)[0])
            rest = [j for j in range(1, K) if j != drop]
            pi[x, 0], pi[x, drop] = p_star, p_drop
            pi[x, rest] = (1 - p_star - p_drop) * rng.dirichlet(np.full(len(rest), 0.5))
        else:
            p_star = rng.uniform(0.05, 0.5)
            pi[x, 0] = p_star
            pi[x, 1:] = (1 - p_star) * rng.dirichlet(np.full(K - 1, 0.5))
    z0 = torch.tensor(np.log(np.maximum(pi, 1e-12)))
    correct = torch.zeros(len(probs), K, dtype=torch.bool)
    correct[:, 0] = True
    cons = {}
    for kind in C.KINDS:
        t = np.zeros((len(probs), K, K), dtype=bool)
        for x, p in enumerate(probs):
            for w, yw in enumerate(answers[x]):
                c = C.critique(p, yw, kind)
                t[x, w] = [C.consistent(c, y) for y in answers[x]]
        cons[kind] = torch.tensor(t)
    return World(probs, answers, torch.tensor(pers), z0, correct, cons)


def refinement_probs(pi: Tensor, allowed: Tensor, uptake: float) -> Tensor:
    r"""The refinement policy :math:`(1-u)\pi + u\,\pi\mathbb 1[S_c]/\pi(S_c)` (module docstring).

    ``pi: (..., K)`` the policy on the bare question, ``allowed: (..., K)`` bool the set :math:`S_c` the
    critique leaves possible → ``(..., K)``.
    """
    restricted = pi * allowed
    restricted = restricted / restricted.sum(-1, keepdim=True).clamp(min=1e-300)
    return (1.0 - uptake) * pi + uptake * restricted


def refinement_success(z: Tensor, w: World, kind: str, uptake: float) -> Tensor:
    r"""Exact probability that one refinement of a *failed* answer is correct, per prompt ``(X,)``.

    :math:`\sum_{y_w\ \mathrm{wrong}}\frac{\pi(y_w)}{1-p}\,\pi(y^\star|q,y_w,c(y_w))`.
    """
    pi = torch.softmax(z, -1)  # (X, K)
    ref = refinement_probs(pi[:, None, :].expand(-1, pi.shape[1], -1), w.consistent[kind], uptake)  # (X, Kw, K)
    succ = (ref * w.correct[:, None, :]).sum(-1)  # (X, Kw)
    wrong = pi * (~w.correct)
    return (wrong * succ).sum(-1) / wrong.sum(-1).clamp(min=1e-300)


def metrics(z: Tensor, w: World, uptake: float) -> dict:
    """pass@1 overall / persistent / ordinary, refinement success per critique type, entropy (nats)."""
    p = (torch.softmax(z, -1) * w.correct).sum(-1)
    pers = w.persistent
    out = {"pass@1": float(p.mean()), "persistent": float(p[pers].mean()), "ordinary": float(p[~pers].mean()),
           "entropy": float(-(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1).mean())}
    for kind in C.KINDS:
        s = refinement_success(z, w, kind, uptake)
        out[f"refine/{kind}"] = float(s.mean())
        out[f"refine/{kind}/persistent"] = float(s[pers].mean())
    return out


def critique_step(z: Tensor, w: World, n: int, k: int, kind: str | None, uptake: float,
                  gen: torch.Generator) -> dict:
    """Sample one Critique-GRPO group per prompt (no gradient).

    ``n`` answers from :math:`\\pi(\\cdot|q)`; a critique of each failed one (type ``kind``) and one
    refinement each from :func:`refinement_probs`; the ``k`` refinements kept per prompt are the correct
    ones first (ties broken at random), as the official ``process_refinement_groups``. ``kind=None`` or
    ``k=0``: a plain GRPO group. Returns ``y: (X, n+k)`` answer indices, ``r: (X, n+k)`` rewards,
    ``valid: (X, n+k)`` (a prompt with fewer than ``k`` failed answers gets fewer refinements) and
    ``refinement: (X, n+k)`` bool.
    """
    X, K = z.shape
    pi = torch.softmax(z, -1)
    y = torch.multinomial(pi, n, replacement=True, generator=gen)  # (X, n)
    r = w.correct.gather(1, y).double()
    valid = torch.ones(X, n, dtype=torch.bool)
    is_ref = torch.zeros(X, n, dtype=torch.bool)
    if kind is None or k == 0:
        return {"y": y, "r": r, "valid": valid, "refinement": is_ref}
    allowed = w.consistent[kind][torch.arange(X)[:, None], y]  # (X, n, K)
    ref_p = refinement_probs(pi[:, None, :].expand(-1, n, -1), allowed, uptake)  # (X, n, K)
    y_ref = torch.multinomial(ref_p.reshape(X * n, K), 1, generator=gen).view(X, n)
    r_ref = w.correct.gather(1, y_ref).double()
    score = r_ref + 0.5 * torch.rand(X, n, generator=gen, dtype=torch.float64)
    score = score.masked_fill(r > 0, -1.0)  # only failed answers are refined
    top = score.topk(k, dim=1)
    sel_y, sel_r = y_ref.gather(1, top.indices), r_ref.gather(1, top.indices)
    sel_valid = top.values >= 0
    return {"y": torch.cat([y, sel_y], 1), "r": torch.cat([r, sel_r * sel_valid], 1),
            "valid": torch.cat([valid, sel_valid], 1), "refinement": torch.cat([is_ref, torch.ones_like(sel_valid)], 1)}


def group_loss(z: Tensor, batch: dict, gamma: float, reshape: str = "p_div_p", scale_std: bool = False) -> Tensor:
    """The Critique-GRPO loss of one tabular batch: each answer is a one-token completion scored under the
    bare question, ``logp: (X*(n+k), 1)``; one update per batch, so ``logp_old = logp``."""
    logp = torch.log_softmax(z, -1).gather(1, batch["y"]).reshape(-1, 1)  # (X*(n+k), 1)
    adv = critique_group_advantage(batch["r"], batch["valid"], scale=scale_std).reshape(-1)
    mask = batch["valid"].reshape(-1, 1).double()
    loss, _ = critique_grpo_loss(logp, logp.detach(), adv, mask, batch["refinement"].reshape(-1), gamma=gamma,
                                 reshape=reshape)
    return loss


def train_tabular(w: World, method: str, cfg: Config, seed: int) -> dict:
    """One run of ``method`` (:data:`METHODS`) from the base; returns the final logits and per-step traces."""
    kind = {"GRPO": None, "Critique-GRPO": cfg.critique_kind, "Critique-GRPO (no shaping)": cfg.critique_kind,
            "Critique-GRPO (indicative)": "indicative"}[method]
    reshape = "none" if method == "Critique-GRPO (no shaping)" else "p_div_p"
    z = w.z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed * 1000 + 7)
    trace = {key: [] for key in ("pass@1", "persistent", "ordinary", "entropy", "refine/cot", "refined_correct")}
    for _ in range(cfg.steps):
        with torch.no_grad():
            batch = critique_step(z.detach(), w, cfg.n, cfg.k, kind, cfg.uptake, gen)
        loss = group_loss(z, batch, cfg.gamma, reshape, cfg.scale_std)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p = (torch.softmax(z, -1) * w.correct).sum(-1)
            trace["pass@1"].append(float(p.mean()))
            trace["persistent"].append(float(p[w.persistent].mean()))
            trace["ordinary"].append(float(p[~w.persistent].mean()))
            pr = torch.softmax(z, -1)
            trace["entropy"].append(float(-(pr * torch.log(pr)).sum(-1).mean()))
            ref = batch["refinement"] & batch["valid"]
            trace["refined_correct"].append(float(batch["r"][ref].mean()) if bool(ref.any()) else float("nan"))
            trace["refine/cot"].append(float(refinement_success(z, w, "cot", cfg.uptake).mean()))
    return {"z": z.detach(), "trace": {key: np.array(v) for key, v in trace.items()}}


def run_tabular(cfg: Config, seed: int) -> dict:
    """The base and every method of ``cfg.methods``: final metrics and traces."""
    t0 = time.time()
    w = make_world(cfg, seed)
    out = {"world": w, "base": metrics(w.z0, w, cfg.uptake), "traces": {}}
    for m in math_data.split_list(cfg.methods):
        run = train_tabular(w, m, cfg, seed)
        out[m] = metrics(run["z"], w, cfg.uptake)
        out["traces"][m] = run["trace"]
    out["seconds"] = time.time() - t0
    return out


def gradient_weights(p: np.ndarray, gamma: float) -> dict:
    r"""Weight on :math:`\nabla\log\pi` of one refinement token with advantage 1, by objective.

    Log-likelihood (SFT): 1; unshaped off-policy term :math:`f(p)=p`: :math:`p`; shaped :math:`f(p)=p/(p+\gamma)`:
    :math:`p\gamma/(p+\gamma)^2`. Computed by autograd through :func:`critique_grpo_loss` (one token, one row).
    """
    out = {"sft": [], "unshaped": [], "shaped": []}
    for pv in np.asarray(p, dtype=float):
        for name, reshape in (("unshaped", "none"), ("shaped", "p_div_p")):
            lp = torch.tensor([[np.log(pv)]], dtype=torch.float64, requires_grad=True)
            loss, _ = critique_grpo_loss(lp, lp.detach(), torch.ones(1, dtype=torch.float64), torch.ones(1, 1),
                                         torch.ones(1, dtype=torch.bool), gamma=gamma, reshape=reshape)
            loss.backward()
            out[name].append(-float(lp.grad))
        out["sft"].append(1.0)
    return {key: np.array(v) for key, v in out.items()}


# ---------------------------------------------------------------------------------
# full profile: a torch loop on a Hub model and MATH
# ---------------------------------------------------------------------------------
CRITIQUE_GT = ("The answer {given} is wrong. The correct final answer is {answer}. "
               "Revise the solution so that it reaches the correct answer.")
"""*full*: the ground-truth critique template (the official ``critique_type="simple_gt"``)"""

REFINE_PROMPT = ("{problem}\n\nHere is a previous solution:\n{response}\n\nCritique: {critique}\n\n"
                 "Please write a new, correct solution step by step, and put your final answer within \\boxed{{}}.\n")
"""*full*: the refinement prompt (question, failed response, critique)"""


def full_critique(response: str, answer: str) -> str:
    """Ground-truth critique of a failed MATH response (its last ``\\boxed{}`` or "no boxed answer")."""
    given = math_data.last_boxed(response)
    return CRITIQUE_GT.format(given=f"\\boxed{{{given}}}" if given is not None else "(no boxed answer)", answer=answer)


def _completion_mask(comp: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """1 up to and including the first EOS (or on non-pad tokens if there is none)."""
    is_eos = (comp == eos_id).long()
    before = (is_eos.cumsum(1) - is_eos) == 0
    if eos_id != pad_id:
        before = before & ((comp != pad_id) | (is_eos > 0))
    return before.long()


@torch.no_grad()
def _generate(model, tok, prompts: list[str], n: int, max_new: int) -> tuple[Tensor, Tensor, list[str]]:
    """``n`` samples per prompt (temperature 1): completion ids ``(len*n, T)``, mask, decoded texts."""
    enc = tok(prompts, return_tensors="pt", padding=True).to(next(model.parameters()).device)
    out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new,
                         num_return_sequences=n, pad_token_id=tok.pad_token_id)
    comp = out[:, enc["input_ids"].shape[1]:]
    mask = _completion_mask(comp, tok.eos_token_id, tok.pad_token_id)
    texts = tok.batch_decode(comp * mask + tok.pad_token_id * (1 - mask), skip_special_tokens=True)
    return comp, mask, texts


def _pad_right(rows: list[Tensor], pad_id: int) -> Tensor:
    T = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def train_full(model, tok, train, cfg: Config, method: str, seed: int, steps: int, max_new: int) -> list[dict]:
    """``steps`` Critique-GRPO (or GRPO) updates of ``model`` on MATH problems; returns per-step logs.

    Per step: ``full_prompts`` problems; ``full_n`` answers each; for Critique-GRPO a ground-truth critique
    (:func:`full_critique`) of every wrong answer and one refinement each under :data:`REFINE_PROMPT`; the
    ``full_k`` refinements kept per problem are the correct ones first; every member is scored under the bare
    question (``rollout.token_logprobs``), advantages over the whole group (no std, official), loss
    :func:`critique_grpo_loss` without clipping and with a token mean over the batch (official
    ``loss_remove_clip=True``; one update per batch), AdamW, gradient norm clipped at 1.
    """
    dev = next(model.parameters()).device
    rng = np.random.default_rng([seed, 5])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.full_lr, weight_decay=0.0)
    n, k = cfg.full_n, (cfg.full_k if method == "Critique-GRPO" else 0)
    G = n + k
    logs = []
    for _ in range(steps):
        rows = train.select(rng.choice(len(train), size=min(cfg.full_prompts, len(train)), replace=False).tolist())
        prompts, answers, problems = list(rows["prompt"]), list(rows["answer"]), list(rows["problem"])
        model.eval()
        comp, cmask, texts = _generate(model, tok, prompts, n, max_new)
        r_init = torch.tensor(math_data.math_reward(texts, [a for a in answers for _ in range(n)])).view(-1, n)
        members: list[list[Tensor]] = [[comp[b * n + i][cmask[b * n + i] > 0].cpu() for i in range(n)]
                                       for b in range(len(prompts))]
        r = torch.zeros(len(prompts), G)
        valid = torch.zeros(len(prompts), G, dtype=torch.bool)
        r[:, :n], valid[:, :n] = r_init, True
        if k > 0:
            wrong = [(b, i) for b in range(len(prompts)) for i in range(n) if r_init[b, i] == 0]
            if wrong:
                ref_prompts = [REFINE_PROMPT.format(problem=problems[b], response=texts[b * n + i],
                                                    critique=full_critique(texts[b * n + i], answers[b]))
                               for b, i in wrong]
                rcomp, rmask, rtexts = _generate(model, tok, ref_prompts, 1, max_new)
                rr = math_data.math_reward(rtexts, [answers[b] for b, _ in wrong])
                for b in range(len(prompts)):
                    mine = [j for j, (bb, _) in enumerate(wrong) if bb == b]
                    mine.sort(key=lambda j: (-rr[j], rng.random()))
                    for slot, j in enumerate(mine[:k]):
                        members[b].append(rcomp[j][rmask[j] > 0].cpu())
                        r[b, n + slot], valid[b, n + slot] = rr[j], True
        for b in range(len(prompts)):
            members[b] += [torch.zeros(0, dtype=torch.long)] * (G - len(members[b]))
        adv = critique_group_advantage(r, valid).reshape(-1)  # (B*G,)
        flat = [m for group in members for m in group]
        is_ref = torch.tensor([g >= n for _ in prompts for g in range(G)])
        keep = valid.reshape(-1)
        total_tokens = max(1, sum(len(m) for m, v in zip(flat, keep) if v))
        model.train()
        opt.zero_grad()
        loss_sum = 0.0
        idx = [i for i in range(len(flat)) if keep[i] and len(flat[i]) > 0]
        for s in range(0, len(idx), cfg.full_micro_batch):
            mb = idx[s : s + cfg.full_micro_batch]
            enc = tok([prompts[i // G] for i in mb], return_tensors="pt", padding=True).to(dev)
            cids = _pad_right([flat[i] for i in mb], tok.pad_token_id).to(dev)
            cm = _pad_right([torch.ones(len(flat[i]), dtype=torch.long) for i in mb], 0).to(dev)
            logp = rollout.token_logprobs(model, enc["input_ids"], cids, attention_mask=enc["attention_mask"])
            logp = logp.masked_fill(cm == 0, 0.0)
            loss, _ = critique_grpo_loss(logp, logp.detach(), adv[mb].to(dev), cm, is_ref[mb].to(dev),
                                         gamma=cfg.gamma, clip=False, agg="token-mean")
            loss = loss * cm.sum() / total_tokens  # token mean over the whole batch
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ref_ok = r[:, n:][valid[:, n:]]
        logs.append({"loss": loss_sum, "reward": float(r_init.mean()),
                     "refined_correct": float(ref_ok.mean()) if ref_ok.numel() else float("nan")})
    model.eval()
    return logs


def run_full(cfg: Config, seed: int, cpu: bool = False, max_steps: int | None = None,
             eval_problems: int | None = None, eval_samples: int | None = None,
             max_completion: int | None = None, generation_batch: int = 64) -> dict:
    """Paper-scale run: base, then each of ``cfg.full_methods`` from the base; pass@k on MATH-500.

    Not timed on a GPU here (catalog estimate: ~50 min per 150-step run on an H100 with vLLM; this loop
    samples with ``model.generate``, slower). The ``cpu`` / ``max_*`` / ``eval_*`` overrides exist for the
    dry-run test (a tiny local model and data set). Returns ``{"base": pass@k, method: pass@k, "logs": ...}``.
    """
    from rlbook.models import load_pretrained

    steps = max_steps or cfg.full_steps
    n_eval = eval_problems or cfg.full_eval_problems
    n_samp = eval_samples or cfg.full_eval_samples
    max_new = max_completion or cfg.full_max_completion
    train = math_data.load_math(cfg.full_train_data, "train", levels=math_data.split_list(cfg.full_levels))
    evalset = math_data.load_math(cfg.full_eval_data, "test", n=n_eval)
    device, dtype, _ = hub.full_device(cpu)
    torch.manual_seed(seed)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch), "logs": {}}
    for m in math_data.split_list(cfg.full_methods):
        torch.manual_seed(seed)
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        results["logs"][m] = train_full(model, tok, train, cfg, m, seed, steps, max_new)
        results[m] = math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch)
    return results
