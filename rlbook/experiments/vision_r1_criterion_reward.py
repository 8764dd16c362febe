r"""Chapter "Vision-R1: Evolving Human-Free Alignment in LVLMs via Vision-Guided RL" (arXiv 2503.18013).

GRPO for visual grounding with a *criterion* reward computed from boxes alone (format + recall + precision,
:mod:`rlbook.tasks.grid_boxes`), and *progressive rule refinement* (stricter thresholds in a later stage).

Smoke profile: a small CNN + GRU policy (:class:`BoxPolicy`) reads a ``16 x 16`` grid image and an instruction
("find red" / "find blue") and writes box coordinate tokens. It is pre-trained by SFT to partial competence
(:func:`build_base`, committed as ``rlbook/zoo/vision-r1-criterion-reward.pt``), then trained with GRPO under
four rewards at equal budget: binary, recall-only (hackable), the criterion reward, and the criterion reward
with progressive rule refinement. Evaluation: AP@0.5, AP@0.75 and boxes per target on held-out scenes.

Full profile (:func:`run_full`): a vision-language model (``Qwen/Qwen2-VL-2B-Instruct``) trained with TRL's
``GRPOTrainer`` and the criterion reward (:func:`trl_criterion_reward`) on a grounding data set.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rlbook import hub
from rlbook.config import check
from rlbook.models import zoo
from rlbook.losses import group_normalise, grpo_loss
from rlbook.tasks import grid_boxes as GB

REWARDS = ("binary", "recall_only", "criterion", "criterion_prr")
"""the rewards compared (criterion_prr: with progressive rule refinement)"""

ZOO = Path(__file__).resolve().parents[1] / "zoo" / "vision-r1-criterion-reward.pt"
"""the committed SFT base policy"""

T = GB.MAX_BOXES * 4 + 1
"""answer length cap in tokens"""
V = GB.SIZE + 1
"""vocabulary: coordinates 0..15 and EOS"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    steps: int = 25
    """GRPO steps per reward (the catalog's 100 do not fit the CPU budget)"""
    images: int = 12
    """B: images per step"""
    group: int = 8
    """G: sampled answers per image (the paper: 8 rollouts)"""
    lr: float = 5e-4
    """Adam learning rate of the GRPO runs"""
    prr_switch: float = 0.4
    """progressive rule refinement: fraction of the steps after which the stricter stage starts"""
    eval_images: int = 150
    """held-out scenes for AP and boxes per target"""
    # full profile
    full_model: str = "Qwen/Qwen2-VL-2B-Instruct"
    """*full*: vision-language model, Hub name or local folder"""
    full_data: str = "jxu124/refcoco"
    """*full*: grounding data set with image, referring expression and boxes (Hub name or save_to_disk folder)"""
    full_steps: int = 150
    """*full*: optimiser steps"""
    full_group: int = 8
    """*full*: rollouts per prompt"""
    full_lr: float = 1e-6
    """*full*: learning rate"""
    full_beta: float = 0.04
    """*full*: KL coefficient"""
    full_max_completion: int = 256
    """*full*: max new tokens"""
    full_prr_step: int = 60
    """*full*: optimiser step at which the stricter stage of progressive rule refinement starts"""

    def __post_init__(self):
        check(self.steps >= 1 and self.images >= 1 and self.full_steps >= 1, "steps and images must be positive")
        check(self.group >= 2 and self.full_group >= 2, "group sizes must be >= 2")
        check(self.lr > 0 and self.full_lr > 0, "learning rates must be > 0")
        check(0.0 <= self.prr_switch <= 1.0, "prr_switch must be in [0, 1]")
        check(self.eval_images >= 10, "eval_images must be >= 10")
        check(self.full_beta >= 0, "full_beta must be >= 0")


