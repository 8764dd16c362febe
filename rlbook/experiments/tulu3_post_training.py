r"""Chapter "TÜLU 3: Pushing Frontiers in Open Language Model Post-Training" (arXiv 2411.15124).

The TÜLU 3 recipe is a ladder of three stages after a pre-trained base:
SFT on a skill-targeted mixture → length-normalised DPO on LLM-judged preference pairs
(:func:`rlbook.losses.tulu3.dpo_norm_loss`) → RL with verifiable rewards, a constant bonus
:math:`\alpha=10` when a deterministic verifier confirms the answer and a KL penalty to the
DPO model (:func:`rlbook.losses.tulu3.rlvr_kl_loss`).

Smoke profile (the "mini-TÜLU" ladder, :func:`run_smoke`):

- task: :class:`rlbook.tasks.precise_if.PreciseIFTask`, a mixture of a math skill
  (``"M17+25="`` → ``"42"``) and a precise-instruction-following skill (``"R17+25="`` →
  ``"24"``, digits reversed; ``"P17+25="`` → ``"042"``, zero-padded);
- **SFT**: the committed base ``rlbook/zoo/tulu3-post-training.pt`` (:func:`build_base`:
  a 2-layer, d=64 Llama, 132,608 parameters, trained by SFT on a mixture of mixed quality:
  40% of the math answers carry an arithmetic slip, 50% of the precise-IF answers ignore
  the instruction -- so the SFT model has learned the right answer *and* the errors);
- **DPO**: on-policy pairs (two distinct samples of the SFT model per prompt), labelled by
  a noisy "LLM judge" that agrees with the verifier 80% of the time
  (:func:`noisy_judge`); length-normalised DPO with the SFT model as reference;
- **RLVR**: :func:`rlbook.rl_lm.train` with ``reward_fn`` = 10·verified and the objective
  :func:`rlbook.losses.tulu3.rlvr_kl_loss` (KL to the DPO model, ``ref_model=``);
- the **targeting ablation**: RLVR on math prompts only;
- per-skill held-out accuracy after every stage is *exact*: every prompt has one accepted
  answer, so :math:`P(\text{correct}\mid x)` is one teacher-forced forward pass.

Full profile (:func:`run_full`): a small instruct model (``Qwen/Qwen2.5-0.5B-Instruct`` as
the SFT stand-in) → TRL ``DPOTrainer`` with ``loss_type="sigmoid_norm"`` (= open-instruct
``dpo_norm``) on the TÜLU 3 preference mixture → TRL ``GRPOTrainer`` with the TÜLU GSM8K
verifier reward (10 if the last number matches) and ``beta > 0`` on ``allenai/RLVR-GSM``
(fallback ``openai/gsm8k``); greedy GSM8K test accuracy after each stage.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rlbook import hub, rl_lm, rollout
from rlbook.config import check
from rlbook.models import zoo
from rlbook.losses.common import masked_mean
from rlbook.losses.sft import sft_loss
from rlbook.losses.tulu3 import dpo_norm_loss, rlvr_kl_loss, verifiable_reward
from rlbook.tasks.precise_if import SKILLS, PreciseIFTask

ZOO_NAME = "tulu3-post-training"
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    # stage 2: length-normalised DPO
    dpo_prompts: int = 256
    """DPO: prompts of the on-policy preference data (two distinct samples of the SFT model each)"""
    dpo_samples: int = 4
    """DPO: samples drawn per prompt to find two distinct responses (TÜLU: several models' responses per prompt)"""
    judge_accuracy: float = 0.8
    """DPO: probability that the noisy judge prefers the verified response when exactly one of the two is verified"""
    dpo_beta: float = 5.0
    """DPO: β of length-normalised DPO (open-instruct scripts/train/tulu3/dpo_8b.sh: --dpo_loss_type dpo_norm --dpo_beta 5)"""
    dpo_steps: int = 30
    """DPO: optimiser steps"""
    dpo_batch: int = 32
    """DPO: pairs per step"""
    dpo_lr: float = 1e-4
    """DPO: Adam learning rate (TÜLU 8B: 5e-7 on a full LLM; a tiny model needs far more)"""
    # stage 3: RLVR
    rl_steps: int = 30
    """RLVR: steps (one fresh batch each)"""
    rl_prompts: int = 8
    """RLVR: B, prompts per step (half math, half precise IF in expectation)"""
    rl_group: int = 8
    """RLVR: G, samples per prompt (the group-mean baseline needs G >= 2)"""
    rl_lr: float = 3e-4
    """RLVR: Adam learning rate"""
    alpha: float = 10.0
    """RLVR: the verifiable reward's bonus α ("verification_reward = 10.0", open-instruct)"""
    kl_beta: float = 0.05
    """RLVR: β of the KL penalty to the DPO model (open-instruct scripts/train/tulu3/ppo_8b.sh: --beta 0.05)"""
    ablation: bool = True
    """run the targeting ablation (RLVR on math prompts only, same budget)"""
    # evaluation
    eval_prompts: int = 200
    """held-out prompts per skill (exact accuracy)"""
    kl_eval_samples: int = 2
    """samples per held-out prompt for the per-token KL(π‖π_DPO)"""
    # full profile (one GPU)
    full_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: the SFT-stage model (stand-in for allenai/Llama-3.1-Tulu-3-8B-SFT), Hub name or local folder"""
    full_pref_data: str = "allenai/llama-3.1-tulu-3-8b-preference-mixture"
    """*full*: preference pairs (prompt/chosen/rejected), Hub name or save_to_disk folder"""
    full_rl_data: str = "allenai/RLVR-GSM"
    """*full*: RLVR prompts with ground truth (RLVR-GSM: messages/ground_truth; gsm8k: question/answer)"""
    full_eval_data: str = "openai/gsm8k"
    """*full*: evaluation problems (GSM8K test, config "main")"""
    full_dpo_steps: int = 500
    """*full*: DPO optimiser steps"""
    full_dpo_lr: float = 5e-7
    """*full*: DPO learning rate (dpo_8b.sh: 5e-7, linear schedule, warm-up ratio 0.1)"""
    full_rl_steps: int = 250
    """*full*: GRPO steps"""
    full_rl_lr: float = 1e-6
    """*full*: RLVR learning rate (ppo_8b.sh: 3e-7 for 8B; a 0.5B model with GRPO takes a larger step)"""
    full_group: int = 8
    """*full*: completions per prompt"""
    full_max_completion: int = 512
    """*full*: max new tokens in RLVR and evaluation"""
    full_eval_problems: int = 500
    """*full*: GSM8K test problems, greedy"""

    def __post_init__(self):
        check(self.dpo_prompts >= 8 and self.dpo_samples >= 2, "dpo_prompts >= 8 and dpo_samples >= 2")
        check(0.5 <= self.judge_accuracy <= 1.0, "judge_accuracy must be in [0.5, 1]")
        check(self.dpo_beta > 0 and self.kl_beta >= 0 and self.alpha > 0, "dpo_beta, alpha > 0 and kl_beta >= 0")
        check(self.dpo_steps >= 0 and self.rl_steps >= 0, "steps must be >= 0")
        check(self.dpo_batch >= 1 and self.rl_prompts >= 1 and self.rl_group >= 2, "batch sizes: rl_group >= 2")
        check(self.dpo_lr > 0 and self.rl_lr > 0 and self.full_dpo_lr > 0 and self.full_rl_lr > 0, "learning rates > 0")
        check(self.eval_prompts >= 10 and self.kl_eval_samples >= 1, "eval_prompts >= 10")
        check(self.full_group >= 2 and self.full_dpo_steps >= 1 and self.full_rl_steps >= 1, "full-profile sizes")


# ---------------------------------------------------------------------------------
# stage 1: the SFT base (committed as rlbook/zoo/tulu3-post-training.pt)
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseRecipe:
    """How the SFT base is built (everything that determines its weights)."""

    max_operand: int = 49
    """operands in [0, max_operand]"""
    hidden: int = 64
    """model width"""
    layers: int = 2
    """transformer blocks"""
    heads: int = 4
    """attention heads"""
    intermediate: int = 256
    """MLP width"""
    steps: int = 800
    """SFT steps"""
    noise_math: float = 0.4
    """share of math SFT answers with an arithmetic slip (the sum ± 1 or ± 10)"""
    noise_if: float = 0.5
    """share of precise-IF SFT answers that ignore the instruction (the plain sum)"""
    batch: int = 128
    """prompts per SFT step (half math, half precise IF)"""
    lr: float = 3e-3
    """Adam learning rate"""
    seed: int = 0
    """seed of the initialisation and the data order"""


def fresh_model(recipe: BaseRecipe = BaseRecipe()):
    """An untrained policy, its tokenizer and the task: ``(model, tok, task)``."""
    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    task = PreciseIFTask(max_operand=recipe.max_operand)
    tok = char_tokenizer(task.alphabet)
    cfg = TinyConfig(hidden=recipe.hidden, layers=recipe.layers, heads=recipe.heads,
                     intermediate=recipe.intermediate, max_len=16)
    return tiny_llama(len(tok), cfg, seed=recipe.seed, tokenizer=tok), tok, task


def noisy_answer(problem, rng: np.random.Generator, noise_math: float, noise_if: float) -> str:
    """An SFT answer of mixed quality, as in a real SFT mixture.

    Math: with probability ``noise_math`` an arithmetic slip (the sum ± 1 or ± 10, never
    negative). Precise IF: with probability ``noise_if`` the instruction is ignored (the
    plain sum; where that happens to satisfy it, a slip instead). Otherwise the accepted answer.
    """
    from rlbook.tasks.precise_if import format_answer

    c = problem.constraint
    if rng.random() >= (noise_if if c else noise_math):
        return problem.answer
    if c and format_answer(problem.target) != problem.answer:
        return format_answer(problem.target)
    d = int(rng.choice([1, -1, 10, -10]))
    wrong = problem.target + d if problem.target + d >= 0 else problem.target - d
    return format_answer(wrong, c)


def answers_to_ids(tok, answers: list[str]) -> tuple[Tensor, Tensor]:
    """Completion ids ``(N, T)`` of answer strings + EOS (right-padded) and their mask."""
    rows = [tok.convert_tokens_to_ids(list(a)) + [tok.eos_token_id] for a in answers]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask


def sft_step_loss(model, tok, task, problems, answers: list[str]) -> Tensor:
    """Token-mean NLL of ``answers`` (+ EOS) under the constrained policy."""
    ids, _ = rollout.encode_prompts(tok, [p.prompt for p in problems])
    comp, m = answers_to_ids(tok, answers)
    logp = rollout.token_logprobs(model, ids, comp, task.logits_mask(tok)).masked_fill(m == 0, 0.0)
    return sft_loss(logp, m)


def build_base(recipe: BaseRecipe = BaseRecipe(), out_dir=None, steps: int | None = None):
    """SFT on the math + precise-IF mixture (deterministic); returns ``(model, tok, task, info)``.

    With ``out_dir`` writes ``tulu3-post-training.pt`` (weights) and ``.json`` (recipe and
    measured held-out accuracy). ``steps`` overrides the recipe (tests).
    """
    from rlbook.runtime import seed_everything

    seed_everything(recipe.seed)
    model, tok, task = fresh_model(recipe)
    rng = np.random.default_rng([recipe.seed, 1])
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    n = recipe.steps if steps is None else steps
    for _ in range(n):
        problems = task.sample(recipe.batch, rng)
        answers = [noisy_answer(p, rng, recipe.noise_math, recipe.noise_if) for p in problems]
        loss = sft_step_loss(model, tok, task, problems, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    info = {"name": ZOO_NAME, "recipe": asdict(recipe), "steps_run": n,
            "heldout_accuracy": evaluate(model, tok, task, 200)}
    if out_dir is not None:
        zoo.save_state(model, info, ZOO_NAME, out_dir, skip=("lm_head.weight",))
    return model, tok, task, info


def load_base():
    """The committed SFT base ``(model, tok, task, info)``; built (~2 min) if the files are missing."""
    found = zoo.load_state(ZOO_NAME, ZOO_DIR)
    if found is None:
        return build_base()
    state, info = found
    model, tok, task = fresh_model(BaseRecipe(**info["recipe"]))
    zoo.load_tied(model, state, ZOO_DIR / f"{ZOO_NAME}.pt")
    return model, tok, task, info


# ---------------------------------------------------------------------------------
# evaluation (exact)
# ---------------------------------------------------------------------------------
@torch.no_grad()
def prob_correct(model, tok, task, problems) -> np.ndarray:
    r""":math:`\pi(y^\star|x)` of the one accepted answer of each problem, ``(len(problems),)``."""
    ids, _ = rollout.encode_prompts(tok, [p.prompt for p in problems])
    comp, m = task.answer_ids(tok, problems)
    logp = rollout.token_logprobs(model, ids, comp, task.logits_mask(tok)).masked_fill(m == 0, 0.0)
    return (logp * m).sum(1).double().exp().numpy()


def evaluate(model, tok, task, n: int = 200) -> dict[str, float]:
    """Held-out accuracy per skill: mean exact P(correct) on ``n`` fixed test prompts of each skill."""
    return {s: float(prob_correct(model, tok, task, task.eval_problems(n, s)).mean()) for s in SKILLS}


@torch.no_grad()
def token_kl(model, ref, tok, task, problems, samples: int = 4, seed: int = 0) -> float:
    r"""Mean per-token :math:`\mathrm{KL}(\pi_\theta(\cdot|s_t)\,\|\,\pi_{ref}(\cdot|s_t))` along samples of :math:`\pi_\theta`.

    Exact over the (constrained) vocabulary at every visited state :math:`s_t`; the states
    come from ``samples`` completions per prompt (fixed sampler seed). Nats per token.
    """
    mask_fn = task.logits_mask(tok)
    ids, _ = rollout.encode_prompts(tok, [p.prompt for p in problems])
    g = rollout.group_sample(model, ids, samples, task.answer_len + 1, tok.eos_token_id, tok.pad_token_id,
                             mask_fn, generator=torch.Generator().manual_seed(seed))
    P, T = g.prompt_ids.shape[1], g.completion_ids.shape[1]
    full = torch.cat([g.prompt_ids, g.completion_ids], 1)
    allowed = torch.stack([mask_fn(g.prompt_ids, g.completion_ids[:, :t]) for t in range(T)], 1)  # (N, T, V)
    lq = [torch.log_softmax(m(input_ids=full).logits[:, P - 1 : P + T - 1].float().masked_fill(~allowed, -1e9), -1)
          for m in (model, ref)]
    kl = (lq[0].exp() * (lq[0] - lq[1])).sum(-1)  # (N, T)
    return float(masked_mean(kl, g.mask))


# ---------------------------------------------------------------------------------
# stage 2: on-policy preference pairs, a noisy judge, length-normalised DPO
# ---------------------------------------------------------------------------------
def noisy_judge(ok_a: np.ndarray, ok_b: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Does the judge prefer response a? (``(M,)`` bool)

    Where exactly one response is verified, the judge picks it with probability
    ``accuracy`` (an LLM judge that agrees with the verifier 80% of the time); where
    both or neither are, it flips a fair coin (it sees no quality difference).
    """
    ok_a, ok_b = np.asarray(ok_a, bool), np.asarray(ok_b, bool)
    u = rng.random(len(ok_a))
    return np.where(ok_a != ok_b, np.where(u < accuracy, ok_a, ok_b), u < 0.5)


@dataclass
class Pairs:
    """Preference pairs as token ids (chosen c, rejected r) with the reference's log-probs."""

    prompt_ids: Tensor
    """``(M, P)``"""
    comp_c: Tensor
    """``(M, T)`` chosen completions (EOS included)"""
    mask_c: Tensor
    """``(M, T)``"""
    comp_r: Tensor
    """``(M, T)`` rejected completions"""
    mask_r: Tensor
    """``(M, T)``"""
    ref_c: Tensor
    """``(M, T)`` per-token log-probs of the chosen under the reference (cached once, as open-instruct does)"""
    ref_r: Tensor
    """``(M, T)``"""
    label_correct: float
    """share of pairs whose chosen is verified and rejected is not (the judge was right)"""
    label_wrong: float
    """share of pairs whose chosen is wrong and rejected verified (the judge was wrong)"""


@torch.no_grad()
def make_pairs(model, tok, task, cfg: Config, seed: int) -> Pairs:
    """On-policy pairs: ``dpo_samples`` samples per prompt, two distinct ones kept, judged by :func:`noisy_judge`."""
    rng = np.random.default_rng([seed, 20])
    mask_fn = task.logits_mask(tok)
    problems = task.sample(cfg.dpo_prompts, rng)
    ids, _ = rollout.encode_prompts(tok, [p.prompt for p in problems])
    K = cfg.dpo_samples
    g = rollout.group_sample(model, ids, K, task.answer_len + 1, tok.eos_token_id, tok.pad_token_id, mask_fn,
                             generator=torch.Generator().manual_seed(seed))
    answers = rollout.decode(tok, g.completion_ids, g.mask)
    rows_a, rows_b, ok_a, ok_b = [], [], [], []
    for i, p in enumerate(problems):
        seen: dict[str, int] = {}
        for k in range(K):
            seen.setdefault(answers[i * K + k], i * K + k)
        if len(seen) < 2:
            continue
        a, b = rng.choice(list(seen.values()), size=2, replace=False)
        rows_a.append(a), rows_b.append(b)
        ok_a.append(task.verify(p, answers[a])), ok_b.append(task.verify(p, answers[b]))
    pick_a = noisy_judge(np.array(ok_a), np.array(ok_b), cfg.judge_accuracy, rng)
    ra, rb = torch.tensor(rows_a), torch.tensor(rows_b)
    pa = torch.as_tensor(pick_a)
    rc, rr = torch.where(pa, ra, rb), torch.where(pa, rb, ra)
    oka, okb = np.array(ok_a), np.array(ok_b)
    okc, okr = np.where(pick_a, oka, okb), np.where(pick_a, okb, oka)
    prompt_ids = g.prompt_ids[rc]
    ref_c = rollout.token_logprobs(model, prompt_ids, g.completion_ids[rc], mask_fn).masked_fill(g.mask[rc] == 0, 0.0)
    ref_r = rollout.token_logprobs(model, prompt_ids, g.completion_ids[rr], mask_fn).masked_fill(g.mask[rr] == 0, 0.0)
    return Pairs(prompt_ids, g.completion_ids[rc], g.mask[rc], g.completion_ids[rr], g.mask[rr], ref_c, ref_r,
                 float(np.mean(okc & ~okr)), float(np.mean(~okc & okr)))


def train_dpo(model, tok, task, pairs: Pairs, cfg: Config, seed: int) -> dict:
    """Length-normalised DPO (:func:`rlbook.losses.tulu3.dpo_norm_loss`) on ``pairs``, in place."""
    mask_fn = task.logits_mask(tok)
    rng = np.random.default_rng([seed, 21])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.dpo_lr)
    M = pairs.prompt_ids.shape[0]
    hist = {"loss": [], "margin": []}
    model.train()
    for _ in range(cfg.dpo_steps):
        j = torch.as_tensor(rng.choice(M, size=min(cfg.dpo_batch, M), replace=False))
        P = pairs.prompt_ids[j]
        lc = rollout.token_logprobs(model, P, pairs.comp_c[j], mask_fn).masked_fill(pairs.mask_c[j] == 0, 0.0)
        lr_ = rollout.token_logprobs(model, P, pairs.comp_r[j], mask_fn).masked_fill(pairs.mask_r[j] == 0, 0.0)
        loss, d = dpo_norm_loss(lc, pairs.ref_c[j], pairs.mask_c[j], lr_, pairs.ref_r[j], pairs.mask_r[j], cfg.dpo_beta)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        hist["loss"].append(loss.item())
        hist["margin"].append(d["margin"].mean().item())
    model.eval()
    return {k: np.asarray(v) for k, v in hist.items()}


