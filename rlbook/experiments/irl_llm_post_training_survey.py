r"""Chapter "Inverse Reinforcement Learning Meets Large Language Model Post-Training" (arXiv 2507.13158).

Smoke profile: a depth-4, branching-4 token tree per prompt (:mod:`rlbook.mdp`, 256
responses). The hidden true reward is a dense per-token reward (a target and an error
token per position) plus a random potential shaping :math:`\Phi(s')-\Phi(s)` that changes
no optimal policy; learners only ever see preferences, demonstrations or the terminal
return. Two mini-experiments, each an illustration of a section of the survey:

(A) *Building a reward from human data*: a Bradley-Terry reward from preference pairs,
max-ent IRL from demonstrations of the KL-regularised optimum, and behaviour cloning of the
same demonstrations (no reward); each is scored by the true KL-regularised objective of the
policy it induces (exact soft value iteration).

(B) *Sparse vs dense rewards*: tabular REINFORCE on the terminal return vs on the dense
AIRL-style reward :math:`\beta\log\pi_\theta/\pi_{ref}` built from the max-ent IRL reward.

Full profile (:func:`run_full`): the three reward-building routes on a real model:
RewardTrainer + best-of-N, DPO, SFT on the chosen responses; win rates against the SFT
model, judged by a separate reward model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlbook import hub
from rlbook import irl
from rlbook import mdp as M
from rlbook.config import check


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_prompts: int = 8
    """prompts, one token tree each"""
    vocab: int = 4
    """``V``: tokens per step"""
    horizon: int = 4
    """``T``: tokens per response (``V^T = 256`` responses)"""
    beta: float = 0.5
    """``β``: KL strength of the MDP (and of the demonstrator)"""
    ref_logit_std: float = 0.7
    """std of the random π_ref logits"""
    target_bonus: float = 1.0
    """true reward of the target token of a position"""
    error_penalty: float = 2.0
    """true penalty of the error token of a position"""
    shaping_std: float = 1.0
    """std of the hidden potential Φ(s) added to the true per-token reward"""
    n_pairs: int = 500
    """preference pairs per prompt (both from π_ref, Bradley-Terry labels on the true return)"""
    n_demos: int = 500
    """demonstrations per prompt, sampled from the KL-regularised optimum π*"""
    irl_steps: int = 300
    """Adam steps of max-ent IRL and of the Bradley-Terry fit"""
    bc_alpha: float = 1.0
    """behaviour cloning: pseudo-count of the π_ref prior at every state"""
    rl_updates: int = 200
    """REINFORCE updates in experiment (B)"""
    rl_batch: int = 16
    """responses per prompt and REINFORCE update"""
    rl_lr: float = 0.05
    """Adam learning rate of REINFORCE (also run at 2x and 4x: each learner is scored at its best)"""
    success: float = 0.9
    """(B): fraction of the possible gain (best response minus π_ref) that counts as solved"""
    # full profile (one GPU)
    full_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: base policy (and reference), a Hub name or a local folder"""
    full_pref_data: str = "HuggingFaceH4/ultrafeedback_binarized"
    """*full*: preference pairs (``prompt``/``chosen``/``rejected``), Hub name or ``save_to_disk`` folder"""
    full_pref_split: str = "train_prefs"
    """*full*: split of the preference data"""
    full_judge: str = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
    """*full*: the held-out judge reward model, Hub name or folder"""
    full_pairs: int = 10000
    """*full*: training pairs (catalog: 10k)"""
    full_best_of: int = 8
    """*full*: N of best-of-N under the learnt reward model"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts for the win rates"""
    full_max_new_tokens: int = 256
    """*full*: generated tokens per response"""
    full_lr: float = 5e-7
    """*full*: learning rate of DPO"""
    full_sft_lr: float = 1e-5
    """*full*: learning rate of SFT on the chosen responses"""
    full_rm_lr: float = 1e-5
    """*full*: learning rate of the reward model"""
    full_beta: float = 0.1
    """*full*: DPO β"""
    full_per_device_batch: int = 8
    """*full*: per-device batch of all three trainers"""
    full_batch: int = 32
    """*full*: global batch (gradient accumulation makes it up)"""
    full_max_length: int = 1024
    """*full*: maximum prompt + completion tokens in training"""
    full_max_steps: int = -1
    """*full*: cap on optimiser steps per trainer (-1: one epoch; the dry-run test uses 2)"""

    def __post_init__(self) -> None:
        check(self.n_prompts >= 1, "n_prompts must be >= 1")
        check(2 <= self.vocab <= 6 and 1 <= self.horizon <= 5, "vocab in 2..6 and horizon in 1..5 (the tree is enumerated)")
        check(self.beta > 0, "beta must be > 0")
        check(self.shaping_std >= 0, "shaping_std must be >= 0")
        check(self.n_pairs >= 10 and self.n_demos >= 10, "n_pairs and n_demos must be >= 10")
        check(self.irl_steps >= 1 and self.rl_updates >= 1 and self.rl_batch >= 2, "steps/updates >= 1, rl_batch >= 2")
        check(self.bc_alpha >= 0 and self.rl_lr > 0, "bc_alpha >= 0 and rl_lr > 0")
        check(0 < self.success < 1, "success must be in (0, 1)")
        check(self.full_best_of >= 1, "full_best_of must be >= 1")