# ---------------------------------------------------------------------------------
# policy
# ---------------------------------------------------------------------------------
class BoxPolicy(nn.Module):
    """CNN encoder (coordinate channels, FiLM by the instruction) + GRU decoder over box tokens."""

    def __init__(self, hidden: int = 96, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(5, 16, 3, padding=1)
        self.film = nn.Embedding(2, 32)  # instruction -> (gamma, beta) for conv1's 16 channels
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.proj = nn.Linear(32 * 4 * 4, hidden)
        self.tok = nn.Embedding(V + 1, 24)  # + BOS
        self.slot = nn.Embedding(4, 8)  # position inside a box
        self.gru = nn.GRU(24 + 8 + hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, V)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, GB.SIZE), torch.linspace(-1, 1, GB.SIZE), indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)

    def encode(self, images: Tensor, colour: Tensor) -> Tensor:
        """``images: (N, 3, 16, 16)``, ``colour: (N,)`` → features ``(N, hidden)``."""
        x = torch.cat([images, self.coords.expand(len(images), -1, -1, -1)], 1)
        gb = self.film(colour)  # (N, 32)
        h = torch.relu(self.conv1(x) * (1 + gb[:, :16, None, None]) + gb[:, 16:, None, None])
        h = torch.relu(self.conv3(torch.relu(self.conv2(h))))
        return torch.tanh(self.proj(h.flatten(1)))

    def logits(self, feat: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced next-token logits: ``tokens: (N, L)`` (the answer) → ``(N, L, V)``, masked."""
        N, L = tokens.shape
        prev = torch.cat([torch.full((N, 1), V, dtype=torch.long), tokens[:, :-1].clamp(max=V - 1)], 1)
        slot = (torch.arange(L) % 4)[None].expand(N, L)
        inp = torch.cat([self.tok(prev), self.slot(slot), feat[:, None].expand(N, L, -1)], -1)
        h, _ = self.gru(inp, feat[None].contiguous())
        return self.out(h) + allowed_mask(L)[None]


def allowed_mask(L: int) -> Tensor:
    """Constrained decoding as additive logits ``(L, V)``: EOS only at box boundaries, only EOS at the end."""
    m = torch.zeros(L, V)
    for t in range(L):
        if t % 4:
            m[t, GB.EOS] = float("-inf")
        if t >= T - 1:
            m[t, : GB.EOS] = float("-inf")
    return m


@torch.no_grad()
def sample(policy: BoxPolicy, feat: Tensor, gen: torch.Generator | None, greedy: bool = False) -> tuple[Tensor, Tensor]:
    """Decode answers: ``tokens: (N, T)`` (padded with EOS after the end) and ``mask: (N, T)`` (1 up to EOS)."""
    N = feat.shape[0]
    h = feat[None].contiguous()
    prev = torch.full((N,), V, dtype=torch.long)
    mask_logits = allowed_mask(T)
    toks, done = [], torch.zeros(N, dtype=torch.bool)
    mask = torch.zeros(N, T)
    for t in range(T):
        slot = torch.full((N,), t % 4, dtype=torch.long)
        inp = torch.cat([policy.tok(prev), policy.slot(slot), feat], -1)[:, None]
        o, h = policy.gru(inp, h)
        lg = policy.out(o[:, 0]) + mask_logits[t]
        nxt = lg.argmax(-1) if greedy else torch.multinomial(torch.softmax(lg, -1), 1, generator=gen)[:, 0]
        nxt = torch.where(done, torch.full_like(nxt, GB.EOS), nxt)
        mask[:, t] = (~done).float()
        done = done | (nxt == GB.EOS)
        toks.append(nxt)
        prev = nxt
    return torch.stack(toks, 1), mask


def token_logprobs(policy: BoxPolicy, feat: Tensor, tokens: Tensor) -> Tensor:
    """Per-token log-probs ``(N, T)`` of ``tokens`` (with gradient)."""
    return torch.log_softmax(policy.logits(feat, tokens), -1).gather(2, tokens[..., None])[..., 0]


def batch(scenes: list[GB.Scene]) -> tuple[Tensor, Tensor]:
    """Images ``(N, 3, 16, 16)`` and instructions ``(N,)``."""
    return torch.as_tensor(np.stack([s.image for s in scenes])), torch.tensor([s.colour for s in scenes])


# ---------------------------------------------------------------------------------
# SFT base (built once, committed to the zoo)
# ---------------------------------------------------------------------------------
BASE_RECIPE = {"hidden": 96, "max_sft_steps": 1000, "check_every": 50, "stop_ap50": 0.45, "batch": 64, "lr": 1e-3,
               "seed": 0, "train_scenes": 4000}
"""how the committed base was built: SFT on 4000 fixed scenes, stopped at partial competence (AP@0.5 >= 0.45)"""


def sft(policy: BoxPolicy, scenes: list[GB.Scene], steps: int, batch_size: int, lr: float, seed: int,
        opt: torch.optim.Optimizer | None = None) -> list[float]:
    """Teacher-forced cross-entropy on the target token sequences (boxes sorted by ``(y0, x0)``)."""
    opt = opt or torch.optim.Adam(policy.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    tgt = torch.full((len(scenes), T), GB.EOS, dtype=torch.long)
    msk = torch.zeros(len(scenes), T)
    for i, s in enumerate(scenes):
        seq = GB.boxes_to_tokens(s.boxes)
        tgt[i, : len(seq)] = torch.tensor(seq)
        msk[i, : len(seq)] = 1.0
    imgs, cols = batch(scenes)
    losses = []
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(scenes), batch_size))
        lp = token_logprobs(policy, policy.encode(imgs[idx], cols[idx]), tgt[idx])
        lp = lp.masked_fill(msk[idx] == 0, 0.0)  # padding may be a disallowed token (-inf)
        loss = -(lp * msk[idx]).sum() / msk[idx].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def build_base(recipe: dict = BASE_RECIPE) -> tuple[BoxPolicy, dict]:
    """Deterministic SFT base: fixed scenes (seed 10_000), Adam, stopped once AP@0.5 on 300 held-out scenes
    reaches ``stop_ap50`` (checked every ``check_every`` steps) -- a partially competent policy."""
    policy = BoxPolicy(recipe["hidden"], seed=recipe["seed"])
    scenes = GB.make_scenes(recipe["train_scenes"], 10_000)
    opt = torch.optim.Adam(policy.parameters(), lr=recipe["lr"])
    ev_scenes, losses, steps = eval_scenes(300), [], 0
    while steps < recipe["max_sft_steps"]:
        losses += sft(policy, scenes, recipe["check_every"], recipe["batch"], recipe["lr"], recipe["seed"] + steps, opt)
        steps += recipe["check_every"]
        ev = evaluate(policy, ev_scenes)
        if ev["AP@0.5"] >= recipe["stop_ap50"]:
            break
    info = {"name": "vision-r1-criterion-reward", "recipe": recipe, "sft_steps_run": steps,
            "final_sft_loss": float(np.mean(losses[-20:])),
            "competence": {k: ev[k] for k in ("AP@0.5", "AP@0.75", "boxes_per_target", "format")}}
    return policy.eval(), info


def load_base() -> tuple[BoxPolicy, dict]:
    """The committed base (``rlbook/zoo/vision-r1-criterion-reward.pt`` + ``.json``), built if missing."""
    found = zoo.load_state(ZOO.stem, ZOO.parent)
    if found is not None:
        state, info = found
        policy = BoxPolicy(info["recipe"]["hidden"])
        policy.load_state_dict(state)
        return policy.eval(), info
    return build_base()


def save_base(policy: BoxPolicy, info: dict) -> None:
    """Write the zoo files (run once by the chapter's author)."""
    zoo.save_state(policy, info, ZOO.stem, ZOO.parent, half=True)


def eval_scenes(n: int) -> list[GB.Scene]:
    """Held-out scenes (seed 20_000; the SFT scenes use 10_000, the RL scenes the run's seed)."""
    return GB.make_scenes(n, 20_000)


# ---------------------------------------------------------------------------------
# evaluation and GRPO
# ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(policy: BoxPolicy, scenes: list[GB.Scene]) -> dict:
    """Greedy answers: AP@0.5, AP@0.75 (box confidence = mean log-prob of its 4 tokens), boxes per target, format."""
    imgs, cols = batch(scenes)
    feat = policy.encode(imgs, cols)
    toks, mask = sample(policy, feat, None, greedy=True)
    lp = token_logprobs(policy, feat, toks)
    preds, scores, fmt = [], [], []
    for i in range(len(scenes)):
        seq = toks[i][mask[i] > 0].tolist()
        boxes, ok = GB.parse(seq)
        n = (len(seq) - 1) // 4 if seq and seq[-1] == GB.EOS else len(seq) // 4
        box_lp = lp[i, : 4 * n].view(-1, 4).mean(1)
        keep = [(b[0] <= b[2]) and (b[1] <= b[3]) for b in np.array(seq[: 4 * n]).reshape(-1, 4)]
        preds.append(boxes)
        scores.append(box_lp[torch.as_tensor(keep, dtype=torch.bool)].numpy() if n else np.zeros(0))
        fmt.append(ok)
    gts = [s.boxes for s in scenes]
    return {
        "AP@0.5": GB.average_precision(preds, scores, gts, 0.5),
        "AP@0.75": GB.average_precision(preds, scores, gts, 0.75),
        "boxes_per_target": sum(len(p) for p in preds) / sum(len(g) for g in gts),
        "format": float(np.mean(fmt)),
        "preds": preds,
    }


def rules_at(kind: str, step: int, cfg: Config) -> GB.Rules:
    """The criterion's rules at ``step``: plain, or progressive (stage 1, then stage 2 after ``prr_switch``)."""
    if kind != "criterion_prr":
        return GB.PLAIN
    return GB.STAGE1 if step < cfg.prr_switch * cfg.steps else GB.STAGE2


def reward(kind: str, pred: np.ndarray, gt: np.ndarray, ok: bool, rules: GB.Rules = GB.PLAIN) -> float:
    """The scalar reward of one answer under ``kind`` (one of :data:`REWARDS`)."""
    if kind == "binary":
        return GB.binary_reward(pred, gt, ok)
    if kind == "recall_only":
        return GB.recall_only_reward(pred, gt, ok)
    if kind in ("criterion", "criterion_prr"):
        return GB.criterion_reward(pred, gt, ok, rules)["reward"]
    raise ValueError(f"unknown reward {kind!r}; choose from {', '.join(REWARDS)}")


def train_grpo(base: BoxPolicy, kind: str, cfg: Config, seed: int, ev: list[GB.Scene]) -> dict:
    """GRPO (one on-policy step per batch, no KL) on a copy of ``base`` with reward ``kind``.

    Per step: ``cfg.images`` fresh scenes, ``G`` sampled answers each; rewards ``r: (B, G)``;
    advantages :func:`rlbook.losses.group_normalise`; loss :func:`rlbook.losses.grpo_loss` over the
    answer tokens. Returns traces (mean reward, boxes per target of the samples) and the final evaluation.
    """
    policy = copy.deepcopy(base).train()
    torch.manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 3])
    out = {"reward": [], "boxes_per_target": []}
    for step in range(cfg.steps):
        scenes = [GB.make_scene(rng) for _ in range(cfg.images)]
        imgs, cols = batch(scenes)
        rep = torch.arange(len(scenes)).repeat_interleave(cfg.group)  # (B*G,)
        with torch.no_grad():
            feat0 = policy.encode(imgs, cols)[rep]
        toks, mask = sample(policy, feat0, gen)
        rules = rules_at(kind, step, cfg)
        r, nb, ng = [], 0, 0
        for n in range(len(toks)):
            gt = scenes[int(rep[n])].boxes
            pred, ok = GB.parse(toks[n][mask[n] > 0].tolist())
            r.append(reward(kind, pred, gt, ok, rules))
            nb, ng = nb + len(pred), ng + len(gt)
        r = torch.tensor(r, dtype=torch.float32).view(len(scenes), cfg.group)
        adv = group_normalise(r).flatten()
        logp = token_logprobs(policy, policy.encode(imgs, cols)[rep], toks).masked_fill(mask == 0, 0.0)
        loss, _ = grpo_loss(logp, logp.detach(), adv, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        out["reward"].append(r.mean().item())
        out["boxes_per_target"].append(nb / ng)
    out = {k: np.asarray(v) for k, v in out.items()}
    out["final"] = evaluate(policy.eval(), ev)
    out["policy"] = policy
    return out


def run_smoke(cfg: Config, seed: int, base: BoxPolicy | None = None, kinds=REWARDS) -> dict:
    """The base's evaluation and one :func:`train_grpo` per reward kind."""
    t0 = time.time()
    base = base if base is not None else load_base()[0]
    ev = eval_scenes(cfg.eval_images)
    out = {"base": evaluate(base, ev), "scenes": ev, "seconds": {}}
    for k in kinds:
        t1 = time.time()
        out[k] = train_grpo(base, k, cfg, seed, ev)
        out["seconds"][k] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: a VLM with TRL's GRPOTrainer and the criterion reward
# ---------------------------------------------------------------------------------
PROMPT = ('Locate every "{expr}" in the image. Answer with a JSON list like '
          '[{{"bbox_2d": [x1, y1, x2, y2], "label": "{expr}"}}], coordinates in pixels.')
"""the grounding instruction (Qwen2-VL's JSON box format, as the official reward parses)"""


def parse_completion(text: str) -> tuple[np.ndarray, bool]:
    """Boxes ``(k, 4)`` from a JSON answer ``[{"bbox_2d": [...], "label": ...}, ...]`` and whether it is well formed.

    Mirrors the official ``extract`` and ``dual_format_reward``: a fenced ```json block is unwrapped; each item
    needs a 4-number ``bbox_2d``; boxes with ``x1 <= x0`` or ``y1 <= y0`` are dropped.
    """
    import re

    t = re.sub(r"```json\n|\n```|```", "", text).strip()
    try:
        data = json.loads(t)
    except (json.JSONDecodeError, ValueError):
        return np.zeros((0, 4)), False
    if not isinstance(data, list):
        return np.zeros((0, 4)), False
    ok, boxes = True, []
    for item in data:
        b = item.get("bbox_2d") if isinstance(item, dict) else None
        if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
            ok = False
            continue
        if b[0] < b[2] and b[1] < b[3]:
            boxes.append([float(v) for v in b])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), ok


