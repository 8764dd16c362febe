r"""Chapter "ToolRL: Reward is All Tool Learning Needs" (Qian et al. 2025, arXiv 2504.13958).

ToolRL trains tool calling with GRPO and a reward made of a binary format term and a
fine-grained correctness term (tool names, parameter names, parameter values) rescaled to
:math:`[-3,3]` (:mod:`rlbook.tasks.tool_call`). The chapter compares three rewards on one
policy and one GRPO loop:

- ``toolrl``: :math:`R_{format}\in\{0,1\}` + :math:`R_{correct}\in[-3,3]` (the paper's);
- ``binary``: 1 iff format valid and every call exact (sparse answer matching);
- ``format_dominant``: :math:`4R_{format}+(R_{correct}+3)/6` (format dominates).

Smoke profile: :class:`CallPolicy`, a small factorised pointer network over the call structure (a
header that may omit the ``<think>`` block, the number of calls, a tool name per call, which parameter
names to set, and value *pointers* that copy a slot of the request), rendered to the paper's text format
and scored by the text-level rewards. :func:`build_base` trains it by SFT on a few demos to partial
competence; :func:`run_grpo` trains copies with GRPO (:func:`rlbook.losses.grpo.grpo_loss`, one on-policy
step per batch, advantages from :func:`rlbook.losses.common.group_normalise`), and :func:`evaluate`
measures exact match, format validity and per-component match rates on held-out requests, including
two-tool combinations never seen in training.

Full profile (:func:`run_full`): TRL ``GRPOTrainer`` on an instruct model with the ToolRL reward as
a Python reward function (:func:`trl_reward`), on the official RL set (a ToolACE/xLAM-style
data set of ``prompt`` + ``ground_truth`` text).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rlbook.config import check
from rlbook.losses.common import group_normalise
from rlbook.losses.grpo import grpo_loss
from rlbook.tasks import tool_call as tc

REWARD_NAMES = tuple(tc.REWARDS)
"""the rewards compared: toolrl, binary, format_dominant"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    hidden: int = 48
    """policy: width of the request encoder and the heads"""
    sft_demos: int = 200
    """SFT: demonstrations (single-tool requests and seen two-tool combinations; catalog: 200)"""
    sft_steps: int = 40
    """SFT: Adam steps of batch 32 (partial competence, about 0.33 exact match on held-out requests)"""
    sft_no_think: float = 0.3
    """SFT: fraction of demos whose response omits the think block (a format error the base copies)"""
    sft_lr: float = 1e-2
    """SFT: Adam learning rate"""
    rewards: str = "toolrl,binary,format_dominant"
    """rewards to train with (comma-separated names of rlbook.tasks.tool_call.REWARDS)"""
    steps: int = 80
    """GRPO: steps (catalog: 150; 80 fit the CPU budget and show every effect)"""
    prompts: int = 24
    """GRPO: B, requests per step (catalog: 32; 24 fit the CPU budget)"""
    group: int = 8
    """GRPO: G, samples per request (catalog: 8)"""
    lr: float = 1e-3
    """GRPO: Adam learning rate"""
    clip_eps: float = 0.2
    """GRPO: PPO clip range (inactive on-policy, one step per batch)"""
    pool: int = 3000
    """GRPO: training requests drawn once per run (single tools and seen pairs); each step samples from them"""
    two_tool_frac: float = 0.6
    """fraction of two-tool requests in training batches (the rest single-tool)"""
    eval_requests: int = 200
    """evaluation: held-out requests per split (seen combinations / unseen combinations)"""
    eval_samples: int = 2
    """evaluation: samples per held-out request at temperature 1 (exact match = sampled pass@1; 0 = greedy)"""
    eval_every: int = 20
    """evaluation: steps between learning-curve points"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """*full*: instruct model, a Hub name or a local folder (the paper: Qwen2.5-1.5B/3B/7B-Instruct, Llama-3.2-3B)"""
    full_data: str = "ToolRL/dataset/rlla_4k/train.parquet"
    """*full*: the RL set: the official dataset/rlla_4k/train.parquet (git clone qiancheng0/ToolRL; ToolACE 2k +
    Hammer 1k + xLAM 1k), or a Hub name / save_to_disk folder with fields prompt and ground_truth"""
    full_steps: int = 200
    """*full*: optimiser steps"""
    full_group: int = 4
    """*full*: samples per prompt (run_grpo.sh: "actor_rollout_ref.rollout.n=4")"""
    full_prompts_per_step: int = 64
    """*full*: prompts per optimiser step (run_grpo.sh: train_batch_size 512, ppo_mini_batch_size 128)"""
    full_lr: float = 1e-6
    """*full*: learning rate (run_grpo.sh: "optim.lr=1e-6")"""
    full_max_completion: int = 1024
    """*full*: max new tokens (run_grpo.sh: "data.max_response_length=1024")"""
    full_eval: int = 200
    """*full*: held-out prompts for exact match"""

    def __post_init__(self):
        check(self.hidden >= 8, "hidden must be >= 8")
        check(self.sft_demos >= 1 and self.sft_steps >= 0, "sft_demos >= 1 and sft_steps >= 0")
        check(0.0 <= self.sft_no_think <= 1.0, "sft_no_think must be in [0, 1]")
        check(0.0 <= self.two_tool_frac <= 1.0, "two_tool_frac must be in [0, 1]")
        check(self.steps >= 0 and self.prompts >= 1 and self.group >= 2, "steps >= 0, prompts >= 1, group >= 2")
        check(self.lr > 0 and self.sft_lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(0.0 < self.clip_eps < 1.0, "clip_eps must be in (0, 1)")
        check(self.pool >= self.prompts, "pool must hold at least one batch of prompts")
        check(self.eval_requests >= 1 and self.eval_every >= 1, "eval sizes must be positive")
        check(self.eval_samples >= 0, "eval_samples must be >= 0")
        bad = [r for r in split_names(self.rewards) if r not in tc.REWARDS]
        check(not bad and split_names(self.rewards), f"unknown reward(s) {bad}; choose from {', '.join(tc.REWARDS)}")


def split_names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ---------------------------------------------------------------------------------
# the call policy: a factorised pointer network over the call structure
# ---------------------------------------------------------------------------------
C = 2
"""call slots of the policy (a response has 1 or 2 calls)"""
K = len(tc.KEYS)
FACTORS = 2 + C * (1 + 2 * K)
"""decisions per response: header, call count, and per call slot a tool, K key bits and K value pointers"""
WORDS: tuple = tuple(dict.fromkeys(
    [w for ts in tc.TEMPLATES.values() for t in ts for w in t.split() if not w.startswith("{")]
    + tc.JOINER.split() + [str(v) for vs in tc.VALUES.values() for v in vs]))
WORD_ID = {w: i + 1 for i, w in enumerate(WORDS)}  # 0 = padding


def encode(requests: list) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(ids (B, L), seg (B, L), slot_pos (B, S), slot_ok (B, S))`` for a list of requests.

    ``ids``: word ids, 0 = pad. ``seg``: the request segment of each token (0 before the joiner
    "and then", 1 from it on), the policy's segment embedding, which tells call slot ``j`` where its
    part of the request is. ``slot_pos``: the token positions of the slot values (padded with 0),
    ``slot_ok``: which of them are real. A value pointer is an index into ``slot_pos``.
    """
    L = max(len(r.tokens) for r in requests)
    S = max(len(r.slots) for r in requests)
    ids = torch.zeros(len(requests), L, dtype=torch.long)
    seg = torch.zeros(len(requests), L, dtype=torch.long)
    slot_pos = torch.zeros(len(requests), S, dtype=torch.long)
    slot_ok = torch.zeros(len(requests), S, dtype=torch.bool)
    j0 = tc.JOINER.split()[0]
    for b, r in enumerate(requests):
        toks = [str(t) for t in r.tokens]
        ids[b, : len(toks)] = torch.tensor([WORD_ID[t] for t in toks])
        if j0 in toks:
            seg[b, toks.index(j0):] = 1
        slot_pos[b, : len(r.slots)] = torch.tensor(r.slots)
        slot_ok[b, : len(r.slots)] = True
    return ids, seg, slot_pos, slot_ok


