r"""Chapter "ConvSearch-R1: Enhancing Query Reformulation for Conversational Search with Reasoning via RL" (arXiv 2505.15776).

A policy rewrites a context-dependent query ("who founded it ?") into a self-contained one for an
off-the-shelf retriever, trained without reference rewrites: stage 1, a *self-driven warm-up*
(sample rewrites, keep those whose retrieval ranks the gold passage well, distil them); stage 2,
GRPO with the *rank-incentive* reward (:func:`rlbook.tasks.conv_search.rank_incentive`), a
piecewise-linear function of the gold passage's rank, instead of a sparse retrieval metric.

Smoke profile: the toy corpus and numpy BM25 of :mod:`rlbook.tasks.conv_search` and a small pointer
policy (:class:`PointerPolicy`, torch only) that appends up to ``max_copy`` words copied from the
conversation history to the current query, then stops. GRPO (:func:`rlbook.losses.grpo_loss`,
:func:`rlbook.losses.group_normalise`) with three rewards (rank incentive, Recall@1, MRR@3), with and
without the warm-up.

Full profile (:func:`run_full`): TRL ``GRPOTrainer`` on a small instruct model whose reward function
parses ``<think>...</think>\n<rewrite>...</rewrite>`` and calls the BM25 retriever over the local
corpus (:func:`make_reward_fn`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlbook.config import check
from rlbook.losses.common import group_normalise
from rlbook.losses.grpo import grpo_loss
from rlbook.tasks import conv_search as cs

REWARDS = ("rank", "recall1", "mrr3")
"""rank-incentive (official), sparse Recall@1, MRR@3"""


def reward_of(name: str, rank: np.ndarray) -> np.ndarray:
    """The per-rewrite reward ``name`` of :data:`REWARDS` from gold ranks ``(N,)``."""
    if name == "rank":
        return cs.rank_incentive(rank)
    if name == "recall1":
        return cs.recall_at(rank, 1)
    if name == "mrr3":
        return cs.mrr_at(rank, 3)
    raise ValueError(f"unknown reward {name!r}; choose from {', '.join(REWARDS)}")


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    runs: str = "rank,recall1,mrr3,rank+warmup"
    """runs to train: a reward of REWARDS, "+warmup" for the self-driven warm-up first"""
    steps: int = 60
    """GRPO steps per run (the catalog's 100)"""
    prompts: int = 32
    """conversations per step (the catalog's 32)"""
    group: int = 8
    """rewrites per conversation, G (the catalog's 8; the official scripts use rollout.n 16)"""
    lr: float = 0.003
    """Adam learning rate of the pointer policy"""
    clip_eps: float = 0.2
    """GRPO clip range (verl's default clip_ratio 0.2, which the official scripts keep)"""
    max_copy: int = 3
    """most words a rewrite copies from the history (the catalog's 3)"""
    warmup_samples: int = 4
    """warm-up: rewrites sampled per training conversation from the base policy"""
    warmup_conversations: int = 400
    """warm-up: training conversations sampled"""
    warmup_max_rank: int = 3
    """warm-up: keep a rewrite if the gold passage ranks at most this (the catalog's 3)"""
    warmup_epochs: int = 3
    """warm-up: SFT epochs over the kept rewrites"""
    eval_every: int = 10
    """evaluate every this many steps"""
    eval_conversations: int = 300
    """held-out conversations for MRR@10 / Recall@1 / Recall@10 (the catalog's 300)"""
    # full profile
    full_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """*full*: policy, a Hub name or a local folder (the paper: Qwen2.5-3B-Instruct, Llama-3.2-3B-Instruct)"""
    full_conversations: int = 2000
    """*full*: training conversations from the toy task (the paper: TopiOCQA / QReCC)"""
    full_steps: int = 150
    """*full*: GRPOTrainer steps"""
    full_group: int = 8
    """*full*: generations per prompt (the official scripts: rollout.n 16)"""
    full_batch: int = 32
    """*full*: completions per device step (a multiple of full_group)"""
    full_lr: float = 1e-6
    """*full*: learning rate ("actor_rollout_ref.actor.optim.lr=1e-6", run_qwen2.5-3b-it_topiocqa.sh)"""
    full_beta: float = 0.001
    """*full*: KL coefficient ("kl_loss_coef=0.001", low_var_kl, i.e. the k3 estimator TRL uses)"""
    full_temperature: float = 0.7
    """*full*: sampling temperature ("rollout.temperature=0.7")"""
    full_max_completion: int = 1024
    """*full*: max new tokens, think + rewrite ("max_response_length=1024")"""
    full_eval_conversations: int = 300
    """*full*: held-out conversations evaluated (greedy)"""

    def __post_init__(self):
        for r in _runs(self.runs):
            check(r.split("+")[0] in REWARDS and r.split("+")[1:] in ([], ["warmup"]),
                  f"run {r!r}: use a reward of {REWARDS}, optionally '+warmup'")
        check(len(_runs(self.runs)) >= 1, "runs must name at least one run")
        check(self.steps >= 1 and self.prompts >= 1 and self.group >= 2, "steps, prompts >= 1 and group >= 2")
        check(self.lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(0 < self.clip_eps < 1, "clip_eps must be in (0, 1)")
        check(1 <= self.max_copy <= 6, "max_copy must be in 1..6")
        check(self.warmup_max_rank >= 1 and self.warmup_epochs >= 1, "warm-up settings must be >= 1")
        check(self.eval_every >= 1 and self.eval_conversations >= 1, "eval settings must be >= 1")
        check(self.full_batch % self.full_group == 0, "full_batch must be a multiple of full_group")


def _runs(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ---------------------------------------------------------------------------------
# the pointer policy
# ---------------------------------------------------------------------------------
class PointerPolicy(nn.Module):
    r"""Copy up to ``max_copy`` distinct history words, then STOP; the rewrite is ``query + copied words``.

    At step :math:`s` each candidate word :math:`w` (the history's distinct words) gets a logit
    :math:`f_\theta\big(e_w, \mathrm{idf}_w, \text{turn}_w, [w\in q], \text{step}_s, \bar e_{\text{copied}}\big)`
    (an MLP), STOP a logit :math:`g_\theta(\text{step}_s, \bar e_{\text{copied}})`; copied words are
    masked. :math:`e_w` is a learned word embedding, :math:`\mathrm{idf}_w` the retriever's idf
    (0 for a word the corpus lacks), :math:`\bar e_{\text{copied}}` the mean embedding of the
    words copied so far. About 6k parameters.
    """

    def __init__(self, vocab: list[str], idf: dict[str, float], max_copy: int = 3, dim: int = 16, hidden: int = 32,
                 seed: int = 0):
        super().__init__()
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.idf = idf
        self.max_copy = max_copy
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(len(vocab), dim)
        n_static = dim + 4
        self.score = nn.Sequential(nn.Linear(n_static + max_copy + dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.stop = nn.Linear(max_copy + dim, 1)
        with torch.no_grad():  # a near-uniform base policy
            self.emb.weight.copy_(torch.randn(len(vocab), dim, generator=g) * 0.3)
            self.score[-1].weight.mul_(0.1)
            self.stop.weight.mul_(0.1)
            self.stop.bias.fill_(-1.0)

    def candidates(self, convs: list[cs.Conversation]) -> tuple[list[list[str]], Tensor, Tensor, Tensor]:
        """Distinct history words per conversation: ``words``, ids ``(B, C)``, static features ``(B, C, 4)``, mask ``(B, C)``."""
        words, feats = [], []
        for c in convs:
            seen, f = {}, []
            q = set(cs.tokenize(c.query))
            H = len(c.history)
            for t, turn in enumerate(c.history):
                for w in cs.tokenize(turn):
                    if w not in seen:
                        seen[w] = len(seen)
                        f.append([self.idf.get(w, 0.0) / 5.0, t / max(1, H - 1), float(t == H - 1), float(w in q)])
            words.append(list(seen))
            feats.append(f)
        C = max(map(len, words))
        ids = torch.tensor([[self.vocab.get(w, 0) for w in ws] + [0] * (C - len(ws)) for ws in words])
        st = torch.tensor([f + [[0.0] * 4] * (C - len(f)) for f in feats])
        mask = torch.tensor([[True] * len(ws) + [False] * (C - len(ws)) for ws in words])
        return words, ids, st, mask

    def rollout(self, convs: list[cs.Conversation], G: int, generator: torch.Generator | None = None,
                greedy: bool = False, actions: Tensor | None = None, cand: tuple | None = None) -> dict:
        """Sample (or replay ``actions``) ``G`` rewrites per conversation.

        Returns ``actions: (B*G, max_copy)`` candidate indices (``-2`` = STOP, ``-1`` after STOP),
        ``logp: (B*G, max_copy)`` log-probs of the actions taken (with grad), ``mask: (B*G, max_copy)``
        the valid steps, and ``rewrites`` (strings). Rows are ``b*G + g``. ``cand``: ``self.candidates(convs)``
        if already computed (it does not depend on the weights).
        """
        words, ids, st, cmask = cand if cand is not None else self.candidates(convs)
        B, C = ids.shape
        N = B * G
        rep = lambda x: x.repeat_interleave(G, 0)
        e = rep(self.emb(ids))  # (N, C, dim)
        static = torch.cat([e, rep(st)], -1)  # (N, C, dim + 4)
        avail = rep(cmask).clone()  # (N, C)
        chosen_sum = torch.zeros(N, e.shape[-1])
        n_chosen = torch.zeros(N, 1)
        alive = torch.ones(N, dtype=torch.bool)
        acts = torch.full((N, self.max_copy), -1, dtype=torch.long)
        logps = torch.zeros(N, self.max_copy)
        valid = torch.zeros(N, self.max_copy)
        for s in range(self.max_copy):
            step = F.one_hot(torch.full((N,), s), self.max_copy).float()
            mean_c = chosen_sum / n_chosen.clamp(min=1)
            dyn = torch.cat([step, mean_c], -1)  # (N, max_copy + dim)
            lc = self.score(torch.cat([static, dyn[:, None].expand(-1, C, -1)], -1)).squeeze(-1)  # (N, C)
            lc = lc.masked_fill(~avail, -1e9)
            ls = self.stop(dyn)  # (N, 1)
            logits = torch.log_softmax(torch.cat([lc, ls], -1), -1)  # (N, C + 1)
            if actions is not None:
                a = torch.where(actions[:, s] == -2, torch.full_like(actions[:, s], C), actions[:, s].clamp(min=0))
            elif greedy:
                a = logits.argmax(-1)
            else:
                a = torch.multinomial(logits.exp().detach(), 1, generator=generator).squeeze(-1)
            a = torch.where(alive, a, torch.full_like(a, C))
            logps[:, s] = logits.gather(1, a[:, None]).squeeze(1) * alive
            valid[:, s] = alive.float()
            acts[:, s] = torch.where(alive, torch.where(a == C, torch.full_like(a, -2), a), torch.full_like(a, -1))
            copy = alive & (a < C)
            idx = a.clamp(max=C - 1)
            chosen_sum = chosen_sum + e[torch.arange(N), idx] * copy[:, None]
            n_chosen = n_chosen + copy[:, None].float()
            avail[torch.arange(N), idx] &= ~copy
            alive = copy
        rewrites = []
        for n, row in enumerate(acts.tolist()):
            ws = words[n // G]
            rewrites.append(" ".join([convs[n // G].query] + [ws[a] for a in row if 0 <= a < len(ws)]))
        return {"actions": acts, "logp": logps, "mask": valid, "rewrites": rewrites}


def make_policy(task: cs.ConvSearchTask, cfg: Config, seed: int) -> PointerPolicy:
    """A fresh near-uniform pointer policy over the task's words."""
    words = sorted({w for p in task.passages for w in cs.tokenize(p)}
                   | {w for t in (*cs.OPENERS, *cs.REPLIES, *cs.DISTRACT, *cs.CHAT, *cs.QUERIES.values()) for w in cs.tokenize(t)}
                   | set(cs.FIRST) | set(cs.SECOND) | {w for v in cs.VALUES.values() for w in v})
    idf = {w: float(task.index.idf[i]) for w, i in task.index.vocab.items()}
    torch.manual_seed(seed)
    return PointerPolicy(words, idf, cfg.max_copy, seed=seed)


# ---------------------------------------------------------------------------------
# evaluation, warm-up, GRPO
# ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(policy: PointerPolicy, task: cs.ConvSearchTask, convs: list[cs.Conversation], cand: tuple | None = None) -> dict:
    """Greedy rewrites on ``convs``: MRR@10, Recall@1, Recall@10, mean rank reward, copied words."""
    out = policy.rollout(convs, 1, greedy=True, cand=cand)
    rank = task.ranks(out["rewrites"], convs)
    return {"mrr10": float(cs.mrr_at(rank, 10).mean()), "recall1": float(cs.recall_at(rank, 1).mean()),
            "recall10": float(cs.recall_at(rank, 10).mean()), "rank_reward": float(cs.rank_incentive(rank).mean()),
            "copied": float(np.mean([len(cs.tokenize(r)) - len(cs.tokenize(c.query))
                                     for r, c in zip(out["rewrites"], convs)]))}


def warmup(policy: PointerPolicy, task: cs.ConvSearchTask, cfg: Config, seed: int) -> dict:
    """Self-driven warm-up: sample from the policy, keep rewrites with gold rank <= ``warmup_max_rank``, SFT on them.

    Returns the number sampled and kept. The SFT loss is the mean negative log-likelihood of the
    kept action sequences (STOP included), over ``warmup_epochs`` passes with Adam.
    """
    rng = np.random.default_rng([seed, 11])
    gen = torch.Generator().manual_seed(seed + 11)
    convs = task.sample(cfg.warmup_conversations, rng, "train")
    with torch.no_grad():
        out = policy.rollout(convs, cfg.warmup_samples, generator=gen)
    rank = task.ranks(out["rewrites"], [c for c in convs for _ in range(cfg.warmup_samples)])
    keep = np.nonzero(rank <= cfg.warmup_max_rank)[0]
    if len(keep):
        kept_convs = [convs[i // cfg.warmup_samples] for i in keep]
        acts = out["actions"][torch.as_tensor(keep)]
        opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        for _ in range(cfg.warmup_epochs):
            r = policy.rollout(kept_convs, 1, actions=acts)
            loss = -(r["logp"] * r["mask"]).sum() / r["mask"].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"sampled": len(rank), "kept": int(len(keep))}


def train_grpo(policy: PointerPolicy, task: cs.ConvSearchTask, reward: str, cfg: Config, seed: int,
               eval_convs: list[cs.Conversation]) -> dict:
    """GRPO on-policy (one step per batch): group-normalised rewards, clipped surrogate; history of evaluations."""
    rng = np.random.default_rng([seed, 5])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    cand = policy.candidates(eval_convs)
    hist = {"step": [0], **{k: [v] for k, v in evaluate(policy, task, eval_convs, cand).items()}, "train_reward": []}
    for step in range(1, cfg.steps + 1):
        convs = task.sample(cfg.prompts, rng, "train")
        out = policy.rollout(convs, cfg.group, generator=gen)
        rank = task.ranks(out["rewrites"], [c for c in convs for _ in range(cfg.group)])
        r = torch.as_tensor(reward_of(reward, rank), dtype=torch.float32).view(cfg.prompts, cfg.group)  # (B, G)
        adv = group_normalise(r).flatten()  # (N,)
        loss, _ = grpo_loss(out["logp"], out["logp"].detach(), adv, out["mask"], cfg.clip_eps, cfg.clip_eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist["train_reward"].append(float(r.mean()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            hist["step"].append(step)
            for k, v in evaluate(policy, task, eval_convs, cand).items():
                hist[k].append(v)
    return hist


def run_smoke(cfg: Config, seed: int) -> dict:
    """Every run of ``cfg.runs`` from the same near-uniform base (seeded), on the same held-out conversations."""
    task = cs.ConvSearchTask(seed=0)
    eval_convs = task.sample(cfg.eval_conversations, np.random.default_rng([seed, 99]), "test")
    out = {"task": task, "eval": eval_convs}
    base = make_policy(task, cfg, seed)
    out["base"] = evaluate(base, task, eval_convs)
    for run in _runs(cfg.runs):
        t0 = time.time()
        reward, *wu = run.split("+")
        pol = make_policy(task, cfg, seed)
        info = warmup(pol, task, cfg, seed) if wu else None
        h = train_grpo(pol, task, reward, cfg, seed, eval_convs)
        h["warmup"], h["seconds"], h["policy"] = info, time.time() - t0, pol
        out[run] = h
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer, a reward function calling the retriever
# ---------------------------------------------------------------------------------
SYSTEM = ("Rewrite the user's last question into a self-contained search query, using the conversation. "
          "Think first, then answer in the format <think>...</think>\n<rewrite>...</rewrite>.")


def conversation_prompt(c: cs.Conversation) -> list[dict]:
    """The chat prompt of a conversation: a system instruction, the history and the current query."""
    hist = "\n".join(f"turn {i + 1}: {t}" for i, t in enumerate(c.history))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Conversation:\n{hist}\nQuestion: {c.query}"}]


def make_reward_fn(task: cs.ConvSearchTask):
    """A TRL reward function: ``(completions, gold, **kw) -> list[float]`` with the official format check and rank reward."""

    def rank_reward(completions, gold, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        out = []
        rewrites = [cs.parse_rewrite(t) for t in texts]
        ok = [i for i, (t, r) in enumerate(zip(texts, rewrites)) if cs.format_ok(t) and r is not None]
        ranks = task.index.rank_of([cs.tokenize(rewrites[i]) for i in ok], np.array([gold[i] for i in ok])) if ok else []
        rank_by = dict(zip(ok, ranks))
        for i, t in enumerate(texts):
            out.append(cs.text_reward(t, int(rank_by[i]) if i in rank_by else None))
        return out

    rank_reward.__name__ = "rank_incentive"
    return rank_reward


def run_full(cfg: Config, seed: int, output_dir: str = "convsearch_r1_full", cpu: bool = False,
             max_steps: int | None = None, eval_conversations: int | None = None, max_completion: int | None = None,
             micro_batch: int | None = None) -> dict:
    """GRPO with the rank-incentive reward on a Hub (or local) instruct model; greedy MRR@10 before and after."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlbook import hub
    from rlbook.models import load_pretrained

    cuda = torch.cuda.is_available() and not cpu
    model, tok = load_pretrained(cfg.full_model, device="cuda" if cuda else "cpu",
                                 dtype=torch.bfloat16 if cuda else None)
    task = cs.ConvSearchTask(seed=0)
    rng = np.random.default_rng(seed)
    train = task.sample(cfg.full_conversations, rng, "train")
    ds = Dataset.from_list([{"prompt": conversation_prompt(c), "gold": c.gold} for c in train])
    evalc = task.sample(eval_conversations or cfg.full_eval_conversations, np.random.default_rng([seed, 99]), "test")
    max_new = max_completion or cfg.full_max_completion

    def mrr10(m) -> float:
        texts = []
        m.eval()
        for c in evalc:
            enc = tok.apply_chat_template(conversation_prompt(c), add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True).to(m.device)
            with torch.no_grad():
                g = m.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
            texts.append(tok.decode(g[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        rw = [cs.parse_rewrite(t) or "" for t in texts]
        rank = task.ranks(rw, evalc)
        return float(cs.mrr_at(rank, 10).mean())

    before = mrr10(model)
    per_device = micro_batch or cfg.full_batch
    args = GRPOConfig(output_dir=output_dir, per_device_train_batch_size=per_device, num_generations=cfg.full_group,
                      max_completion_length=max_new, learning_rate=cfg.full_lr, beta=cfg.full_beta,
                      temperature=cfg.full_temperature,
                      max_steps=max_steps or cfg.full_steps, logging_steps=1, **hub.trl_offline(cuda, seed))
    trainer = GRPOTrainer(model=model, reward_funcs=make_reward_fn(task), args=args, train_dataset=ds,
                          processing_class=tok)
    trainer.train()
    after = mrr10(trainer.model)
    return {"mrr10_before": before, "mrr10_after": after, "log": trainer.state.log_history}