def pixel_criterion_reward(pred: np.ndarray, gt: np.ndarray, well_formed: bool, rules: GB.Rules = GB.PLAIN) -> float:
    """:func:`rlbook.tasks.grid_boxes.criterion_reward` for continuous pixel boxes ``(x0, y0, x1, y1)``.

    Continuous boxes are exclusive at the far edge, so they are shifted by -1 there to reuse the cell formulas
    (a box ``[x0, x1)`` covers ``x1 - x0`` pixels, as the official ``box_area``).
    """
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return GB.criterion_reward(np.asarray(pred, np.float64) - shift, np.asarray(gt, np.float64) - shift,
                               well_formed, rules)["reward"]


def trl_criterion_reward(prr_step: int | None = None):
    """A TRL reward function ``f(completions, boxes, trainer_state, **kw) -> list[float]``.

    ``boxes``: the data set column of ground-truth pixel boxes per prompt. With ``prr_step`` the rules are
    progressive (stage 1 before that optimiser step, stage 2 after), else plain.
    """

    def criterion(completions, boxes, trainer_state=None, **kwargs) -> list[float]:
        if prr_step is None:
            rules = GB.PLAIN
        else:
            step = trainer_state.global_step if trainer_state is not None else 0
            rules = GB.STAGE1 if step < prr_step else GB.STAGE2
        out = []
        for c, gt in zip(completions, boxes):
            text = c if isinstance(c, str) else c[-1]["content"]
            if isinstance(text, list):  # multimodal message content
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
            pred, ok = parse_completion(text)
            out.append(pixel_criterion_reward(pred, np.asarray(gt, np.float64).reshape(-1, 4), ok, rules))
        return out

    criterion.__name__ = "criterion_reward" if prr_step is None else "criterion_prr_reward"
    return criterion