@dataclass
class Actions:
    """One sampled response per row, as the policy's decisions (``N`` rows)."""

    header: Tensor
    """(N,) 1 = ``<think></think>`` present, 0 = omitted (a format error)"""
    two: Tensor
    """(N,) 1 = two calls, 0 = one call"""
    tool: Tensor
    """(N, C) tool index of each call slot"""
    keys: Tensor
    """(N, C, K) bool: parameter name k is set in call j"""
    ptr: Tensor
    """(N, C, K) index of the request slot whose value key k of call j copies (ignored where not set)"""

    def rows(self) -> list[tuple]:
        """Hashable per-row tuples (the reward cache's keys)."""
        n = self.header.shape[0]
        flat = torch.cat([self.header[:, None], self.two[:, None], self.tool,
                          (self.keys.long() * (self.ptr + 1)).flatten(1)], 1)
        return [tuple(r) for r in flat.view(n, -1).tolist()]


def to_calls(req, header: int, two: int, tool, keys, ptr) -> tuple[list, str | None]:
    """The calls (and think text, ``None`` if omitted) that one row of :class:`Actions` renders."""
    calls = []
    for j in range(1 + int(two)):
        params = {tc.KEYS[k]: req.tokens[req.slots[int(ptr[j][k])]] for k in range(K) if keys[j][k]}
        calls.append({"name": tc.TOOL_NAMES[int(tool[j])], "parameters": params})
    return calls, ("" if header else None)


