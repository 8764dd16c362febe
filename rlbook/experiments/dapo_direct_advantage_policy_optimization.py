r"""Chapter "Direct Advantage Policy Optimization" (DAPO, Liu et al. 2024, arXiv 2412.18279; not ByteDance's DAPO).

A tabular step-level reasoning world, everything exact by enumeration:

- **world** (:func:`make_world`): ``P`` problems, each a complete tree of ``T`` reasoning steps with
  ``V = 4`` candidate steps per state (:class:`rlbook.mdp.TokenTree` indexing): two *valid* steps, one
  recoverable *detour* (the solution goes off track; the next valid step brings it back) and one
  *fatal* error (the solution is lost). Success = on track after the last step. The generator
  :math:`\pi_{ref}` is a per-state softmax whose role probabilities vary by problem and state.
- **critic** (:func:`collect_dapo_data`): Monte-Carlo completions of :math:`\pi_{ref}` from the states a few
  sampled solutions visit and from their candidate children; a tabular :math:`\hat V(s)`.
- **actor**: tabular logits trained offline with :func:`rlbook.losses.dapo_direct.dapo_direct_loss`.
- **baselines** at the same number of generated steps: rejection-sampling SFT on correct full solutions
  and outcome-level DPO on (correct, incorrect) pairs of the same problem; and the oracle
  :math:`\pi^*=\pi_{ref}e^{A/\beta}/Z` from the exact advantages.

Full profile (:func:`run_full`, one GPU, plain torch loop): a critic with a scalar head trained on the step
prefixes of sampled solutions labelled by their outcome, candidate next steps (lines) at the step prefixes of one
solution per problem, the DAPO regression for the actor, pass@k on MATH-500.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rlbook.config import check
from rlbook.losses.dapo_direct import dapo_direct_loss, kl_optimal_logpolicy
from rlbook.losses.dpo import dpo_loss
from rlbook.mdp import TokenTree

VALID, DETOUR, FATAL = 0, 1, 2
"""step roles"""
ON, OFF, DEAD = 0, 1, 2
"""solution status"""


@dataclass
class Config:
    """The experiment's knobs."""

    problems: int = 16
    """problems (one step tree each)"""
    steps: int = 4
    """T, reasoning steps per solution"""
    p_valid: float = 0.5
    """pi_ref's total probability of the two valid steps (the catalog: 0.55)"""
    p_detour: float = 0.25
    """pi_ref's probability of the detour step (the catalog: 0.25)"""
    noise: float = 0.5
    """std of the per-state noise added to pi_ref's role logits"""
    difficulty: float = 1.0
    """spread of the per-problem shift of the fatal step's logit (uniform in [0, difficulty])"""
    trajectories: int = 2
    """DAPO: solutions sampled per problem whose visited states are expanded"""
    candidates: int = 8
    """DAPO: candidate next steps sampled from pi_ref at each visited state"""
    mc_rollouts: int = 8
    """DAPO: Monte-Carlo completions per candidate child (the critic's labels)"""
    beta: float = 0.3
    """KL strength of the step-level improvement"""
    dpo_beta: float = 0.3
    """beta of the outcome-level DPO baseline"""
    actor_steps: int = 500
    """Adam steps of every offline actor (full batch)"""
    actor_lr: float = 0.05
    """Adam learning rate of the tabular actors"""

    def __post_init__(self):
        check(self.problems >= 1 and self.steps >= 2, "need problems >= 1 and steps >= 2")
        check(0 < self.p_valid and 0 < self.p_detour and self.p_valid + self.p_detour < 1,
              "p_valid, p_detour > 0 and p_valid + p_detour < 1 (the rest is the fatal step)")
        check(self.noise >= 0 and self.difficulty >= 0, "noise and difficulty must be >= 0")
        check(self.trajectories >= 1 and self.candidates >= 2 and self.mc_rollouts >= 1, "sample sizes must be >= 1")
        check(self.beta > 0 and self.dpo_beta > 0, "beta must be > 0")
        check(self.actor_steps >= 1 and self.actor_lr > 0, "actor_steps >= 1 and actor_lr > 0")


@dataclass
class StepWorld:
    """``P`` step trees: roles of every candidate step, the generator, every solution's outcome."""

    tree: TokenTree
    """indexing of states (prefixes) and complete solutions"""
    roles: np.ndarray
    """``(P, S, V)`` role of each candidate step: VALID, DETOUR or FATAL"""
    logp_ref: np.ndarray
    """``(P, S, V)`` log pi_ref(a|s)"""
    success: np.ndarray
    """``(P, N)`` 1.0 if complete solution ``n`` is correct"""
    status: np.ndarray
    """``(P, S)`` status (ON, OFF, DEAD) of every internal state"""