def grounding_dataset(name_or_path: str, split: str = "train", n: int | None = None):
    """A grounding data set as TRL conversational rows: ``prompt`` (image + instruction), ``image``, ``boxes``.

    Expects columns ``image`` (PIL), ``expression`` (str) and ``boxes`` (list of ``[x0, y0, x1, y1]`` pixels);
    a RefCOCO-style data set with other names is mapped by the caller. Hub name or ``save_to_disk`` folder.
    """
    ds = hub.load_dataset(name_or_path, split)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))

    def to_row(ex):
        return {"prompt": [{"role": "user", "content": [{"type": "image"},
                                                       {"type": "text", "text": PROMPT.format(expr=ex["expression"])}]}]}

    return ds.map(to_row)


def grpo_config(cfg: Config, kind: str, seed: int, output_dir: str, cuda: bool, max_steps: int | None = None,
                max_completion: int | None = None):
    """The ``trl.GRPOConfig`` of one full-profile run (GRPO loss, group-normalised rewards, KL ``full_beta``)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=f"{output_dir}/{kind}", learning_rate=cfg.full_lr, beta=cfg.full_beta,
        loss_type="grpo", scale_rewards="group", num_generations=cfg.full_group,
        per_device_train_batch_size=cfg.full_group, gradient_accumulation_steps=4 if cuda else 1,
        max_completion_length=max_completion or cfg.full_max_completion, temperature=1.0,
        max_steps=max_steps or cfg.full_steps, logging_steps=1, **hub.trl_offline(cuda, seed),
    )


def run_full(cfg: Config, seed: int, output_dir: str = "vision_r1_full", cpu: bool = False,
             max_steps: int | None = None, n_train: int | None = None, max_completion: int | None = None,
             methods: tuple[str, ...] = ("criterion", "criterion_prr")) -> dict:
    """Paper-scale run: TRL ``GRPOTrainer`` on a VLM with the criterion reward (plain and progressive).

    Not run here (no GPU, and the VLM weights are not available offline): the dry-run test exercises every
    piece except the model (data set, reward function, parsing); see the chapter. Returns each run's final
    training log.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOTrainer

    device_cuda = (not cpu) and torch.cuda.is_available()
    train = grounding_dataset(cfg.full_data, "train", n=n_train)
    results = {}
    for kind in methods:
        model = AutoModelForImageTextToText.from_pretrained(cfg.full_model,
                                                            dtype=torch.bfloat16 if device_cuda else torch.float32)
        processor = AutoProcessor.from_pretrained(cfg.full_model)
        args = grpo_config(cfg, kind, seed, output_dir, device_cuda, max_steps, max_completion)
        reward = trl_criterion_reward(cfg.full_prr_step if kind == "criterion_prr" else None)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=train,
                              processing_class=processor)
        trainer.train()
        results[kind] = trainer.state.log_history[-1] if trainer.state.log_history else {}
    return results