def actions_to_texts(requests: list, acts: Actions, G: int = 1) -> list[str]:
    """Render every row of ``acts`` (row ``i`` answers ``requests[i // G]``) in ToolRL's text format."""
    h, t2, tool = acts.header.tolist(), acts.two.tolist(), acts.tool.tolist()
    keys, ptr = acts.keys.tolist(), acts.ptr.tolist()
    out = []
    for i in range(len(h)):
        calls, think = to_calls(requests[i // G], h[i], t2[i], tool[i], keys[i], ptr[i])
        out.append(tc.render(calls, think=think))
    return out


def gold_actions(requests: list, think: list[bool]) -> Actions:
    """The decisions that render each request's gold calls (values by pointer to their slot)."""
    n = len(requests)
    tool = torch.zeros(n, C, dtype=torch.long)
    keys = torch.zeros(n, C, K, dtype=torch.bool)
    ptr = torch.zeros(n, C, K, dtype=torch.long)
    for b, r in enumerate(requests):
        for j, (call, pt) in enumerate(zip(r.gold, r.pointers)):
            tool[b, j] = tc.TOOL_NAMES.index(call["name"])
            for k in call["parameters"]:
                keys[b, j, tc.KEYS.index(k)] = True
                ptr[b, j, tc.KEYS.index(k)] = r.slots.index(pt[k])
    two = torch.tensor([len(r.gold) == 2 for r in requests], dtype=torch.long)
    return Actions(torch.tensor(think, dtype=torch.long), two, tool, keys, ptr)


class CallPolicy(nn.Module):
    r"""A factorised pointer network: request encoder, then header, call count, tools, keys and value pointers.

    Encoder: word + segment embeddings, two residual 1-D convolutions (kernel 5): :math:`H\in\mathbb R^{L\times d}`;
    :math:`s_j` the mean of :math:`H` over segment :math:`j`, :math:`\bar s` over all tokens. Decisions, in
    order (later ones conditioned on the sampled tool :math:`t_j`):

    .. math:: \pi(y|x)=\pi(\text{header}|\bar s)\,\pi(n|\bar s)\prod_{j<n}\Big[\pi(t_j|s_j)
              \prod_{k}\pi(b_{jk}|s_j,t_j)\prod_{k:\,b_{jk}=1}\pi(p_{jk}|s_j,t_j,k)\Big]

    with :math:`b_{jk}` "key :math:`k` is set" (Bernoulli) and :math:`p_{jk}` a pointer over the request's
    slot positions, :math:`\pi(p=i)\propto\exp(H_i\cdot q_{jk})`. One forward pass gives all log-probs
    (no recurrence over the response: this is what makes 150 GRPO steps fit the CPU budget).
    """

    def __init__(self, hidden: int = 48):
        super().__init__()
        d = hidden
        self.emb = nn.Embedding(len(WORDS) + 1, d, padding_idx=0)
        self.seg = nn.Embedding(2, d)
        self.conv1 = nn.Conv1d(d, d, 5, padding=2)
        self.conv2 = nn.Conv1d(d, d, 5, padding=2)
        self.glob = nn.Linear(d, 4)  # header (2) and call count (2)
        self.tool_head = nn.Linear(d, len(tc.TOOL_NAMES))
        self.tool_emb = nn.Embedding(len(tc.TOOL_NAMES), d)
        self.key_head = nn.Linear(2 * d, K)
        self.key_emb = nn.Parameter(torch.randn(K, d) * 0.1)
        self.query = nn.Linear(2 * d, d)

    def encode(self, ids: Tensor, seg: Tensor, slot_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Slot features ``(B, S, d)``, segment means ``(B, C, d)``, global mean ``(B, d)``."""
        pad = (ids == 0)[..., None]
        x = (self.emb(ids) + self.seg(seg)).masked_fill(pad, 0).transpose(1, 2)  # (B, d, L)
        x = x + torch.relu(self.conv1(x))
        x = x + torch.relu(self.conv2(x))
        H = x.transpose(1, 2).masked_fill(pad, 0)  # (B, L, d)
        onehot = torch.nn.functional.one_hot(seg, C).to(H.dtype).masked_fill(pad, 0)  # (B, L, C)
        Sm = torch.bmm(onehot.transpose(1, 2), H) / onehot.sum(1)[..., None].clamp(min=1)  # (B, C, d)
        slots = torch.gather(H, 1, slot_pos[..., None].expand(-1, -1, H.shape[-1]))  # (B, S, d)
        return slots, Sm, H.sum(1) / (~pad).sum(1).clamp(min=1)

    def forward(self, ids: Tensor, seg: Tensor, slot_pos: Tensor, slot_ok: Tensor, G: int = 1,
                actions: Actions | None = None, greedy: bool = False,
                generator: torch.Generator | None = None) -> tuple[Actions, Tensor, Tensor]:
        """``G`` responses per request (rows ``b*G .. b*G+G-1`` answer request ``b``): sample them, or take the
        argmax (``greedy``), or score the given ``actions``. Returns ``(actions, logp (N, F), mask (N, F))``,
        ``N = B*G``.

        ``logp`` holds the log-prob of each of the ``F = FACTORS`` decisions (with gradient), ``mask``
        which decisions the response actually makes (call slot 2 only if two calls; pointers only for set keys).
        The encoder runs once per request.
        """
        slots, S, g = (x.repeat_interleave(G, 0) for x in self.encode(ids, seg, slot_pos))
        ok = slot_ok.repeat_interleave(G, 0)
        N = slots.shape[0]

        def pick(logp: Tensor, given: Tensor | None) -> Tensor:
            if given is not None:
                return given
            if greedy:
                return logp.argmax(-1)
            u = torch.rand(logp.shape[:-1] + (1,), generator=generator)  # inverse-CDF sampling
            cdf = logp.detach().exp().cumsum(-1)
            return (cdf < u * cdf[..., -1:]).sum(-1).clamp(max=logp.shape[-1] - 1)

        glob = self.glob(g)  # (N, 4)
        lp_h, lp_n = torch.log_softmax(glob[:, :2], -1), torch.log_softmax(glob[:, 2:], -1)
        header = pick(lp_h, None if actions is None else actions.header)
        two = pick(lp_n, None if actions is None else actions.two)
        lp_t = torch.log_softmax(self.tool_head(S), -1)  # (N, C, 6)
        tool = pick(lp_t, None if actions is None else actions.tool)
        ctx = torch.cat([S, self.tool_emb(tool)], -1)  # (N, C, 2d)
        kl = self.key_head(ctx)  # (N, C, K) logits of "key k is set"
        lp_k = torch.stack([torch.nn.functional.logsigmoid(-kl), torch.nn.functional.logsigmoid(kl)], -1)
        keys = pick(lp_k, None if actions is None else actions.keys.long()).bool()
        q = (self.query(ctx)[:, :, None, :] + self.key_emb).flatten(1, 2)  # (N, C*K, d)
        pl = torch.bmm(q, slots.transpose(1, 2)).view(N, C, K, -1)  # (N, C, K, S)
        lp_p = torch.log_softmax(pl.masked_fill(~ok[:, None, None, :], -1e9), -1)
        ptr = pick(lp_p, None if actions is None else actions.ptr)
        g1 = lambda lp, a: lp.gather(-1, a[..., None])[..., 0]
        call_on = torch.stack([torch.ones_like(two), two], 1).to(g.dtype)  # (N, C)
        logp = torch.cat([g1(lp_h, header)[:, None], g1(lp_n, two)[:, None], g1(lp_t, tool),
                          g1(lp_k, keys.long()).flatten(1), g1(lp_p, ptr).flatten(1)], 1)  # (N, F)
        mask = torch.cat([torch.ones(N, 2, dtype=g.dtype), call_on,
                          call_on[:, :, None].expand(-1, -1, K).flatten(1),
                          (call_on[:, :, None] * keys).flatten(1)], 1)  # (N, F)
        return Actions(header, two, tool, keys, ptr), logp * mask, mask


# ---------------------------------------------------------------------------------
# data, SFT base, evaluation
# ---------------------------------------------------------------------------------
def sample_requests(n: int, rng: np.random.Generator, combos: list, two_tool_frac: float) -> list:
    """``n`` requests: single-tool with probability ``1 - two_tool_frac``, else a pair from ``combos``."""
    out = []
    for _ in range(n):
        if rng.random() < two_tool_frac:
            tools = combos[int(rng.integers(len(combos)))]
        else:
            tools = (tc.TOOL_NAMES[int(rng.integers(len(tc.TOOL_NAMES)))],)
        out.append(tc.make_request(tools, rng))
    return out


def eval_sets(cfg: Config) -> dict:
    """Fixed held-out requests (independent of the run's seed): ``seen`` (single tools and seen pairs,
    fresh slot values) and ``unseen`` (two-tool combinations never trained on)."""
    seen, unseen = tc.combinations()
    rng = np.random.default_rng([2504, 13958])
    return {"seen": sample_requests(cfg.eval_requests, rng, seen, cfg.two_tool_frac),
            "unseen": sample_requests(cfg.eval_requests, rng, unseen, 1.0)}


def build_base(cfg: Config, seed: int = 0) -> tuple[CallPolicy, dict]:
    """SFT on ``cfg.sft_demos`` gold demonstrations (a fraction without the think block) for ``cfg.sft_steps`` steps.

    The loss is the mean negative log-likelihood per decision, then per demo (``rlbook.losses.sft_loss``'s
    aggregation). Deterministic given ``seed``; returns ``(policy, info)`` with the demos' composition.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    seen, _ = tc.combinations()
    demos = sample_requests(cfg.sft_demos, rng, seen, cfg.two_tool_frac)
    think = (rng.random(len(demos)) >= cfg.sft_no_think).tolist()
    enc = encode(demos)
    acts = gold_actions(demos, think)
    policy = CallPolicy(cfg.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.sft_lr)
    for _ in range(cfg.sft_steps):
        i = torch.from_numpy(rng.choice(len(demos), size=min(32, len(demos)), replace=False))
        sub = Actions(acts.header[i], acts.two[i], acts.tool[i], acts.keys[i], acts.ptr[i])
        _, logp, mask = policy(*(x[i] for x in enc), actions=sub)
        loss = -(logp.sum(1) / mask.sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy, {"demos": len(demos), "no_think": 1.0 - float(np.mean(think))}


@torch.no_grad()
def evaluate(policy: CallPolicy, requests: list, samples: int = 0, seed: int = 0) -> dict:
    """Exact match, format validity, mean ToolRL reward and per-component match rates on ``requests``.

    ``samples = 0``: greedy (each decision's argmax); else ``samples`` draws per request at temperature 1
    (then ``exact`` is the sampled pass@1). Components, from
    :func:`rlbook.tasks.tool_call.correctness_components`: ``tool_name`` (the list of predicted names equals
    the gold list), ``param_names`` (key Jaccard per gold call), ``param_values`` (fraction of gold values
    matched). Scored from the decoded calls (:func:`rlbook.tasks.tool_call.call_parts`, equal to the text-level
    reward of the rendered response, which always parses).
    """
    k = max(samples, 1)
    acts, _, _ = policy(*encode(requests), G=k, greedy=samples == 0, generator=torch.Generator().manual_seed(seed))
    h, t2, tool = acts.header.tolist(), acts.two.tolist(), acts.tool.tolist()
    keys, ptr = acts.keys.tolist(), acts.ptr.tolist()
    em, fmt, rew, nm, pn, pv = [], [], [], [], [], []
    for i in range(len(h)):
        gold = requests[i // k].gold
        pred, think = to_calls(requests[i // k], h[i], t2[i], tool[i], keys[i], ptr[i])
        f, c, e = tc.call_parts(pred, gold, 1.0 if think is not None else 0.0)  # = reward_parts of the text
        em.append(e), fmt.append(f), rew.append(f + c)
        comp = tc.correctness_components(gold, pred)
        nm.append(float([x["name"] for x in pred] == [x["name"] for x in gold]))
        pn.append(comp["param"] / len(gold))
        pv.append(comp["value"] / sum(len(x["parameters"]) for x in gold))
    return {"exact": float(np.mean(em)), "format": float(np.mean(fmt)), "reward": float(np.mean(rew)),
            "tool_name": float(np.mean(nm)), "param_names": float(np.mean(pn)), "param_values": float(np.mean(pv))}


# ---------------------------------------------------------------------------------
# GRPO with a text-level reward
# ---------------------------------------------------------------------------------
def batch_rewards(requests: list, acts: Actions, G: int) -> dict:
    """All three rewards and exact match ``(B, G)`` for the rows of ``acts`` (row ``i`` answers ``requests[i // G]``).

    Each distinct response of a request is scored once (:func:`rlbook.tasks.tool_call.call_parts`, equal to
    :func:`~rlbook.tasks.tool_call.reward_parts` of its rendered text); the rewards are combined from the parts.
    """
    rows = acts.rows()
    h, t2, tool = acts.header.tolist(), acts.two.tolist(), acts.tool.tolist()
    keys, ptr = acts.keys.tolist(), acts.ptr.tolist()
    parts, seen = [], {}
    for i, row in enumerate(rows):
        key = (i // G, row)
        if key not in seen:
            req = requests[i // G]
            calls, think = to_calls(req, h[i], t2[i], tool[i], keys[i], ptr[i])
            # = tc.reward_parts(tc.render(calls, think=think), req.gold): the grammar makes every response
            # parse back to ``calls`` and fixes its format but for the think block (tests check the equality)
            seen[key] = tc.call_parts(calls, req.gold, 1.0 if think is not None else 0.0)
        parts.append(seen[key])
    f, c, e = (torch.tensor(x, dtype=torch.float32).view(-1, G) for x in zip(*parts))
    return {"toolrl": f + c, "binary": f * e, "format_dominant": 4.0 * f + (c + 3.0) / 6.0, "exact": e}


def run_grpo(base: CallPolicy, reward: str, cfg: Config, seed: int, evals: dict | None = None) -> dict:
    """GRPO from a copy of ``base`` with reward ``reward``; the request stream depends on ``seed`` only.

    Each step: ``cfg.prompts`` training requests (single tools and *seen* pairs), ``cfg.group``
    samples each, rewards by :func:`batch_rewards`, advantages by ``group_normalise``, one Adam step on
    :func:`rlbook.losses.grpo.grpo_loss` with ``logp_old = logp.detach()`` (strictly on-policy; the
    "tokens" are the policy's decisions). Returns the policy, per-step training means of all three
    rewards, of exact match and of the fraction of informative groups (``train``), held-out sampled exact
    match every ``cfg.eval_every`` steps and after the last (``curve``; every metric of the last in
    ``final``) and the ToolRL rewards of the first and last batch (``hist_early/late``).
    """
    torch.manual_seed(seed)
    policy = copy.deepcopy(base)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([seed, 2])
    gen = torch.Generator().manual_seed(seed)
    seen, _ = tc.combinations()
    pool = sample_requests(cfg.pool, np.random.default_rng([seed, 3]), seen, cfg.two_tool_frac)
    enc = encode(pool)  # every training request is encoded once
    G = cfg.group
    train = {k: [] for k in (*tc.REWARDS, "exact", *(f"informative_{r}" for r in tc.REWARDS))}
    curve = {"step": [], **{s: [] for s in (evals or {})}}
    hist, final = {}, {}
    for step in range(cfg.steps + 1):
        if evals is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            curve["step"].append(step)
            for s, reqs in evals.items():
                final[s] = evaluate(policy, reqs, cfg.eval_samples, seed)
                curve[s].append(final[s]["exact"])
        if step == cfg.steps:
            break
        idx = rng.choice(len(pool), size=cfg.prompts, replace=False)
        reqs = [pool[i] for i in idx]
        acts, logp, mask = policy(*(x[torch.from_numpy(idx)] for x in enc), G=G, generator=gen)
        rs = batch_rewards(reqs, acts, G)
        for k, v in rs.items():
            train[k].append(float(v.mean()))
            if k in tc.REWARDS:  # fraction of groups whose rewards differ (a nonzero GRPO advantage)
                train[f"informative_{k}"].append(float((v.max(1).values > v.min(1).values).float().mean()))
        if step in (0, cfg.steps - 1):
            hist["early" if step == 0 else "late"] = rs["toolrl"].flatten().numpy()
        adv = group_normalise(rs[reward]).flatten()
        loss, _ = grpo_loss(logp, logp.detach(), adv, mask, cfg.clip_eps, cfg.clip_eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"policy": policy, "train": {k: np.array(v) for k, v in train.items()}, "curve": curve, "final": final,
            "hist_early": hist.get("early"), "hist_late": hist.get("late")}


def run(cfg: Config, seed: int) -> dict:
    """The smoke experiment: SFT base, then GRPO with every reward of ``cfg.rewards``; held-out evaluations.

    Returns ``{"base": {split: metrics}, reward: {"final": {split: metrics}, ...run_grpo...}, "seconds": {...}}``.
    """
    t0 = time.time()
    evals = eval_sets(cfg)
    base, info = build_base(cfg, seed)
    out = {"base": {s: evaluate(base, r, cfg.eval_samples, seed) for s, r in evals.items()}, "base_info": info,
           "seconds": {}}
    out["seconds"]["sft"] = time.time() - t0
    for name in split_names(cfg.rewards):
        t1 = time.time()
        res = run_grpo(base, name, cfg, seed, evals)  # res["final"]: the evaluation after the last step
        out[name] = res
        out["seconds"][name] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer with the ToolRL reward on an instruct model
# ---------------------------------------------------------------------------------
def gold_calls(ground_truth: str) -> list | None:
    """The gold calls of an official ``ground_truth`` text (``<think>..</think>\\n<tool_call>\\n{..}\\n</tool_call>``).

    ``None`` when the gold answer has no parsable tool call (the official reward then gives 0 correctness
    to every response and checks only the format of ``<response>`` answers; we keep tool-call rows only).
    """
    return tc.parse_tool_calls(ground_truth)


def load_rl_data(name_or_path: str, split: str = "train"):
    """The RL set as a ``datasets.Dataset`` with fields ``prompt`` (chat messages) and ``ground_truth`` (text).

    Accepts a Hub name or ``save_to_disk`` folder (via :func:`rlbook.hub.load_dataset`) or a ``.parquet`` file
    (the official ``dataset/rlla_4k/train.parquet``, verl layout: ``prompt`` messages and
    ``reward_model.ground_truth``). Rows whose gold answer is not a tool call are dropped.
    """
    import datasets

    from rlbook import hub

    if name_or_path.endswith(".parquet"):
        ds = datasets.load_dataset("parquet", data_files=name_or_path, split="train")
    else:
        ds = hub.load_dataset(name_or_path, split)

    def norm(ex):
        gt = ex.get("ground_truth") or (ex.get("reward_model") or {}).get("ground_truth", "")
        pr = ex["prompt"]
        pr = [{"role": "user", "content": pr}] if isinstance(pr, str) else [dict(m) for m in pr]
        return {"prompt": pr, "ground_truth": gt}

    ds = ds.map(norm, remove_columns=[c for c in ds.column_names if c not in ("prompt", "ground_truth")])
    return ds.filter(lambda ex: gold_calls(ex["ground_truth"]) is not None)


def trl_reward(completions, ground_truth, **kwargs) -> list[float]:
    r"""ToolRL's reward as a TRL reward function: :math:`R_{format}+R_{correct}` per completion.

    ``completions``: strings or chat messages (TRL passes ``[{"role": "assistant", "content": ...}]`` for
    conversational data); ``ground_truth``: the data set column of the same name (gold response text).
    """
    out = []
    for c, gt in zip(completions, ground_truth):
        text = c[-1]["content"] if isinstance(c, list) else c
        gold = gold_calls(gt)
        out.append(tc.toolrl_reward(text.strip(), gold) if gold is not None else tc.format_reward(text.strip()))
    return out


@torch.no_grad()
def evaluate_full(model, tok, data, max_new: int, batch: int = 16) -> dict:
    """Greedy exact match, format validity and mean ToolRL reward of ``model`` on ``data`` (prompt, ground_truth)."""
    from rlbook import hub

    device = next(model.parameters()).device.type
    prompts = [tok.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
               if getattr(tok, "chat_template", None) else "\n".join(m["content"] for m in ex["prompt"])
               for ex in data]
    outs = hub.generate(model, tok, prompts, device, max_new, 1, sample=False, batch=batch)
    golds = [gold_calls(ex["ground_truth"]) for ex in data]
    em = [tc.exact_match(o.strip(), g) for o, g in zip(outs, golds)]
    return {"exact": float(np.mean(em)), "format": float(np.mean([tc.format_reward(o.strip()) for o in outs])),
            "reward": float(np.mean(trl_reward(outs, [ex["ground_truth"] for ex in data])))}


def run_full(cfg: Config, seed: int, output_dir: str = "toolrl_full", cpu: bool = False, max_steps: int | None = None,
             n_eval: int | None = None, max_completion: int | None = None) -> dict:
    """Paper-scale run: TRL ``GRPOTrainer`` with :func:`trl_reward` on ``cfg.full_model`` and ``cfg.full_data``.

    Held-out: the last ``cfg.full_eval`` rows. Returns greedy ``{"base": metrics, "toolrl": metrics}``
    (:func:`evaluate_full`). Not timed on a GPU here (the catalog's estimate: ~40 min for 200 steps of a 1.5B
    model on one H100 with vLLM). ``cpu``/``max_*``/``n_eval`` exist for the dry-run test.
    """
    from trl import GRPOConfig, GRPOTrainer

    from rlbook import hub
    from rlbook.models import load_pretrained

    steps = max_steps or cfg.full_steps
    max_new = max_completion or cfg.full_max_completion
    data = load_rl_data(cfg.full_data)
    n_ev = min(n_eval or cfg.full_eval, len(data) // 2)
    train, held = data.select(range(len(data) - n_ev)), data.select(range(len(data) - n_ev, len(data)))
    device, dtype, use_vllm = hub.full_device(cpu)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": evaluate_full(model, tok, held, max_new)}
    args = GRPOConfig(
        learning_rate=cfg.full_lr,  # run_grpo.sh: "actor_rollout_ref.actor.optim.lr=1e-6"
        beta=0.0,  # run_grpo.sh: "actor_rollout_ref.actor.use_kl_loss=False"
        loss_type="grpo",  # per-sequence token mean, then mean over sequences
        scale_rewards="group",  # GRPO's std normalisation
        num_generations=cfg.full_group,
        per_device_train_batch_size=cfg.full_group * (1 if cpu else 4),
        gradient_accumulation_steps=1 if cpu else max(1, cfg.full_prompts_per_step // 4),
        num_iterations=1,
        max_completion_length=max_new,
        temperature=1.0,
        **hub.vllm_kw(use_vllm),
        **hub.trl_common(f"{output_dir}/toolrl", seed, not cpu, steps),
    )
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=args, train_dataset=train, processing_class=tok)
    trainer.train()
    results["toolrl"] = evaluate_full(trainer.model, tok, held, max_new)
    return results