def _step(status: np.ndarray, role: np.ndarray) -> np.ndarray:
    """Status after a step: fatal kills; a detour goes (or stays) off track; a valid step is (back) on track."""
    out = np.where(role == VALID, ON, OFF)
    return np.where((status == DEAD) | (role == FATAL), DEAD, out)


def make_world(cfg: Config, rng: np.random.Generator) -> StepWorld:
    """A random :class:`StepWorld` (see the module docstring)."""
    tree = TokenTree(4, cfg.steps)
    P, S, V = cfg.problems, tree.n_states, 4
    base_roles = np.array([VALID, VALID, DETOUR, FATAL])
    roles = np.stack([np.stack([rng.permutation(base_roles) for _ in range(S)]) for _ in range(P)])  # (P, S, V)
    p_fatal = 1.0 - cfg.p_valid - cfg.p_detour
    role_logit = np.log(np.array([cfg.p_valid / 2, cfg.p_detour, p_fatal]))
    shift = rng.uniform(0.0, cfg.difficulty, size=(P, 1, 1))  # harder problems: fatal steps more likely
    logits = role_logit[roles] + rng.normal(0.0, cfg.noise, size=(P, S, V)) + shift * (roles == FATAL)
    logp_ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    # status of every internal state and outcome of every solution
    status = np.zeros((P, S), dtype=int)
    for d in range(1, cfg.steps):
        sl = tree.depth_slice(d)
        parent = tree.offset(d - 1) + (np.arange(V**d) // V)
        a = np.arange(V**d) % V
        status[:, sl] = _step(status[:, parent], roles[:, parent, a])
    n = np.arange(tree.n_responses)
    last = tree.path_states[n, -1]
    a_last = tree.path_actions[n, -1]
    success = (_step(status[:, last], roles[:, last, a_last]) == ON).astype(float)  # (P, N)
    return StepWorld(tree, roles, logp_ref, success, status)


def child(tree: TokenTree, s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Index of the state after step ``a`` from internal state ``s`` (a response index when ``s`` is at depth T-1)."""
    off = np.array([tree.offset(d) for d in range(tree.horizon + 1)])
    d = tree.depth[s]
    nxt = (s - off[d]) * tree.vocab + a
    return np.where(d == tree.horizon - 1, nxt, nxt + off[np.minimum(d + 1, tree.horizon)])


def values(world: StepWorld, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact :math:`V^\pi(s)` ``(P, S)`` and :math:`V^\pi(s\oplus a)` ``(P, S, V)`` by backward enumeration."""
    tree = world.tree
    P, S, V = logp.shape
    Vs = np.zeros((P, S))
    Vn = np.zeros((P, S, V))
    pi = np.exp(logp)
    for d in range(tree.horizon - 1, -1, -1):
        sl = tree.depth_slice(d)
        if d == tree.horizon - 1:
            Vn[:, sl, :] = world.success.reshape(P, V**d, V)
        else:
            Vn[:, sl, :] = Vs[:, tree.depth_slice(d + 1)].reshape(P, V**d, V)
        Vs[:, sl] = (pi[:, sl, :] * Vn[:, sl, :]).sum(-1)
    return Vs, Vn


def success_prob(world: StepWorld, logp: np.ndarray) -> np.ndarray:
    """Exact probability of a correct solution per problem, ``(P,)``."""
    return values(world, logp)[0][:, 0]


def rollout(world: StepWorld, p: np.ndarray, s: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complete solutions with pi_ref from internal states ``s`` of problems ``p`` (both ``(B,)``).

    Returns ``(response (B,), states (B, T), actions (B, T))``; steps before the start state are -1.
    """
    tree, T = world.tree, world.tree.horizon
    B = len(p)
    states = np.full((B, T), -1)
    actions = np.full((B, T), -1)
    cur = np.array(s, dtype=int).copy()
    d0 = tree.depth[cur]
    resp = np.zeros(B, dtype=int)
    for d in range(T):
        act = d >= d0  # rows whose solution is at depth d now
        if not act.any():
            continue
        pr = np.exp(world.logp_ref[p[act], cur[act]])  # (b, V)
        a = (rng.random((int(act.sum()), 1)) > np.cumsum(pr, -1)[:, :-1]).sum(-1)  # inverse-CDF sampling
        states[act, d] = cur[act]
        actions[act, d] = a
        nxt = child(tree, cur[act], a)
        if d == T - 1:
            resp[act] = nxt
        else:
            cur[act] = nxt
    return resp, states, actions


@dataclass
class DapoData:
    """Step-level training rows ``(problem, state, step, advantage)`` and the critic's table."""

    prob: np.ndarray
    """``(M,)`` problem of each row"""
    state: np.ndarray
    """``(M,)`` state"""
    action: np.ndarray
    """``(M,)`` candidate step (sampled from pi_ref)"""
    adv: np.ndarray
    """``(M,)`` critic advantage V_hat(s + a) - V_hat(s)"""
    v_hat: dict
    """``{(problem, state): V_hat}`` for the visited states"""
    steps_generated: int
    """generation budget used (candidate steps + completion steps + the initial solutions)"""


def collect_dapo_data(world: StepWorld, cfg: Config, rng: np.random.Generator) -> DapoData:
    """Sample solutions, expand every visited state with candidates, label each child by MC completions.

    :math:`\\hat V(s\\oplus a)` is the success rate of ``mc_rollouts`` completions (exact 0/1 for a finished
    solution), :math:`\\hat V(s)` the mean over the candidates, :math:`\\hat A=\\hat V(s\\oplus a)-\\hat V(s)`.
    """
    tree, T, P = world.tree, world.tree.horizon, world.success.shape[0]
    K, k = cfg.candidates, cfg.mc_rollouts
    p0 = np.repeat(np.arange(P), cfg.trajectories)
    _, states, _ = rollout(world, p0, np.zeros_like(p0), rng)
    budget = len(p0) * T
    vis = np.unique(np.stack([np.repeat(p0, T), states.ravel()], 1), axis=0)  # (W, 2) distinct (problem, state)
    vp, vs = vis[:, 0], vis[:, 1]
    W = len(vp)
    cp, cs = np.repeat(vp, K), np.repeat(vs, K)  # (W*K,) candidate rows
    pr = np.exp(world.logp_ref[cp, cs])
    ca = (rng.random((W * K, 1)) > np.cumsum(pr, -1)[:, :-1]).sum(-1)
    budget += W * K
    ch = child(tree, cs, ca)
    terminal = tree.depth[cs] == T - 1
    v = np.zeros(W * K)
    v[terminal] = world.success[cp[terminal], ch[terminal]]
    nt = np.flatnonzero(~terminal)
    rp, rs = np.repeat(cp[nt], k), np.repeat(ch[nt], k)
    resp, _, _ = rollout(world, rp, rs, rng)
    budget += int((T - tree.depth[rs]).sum())
    v[nt] = world.success[rp, resp].reshape(len(nt), k).mean(1)
    v_s = v.reshape(W, K).mean(1)  # (W,)
    adv = v - np.repeat(v_s, K)
    return DapoData(cp, cs, ca, adv, {(int(a), int(b)): float(x) for a, b, x in zip(vp, vs, v_s)}, int(budget))


@dataclass
class Solutions:
    """``M`` complete solutions sampled from pi_ref."""

    prob: np.ndarray
    """``(M,)`` problem"""
    states: np.ndarray
    """``(M, T)`` visited states"""
    actions: np.ndarray
    """``(M, T)`` steps"""
    correct: np.ndarray
    """``(M,)`` bool"""


def sample_solutions(world: StepWorld, n: int, rng: np.random.Generator) -> Solutions:
    """``n`` complete solutions per problem from pi_ref."""
    P = world.success.shape[0]
    p = np.repeat(np.arange(P), n)
    resp, states, actions = rollout(world, p, np.zeros_like(p), rng)
    return Solutions(p, states, actions, world.success[p, resp] > 0)


def _fit(logp_ref: np.ndarray, loss_fn, cfg: Config) -> np.ndarray:
    """Adam on tabular logits initialised at pi_ref; ``loss_fn(logp: (P, S, V) tensor) -> loss``."""
    z = torch.tensor(logp_ref, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([z], lr=cfg.actor_lr)
    for _ in range(cfg.actor_steps):
        loss = loss_fn(torch.log_softmax(z, -1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.log_softmax(z, -1).detach().numpy()


def train_dapo(world: StepWorld, data: DapoData, cfg: Config) -> np.ndarray:
    """The DAPO actor: :func:`rlbook.losses.dapo_direct.dapo_direct_loss` on every (state, candidate) row."""
    ref = torch.tensor(world.logp_ref, dtype=torch.float64)
    idx = (torch.tensor(data.prob), torch.tensor(data.state), torch.tensor(data.action))
    adv = torch.tensor(data.adv)
    return _fit(world.logp_ref, lambda lp: dapo_direct_loss(lp[idx], ref[idx], adv, cfg.beta)[0], cfg)


def _path_logps(lp: torch.Tensor, sols: Solutions, rows: np.ndarray) -> torch.Tensor:
    """Sequence log-probs ``(len(rows),)`` of solutions ``rows`` under ``lp: (P, S, V)``."""
    p = torch.tensor(sols.prob[rows])[:, None]
    return lp[p, torch.tensor(sols.states[rows]), torch.tensor(sols.actions[rows])].sum(1)


def train_rs_sft(world: StepWorld, sols: Solutions, cfg: Config) -> np.ndarray:
    """Rejection-sampling SFT: maximum likelihood of the correct solutions (tabular, from pi_ref)."""
    good = np.flatnonzero(sols.correct)
    if len(good) == 0:
        return world.logp_ref.copy()
    return _fit(world.logp_ref, lambda lp: -_path_logps(lp, sols, good).mean(), cfg)


def train_outcome_dpo(world: StepWorld, sols: Solutions, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """Outcome-level DPO on (correct, incorrect) solutions of the same problem (each correct one paired
    with a random incorrect one), :func:`rlbook.losses.dpo_loss` with ``dpo_beta``."""
    win, lose = [], []
    for p in range(world.success.shape[0]):
        good = np.flatnonzero(sols.correct & (sols.prob == p))
        bad = np.flatnonzero(~sols.correct & (sols.prob == p))
        if len(bad):
            win += list(good)
            lose += list(rng.choice(bad, size=len(good)))
    if not win:
        return world.logp_ref.copy()
    win, lose = np.array(win), np.array(lose)
    ref = torch.tensor(world.logp_ref, dtype=torch.float64)
    ref_w, ref_l = _path_logps(ref, sols, win), _path_logps(ref, sols, lose)

    def loss(lp):
        return dpo_loss(_path_logps(lp, sols, win), _path_logps(lp, sols, lose), ref_w, ref_l, cfg.dpo_beta)[0]

    return _fit(world.logp_ref, loss, cfg)


def oracle(world: StepWorld, beta: float) -> np.ndarray:
    r"""The exact step-level improvement :math:`\log\pi^*=\log\pi_{ref}+A^{\pi_{ref}}/\beta-\log Z` at every state."""
    Vs, Vn = values(world, world.logp_ref)
    adv = Vn - Vs[:, :, None]
    return kl_optimal_logpolicy(torch.tensor(world.logp_ref), torch.tensor(adv), beta).numpy()


def run(cfg: Config, seed: int) -> dict:
    """The whole experiment for one seed; see the module docstring. Returns a dict of results."""
    t0 = time.time()
    rng = np.random.default_rng([seed, 2412])
    world = make_world(cfg, rng)
    V_ref, Vn_ref = values(world, world.logp_ref)
    data = collect_dapo_data(world, cfg, rng)
    n_sol = max(1, data.steps_generated // (cfg.problems * cfg.steps))  # same generated steps for the baselines
    sols = sample_solutions(world, n_sol, rng)
    pols = {"pi_ref": world.logp_ref, "DAPO": train_dapo(world, data, cfg), "RS-SFT": train_rs_sft(world, sols, cfg),
            "outcome-DPO": train_outcome_dpo(world, sols, cfg, rng), "oracle pi*": oracle(world, cfg.beta)}
    succ = {k: success_prob(world, v) for k, v in pols.items()}
    # critic quality over visited states
    keys = list(data.v_hat)
    v_hat = np.array([data.v_hat[k] for k in keys])
    v_true = np.array([V_ref[p, s] for p, s in keys])
    # credit assignment at the visited states
    ps = np.array([k[0] for k in keys])
    ss = np.array([k[1] for k in keys])
    fatal = world.roles[ps, ss] == FATAL  # (K, V)
    alive = world.status[ps, ss] != DEAD
    p_fatal_ref = (np.exp(world.logp_ref[ps, ss]) * fatal).sum(-1)
    p_fatal_dapo = (np.exp(pols["DAPO"][ps, ss]) * fatal).sum(-1)
    rows = (data.prob, data.state, data.action)
    implicit = cfg.beta * (pols["DAPO"][rows] - world.logp_ref[rows])
    exact_adv = (Vn_ref - V_ref[:, :, None])[rows]
    solved_by_outcome = np.array([bool(sols.correct[sols.prob == p].any()) for p in range(cfg.problems)])
    return {
        "success": succ, "budget_steps": data.steps_generated, "solutions_per_problem": n_sol,
        "dapo_rows": len(data.adv), "critic_mse": float(np.mean((v_hat - v_true) ** 2)),
        "v_hat": v_hat, "v_true": v_true,
        "fatal_decrease_frac": float(np.mean((p_fatal_dapo < p_fatal_ref)[alive])),
        "p_fatal_ref": p_fatal_ref[alive], "p_fatal_dapo": p_fatal_dapo[alive],
        "corr_implicit_exact": float(np.corrcoef(implicit, exact_adv)[0, 1]),
        "implicit": implicit, "exact_adv": exact_adv, "critic_adv": data.adv,
        "solved_by_outcome": solved_by_outcome, "seconds": time.time() - t0,
    }


# ---------------------------------------------------------------------------------
# full profile (one GPU): critic on step prefixes, candidate steps, offline DAPO actor
# ---------------------------------------------------------------------------------
@dataclass
class FullConfig:
    """Paper-scale knobs (the full profile; not timed on a GPU here)."""

    actor: str = "Qwen/Qwen2.5-Math-1.5B-Instruct"
    """actor / generator pi_ref, a Hub name or a local folder"""
    critic: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """critic backbone (a scalar head is added), a Hub name or a local folder"""
    train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """training problems (prompt, answer), Hub name or save_to_disk folder"""
    eval_data: str = "HuggingFaceH4/MATH-500"
    """evaluation problems"""
    problems: int = 1000
    """training problems"""
    critic_samples: int = 8
    """solutions per problem whose step prefixes label the critic (outcome = an MC estimate of V(prefix))"""
    candidates: int = 4
    """candidate next steps sampled at each step prefix of one solution per problem"""
    max_steps_per_solution: int = 8
    """step prefixes expanded per solution"""
    step_tokens: int = 128
    """max new tokens of one candidate step (cut at the first newline)"""
    max_completion: int = 1024
    """max new tokens of a full solution"""
    beta: float = 0.1
    """KL strength of the step-level improvement"""
    critic_lr: float = 1e-5
    """critic AdamW learning rate"""
    actor_lr: float = 1e-6
    """actor AdamW learning rate"""
    batch: int = 8
    """rows per gradient step"""
    eval_problems: int = 200
    """evaluation problems"""
    eval_samples: int = 4
    """samples per evaluation problem"""


def _steps(text: str) -> list[str]:
    """A solution split into reasoning steps: lines, each keeping its newline."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _continuation_logps(model, tok, contexts: list[str], conts: list[str], device: str) -> torch.Tensor:
    """``sum_t log pi(cont_t | context, cont_<t)`` for each pair, ``(N,)`` (differentiable)."""
    c_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in contexts]
    y_ids = [tok(y, add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for y in conts]
    L = max(len(c) + len(y) for c, y in zip(c_ids, y_ids))
    ids = torch.full((len(c_ids), L), tok.pad_token_id, dtype=torch.long)
    am = torch.zeros_like(ids)
    tgt = torch.zeros((len(c_ids), L), dtype=torch.bool)
    for n, (c, y) in enumerate(zip(c_ids, y_ids)):
        ids[n, : len(c) + len(y)] = torch.tensor(c + y)
        am[n, : len(c) + len(y)] = 1
        tgt[n, len(c) : len(c) + len(y)] = True
    ids, am, tgt = ids.to(device), am.to(device), tgt.to(device)
    logits = model(input_ids=ids, attention_mask=am).logits[:, :-1].float()  # predicts tokens 1..L-1
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (N, L-1)
    return (lp * tgt[:, 1:]).sum(1)


def _critic_values(critic, ctok, texts: list[str], device: str, batch: int = 16) -> torch.Tensor:
    out = []
    for s in range(0, len(texts), batch):
        enc = ctok(texts[s : s + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out.append(torch.sigmoid(critic(**enc).logits[:, 0].float()).cpu())
    return torch.cat(out)


def run_full(fc: FullConfig, seed: int, cpu: bool = False, generation_batch: int = 64) -> dict:
    """Stage A: label step prefixes of sampled solutions by their outcome, train the critic (BCE on
    sigmoid(score)). Stage B: at the step prefixes of one solution per problem, sample candidate steps,
    score :math:`A=V_\\phi(s\\oplus a)-V_\\phi(s)`, train the actor with
    :func:`rlbook.losses.dapo_direct.dapo_direct_loss` (frozen reference log-probs), evaluate pass@k.

    A plain torch loop (no TRL trainer has a step-level regression loss). Returns
    ``{"base": pass@k, "DAPO": pass@k, "critic_rows": int, "actor_rows": int}``.
    """
    import os

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

    from rlbook import hub, math_data
    from rlbook.models import load_pretrained

    torch.manual_seed(seed)
    device, dtype, _ = hub.full_device(cpu)
    train = math_data.load_math(fc.train_data, "train", n=fc.problems)
    evalset = math_data.load_math(fc.eval_data, "test", n=fc.eval_problems)
    actor, tok = load_pretrained(fc.actor, device=device, dtype=dtype)
    results = {"base": math_data.evaluate_full(actor, tok, evalset, fc.eval_samples, fc.max_completion,
                                               generation_batch)}
    prompts, answers = list(train["prompt"]), list(train["answer"])
    # stage A: critic labels = outcome of each sampled solution, for each of its step prefixes
    rep_p = [p for p in prompts for _ in range(fc.critic_samples)]
    rep_a = [a for a in answers for _ in range(fc.critic_samples)]
    sols = hub.generate(actor, tok, rep_p, device, fc.max_completion, num_beams=1, sample=True, batch=generation_batch)
    outcome = math_data.math_reward(sols, rep_a)
    texts, labels = [], []
    for p, sol, r in zip(rep_p, sols, outcome):
        steps = _steps(sol)
        for k in range(len(steps) + 1):
            texts.append(p + "".join(steps[:k]))
            labels.append(float(r))
    critic = AutoModelForSequenceClassification.from_pretrained(fc.critic, num_labels=1, dtype=dtype).to(device)
    if os.path.isdir(fc.critic) and os.path.exists(os.path.join(fc.critic, "tokenizer.json")):
        ctok = PreTrainedTokenizerFast.from_pretrained(fc.critic)
    else:
        ctok = AutoTokenizer.from_pretrained(fc.critic)
    if ctok.pad_token is None:
        ctok.pad_token = ctok.eos_token
    ctok.padding_side = "left"
    critic.config.pad_token_id = ctok.pad_token_id
    opt = torch.optim.AdamW(critic.parameters(), lr=fc.critic_lr)
    critic.train()
    order = torch.randperm(len(texts)).tolist()
    for s in range(0, len(order), fc.batch):
        i = order[s : s + fc.batch]
        enc = ctok([texts[j] for j in i], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        y = torch.tensor([labels[j] for j in i], device=device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(critic(**enc).logits[:, 0].float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    critic.eval()
    # stage B: candidate steps at the step prefixes of one solution per problem, advantages from the critic
    ctx, cand = [], []
    for q, p in enumerate(prompts):
        steps = _steps(sols[q * fc.critic_samples])
        for k in range(min(len(steps), fc.max_steps_per_solution)):
            ctx += [p + "".join(steps[:k])] * fc.candidates
    outs = hub.generate(actor, tok, ctx, device, fc.step_tokens, num_beams=1, sample=True, batch=generation_batch)
    cand = [o.split("\n")[0] + ("\n" if "\n" in o else "") for o in outs]
    v_s = _critic_values(critic, ctok, ctx, device)
    v_next = _critic_values(critic, ctok, [c + a for c, a in zip(ctx, cand)], device)
    adv = (v_next - v_s).float()  # (M,)
    with torch.no_grad():
        ref = torch.cat([_continuation_logps(actor, tok, ctx[s : s + fc.batch], cand[s : s + fc.batch], device).cpu()
                         for s in range(0, len(ctx), fc.batch)])
    actor.train()
    opt = torch.optim.AdamW(actor.parameters(), lr=fc.actor_lr)
    order = torch.randperm(len(ctx)).tolist()
    for s in range(0, len(order), fc.batch):
        i = order[s : s + fc.batch]
        lp = _continuation_logps(actor, tok, [ctx[j] for j in i], [cand[j] for j in i], device)
        loss, _ = dapo_direct_loss(lp, ref[i].to(device), adv[i].to(device), fc.beta)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        opt.step()
    actor.eval()
    results["DAPO"] = math_data.evaluate_full(actor, tok, evalset, fc.eval_samples, fc.max_completion,
                                              generation_batch)
    results["critic_rows"], results["actor_rows"] = len(texts), len(ctx)
    return results
