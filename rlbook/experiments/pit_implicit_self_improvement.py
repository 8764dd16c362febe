r"""Chapter "Enable Language Models to Implicitly Learn Self-Improvement From Data" (PIT, arXiv 2310.00898).

Smoke profile: attribute-vector responses (:mod:`rlbook.attributes`): 3 attributes x 5 levels,
prompt-specific weights and an interaction penalty in the hidden gold quality. From ordinary
Bradley-Terry preference pairs of base-policy responses we train

- an ordinary reward model ``r(x, y)`` (:func:`rlbook.rewards.bt_loss`) and
- PIT's gap reward model ``R_PIT(x, y, y_ref)`` (:func:`rlbook.losses.pit.pit_rm_loss`) on the *same* pairs,

then PIT's *edit* policy ``π(move | x, y_ref)`` over the 27 edits (each attribute -1/0/+1): SFT on
the edit from ``y_l`` towards ``y_w``, then REINFORCE on ``R_PIT`` with a KL to the SFT policy and a
two-stage curriculum (references = dataset losers, then base samples). At test time it is
applied iteratively, ``y_{k+1} = y_k + move``, against a hand-written rubric refiner (raise
helpfulness) and the RLHF policy (the KL-optimal policy of the ordinary reward model), resampled
each round.

Full profile: TRL ``RewardTrainer`` for ``R_PIT`` (inputs prompt + reference + candidate, the
five comparisons per pair) and TRL ``RLOOTrainer`` for the PIT policy (:func:`run_full`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import hub
from rlbook.attributes import AttributeWorld, random_attribute_world
from rlbook.bandits import Pairs, kl_optimal_policy, softmax
from rlbook.config import check


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    n_train: int = 200
    """training prompts (preference data, RL references)"""
    n_test: int = 200
    """held-out prompts for the improvement rounds and the RM check"""
    n_pairs: int = 3000
    """Bradley-Terry preference pairs of base responses (the data an ordinary RM is trained on)"""
    bt_scale: float = 5.0
    """Bradley-Terry scale: P(y1 > y2) = sigmoid(scale (q1 - q2))"""
    gamma: float = 1.0
    """helpfulness x concision interaction penalty of the gold quality"""
    rm_loss: str = "ordered"
    """gap-RM loss: "ordered" (all five comparisons of the order, :func:`rlbook.losses.pit.pit_rm_loss_ordered`)
    or "three" (the catalog's reconstruction, :func:`rlbook.losses.pit.pit_rm_loss`)"""
    rm_hidden: int = 32
    """hidden width of both reward-model MLPs"""
    rm_steps: int = 200
    """full-batch Adam steps of each reward model"""
    rm_lr: float = 0.02
    """Adam learning rate of the reward models"""
    sft_steps: int = 100
    """Adam steps of the SFT edit policy (SFT on (x, y_l) -> y_w)"""
    rl_steps: int = 300
    """Adam steps of PIT's RL stage"""
    rl_batch: int = 128
    """references per RL step"""
    group: int = 8
    """edits sampled per reference (group baseline)"""
    lr: float = 0.1
    """Adam learning rate of the edit policy"""
    beta: float = 0.01
    """KL strength to the SFT edit policy"""
    curriculum: float = 0.5
    """fraction of RL steps whose references are dataset losers (the rest: base samples)"""
    rlhf_beta: float = 0.05
    """KL strength of the RLHF baseline policy on the ordinary reward model"""
    rounds: int = 3
    """improvement rounds at test time"""
    samples_per_prompt: int = 4
    """starting responses y_0 per held-out prompt"""
    # full profile (one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: policy (and reward-model backbone), a Hub name or a local folder"""
    dataset: str = "Anthropic/hh-rlhf"
    """*full*: preference pairs (chosen/rejected), a Hub name or a local ``save_to_disk`` folder"""
    judge: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: independent reward model that scores the improvement rounds"""
    full_pairs: int = 10000
    """*full*: training pairs for R_PIT (each gives three comparisons) and for SFT"""
    full_rl_prompts: int = 3200
    """*full*: (prompt, reference) rows for RLOO"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts for the improvement rounds"""
    full_max_new_tokens: int = 128
    """*full*: generation length"""
    full_max_length: int = 768
    """*full*: maximum tokens of an R_PIT input / SFT example"""
    full_lr: float = 1e-5
    """*full*: learning rate of the RM, SFT and RL stages"""
    full_batch: int = 32
    """*full*: global batch"""
    full_per_device_batch: int = 8
    """*full*: per-device batch"""
    full_max_steps: int = -1
    """*full*: cap on steps of every stage (-1: one epoch; the dry-run test uses 2)"""

    def __post_init__(self) -> None:
        check(self.n_train >= 2 and self.n_test >= 2 and self.n_pairs >= 10, "need more prompts or pairs")
        check(self.bt_scale > 0 and self.gamma >= 0, "bt_scale > 0 and gamma >= 0")
        check(self.rm_loss in ("ordered", "three"), 'rm_loss must be "ordered" or "three"')
        check(self.rm_hidden >= 1 and self.rm_steps >= 1 and self.rm_lr > 0, "bad reward-model settings")
        check(self.sft_steps >= 0 and self.rl_steps >= 1 and self.rl_batch >= 1, "bad policy steps")
        check(self.group >= 2, "group must be >= 2 (group baseline)")
        check(self.lr > 0 and self.beta >= 0 and self.rlhf_beta > 0, "lr > 0, beta >= 0, rlhf_beta > 0")
        check(0 <= self.curriculum <= 1, "curriculum must be in [0, 1]")
        check(self.rounds >= 1 and self.samples_per_prompt >= 1, "rounds and samples_per_prompt >= 1")


# ----------------------------------------------------------------------------- data


def make_world(cfg: Config, rng: np.random.Generator) -> AttributeWorld:
    """``n_train + n_test`` prompts; the first ``n_train`` are the training prompts."""
    return random_attribute_world(cfg.n_train + cfg.n_test, rng, gamma=cfg.gamma)


def make_pairs(world: AttributeWorld, cfg: Config, rng: np.random.Generator) -> Pairs:
    """``n_pairs`` pairs of distinct base responses to training prompts, Bradley-Terry labelled on gold."""
    b = world.bandit()
    x = rng.integers(0, cfg.n_train, size=cfg.n_pairs)
    p = b.ref_probs
    y1 = b.sample(p, x, rng)
    y2 = b.sample(p, x, rng)
    same = y1 == y2
    while same.any():
        y2[same] = b.sample(p, x[same], rng)
        same = y1 == y2
    return b.label(x, y1, y2, rng, scale=cfg.bt_scale)


# ----------------------------------------------------------------------------- reward models


def _mlp(d_in: int, hidden: int, seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.SiLU(), torch.nn.Linear(hidden, 1))


def response_features(world: AttributeWorld, x, a):
    r"""A response's representation ``ψ(x, y) = [w_x, u, w_x ⊙ u, u_help·u_conc]`` (``u = a/(L-1)``), float32 torch.

    It contains everything the gold quality is linear in: the stand-in for a pretrained
    backbone's representation (both reward models and the policy's features use it).
    """
    import torch

    u = torch.as_tensor(np.asarray(a) / (world.levels - 1), dtype=torch.float32)
    w = torch.as_tensor(world.w[x], dtype=torch.float32)
    return torch.cat([w, u, w * u, (u[..., 0] * u[..., -1])[..., None]], -1)


class GapRM:
    r"""``R_PIT(x, y, y_ref)``: an MLP on ``[ψ(x, y), ψ(x, y_ref), ψ(x, y) − ψ(x, y_ref)]``."""

    def __init__(self, world: AttributeWorld, hidden: int, seed: int = 0):
        self.world = world
        self.net = _mlp(3 * (3 * world.A + 1), hidden, seed)

    def features(self, x, a, a_ref):
        import torch

        f, fr = response_features(self.world, x, a), response_features(self.world, x, a_ref)
        return torch.cat([f, fr, f - fr], -1)

    def __call__(self, x, a, a_ref):
        """``x: (...)``, ``a, a_ref: (..., A)`` attribute vectors → ``(...)`` torch scores."""
        return self.net(self.features(x, a, a_ref))[..., 0]


class AbsRM:
    """The ordinary reward model ``r(x, y)``: an MLP on ``ψ(x, y)`` (:func:`response_features`)."""

    def __init__(self, world: AttributeWorld, hidden: int, seed: int = 0):
        self.world = world
        self.net = _mlp(3 * world.A + 1, hidden, seed)

    def __call__(self, x, a):
        return self.net(response_features(self.world, x, a))[..., 0]


def fit_gap_rm(world: AttributeWorld, pairs: Pairs, cfg: Config, seed: int = 0) -> GapRM:
    """Fit ``R_PIT`` by full-batch Adam on the ordered comparisons of each pair (``cfg.rm_loss``)."""
    import torch

    from rlbook.losses.pit import pit_rm_loss, pit_rm_loss_ordered

    loss_fn = pit_rm_loss_ordered if cfg.rm_loss == "ordered" else pit_rm_loss
    rm = GapRM(world, cfg.rm_hidden, seed)
    aw, al = world.responses[pairs.yw], world.responses[pairs.yl]
    fw = {k: rm.features(pairs.x, a, b) for k, (a, b) in
          dict(wl=(aw, al), lw=(al, aw), ww=(aw, aw), ll=(al, al)).items()}
    opt = torch.optim.Adam(rm.net.parameters(), lr=cfg.rm_lr)
    for _ in range(cfg.rm_steps):
        opt.zero_grad()
        r = {k: rm.net(f)[:, 0] for k, f in fw.items()}
        loss, _ = loss_fn(r["wl"], r["lw"], r["ww"], r["ll"])
        loss.backward()
        opt.step()
    return rm


def fit_abs_rm(world: AttributeWorld, pairs: Pairs, cfg: Config, seed: int = 0) -> AbsRM:
    """Fit the ordinary Bradley-Terry reward model (:func:`rlbook.rewards.bt_loss`) on the same pairs."""
    import torch

    from rlbook.rewards import bt_loss

    rm = AbsRM(world, cfg.rm_hidden, seed)
    aw, al = world.responses[pairs.yw], world.responses[pairs.yl]
    opt = torch.optim.Adam(rm.net.parameters(), lr=cfg.rm_lr)
    for _ in range(cfg.rm_steps):
        opt.zero_grad()
        loss = bt_loss(rm(pairs.x, aw), rm(pairs.x, al))
        loss.backward()
        opt.step()
    return rm


# ----------------------------------------------------------------------------- the edit policy


def edit_features(world: AttributeWorld, x: np.ndarray, a_ref: np.ndarray) -> np.ndarray:
    r"""``φ(x, y_ref, move) = d(move) ⊗ v(x, y_ref)``, ``v = [1, w_x, u_ref, u_help·u_conc, w_x ⊙ u_ref]``.

    ``x: (B,)``, ``a_ref: (B, A)`` → ``(B, M, A·dim v)``.
    """
    u = a_ref / (world.levels - 1)
    w = world.w[x]
    v = np.concatenate([np.ones((len(x), 1)), w, u, (u[:, 0] * u[:, -1])[:, None], w * u], 1)  # (B, dv)
    d = world.moves.astype(float)  # (M, A)
    return (d[None, :, :, None] * v[:, None, None, :]).reshape(len(x), len(d), -1)


def edit_logp(theta, world: AttributeWorld, x: np.ndarray, a_ref: np.ndarray):
    """``log π_θ(move | x, y_ref)``: ``(B, M)`` torch log-probabilities of a linear-softmax edit policy."""
    import torch

    phi = torch.as_tensor(edit_features(world, x, a_ref))
    return torch.log_softmax(phi @ theta, -1)


def sft_target_moves(world: AttributeWorld, pairs: Pairs) -> np.ndarray:
    """The edit from ``y_l`` one step towards ``y_w`` (sign of the difference), as a move index ``(n,)``."""
    d = np.sign(world.responses[pairs.yw] - world.responses[pairs.yl]).astype(int)  # (n, A)
    return np.ravel_multi_index(tuple((d + 1).T), (3,) * world.A)


def train_sft(world: AttributeWorld, pairs: Pairs, cfg: Config):
    """PIT's SFT stage: cross-entropy of the edit ``y_l → y_w`` given ``(x, y_l)``; returns ``θ_SFT`` (torch)."""
    import torch

    theta = torch.zeros(edit_features(world, pairs.x[:1], world.responses[pairs.yl[:1]]).shape[-1],
                        dtype=torch.float64, requires_grad=True)
    target = torch.as_tensor(sft_target_moves(world, pairs))
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    phi = torch.as_tensor(edit_features(world, pairs.x, world.responses[pairs.yl]))
    for _ in range(cfg.sft_steps):
        opt.zero_grad()
        lp = torch.log_softmax(phi @ theta, -1)
        loss = -lp.gather(1, target[:, None]).mean()
        loss.backward()
        opt.step()
    return theta.detach()


def train_pit(world: AttributeWorld, gap_rm: GapRM, pairs: Pairs, theta_sft, cfg: Config, seed: int = 0):
    """PIT's RL stage: :func:`rlbook.losses.pit.pit_policy_loss` on ``R_PIT`` with a two-stage curriculum.

    Stage 1 (the first ``curriculum`` fraction of steps): references are dataset losers ``y_l``;
    stage 2: references are fresh base samples for random training prompts. Returns ``(θ, log)``.
    """
    import torch

    from rlbook.losses.pit import pit_policy_loss

    rng = np.random.default_rng([seed, 11])
    b = world.bandit()
    p0 = b.ref_probs
    theta = theta_sft.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    log = {"gap": [], "stage": []}
    for step in range(cfg.rl_steps):
        stage = 1 if step < cfg.curriculum * cfg.rl_steps else 2
        if stage == 1:
            i = rng.integers(0, len(pairs), size=cfg.rl_batch)
            x, a_ref = pairs.x[i], world.responses[pairs.yl[i]]
        else:
            x = rng.integers(0, cfg.n_train, size=cfg.rl_batch)
            a_ref = world.responses[b.sample(p0, x, rng)]
        lp = edit_logp(theta, world, x, a_ref)  # (B, M)
        with torch.no_grad():
            lp_sft = edit_logp(theta_sft, world, x, a_ref)
            mv = torch.multinomial(lp.exp(), cfg.group, replacement=True).numpy()  # (B, G)
            a_new = world.apply(a_ref[:, None, :], mv)  # (B, G, A)
            gap = gap_rm(np.repeat(x[:, None], cfg.group, 1), a_new, np.repeat(a_ref[:, None], cfg.group, 1)).double()
        kl = (lp.exp() * (lp - lp_sft)).sum(-1)  # (B,)
        loss = pit_policy_loss(lp.gather(1, torch.as_tensor(mv)), gap, kl, cfg.beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log["gap"].append(float(gap.mean()))
        log["stage"].append(stage)
    return theta.detach(), log


# ----------------------------------------------------------------------------- improvement rounds


def improvement_rounds(world: AttributeWorld, cfg: Config, edit, rng: np.random.Generator) -> np.ndarray:
    """Gold quality of ``y_0, ..., y_rounds`` on held-out prompts: ``(rounds + 1,)`` means.

    ``y_0`` ~ base (``samples_per_prompt`` per prompt); ``edit(x, a) -> a'`` is applied each round.
    """
    b = world.bandit()
    x = np.repeat(np.arange(cfg.n_train, cfg.n_train + cfg.n_test), cfg.samples_per_prompt)
    a = world.responses[b.sample(b.ref_probs, x, rng)]
    out = [world.quality(x, a).mean()]
    for _ in range(cfg.rounds):
        a = edit(x, a)
        out.append(world.quality(x, a).mean())
    return np.array(out)


def pit_editor(world: AttributeWorld, theta, rng: np.random.Generator):
    """Sample an edit from the PIT policy and apply it."""
    import torch

    def edit(x, a):
        with torch.no_grad():
            p = edit_logp(theta, world, x, a).exp().numpy()
        cdf = np.cumsum(p, -1)
        mv = np.minimum((rng.random((len(x), 1)) * cdf[:, -1:] > cdf).sum(-1), p.shape[1] - 1)
        return world.apply(a, mv)

    return edit


def rubric_editor(world: AttributeWorld, attrs=(0,)):
    """The prompting baseline: a written rubric ("be more helpful") — raise the named attributes by one level."""
    d = np.zeros(world.A, dtype=int)
    d[list(attrs)] = 1

    def edit(x, a):
        return world.apply(a, np.broadcast_to(d, a.shape))

    return edit


def rlhf_policy(world: AttributeWorld, abs_rm: AbsRM, beta: float) -> np.ndarray:
    r"""The RLHF baseline in closed form: :math:`\pi^*\propto\pi_{base}\,e^{\hat r/\beta}` on the ordinary RM, ``(X, N)``."""
    import torch

    X = len(world.w)
    with torch.no_grad():
        r = abs_rm(np.repeat(np.arange(X)[:, None], len(world.responses), 1),
                   np.broadcast_to(world.responses, (X,) + world.responses.shape)).numpy()
    return kl_optimal_policy(softmax(world.base_logits), r, beta)


def rlhf_editor(world: AttributeWorld, probs: np.ndarray, rng: np.random.Generator):
    """RLHF ignores the reference: each round is a fresh sample of the RLHF policy."""
    b = world.bandit()

    def edit(x, a):
        return world.responses[b.sample(probs, x, rng)]

    return edit


def gap_rm_quality(world: AttributeWorld, gap_rm: GapRM, cfg: Config, rng: np.random.Generator) -> dict:
    """On held-out prompts, pairs of base responses: Spearman corr of the centred gap
    ``R_PIT(y, y_ref) − R_PIT(y_ref, y_ref)`` (improvement over keeping the reference) with
    ``q(y) − q(y_ref)`` (also of the raw ``R_PIT(y, y_ref)``: ``spearman_raw``), the sign accuracy,
    and the mean and mean |.| of ``R_PIT(y, y)``."""
    import torch
    from scipy.stats import spearmanr

    b = world.bandit()
    x = rng.integers(cfg.n_train, cfg.n_train + cfg.n_test, size=4000)
    y, yr = b.sample(b.ref_probs, x, rng), b.sample(b.ref_probs, x, rng)
    a, ar = world.responses[y], world.responses[yr]
    with torch.no_grad():
        r = gap_rm(x, a, ar).numpy()
        r_same = gap_rm(x, a, a).numpy()
        r_keep = gap_rm(x, ar, ar).numpy()  # the score of "no change" for the same reference
    true = world.quality(x, a) - world.quality(x, ar)
    nz = true != 0
    return {
        "spearman": float(spearmanr(r - r_keep, true).statistic),
        "spearman_raw": float(spearmanr(r, true).statistic),
        "accuracy": float(np.mean(np.sign(r[nz] - r_keep[nz]) == np.sign(true[nz]))),
        "mean_self": float(r_same.mean()),
        "mean_abs_self": float(np.abs(r_same).mean()),
        "r": r, "true": true,
    }


def run_smoke(cfg: Config, seed: int) -> dict:
    """One seed: world, pairs, both reward models, SFT + PIT, the three improvers' rounds, RM checks."""
    t0 = time.perf_counter()
    world = make_world(cfg, np.random.default_rng([seed, 0]))
    pairs = make_pairs(world, cfg, np.random.default_rng([seed, 1]))
    gap_rm = fit_gap_rm(world, pairs, cfg, seed)
    abs_rm = fit_abs_rm(world, pairs, cfg, seed)
    theta_sft = train_sft(world, pairs, cfg)
    theta, log = train_pit(world, gap_rm, pairs, theta_sft, cfg, seed)
    probs = rlhf_policy(world, abs_rm, cfg.rlhf_beta)
    editors = {
        "PIT": pit_editor(world, theta, np.random.default_rng([seed, 3])),
        "SFT edit policy": pit_editor(world, theta_sft, np.random.default_rng([seed, 3])),
        "rubric (raise helpfulness)": rubric_editor(world),
        "RLHF (resampled)": rlhf_editor(world, probs, np.random.default_rng([seed, 3])),
    }
    rounds = {k: improvement_rounds(world, cfg, e, np.random.default_rng([seed, 2])) for k, e in editors.items()}
    rmq = gap_rm_quality(world, gap_rm, cfg, np.random.default_rng([seed, 4]))
    b = world.bandit()
    x = np.arange(cfg.n_train, cfg.n_train + cfg.n_test)
    p0 = b.ref_probs[x]
    g = b.r[x]
    gold_std = float(np.sqrt((p0 * (g - (p0 * g).sum(-1, keepdims=True)) ** 2).sum(-1).mean()))
    return {"world": world, "pairs": pairs, "gap_rm": gap_rm, "abs_rm": abs_rm, "theta": theta,
            "theta_sft": theta_sft, "log": log, "rounds": rounds, "rm": rmq, "gold_std": gold_std,
            "best": float(g.max(-1).mean()), "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- full profile


def split_hh(text: str) -> tuple[str, str]:
    """Split an hh-rlhf transcript into (prompt up to the last ``Assistant:``, final answer)."""
    k = text.rfind("\n\nAssistant:")
    if k < 0:
        return text, ""
    return text[: k + len("\n\nAssistant:")], text[k + len("\n\nAssistant:") :].strip()


def pit_input(prompt: str, reference: str, candidate: str) -> str:
    """The text ``R_PIT`` and the PIT policy see: the prompt, the reference response, then the candidate."""
    return f"{prompt.rstrip()}\n\n[Reference response]\n{reference}\n\n[Improved response]\n{candidate}"


def pit_rm_rows(prompt: str, yw: str, yl: str) -> list[dict]:
    """The five comparisons of the order ``wl > {ww, ll} > lw`` for one pair, as RewardTrainer rows
    ``{"chosen", "rejected"}``: RewardTrainer's Bradley-Terry loss summed over them is
    :func:`rlbook.losses.pit.pit_rm_loss_ordered` (the first three alone: :func:`rlbook.losses.pit.pit_rm_loss`)."""
    wl, lw, ww, ll = (pit_input(prompt, r, c) for c, r in ((yw, yl), (yl, yw), (yw, yw), (yl, yl)))
    return [{"chosen": wl, "rejected": lw}, {"chosen": wl, "rejected": ww}, {"chosen": ll, "rejected": lw},
            {"chosen": wl, "rejected": ll}, {"chosen": ww, "rejected": lw}]


def run_full(cfg: Config, seed: int, device: str, output_dir: str) -> dict:
    """The paper-scale pipeline on one GPU (TRL).

    1. ``R_PIT``: TRL ``RewardTrainer`` (``AutoModelForSequenceClassification`` on ``cfg.model``) on the
       five comparisons per pair of ``cfg.full_pairs`` pairs (:func:`pit_rm_rows`).
    2. SFT: TRL ``SFTTrainer`` on (prompt + y_l as reference) → y_w (:func:`pit_input`).
    3. RL: TRL ``RLOOTrainer`` from the SFT model, reward ``R_PIT(x, y, y_ref)`` with references from
       the data set (the first curriculum stage).
    4. Three improvement rounds on held-out prompts, ``y_{k+1} ~ π_PIT(· | x, y_k)``, ``y_0`` from the
       original model, scored by the independent ``cfg.judge``.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer

    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    common = dict(**hub.trl_offline(cuda, seed, checkpointing=False), logging_steps=1,
                  max_steps=cfg.full_max_steps, learning_rate=cfg.full_lr,
                  per_device_train_batch_size=cfg.full_per_device_batch,
                  gradient_accumulation_steps=max(1, cfg.full_batch // cfg.full_per_device_batch))
    ds = hub.load_dataset(cfg.dataset).shuffle(seed=seed)
    need = cfg.full_pairs + cfg.full_eval_prompts
    if len(ds) < need:
        raise ValueError(f"{cfg.dataset} has {len(ds)} rows, need {need}")
    rows = []
    for ex in ds.select(range(cfg.full_pairs)):
        p, yw = split_hh(ex["chosen"])
        _, yl = split_hh(ex["rejected"])
        rows.append((p, yw, yl))
    held = [split_hh(ex["chosen"])[0] for ex in ds.select(range(cfg.full_pairs, need))]
    t0 = time.perf_counter()
    # 1. the gap reward model
    _, tok = load_pretrained(cfg.model, device="cpu")
    rm = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1, dtype=dtype).to(device)
    rm.config.pad_token_id = tok.pad_token_id
    rm_ds = Dataset.from_list([r for p, yw, yl in rows for r in pit_rm_rows(p, yw, yl)])
    rt = RewardTrainer(model=rm, args=RewardConfig(output_dir=f"{output_dir}/rm", num_train_epochs=1,
                                                   max_length=cfg.full_max_length, **common),
                       train_dataset=rm_ds, processing_class=tok)
    rt.train()
    rm = rt.model.eval()
    # 2. SFT on (x, y_l) -> y_w
    policy, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
    sft_ds = Dataset.from_list([{"prompt": pit_input(p, yl, "").rstrip() + "\n", "completion": yw}
                                for p, yw, yl in rows])
    st = SFTTrainer(model=policy, args=SFTConfig(output_dir=f"{output_dir}/sft", num_train_epochs=1,
                                                 max_length=cfg.full_max_length, **common),
                    train_dataset=sft_ds, processing_class=tok)
    st.train()
    policy = st.model
    # 3. RL on the gap reward (references from the data set)
    n_rl = min(cfg.full_rl_prompts, len(rows))
    rl_ds = Dataset.from_list([{"prompt": pit_input(p, yl, "").rstrip() + "\n", "reference": yl, "x": p}
                               for p, _, yl in rows[:n_rl]])

    def gap_reward(prompts, completions, reference, x, **kw):
        texts = [pit_input(xx, rr, cc) for xx, rr, cc in zip(x, reference, completions)]
        with torch.no_grad():
            enc = tok(texts, return_tensors="pt", padding=True, truncation=True,
                      max_length=cfg.full_max_length).to(device)
            return rm(**enc).logits[:, 0].float().cpu().tolist()

    G = 4
    rl_args = RLOOConfig(output_dir=f"{output_dir}/rl", num_generations=G,
                         max_completion_length=cfg.full_max_new_tokens, beta=0.05,
                         **{**common, "per_device_train_batch_size": max(G, cfg.full_per_device_batch // G * G)})
    rl = RLOOTrainer(model=policy, reward_funcs=gap_reward, args=rl_args, train_dataset=rl_ds,
                     processing_class=tok)
    rl.train()
    policy = rl.model.eval()
    train_s = time.perf_counter() - t0
    # 4. improvement rounds, scored by an independent judge

    base, _ = load_pretrained(cfg.model, device=device, dtype=dtype)
    judge, judge_tok = hub.load_reward_model(cfg.judge, device)
    torch.manual_seed(seed)
    y = hub.generate(base, tok, held, device, cfg.full_max_new_tokens, 1, sample=True)
    questions = [p.split("Human:")[-1].split("\n\nAssistant:")[0].strip() for p in held]
    scores = [float(hub.score(judge, judge_tok, questions, y, device).mean())]
    for _ in range(3):
        inp = [pit_input(p, yy, "").rstrip() + "\n" for p, yy in zip(held, y)]
        y = hub.generate(policy, tok, inp, device, cfg.full_max_new_tokens, 1, sample=True)
        scores.append(float(hub.score(judge, judge_tok, questions, y, device).mean()))
    return {"judge_score_by_round": scores, "train_seconds": train_s,
            "rm_log": [h for h in rt.state.log_history if "loss" in h],
            "rl_log": [h for h in rl.state.log_history if "reward" in h]}