# ----------------------------------------------------------------------------- the world


def build_world(cfg: Config, rng: np.random.Generator) -> tuple[M.TreeTokenMDP, np.ndarray]:
    """The true MDP (dense reward + hidden potential shaping) and the potential ``Φ: (P, S)``.

    ``Φ(s) ~ N(0, shaping_std²)`` on internal states, 0 at the leaves: returns shift by the
    per-prompt constant ``-Φ(s_0)``, so π* and every preference probability are unchanged.
    """
    base = M.make_tree_mdp(rng, cfg.n_prompts, cfg.vocab, cfg.horizon, cfg.beta, cfg.ref_logit_std,
                           cfg.target_bonus, cfg.error_penalty)
    phi = rng.normal(0.0, cfg.shaping_std, size=(cfg.n_prompts, base.tree.n_states))
    return irl.shape(base, phi), phi


def preference_pairs(mdp: M.TreeTokenMDP, n: int, rng: np.random.Generator):
    """``n`` pairs per prompt, ``y1, y2 ~ π_ref``, Bradley-Terry on the true return. Returns ``(prompt, yw, yl)``, each ``(P*n,)``."""
    P, tree = mdp.n_prompts, mdp.tree
    seq_ref = np.exp(M.sequence_logprobs(mdp.logp_ref, tree))
    R = mdp.returns()
    x = np.repeat(np.arange(P), n)
    y = np.concatenate([rng.choice(tree.n_responses, size=(n, 2), p=seq_ref[p] / seq_ref[p].sum()) for p in range(P)])
    first = rng.random(P * n) < 1.0 / (1.0 + np.exp(-(R[x, y[:, 0]] - R[x, y[:, 1]])))
    return x, np.where(first, y[:, 0], y[:, 1]), np.where(first, y[:, 1], y[:, 0])


