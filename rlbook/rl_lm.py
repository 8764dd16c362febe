r"""A small, readable RLVR loop for tiny language models (objective passed in).

One step (on-policy by default: one gradient step per batch, no KL, no clipping):

1. draw ``B`` prompts from the task and sample ``G`` completions each
   (:func:`rlbook.rollout.group_sample`, with the task's constrained decoding if any);
2. score them with the verifier: ``r[b, g] = 1.0`` if correct else ``0.0``
   (or with ``reward_fn(problems, answers, G) -> (B, G)`` when one is given);
3. compute per-token log-probs ``logp: (B*G, T)`` with gradients
   (:func:`rlbook.rollout.token_logprobs`) and the loss
   ``objective(logp, mask, r)``, e.g. ``lambda logp, mask, r: psr_loss(logp, mask, r.flatten() > 0)``;
4. one Adam step with gradient-norm clipping.

The objective is any function ``(logp: (N, T), mask: (N, T), r: (B, G)) -> ()`` with
``N = B*G`` (rows ``b*G + g``), so the same loop runs REINFORCE, PSR/NSR, GRPO-style
group advantages, and the objectives of later chapters.

Two optional extras, passed only to objectives that declare them as keyword parameters:

- ``logp_old: (N, T)`` -- the sampling policy's per-token log-probs (no gradient). With
  ``RLConfig.epochs = μ > 1`` the loop takes μ gradient steps on each batch, so from the
  second step on the batch is *off-policy* and ratios ``exp(logp - logp_old)`` differ from
  1: PPO-style clipping (GRPO, Lite PPO) and importance weights (TOPR) become active.
- ``logp_ref: (N, T)`` -- a frozen reference model's log-probs (``ref_model=``), for a
  KL penalty to it (e.g. :func:`rlbook.losses.kl_k3`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rlbook import rollout

Objective = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class RLConfig:
    """Hyper-parameters of :func:`train`."""

    steps: int = 120
    """gradient steps (one fresh batch each)"""
    prompts: int = 16
    """B: prompts per step"""
    group: int = 8
    """G: samples per prompt"""
    lr: float = 1e-4
    """Adam learning rate"""
    grad_clip: float = 1.0
    """max global gradient norm (0 disables)"""
    max_new_tokens: int = 8
    """completion length cap (EOS included)"""
    temperature: float = 1.0
    """sampling temperature"""
    seed: int = 0
    """seed of the prompt order and of the sampler"""
    split: str = "train"
    """task split the prompts come from"""
    epochs: int = 1
    """μ: gradient steps on each sampled batch (>1: off-policy steps; the objective gets ``logp_old``)"""

    def __post_init__(self):
        for name in ("steps", "prompts", "group", "max_new_tokens", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"RLConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("RLConfig.lr and RLConfig.temperature must be > 0")


@dataclass
class RLHistory:
    """Per-step traces of :func:`train` (numpy arrays of length ``steps``)."""

    reward: list[float] = field(default_factory=list)
    """mean verifier reward of the step's samples (the training pass@1)"""
    entropy: list[float] = field(default_factory=list)
    """mean next-token entropy over valid completion tokens (nats)"""
    loss: list[float] = field(default_factory=list)
    """the objective's value"""

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def score(task, problems, answers: list[str], G: int) -> Tensor:
    """Verifier rewards ``r: (B, G)``, 1.0 for a correct answer, else 0.0."""
    r = [float(task.verify(problems[i // G], a)) for i, a in enumerate(answers)]
    return torch.tensor(r).view(len(problems), G)


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def train(model, tok, task, objective: Objective, cfg: RLConfig = RLConfig(), mask_fn=None,
          callback: Callable[[int, RLHistory], None] | None = None, ref_model=None,
          reward_fn: Callable[[list, list[str], int], Tensor] | None = None) -> RLHistory:
    """Train ``model`` in place with ``objective`` on ``task`` (see the module docstring).

    ``task`` needs ``sample(n, rng, split=...)`` returning objects with a ``.prompt``
    string and ``verify(problem, answer) -> bool``. ``mask_fn`` is the constrained
    decoding mask (e.g. ``task.logits_mask(tok)``) used for sampling *and* log-probs.
    ``reward_fn(problems, answers, G) -> r: (B, G)`` replaces the 0/1 verifier score
    (shaped, pseudo-label or multi-part rewards). ``ref_model`` (frozen) supplies
    ``logp_ref`` to objectives that take it. Deterministic given ``cfg.seed`` and the
    model's initial weights.
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    wants_old, wants_ref = _accepts(objective, "logp_old"), _accepts(objective, "logp_ref")
    if wants_ref and ref_model is None:
        raise ValueError("the objective takes logp_ref: pass ref_model=")
    rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    hist = RLHistory()
    for step in range(cfg.steps):
        problems = task.sample(cfg.prompts, rng, split=cfg.split)
        ids, _ = rollout.encode_prompts(tok, [p.prompt for p in problems])  # (B, P)
        g = rollout.group_sample(model, ids, cfg.group, cfg.max_new_tokens, tok.eos_token_id,
                                 tok.pad_token_id, mask_fn, cfg.temperature, gen)
        answers = rollout.decode(tok, g.completion_ids, g.mask)
        if reward_fn is None:
            r = score(task, problems, answers, cfg.group)  # (B, G)
        else:
            r = torch.as_tensor(reward_fn(problems, answers, cfg.group), dtype=torch.float32).view(len(problems), cfg.group)
        extra = {}
        if wants_old:
            with torch.no_grad():
                old = rollout.token_logprobs(model, g.prompt_ids, g.completion_ids, mask_fn)
            extra["logp_old"] = old.masked_fill(g.mask == 0, 0.0)
        if wants_ref:
            with torch.no_grad():
                ref = rollout.token_logprobs(ref_model, g.prompt_ids, g.completion_ids, mask_fn)
            extra["logp_ref"] = ref.masked_fill(g.mask == 0, 0.0)
        for epoch in range(cfg.epochs):
            logp, ent = rollout.token_logprobs(model, g.prompt_ids, g.completion_ids, mask_fn, with_entropy=True)
            logp = logp.masked_fill(g.mask == 0, 0.0)  # (N, T): no -inf on padding
            loss = objective(logp, g.mask, r, **extra)
            opt.zero_grad()
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if epoch == 0:
                m = g.mask.to(ent.dtype)
                hist.entropy.append(((ent.detach() * m).sum() / m.sum()).item())
                hist.loss.append(loss.item())
        hist.reward.append(r.mean().item())
        if callback is not None:
            callback(step, hist)
    model.eval()
    return hist