# ---------------------------------------------------------------------------------
# stage 3: RLVR
# ---------------------------------------------------------------------------------
class SkillSubset:
    """A view of a :class:`PreciseIFTask` whose :meth:`sample` draws one skill only (the targeting ablation)."""

    def __init__(self, task: PreciseIFTask, skill: str):
        self.task, self.skill = task, skill

    def sample(self, n, rng, split="train"):
        return self.task.sample(n, rng, split=split, skill=self.skill)

    def verify(self, problem, answer):
        return self.task.verify(problem, answer)


def rlvr_reward(task, alpha: float):
    """``reward_fn(problems, answers, G) -> (B, G)``: :math:`v=\\alpha\\cdot\\mathbb 1[\\text{verified}]`."""

    def reward_fn(problems, answers, G):
        ok = torch.tensor([task.verify(problems[i // G], a) for i, a in enumerate(answers)])
        return verifiable_reward(ok, alpha).view(len(problems), G)

    return reward_fn


def rlvr_objective(beta: float):
    """The objective of :func:`rlbook.rl_lm.train`: :func:`rlvr_kl_loss` (takes ``logp_ref``)."""

    def objective(logp, mask, r, logp_ref):
        return rlvr_kl_loss(logp, mask, r, logp_ref, beta)

    return objective


def run_rlvr(model, ref, tok, task, cfg: Config, seed: int, skill: str | None = None, kl_every: int = 15) -> dict:
    """RLVR in place from the DPO model ``model`` with KL to ``ref`` (a frozen copy of it).

    ``skill="math"``: prompts of that skill only (the ablation). Returns the traces: reward
    (mean of the 0/α rewards), entropy, and the held-out per-token KL every ``kl_every`` steps.
    """
    rl_task = task if skill is None else SkillSubset(task, skill)
    rlc = rl_lm.RLConfig(steps=cfg.rl_steps, prompts=cfg.rl_prompts, group=cfg.rl_group, lr=cfg.rl_lr,
                         max_new_tokens=task.answer_len + 1, seed=seed)
    kl_probs = task.eval_problems(50, "math") + task.eval_problems(50, "if")
    kl_trace = [(0, 0.0)]

    def callback(step, hist):
        if (step + 1) % kl_every == 0:
            kl_trace.append((step + 1, token_kl(model, ref, tok, task, kl_probs, 2)))
            model.train()

    torch.manual_seed(seed)
    hist = rl_lm.train(model, tok, rl_task, rlvr_objective(cfg.kl_beta), rlc, mask_fn=task.logits_mask(tok),
                       callback=callback, ref_model=ref, reward_fn=rlvr_reward(task, cfg.alpha))
    out = hist.as_arrays()
    out["kl"] = np.array(kl_trace)
    return out


def run_smoke(cfg: Config, seed: int, base=None) -> dict:
    """The ladder SFT → DPO → RLVR (+ the math-only ablation) with held-out accuracy per skill after each stage.

    ``base``: an already loaded ``(model, tok, task, info)`` (:func:`load_base`). Returns
    ``{"acc": {stage: {skill: accuracy}}, "kl": {stage: nats/token vs DPO}, "traces": ..., "pairs": ...}``.
    """
    t0 = time.time()
    sft, tok, task, _ = base if base is not None else load_base()
    out = {"acc": {"SFT": evaluate(sft, tok, task, cfg.eval_prompts)}, "traces": {}, "kl": {}, "seconds": {}}
    # stage 2
    t1 = time.time()
    pairs = make_pairs(sft, tok, task, cfg, seed)
    torch.manual_seed(seed)
    dpo = copy.deepcopy(sft)
    out["traces"]["DPO"] = train_dpo(dpo, tok, task, pairs, cfg, seed)
    out["acc"]["DPO"] = evaluate(dpo, tok, task, cfg.eval_prompts)
    out["pairs"] = {"n": int(pairs.prompt_ids.shape[0]), "judge_right": pairs.label_correct,
                    "judge_wrong": pairs.label_wrong}
    out["seconds"]["DPO"] = time.time() - t1
    # stage 3 (+ ablation)
    ref = copy.deepcopy(dpo).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    held = task.eval_problems(cfg.eval_prompts // 2, "math") + task.eval_problems(cfg.eval_prompts // 2, "if")
    runs = {"RLVR": None, "RLVR (math only)": "math"} if cfg.ablation else {"RLVR": None}
    for name, skill in runs.items():
        t1 = time.time()
        model = copy.deepcopy(dpo)
        out["traces"][name] = run_rlvr(model, ref, tok, task, cfg, seed, skill=skill)
        out["acc"][name] = evaluate(model, tok, task, cfg.eval_prompts)
        out["kl"][name] = token_kl(model, ref, tok, task, held, cfg.kl_eval_samples)
        out["seconds"][name] = time.time() - t1
    out["seconds"]["total"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------------
# full profile: TRL DPOTrainer (sigmoid_norm) → GRPOTrainer (verifier bonus, beta > 0)
# ---------------------------------------------------------------------------------
GSM_INSTRUCTION = "\nPlease reason step by step, and end with the final numerical answer."


def last_number(text: str) -> str | None:
    """The last number in ``text`` (commas and a trailing period dropped), as TÜLU's GSM8K verifier reads answers."""
    nums = re.findall(r"-?\d[\d,]*\.?\d*", text)
    if not nums:
        return None
    s = nums[-1].replace(",", "").rstrip(".")
    return s[:-2] if s.endswith(".0") else s


def gsm_reward(completions, answer, alpha: float = 10.0, **kwargs) -> list[float]:
    """TÜLU's RLVR reward for GSM8K: ``alpha`` if the last number of the completion equals ``answer``, else 0."""
    out = []
    for c, a in zip(completions, answer):
        text = c if isinstance(c, str) else c[-1]["content"]
        out.append(alpha if last_number(text) == str(a).strip() else 0.0)
    return out


def load_gsm(name_or_path: str, split: str, n: int | None = None):
    """A GSM-style data set with ``prompt`` (text) and ``answer`` (number string) columns.

    Accepts RLVR-GSM (``messages``, ``ground_truth``), GSM8K (``question``, ``answer`` with
    ``#### N``; Hub config ``main``) or a local ``save_to_disk`` folder of either.
    """
    import os

    from datasets import load_dataset, load_from_disk

    if os.path.isdir(name_or_path):
        ds = load_from_disk(name_or_path)
        if hasattr(ds, "keys"):
            ds = ds[split]
    else:
        ds = load_dataset(name_or_path, "main" if name_or_path.endswith("gsm8k") else None, split=split)
    cols = ds.column_names
    if "messages" in cols:
        ds = ds.map(lambda e: {"prompt": e["messages"][-1]["content"], "answer": str(e["ground_truth"]).strip()},
                    remove_columns=cols)
    else:
        ds = ds.map(lambda e: {"prompt": e["question"] + GSM_INSTRUCTION,
                               "answer": e["answer"].split("####")[-1].strip().replace(",", "")}, remove_columns=cols)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return ds


@torch.no_grad()
def gsm_accuracy(model, tok, evalset, max_new_tokens: int, batch: int = 32) -> float:
    """Greedy accuracy (the verifier's 0/1 answer match) on ``evalset`` (``prompt``, ``answer``)."""
    model.eval()
    dev = next(model.parameters()).device
    side = tok.padding_side
    tok.padding_side = "left"
    hits = []
    for s in range(0, len(evalset), batch):
        rows = evalset[s : s + batch]
        enc = tok(rows["prompt"], return_tensors="pt", padding=True).to(dev)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        hits += [r > 0 for r in gsm_reward(texts, rows["answer"])]
    tok.padding_side = side
    return float(np.mean(hits))


def run_full(cfg: Config, seed: int, output_dir: str = "tulu3_full", cpu: bool = False,
             dpo_steps: int | None = None, rl_steps: int | None = None, eval_problems: int | None = None,
             max_completion: int | None = None, pref_split: str = "train") -> dict:
    """Paper-scale ladder on one GPU: SFT model → length-normalised DPO → RLVR; GSM8K accuracy after each.

    Not timed on a GPU here: the catalog's estimate is ~45 min for 250 GRPO steps on an H100
    (with vLLM) plus ~15 min of DPO. ``cpu`` and the step/size overrides exist for the
    dry-run test (a tiny local model and data sets).
    """
    import importlib.util

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

    from rlbook.models import load_pretrained

    device, dtype, _ = hub.full_device(cpu)
    cuda = device == "cuda"
    max_new = max_completion or cfg.full_max_completion
    evalset = load_gsm(cfg.full_eval_data, "test", n=eval_problems or cfg.full_eval_problems)
    model, tok = load_pretrained(cfg.full_model, device=device, dtype=dtype)
    results = {"SFT": gsm_accuracy(model, tok, evalset, max_new)}
    # stage 2: length-normalised DPO (open-instruct dpo_norm == TRL sigmoid_norm)
    pref = hub.load_dataset(cfg.full_pref_data, pref_split)
    pref = Dataset.from_list([hub.as_text(e, tok) for e in pref])
    dpo_args = DPOConfig(
        output_dir=f"{output_dir}/dpo", loss_type=["sigmoid_norm"], beta=cfg.dpo_beta,
        learning_rate=cfg.full_dpo_lr, lr_scheduler_type="linear", warmup_steps=0.1,
        per_device_train_batch_size=2 if cpu else 8, gradient_accumulation_steps=1 if cpu else 16,
        max_steps=dpo_steps or cfg.full_dpo_steps, logging_steps=1, **hub.trl_offline(cuda, seed),
    )
    trainer = DPOTrainer(model=model, args=dpo_args, train_dataset=pref, processing_class=tok)
    trainer.train()
    dpo_dir = f"{output_dir}/dpo_model"
    trainer.model.save_pretrained(dpo_dir)
    tok.save_pretrained(dpo_dir)
    results["DPO"] = gsm_accuracy(trainer.model, tok, evalset, max_new)
    # stage 3: RLVR, KL to the DPO model (GRPOTrainer builds its reference from the saved folder)
    model, tok = load_pretrained(dpo_dir, device=device, dtype=dtype)
    train = load_gsm(cfg.full_rl_data, "train")
    use_vllm = cuda and importlib.util.find_spec("vllm") is not None
    rl_args = GRPOConfig(
        output_dir=f"{output_dir}/rlvr", learning_rate=cfg.full_rl_lr, beta=cfg.kl_beta,
        scale_rewards="none",  # keep the α = 10 scale: std-scaling would cancel it
        num_generations=cfg.full_group, per_device_train_batch_size=cfg.full_group * (1 if cpu else 4),
        gradient_accumulation_steps=1 if cpu else 4, max_completion_length=max_new, temperature=1.0,
        max_steps=rl_steps or cfg.full_rl_steps, logging_steps=1, **hub.trl_offline(cuda, seed),
        **hub.vllm_kw(use_vllm),
    )

    def reward(completions, answer, **kw):
        return gsm_reward(completions, answer, alpha=cfg.alpha)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=rl_args, train_dataset=train, processing_class=tok)
    trainer.train()
    results["RLVR"] = gsm_accuracy(trainer.model, tok, evalset, max_new)
    return results