def demonstrations(mdp: M.TreeTokenMDP, n: int, rng: np.random.Generator):
    """``n`` responses per prompt from the KL-regularised optimum π*. Returns ``(prompt, response)``, each ``(P*n,)``."""
    sol = M.soft_value_iteration(mdp)
    x = np.repeat(np.arange(mdp.n_prompts), n)
    return x, M.sample_responses(sol.logp, x, mdp.tree, rng)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two ``(N,)`` vectors (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def normalised_objective(logp: np.ndarray, mdp: M.TreeTokenMDP) -> np.ndarray:
    r"""``(P,)``: :math:`\frac{J(\pi)-J(\pi_{ref})}{J(\pi^*)-J(\pi_{ref})}` with :math:`J` the true KL-regularised objective (1 = optimal, 0 = π_ref)."""
    sol = M.soft_value_iteration(mdp)
    j, j_ref, j_star = irl.objective(logp, mdp), irl.objective(mdp.logp_ref, mdp), irl.objective(sol.logp, mdp)
    return (j - j_ref) / (j_star - j_ref)


# ----------------------------------------------------------------------------- (A) building a reward


def build_rewards(mdp: M.TreeTokenMDP, cfg: Config, seed: int) -> dict:
    """Experiment (A): the three routes from human data to a policy, and their scores.

    Returns ``{route: {"logp": (P, S, V), "R": (P, N) recovered returns or None, "token_reward":
    (P, S, V) or None}}`` for routes ``"bt"``, ``"maxent"``, ``"bc"``, plus ``"pairs"`` and ``"demos"``.
    """
    tree = mdp.tree
    phi = irl.position_token_features(tree)  # (N, d)
    seq_ref = M.sequence_logprobs(mdp.logp_ref, tree)
    P, N = mdp.n_prompts, tree.n_responses
    x, yw, yl = preference_pairs(mdp, cfg.n_pairs, np.random.default_rng([seed, 1]))
    dx, dy = demonstrations(mdp, cfg.n_demos, np.random.default_rng([seed, 2]))
    out = {"pairs": (x, yw, yl), "demos": (dx, dy)}
    # (i) Bradley-Terry reward model from preferences, one linear head per prompt
    w_bt = irl.fit_bt_linear_per_prompt(phi, x, yw, yl, P, steps=cfg.irl_steps, seed=seed)
    # (ii) max-ent IRL from demonstrations
    counts = np.zeros((P, N))
    np.add.at(counts, (dx, dy), 1.0)
    w_me = irl.maxent_irl(counts, phi, seq_ref, mdp.beta, steps=cfg.irl_steps)
    for name, w in (("bt", w_bt), ("maxent", w_me)):
        r_tok = irl.dense_from_position_weights(w, tree)  # (P, S, V)
        learnt = M.TreeTokenMDP(tree, mdp.beta, mdp.logp_ref, r_tok)
        out[name] = {"logp": M.soft_value_iteration(learnt).logp, "R": w @ phi.T, "token_reward": r_tok,
                     "mdp": learnt}
    # (iii) behaviour cloning: no reward at all
    out["bc"] = {"logp": irl.behaviour_cloning(tree, dx, dy, P, prior=mdp.logp_ref, alpha=cfg.bc_alpha),
                 "R": None, "token_reward": None, "mdp": None}
    return out


def demo_sweep(mdp: M.TreeTokenMDP, cfg: Config, seed: int, sizes=(20, 50, 100, 500)) -> dict:
    """Normalised true objective of max-ent IRL and of behaviour cloning for several numbers of demonstrations.

    The demonstrations of size ``n`` are the first ``n`` of one stream per prompt (nested sets).
    Returns ``{"sizes": [...], "maxent": [...], "bc": [...]}`` (means over prompts).
    """
    tree = mdp.tree
    phi = irl.position_token_features(tree)
    seq_ref = M.sequence_logprobs(mdp.logp_ref, tree)
    P, N, n_max = mdp.n_prompts, tree.n_responses, max(sizes)
    dx, dy = demonstrations(mdp, n_max, np.random.default_rng([seed, 2]))
    dy = dy.reshape(P, n_max)
    res = {"sizes": list(sizes), "maxent": [], "bc": []}
    for n in sizes:
        x, y = np.repeat(np.arange(P), n), dy[:, :n].ravel()
        counts = np.zeros((P, N))
        np.add.at(counts, (x, y), 1.0)
        w = irl.maxent_irl(counts, phi, seq_ref, mdp.beta, steps=cfg.irl_steps)
        learnt = M.TreeTokenMDP(tree, mdp.beta, mdp.logp_ref, irl.dense_from_position_weights(w, tree))
        res["maxent"].append(float(normalised_objective(M.soft_value_iteration(learnt).logp, mdp).mean()))
        bc = irl.behaviour_cloning(tree, x, y, P, prior=mdp.logp_ref, alpha=cfg.bc_alpha)
        res["bc"].append(float(normalised_objective(bc, mdp).mean()))
    return res


def reward_metrics(routes: dict, mdp: M.TreeTokenMDP) -> dict:
    """Per route: normalised true objective (mean over prompts) and Spearman of recovered vs true returns."""
    R = mdp.returns()
    res = {}
    for name in ("bt", "maxent", "bc"):
        r = routes[name]
        res[name] = {
            "objective": float(normalised_objective(r["logp"], mdp).mean()),
            "spearman": float(np.mean([spearman(r["R"][p], R[p]) for p in range(mdp.n_prompts)]))
            if r["R"] is not None else float("nan"),
        }
    return res


def token_reward_corr(token_reward: np.ndarray, target: np.ndarray, mdp: M.TreeTokenMDP) -> float:
    """Pearson correlation of two per-token reward tables over all (prompt, state, token) entries, weighted by π_ref visitation."""
    w = (M.state_visitation(mdp.logp_ref, mdp.tree)[:, :, None] * np.exp(mdp.logp_ref)).ravel()
    a, b = token_reward.ravel(), target.ravel()
    w = w / w.sum()
    ma, mb = (w * a).sum(), (w * b).sum()
    return float((w * (a - ma) * (b - mb)).sum() / np.sqrt((w * (a - ma) ** 2).sum() * (w * (b - mb) ** 2).sum()))


# ----------------------------------------------------------------------------- (B) sparse vs dense


def updates_to_success(curve: np.ndarray, success: float) -> int:
    """First update at which the prompt-mean of a normalised curve ``(U+1, P)`` reaches ``success`` (``U+1`` if never)."""
    hit = np.flatnonzero(curve.mean(1) >= success)
    return int(hit[0]) if len(hit) else curve.shape[0]


def sparse_vs_dense(mdp: M.TreeTokenMDP, learnt: M.TreeTokenMDP, cfg: Config, seed: int) -> dict:
    """Experiment (B): REINFORCE on the terminal return vs on the AIRL dense reward of the learnt MDP.

    For each learner and each learning rate in ``(cfg.rl_lr, 2·rl_lr, 4·rl_lr)``: the normalised
    true-return curve ``(updates+1, P)`` (0 = π_ref, 1 = best response) and the updates it needs
    to reach ``cfg.success`` (``updates+1`` if never). Returns ``{learner: {lr: {"curve", "updates"}}}``.
    """
    R = mdp.returns()
    ref = (np.exp(M.sequence_logprobs(mdp.logp_ref, mdp.tree)) * R).sum(-1)
    best = R.max(-1)
    rewards = {"sparse": (mdp.reward, False), "dense": (irl.airl_dense_reward(learnt), True)}
    out: dict = {}
    for k, (rew, dense) in rewards.items():
        out[k] = {}
        for lr in (cfg.rl_lr, 2 * cfg.rl_lr, 4 * cfg.rl_lr):
            c = irl.reinforce_tree(mdp, rew, dense, cfg.rl_updates, cfg.rl_batch, lr, seed)
            norm = (c - ref) / (best - ref)  # (U+1, P)
            out[k][lr] = {"curve": norm, "updates": updates_to_success(norm, cfg.success)}
    return out


def run_smoke(cfg: Config, seed: int) -> dict:
    """Both mini-experiments for one seed."""
    mdp, potential = build_world(cfg, np.random.default_rng([seed, 0]))
    routes = build_rewards(mdp, cfg, seed)
    metrics = reward_metrics(routes, mdp)
    rl = sparse_vs_dense(mdp, routes["maxent"]["mdp"], cfg, seed)
    return {"mdp": mdp, "potential": potential, "routes": routes, "metrics": metrics, "rl": rl}


# ----------------------------------------------------------------------------- full profile (TRL, one GPU)


def _as_conversation(prompt_msgs: list, response: str) -> list:
    return list(prompt_msgs) + [{"role": "assistant", "content": response}]


def score_conversations(rm, tok, convs: list, batch: int = 16, max_length: int = 2048) -> np.ndarray:
    """Reward-model scores ``(n,)`` of whole conversations (the reward model's own chat template)."""
    import torch

    dev = next(rm.parameters()).device
    texts = [tok.apply_chat_template(c, tokenize=False) for c in convs]
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length, add_special_tokens=False).to(dev)
            out.append(rm(**enc).logits[:, 0].float().cpu().numpy())
    return np.concatenate(out)


