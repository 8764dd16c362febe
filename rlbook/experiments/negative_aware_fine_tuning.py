r"""Chapter "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning" (NFT, arXiv 2505.18116).

Negative-aware Fine-Tuning (:mod:`rlbook.losses.nft`) is supervised learning on *all* of a
model's own answers: positives by maximum likelihood under :math:`\pi_\theta`, negatives by
maximum likelihood under the implicit negative policy
:math:`\pi^-_\theta=(\pi_{old}-\hat r_q\pi_\theta)/(1-\hat r_q)`. Its baseline is rejection-sampling
fine-tuning (RFT: the same loss without the negatives, ``neg_weight = 0``).

Smoke profile, three pieces:

- **on-policy equivalence** (:func:`lm_gradient_check`): on a batch of the ``countdown4`` tiny LM,
  the NFT gradient at :math:`R=1` equals Dr. GRPO's and GRPO's (paper Sec. 4.2);
- **tabular** (:func:`run_tabular`): one free softmax per prompt (:mod:`rlbook.tabular_policy`),
  an online loop with several gradient mini-steps per sampled batch (so :math:`R` drifts from 1),
  RFT vs NFT vs GRPO, with plain SGD and with Adam;
- **tiny LM** (:func:`run_lm`): RFT vs NFT on ``countdown4`` with :mod:`rlbook.rl_lm`
  (strictly on-policy, one step per batch), exact pass@1 on held-out prompts.

Full profile (:func:`run_full`): a TRL ``GRPOTrainer`` subclass whose loss is NFT's
(:func:`make_trainer_class`), on ``Qwen/Qwen2.5-Math-1.5B`` and MATH.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlbook import math_data
from rlbook import hub, rl_lm
from rlbook import tabular_policy as tp
from rlbook.config import check
from rlbook.losses.common import group_normalise
from rlbook.losses.grpo import grpo_loss
from rlbook.losses.nft import PROMPT_WEIGHTS, nft_loss, nft_prompt_weights, nft_sample_loss

METHODS = ("RFT", "NFT", "GRPO")
"""the objectives compared: RFT (NFT with neg_weight 0), NFT, GRPO (clipped surrogate, group advantages)"""


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    # tabular experiment
    tab_prompts: int = 200
    """tabular: prompts (one free logit vector each)"""
    tab_candidates: int = 20
    """tabular: answers per prompt"""
    tab_max_offset: float = 1.0
    """tabular: correct answers' base logits lowered by U(0, this) (base accuracy about 0.08)"""
    tab_iters: int = 30
    """tabular: sampling iterations (a fresh batch from pi_old each)"""
    tab_group: int = 8
    """tabular: G, samples per prompt per iteration"""
    tab_mini_steps: int = 4
    """tabular: gradient steps per batch (1 = strictly on-policy; more makes R drift from 1)"""
    tab_sgd_lr: float = 50.0
    """tabular: SGD learning rate (the loss is a mean over X*G samples)"""
    tab_adam_lr: float = 0.02
    """tabular: Adam learning rate"""
    neg_weight: float = 1.0
    """NFT's weight of the negative loss (official neg_weight=1.0; 0.0 is RFT)"""
    prompt_weight: str = "dr_grpo"
    """prompt weight omega(r_hat) of NFT and RFT, dr_grpo = 1 - r_hat (official normalize=1), grpo, or none"""
    eps: float = 1.0
    """lower clamp of the negative ratio (1 - r_hat R)/(1 - r_hat), gradient preserved (official clamp_negative=1.0)"""
    clip_eps: float = 0.2
    """GRPO's PPO clip range (the official script: 0.2 low, 0.28 high)"""
    # tiny-LM experiment
    base: str = "countdown4"
    """tiny LM: zoo entry of the base policy (rlbook.models.zoo)"""
    lm_methods: str = "RFT,NFT"
    """tiny LM: comma-separated objectives (RFT, NFT, GRPO; about 4 s each)"""
    lm_steps: int = 30
    """tiny LM: RL steps (one on-policy gradient step each)"""
    lm_prompts: int = 8
    """tiny LM: B, prompts per step"""
    lm_group: int = 8
    """tiny LM: G, samples per prompt"""
    lm_lr: float = 3e-4
    """tiny LM: Adam learning rate"""
    eval_prompts: int = 100
    """tiny LM: held-out prompts for the exact pass@1"""
    # full profile (paper scale, one GPU)
    full_model: str = "Qwen/Qwen2.5-Math-1.5B"
    """*full*: base model, a Hub name or a local folder (the paper: Qwen2.5-Math-7B)"""
    full_train_data: str = "DigitalLearningGmbH/MATH-lighteval"
    """*full*: MATH training problems (the paper: DAPO-Math-17k), Hub name or save_to_disk folder"""
    full_eval_data: str = "HuggingFaceH4/MATH-500"
    """*full*: evaluation problems (fields problem, answer)"""
    full_methods: str = "RFT,NFT"
    """*full*: objectives to train, one run each (RFT, NFT)"""
    full_steps: int = 100
    """*full*: optimiser steps per run"""
    full_prompts_per_step: int = 32
    """*full*: prompts per step (the paper: 512 prompts per batch, mini-batch 32)"""
    full_group: int = 8
    """*full*: samples per prompt (the paper: 16)"""
    full_lr: float = 1e-6
    """*full*: learning rate ("optim.lr=1e-6", train_7B.sh)"""
    full_max_completion: int = 1024
    """*full*: max new tokens (the paper: 3584)"""
    full_eval_problems: int = 100
    """*full*: MATH-500 problems for the evaluation"""
    full_eval_samples: int = 4
    """*full*: samples per problem (mean accuracy = pass@1)"""
    full_levels: str = "Level 3,Level 4,Level 5"
    """*full*: MATH difficulty levels kept for training"""

    def __post_init__(self):
        check(self.tab_prompts >= 1 and self.tab_candidates >= 2, "tabular sizes must be positive")
        check(self.tab_iters >= 1 and self.tab_mini_steps >= 1, "tab_iters and tab_mini_steps must be >= 1")
        check(self.tab_group >= 2 and self.lm_group >= 2 and self.full_group >= 2, "group sizes must be >= 2")
        check(self.tab_sgd_lr > 0 and self.tab_adam_lr > 0 and self.lm_lr > 0 and self.full_lr > 0,
              "learning rates must be > 0")
        check(self.neg_weight >= 0.0, "neg_weight must be >= 0")
        check(self.prompt_weight in PROMPT_WEIGHTS, f"prompt_weight must be one of {PROMPT_WEIGHTS}")
        check(0.0 < self.eps <= 1.0, "eps must be in (0, 1]")
        check(0.0 < self.clip_eps < 1.0, "clip_eps must be in (0, 1)")
        check(self.lm_steps >= 0 and self.full_steps >= 1, "steps must be non-negative")
        for field_name in ("lm_methods", "full_methods"):
            bad = [m for m in math_data.split_list(getattr(self, field_name)) if m not in METHODS]
            check(not bad, f"{field_name}: unknown method(s) {bad}; choose from {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------
# objectives: (logp (N, T), logp_old (N, T), mask (N, T), r (B, G) in {0, 1}) -> (loss, diag)
# ---------------------------------------------------------------------------------
def off_policy_objective(name: str, cfg: Config):
    """The loss of method ``name`` given the sampling policy's log-probs ``logp_old``.

    RFT: :func:`rlbook.losses.nft.nft_loss` with ``neg_weight=0``; NFT: with ``cfg.neg_weight``;
    GRPO: :func:`rlbook.losses.grpo_loss` with :func:`rlbook.losses.group_normalise` advantages.
    """
    if name in ("RFT", "NFT"):
        nw = 0.0 if name == "RFT" else cfg.neg_weight
        return lambda logp, logp_old, mask, r: nft_loss(logp, logp_old, mask, r, neg_weight=nw,
                                                        prompt_weight=cfg.prompt_weight, eps=cfg.eps)
    if name == "GRPO":
        return lambda logp, logp_old, mask, r: grpo_loss(logp, logp_old, group_normalise(r).flatten().to(logp.dtype),
                                                         mask, cfg.clip_eps, cfg.clip_eps)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def on_policy_objective(name: str, cfg: Config):
    """``off_policy_objective`` at :math:`\\pi_{old}=\\pi_\\theta` (``logp_old = logp.detach()``), loss only.

    The signature of :func:`rlbook.rl_lm.train`: ``(logp, mask, r) -> loss``.
    """
    f = off_policy_objective(name, cfg)
    return lambda logp, mask, r: f(logp, logp.detach(), mask, r)[0]


# ---------------------------------------------------------------------------------
# the on-policy equivalence, on a real model's gradient
# ---------------------------------------------------------------------------------
def flat_grad(model, loss: Tensor) -> Tensor:
    """The gradient of ``loss`` with respect to every trainable parameter, flattened, ``(P,)``."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def lm_gradient_check(model, tok, task, seed: int, prompts: int = 8, group: int = 8) -> dict:
    r"""Sample one batch from ``model``, and compare gradients at :math:`R=1`.

    Returns relative errors :math:`\|g_{NFT}-g\|/\|g\|` of NFT with :math:`\omega=1-\hat r`
    against Dr. GRPO (``group_normalise(r, scale=False)``) and of NFT with
    :math:`\omega=\sqrt{(1-\hat r)/\hat r}` against GRPO with the population standard deviation
    (``group_normalise(r, eps=0) * sqrt(G/(G-1))``), plus RFT's cosine with GRPO.
    """
    from rlbook import rollout

    mask_fn = task.logits_mask(tok)
    rng = np.random.default_rng([seed, 7])
    problems = task.sample(prompts, rng, split="train")
    ids, _ = rollout.encode_prompts(tok, [p.prompt for p in problems])
    g = rollout.group_sample(model, ids, group, task.answer_len + 1, tok.eos_token_id, tok.pad_token_id, mask_fn,
                             generator=torch.Generator().manual_seed(seed))
    r = rl_lm.score(task, problems, rollout.decode(tok, g.completion_ids, g.mask), group)  # (B, G)
    logp = rollout.token_logprobs(model, g.prompt_ids, g.completion_ids, mask_fn)
    logp = logp.masked_fill(g.mask == 0, 0.0)
    old = logp.detach()
    mask = g.mask
    g_nft_dr = flat_grad(model, nft_loss(logp, old, mask, r, prompt_weight="dr_grpo")[0])
    g_dr = flat_grad(model, grpo_loss(logp, old, group_normalise(r, scale=False).flatten(), mask)[0])
    g_nft_grpo = flat_grad(model, nft_loss(logp, old, mask, r, prompt_weight="grpo")[0])
    a = (group_normalise(r, eps=0.0) * (group / (group - 1)) ** 0.5).nan_to_num(0.0)
    g_grpo = flat_grad(model, grpo_loss(logp, old, a.flatten(), mask)[0])
    g_rft = flat_grad(model, nft_loss(logp, old, mask, r, neg_weight=0.0)[0])
    rel = lambda x, y: float((x - y).norm() / y.norm().clamp(min=1e-30))
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()).clamp(min=1e-30))
    model.zero_grad(set_to_none=True)
    return {"rel_err_dr_grpo": rel(g_nft_dr, g_dr), "rel_err_grpo": rel(g_nft_grpo, g_grpo),
            "cos_rft_grpo": cos(g_rft, g_grpo), "mixed_groups": int((r.max(1).values > r.min(1).values).sum()),
            "grad_norm": float(g_dr.norm())}


# ---------------------------------------------------------------------------------
# tabular experiment: several mini-steps per sampled batch
# ---------------------------------------------------------------------------------
def train_tabular(z0: Tensor, correct: Tensor, method: str, cfg: Config, optimizer: str, seed: int) -> dict:
    """Online loop: sample ``G`` answers per prompt from :math:`\\pi_{old}`, take ``tab_mini_steps`` steps.

    ``z0, correct: (X, K)``. Returns the final logits ``z``, the mean accuracy after every
    iteration (``acc``), the fraction of negative samples at the clamp on the last mini-step
    (``clamp_frac``), the negative ratios of the last iteration's last mini-step
    (``neg_ratio``, NFT/RFT only) and, for NFT, the cosine between its gradient and Dr. GRPO's
    clipped-surrogate gradient at each mini-step (``cos_dr_grpo``, mean over iterations).
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    z = z0.detach().clone().requires_grad_(True)
    lr = cfg.tab_sgd_lr if optimizer == "sgd" else cfg.tab_adam_lr
    opt = torch.optim.SGD([z], lr=lr) if optimizer == "sgd" else torch.optim.Adam([z], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = off_policy_objective(method, cfg)
    X, G = z.shape[0], cfg.tab_group
    rows = torch.arange(X).repeat_interleave(G)
    acc, clamp, cos = [], [], np.zeros(cfg.tab_mini_steps)
    neg_ratio = None
    for _ in range(cfg.tab_iters):
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(z, -1), G, replacement=True, generator=gen)  # (X, G)
            logp_old = torch.log_softmax(z, -1)[rows, y.flatten()][:, None]  # (X*G, 1)
        r = correct.gather(1, y).to(z.dtype)  # (X, G)
        mask = torch.ones_like(logp_old)
        for k in range(cfg.tab_mini_steps):
            logp = torch.log_softmax(z, -1)[rows, y.flatten()][:, None]
            loss, diag = loss_fn(logp, logp_old, mask, r)
            if method == "NFT":
                ref = grpo_loss(logp, logp_old, group_normalise(r, scale=False).flatten(), mask, cfg.clip_eps,
                                cfg.clip_eps)[0]
                g1 = torch.autograd.grad(loss, z, retain_graph=True)[0].flatten()
                g2 = torch.autograd.grad(ref, z, retain_graph=True)[0].flatten()
                cos[k] += float(g1 @ g2 / (g1.norm() * g2.norm()).clamp(min=1e-30)) / cfg.tab_iters
            opt.zero_grad()
            loss.backward()
            opt.step()
        if "neg_ratio" in diag:
            sel = diag["neg_mask"] > 0
            neg_ratio = diag["neg_ratio"][sel].numpy()
            clamp.append(float(diag["clamp_frac"]))
        with torch.no_grad():
            acc.append(float(tp.prob_correct(z, correct).mean()))
    return {"z": z.detach(), "acc": np.array(acc), "clamp_frac": float(np.mean(clamp)) if clamp else float("nan"),
            "neg_ratio": neg_ratio, "cos_dr_grpo": cos if method == "NFT" else None}


def run_tabular(cfg: Config, seed: int) -> dict:
    """Every method with SGD and with Adam on one random bandit. ``out[optimizer][method]`` as :func:`train_tabular`."""
    t0 = time.time()
    bc = tp.BanditConfig(prompts=cfg.tab_prompts, candidates=cfg.tab_candidates, max_offset=cfg.tab_max_offset)
    z0, correct = tp.make_bandit(bc, np.random.default_rng([seed, 10]))
    out = {"base_acc": float(tp.prob_correct(z0, correct).mean())}
    for optimizer in ("sgd", "adam"):
        out[optimizer] = {m: train_tabular(z0, correct, m, cfg, optimizer, seed) for m in METHODS}
    out["seconds"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# tiny-LM experiment
# ---------------------------------------------------------------------------------
def run_lm(cfg: Config, seed: int, base=None) -> dict:
    """Train a copy of the base policy with each of ``cfg.lm_methods`` (on-policy); exact held-out pass@1.

    ``base``: an already loaded ``(model, tok, task, info)`` from :func:`rlbook.models.zoo.load`.
    Returns ``{"base": acc, method: acc, "traces": {method: RLHistory arrays}, "seconds": {...}}``.
    """
    from rlbook.models import zoo

    t0 = time.time()
    model0, tok, task, info = base if base is not None else zoo.load(cfg.base)
    mask_fn = task.logits_mask(tok)
    problems = zoo.eval_problems(task, cfg.eval_prompts)
    acc = lambda m: float(np.mean([a.sum() for a in zoo.answer_probs(m, tok, task, problems)]))
    out = {"base": acc(model0), "traces": {}, "seconds": {}}
    rlc = rl_lm.RLConfig(steps=cfg.lm_steps, prompts=cfg.lm_prompts, group=cfg.lm_group, lr=cfg.lm_lr,
                         max_new_tokens=task.answer_len + 1, seed=seed)
    for m in math_data.split_list(cfg.lm_methods):
        t1 = time.time()
        torch.manual_seed(seed)
        model = copy.deepcopy(model0)
        hist = rl_lm.train(model, tok, task, on_policy_objective(m, cfg), rlc, mask_fn=mask_fn)
        out[m] = acc(model)
        out["traces"][m] = hist.as_arrays()
        out["seconds"][m] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL GRPOTrainer with NFT's loss
# ---------------------------------------------------------------------------------
def make_trainer_class():
    """A ``trl.GRPOTrainer`` subclass whose loss is NFT's (:func:`rlbook.losses.nft.nft_sample_loss`).

    It keeps TRL's sampling and log-probs; after scoring it stores each completion's 0/1
    correctness, its group's accuracy :math:`\\hat r_q` and prompt weight, and ``_compute_loss``
    replaces the clipped surrogate by NFT's loss with TRL's old log-probs (equal to the current
    ones, detached, when ``num_iterations=1``). ``neg_weight=0`` gives RFT.
    """
    from trl import GRPOTrainer

    class NFTTrainer(GRPOTrainer):
        def __init__(self, *args, neg_weight: float = 1.0, prompt_weight: str = "dr_grpo", eps: float = 1.0,
                     **kwargs):
            if prompt_weight not in PROMPT_WEIGHTS:
                raise ValueError(f"prompt_weight must be one of {PROMPT_WEIGHTS}")
            self.neg_weight, self.prompt_weight, self.nft_eps = neg_weight, prompt_weight, eps
            super().__init__(*args, **kwargs)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards_per_func  # (all processes' samples, reward funcs)
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            w = self.reward_weights.to(self._last_rewards.device)
            r = torch.nan_to_num(self._last_rewards * w[None], nan=0.0).sum(1)  # (all samples,)
            r = (r > 0.5).float().view(-1, self.num_generations)  # (groups, G), 0/1
            r_hat, pw = nft_prompt_weights(r, self.prompt_weight)
            n = out["advantages"].shape[0]
            start = self.accelerator.process_index * n
            dev = out["advantages"].device
            G = self.num_generations
            out["nft_correct"] = r.flatten()[start : start + n].to(dev)
            out["nft_r_hat"] = r_hat.repeat_interleave(G)[start : start + n].to(dev)
            out["nft_weight"] = pw.repeat_interleave(G)[start : start + n].to(dev)
            return out

        def _compute_loss(self, model, inputs):
            prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
            completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
            input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
            attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
            logp, _, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                                 completion_ids.size(1))
            old = inputs.get("old_per_token_logps")
            old = logp.detach() if old is None else old
            loss, diag = nft_sample_loss(logp, old, completion_mask, inputs["nft_correct"], inputs["nft_r_hat"],
                                         inputs["nft_weight"], self.neg_weight, self.nft_eps)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["nft/clamp_frac"].append(float(diag["clamp_frac"]))
            if mode == "train":
                loss = loss / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
            return loss

    return NFTTrainer


def run_full(cfg: Config, seed: int, output_dir: str = "nft_full", cpu: bool = False, max_steps: int | None = None,
             eval_problems: int | None = None, eval_samples: int | None = None, max_completion: int | None = None,
             generation_batch: int = 64) -> dict:
    """Paper-scale run: for each of ``cfg.full_methods`` (RFT, NFT), the NFT trainer, then MATH-500 accuracy.

    Not timed on a GPU here (about 15-20 min per 100-step run on one H100 with vLLM, by
    analogy with the NSR chapter's full profile). The ``cpu``/``max_*``/``eval_*`` overrides
    exist for the dry-run test. Returns ``{"base": pass@k dict, method: pass@k dict}``
    (pass@1 = mean accuracy), from :func:`rlbook.experiments.negative_sample_reinforcement.evaluate_full`.
    """
    from trl import GRPOConfig

    from rlbook.models import load_pretrained

    steps = max_steps or cfg.full_steps
    n_eval = eval_problems or cfg.full_eval_problems
    n_samp = eval_samples or cfg.full_eval_samples
    max_new = max_completion or cfg.full_max_completion
    train = math_data.load_math(cfg.full_train_data, "train", levels=math_data.split_list(cfg.full_levels))
    evalset = math_data.load_math(cfg.full_eval_data, "test", n=n_eval)
    device, dtype, use_vllm = hub.full_device(cpu)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"base": math_data.evaluate_full(model, tok, evalset, n_samp, max_new, generation_batch)}
    Trainer = make_trainer_class()
    for m in math_data.split_list(cfg.full_methods):
        if m not in ("RFT", "NFT"):
            raise ValueError("the full profile trains RFT and NFT (GRPO is TRL's GRPOTrainer itself)")
        model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
        args = GRPOConfig(
            output_dir=f"{output_dir}/{m}",
            learning_rate=cfg.full_lr,  # "optim.lr=1e-6"
            weight_decay=0.1,  # "optim.weight_decay=0.1"
            max_grad_norm=1.0,  # "grad_clip=1.0"
            beta=0.0,  # "kl_loss_coef=0.0"
            num_generations=cfg.full_group,
            per_device_train_batch_size=cfg.full_group * (1 if cpu else 4),
            gradient_accumulation_steps=1 if cpu else max(1, cfg.full_prompts_per_step // 4),
            num_iterations=1,  # "ppo_epoch=1"
            max_completion_length=max_new,
            temperature=1.0,
            max_steps=steps,
            logging_steps=1,
            **hub.trl_offline(not cpu, seed),
            **hub.vllm_kw(use_vllm),
        )
        trainer = Trainer(model=model, reward_funcs=math_data.math_reward, args=args, train_dataset=train, processing_class=tok,
                          neg_weight=0.0 if m == "RFT" else cfg.neg_weight, prompt_weight=cfg.prompt_weight,
                          eps=cfg.eps)
        trainer.train()
        results[m] = math_data.evaluate_full(trainer.model, tok, evalset, n_samp, max_new, generation_batch)
    return results