def generate(model, tok, prompts: list, n: int, max_new_tokens: int, sample: bool, batch: int = 32) -> list:
    """``n`` completions per conversational prompt (``len(prompts)`` lists of ``n`` strings); greedy if not ``sample``."""
    import torch

    dev = next(model.parameters()).device
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
            gen = model.generate(**enc, do_sample=sample, temperature=1.0 if sample else None, top_k=0 if sample else None,
                                 top_p=1.0 if sample else None, num_return_sequences=n,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
            dec = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out += [dec[j : j + n] for j in range(0, len(dec), n)]
    return out


def win_rate(scores: np.ndarray, scores_ref: np.ndarray) -> float:
    """Fraction of prompts where ``scores > scores_ref`` (ties count one half)."""
    return float(np.mean((scores > scores_ref) + 0.5 * (scores == scores_ref)))


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The survey's three routes from human data to a better policy, on a real model (TRL).

    On ``cfg.full_pairs`` preference pairs: (a) *reward from preferences* -- ``RewardTrainer``
    (Bradley-Terry) on the base model, then best-of-``full_best_of`` sampling from the base
    policy under that reward; (b) *reward-free IRL + RL* -- ``DPOTrainer``; (c) *behaviour
    cloning* -- ``SFTTrainer`` on the chosen responses. On ``cfg.full_eval_prompts`` held-out
    prompts, each policy's greedy response (best-of-N for (a)) is scored by the held-out judge
    ``cfg.full_judge``; returns win rates against the SFT model and mean judge scores.
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    from rlbook.experiments.survey_rl_techniques_llms import load_pairs
    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    ds = load_pairs(cfg.full_pref_data, cfg.full_pref_split, cfg.full_pairs + cfg.full_eval_prompts, seed)
    train = ds.select(range(min(cfg.full_pairs, len(ds) - cfg.full_eval_prompts)))
    held = ds.select(range(len(ds) - cfg.full_eval_prompts, len(ds)))
    eval_prompts = [ex["chosen"][:-1] for ex in held]
    accum = max(1, cfg.full_batch // cfg.full_per_device_batch)
    common = dict(per_device_train_batch_size=cfg.full_per_device_batch, gradient_accumulation_steps=accum,
                  num_train_epochs=1, max_length=cfg.full_max_length)
    steps = cfg.full_max_steps
    out: dict = {"responses": {}}
    # (c) behaviour cloning: SFT on the chosen responses (prompt-completion, loss on the completion only)
    sft_data = train.map(lambda e: {"prompt": e["chosen"][:-1], "completion": e["chosen"][-1:]},
                         remove_columns=train.column_names)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    tr = SFTTrainer(model=model, args=SFTConfig(**hub.trl_common(f"{output_dir}/sft", seed, cuda, steps), **common,
                                                learning_rate=cfg.full_sft_lr, completion_only_loss=True),
                    train_dataset=sft_data, processing_class=tok)
    tr.train()
    out["responses"]["sft"] = [r[0] for r in generate(tr.model, tok, eval_prompts, 1, cfg.full_max_new_tokens, False)]
    # (b) DPO
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    ref, _ = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    tr = DPOTrainer(model=model, ref_model=ref, train_dataset=train, processing_class=tok,
                    args=DPOConfig(**hub.trl_common(f"{output_dir}/dpo", seed, cuda, steps), **common,
                                   beta=cfg.full_beta, learning_rate=cfg.full_lr, loss_type=["sigmoid"]))
    tr.train()
    out["responses"]["dpo"] = [r[0] for r in generate(tr.model, tok, eval_prompts, 1, cfg.full_max_new_tokens, False)]
    del ref
    # (a) Bradley-Terry reward model, then best-of-N from the base policy
    rm = AutoModelForSequenceClassification.from_pretrained(cfg.full_model, num_labels=1, dtype=dtype).to(device)
    rm.config.pad_token_id = tok.pad_token_id
    tr = RewardTrainer(model=rm, train_dataset=train, processing_class=tok,
                       args=RewardConfig(**hub.trl_common(f"{output_dir}/rm", seed, cuda, steps), **common,
                                         learning_rate=cfg.full_rm_lr))
    tr.train()
    rm = tr.model.eval()
    base, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    torch.manual_seed(seed)
    cands = generate(base, tok, eval_prompts, cfg.full_best_of, cfg.full_max_new_tokens, True)
    best = []
    for p, cs in zip(eval_prompts, cands):
        s = score_conversations(rm, tok, [_as_conversation(p, c) for c in cs], max_length=cfg.full_max_length)
        best.append(cs[int(np.argmax(s))])
    out["responses"][f"rm+best-of-{cfg.full_best_of}"] = best
    out["responses"]["base"] = [r[0] for r in generate(base, tok, eval_prompts, 1, cfg.full_max_new_tokens, False)]
    # the held-out judge
    judge, jtok = hub.load_reward_model(cfg.full_judge, device, dtype)
    scores = {k: score_conversations(judge, jtok, [_as_conversation(p, r) for p, r in zip(eval_prompts, v)])
              for k, v in out["responses"].items()}
    out["judge_mean"] = {k: float(v.mean()) for k, v in scores.items()}
    out["win_rate_vs_sft"] = {k: win_rate(v, scores["sft"]) for k, v in scores.items() if k != "sft"}
    return out
