r"""Chapter "Iterative Nash Policy Optimization" (INPO, arXiv 2407.00617).

Smoke profile: the 6-response intransitive game of :func:`rlbook.games.intransitive_game`
(a rock-paper-scissors triple, a "BT favourite" that crushes two dominated responses but
loses to every member of the triple, and the dominated pair), ``π_ref`` uniform, the
KL-regularised game of strength ``τ``. Four learners:

- **exact OMD** -- the closed-form mirror-descent step (:func:`rlbook.games.omd_step`), the
  reference trajectory;
- **INPO** -- each iteration draws pairs from ``π_t``, labels them with the oracle and
  minimises :func:`rlbook.losses.inpo.inpo_loss` over tabular logits;
- **iterative DPO (BT)** -- the same pairs, the DPO loss with reference ``π_t`` (the
  Bradley-Terry view of the same data);
- **BT reward model + KL-optimal policy** -- one Bradley-Terry fit on pairs from ``π_ref``,
  then :math:`\pi\propto\pi_{ref}e^{\hat r/\tau}`.

Full profile: :func:`run_full` -- INPO on a language model (a plain torch loop with the
INPO loss, pairs sampled from the current policy and labelled by a reward model used as
a Bernoulli/Bradley-Terry judge), next to iterative DPO at the same budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import games as G
from rlbook.config import check


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    tau: float = 0.1
    """``τ``: KL strength to ``π_ref`` in the game (the catalog's toy choice)"""
    eta: float = 1.0
    """``η``: OMD step size (``ητ = 0.1``)"""
    iterations: int = 30
    """``T``: INPO / iterative-DPO iterations"""
    pairs: int = 4000
    """preference pairs drawn from ``π_t`` per iteration"""
    dpo_beta: float = 1.0
    """``β`` of iterative DPO (reference ``π_t``; 1/``η``, so both take steps of the same size)"""
    bt_pairs: int = 5000
    """pairs from ``π_ref`` for the one-shot Bradley-Terry reward model"""
    check_pairs: int = 200_000
    """pairs of the loss-minimiser check (one INPO step from ``π_ref`` vs the closed form)"""
    fit_iters: int = 60
    """L-BFGS iterations per fit (tabular logits, so the fit is the empirical minimiser)"""
    # full profile (one GPU)
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """*full*: policy (and ``π_ref``), a Hub name or a local folder"""
    dataset: str = "trl-lib/ultrafeedback_binarized"
    """*full*: prompts (a Hub name or a local ``save_to_disk`` folder)"""
    judge: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    """*full*: reward model used as a pairwise judge, P(y ≻ y') = σ(r(y) - r(y'))"""
    full_prompts: int = 2000
    """*full*: training prompts per iteration"""
    full_eval_prompts: int = 300
    """*full*: held-out prompts for the win rate against the initial model"""
    full_iterations: int = 3
    """*full*: INPO iterations (the paper runs 3)"""
    full_eta: float = 10.0
    """*full*: ``η`` (the chapter's choice: the loss target η/2 = 5 nats, IPO's usual scale; the iterative-DPO baseline uses β = 1/η = 0.1)"""
    full_tau: float = 0.01
    """*full*: ``τ`` (the chapter's choice, so that ητ = 0.1 as in the smoke profile)"""
    full_lr: float = 5e-7
    """*full*: AdamW learning rate"""
    full_batch: int = 16
    """*full*: pairs per optimiser step"""
    full_max_new_tokens: int = 256
    """*full*: generation length"""
    full_epochs: int = 1
    """*full*: passes over each iteration's pairs"""

    def __post_init__(self) -> None:
        check(self.tau > 0 and self.eta > 0, "tau and eta must be > 0")
        check(self.eta * self.tau <= 1, "eta*tau must be <= 1 (the OMD step mixes pi_t and pi_ref)")
        check(self.iterations >= 1, "iterations must be >= 1")
        check(self.pairs >= 10 and self.bt_pairs >= 10 and self.check_pairs >= 10, "pair counts must be >= 10")
        check(self.dpo_beta > 0, "dpo_beta must be > 0")
        check(self.fit_iters >= 1, "fit_iters must be >= 1")
        check(self.full_eta * self.full_tau <= 1, "full_eta*full_tau must be <= 1")


# ----------------------------------------------------------------------------- data


def sample_pairs(P: np.ndarray, pi: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r"""``n`` pairs :math:`y,y'\sim\pi` (independent), ordered by the oracle: ``(y_w, y_l)``, each ``(n,)``.

    :math:`y` wins with probability :math:`P[y,y']` (a Bernoulli draw, as a human rater or
    a pairwise preference model would label them).
    """
    y1 = rng.choice(len(pi), size=n, p=pi)
    y2 = rng.choice(len(pi), size=n, p=pi)
    first = rng.random(n) < P[y1, y2]
    return np.where(first, y1, y2), np.where(first, y2, y1)


# ----------------------------------------------------------------------------- learners


def _fit_logits(loss_of_logp, init_logits: np.ndarray, iters: int) -> np.ndarray:
    """Minimise ``loss_of_logp(log_softmax(θ))`` over tabular logits ``θ: (K,)`` with L-BFGS; returns π ``(K,)``."""
    import torch

    theta = torch.tensor(init_logits, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_of_logp(torch.log_softmax(theta, -1))
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta.detach(), -1).numpy()


def inpo_step(P, pi_t, ref, tau, eta, n, rng, iters=60) -> np.ndarray:
    """One INPO iteration: ``n`` oracle-labelled pairs from ``π_t``, then minimise the INPO loss (tabular)."""
    import torch

    from rlbook.losses.inpo import inpo_loss

    yw, yl = (torch.as_tensor(a) for a in sample_pairs(P, pi_t, n, rng))
    lt = torch.log(torch.as_tensor(pi_t, dtype=torch.float64).clamp_min(1e-300))
    lr_ = torch.log(torch.as_tensor(ref, dtype=torch.float64))
    return _fit_logits(lambda lp: inpo_loss(lp[yw], lp[yl], lr_[yw], lr_[yl], lt[yw], lt[yl], eta, tau),
                       lt.numpy(), iters)


def dpo_step(P, pi_t, beta, n, rng, iters=60) -> np.ndarray:
    """One iterative-DPO iteration (Bradley-Terry view): pairs from ``π_t``, DPO loss with reference ``π_t``."""
    import torch

    from rlbook.losses import dpo_loss

    yw, yl = (torch.as_tensor(a) for a in sample_pairs(P, pi_t, n, rng))
    lt = torch.log(torch.as_tensor(pi_t, dtype=torch.float64).clamp_min(1e-300))
    return _fit_logits(lambda lp: dpo_loss(lp[yw], lt[yw], lp[yl], lt[yl], beta)[0], lt.numpy(), iters)


def bt_policy(P, ref, tau, n, rng, seed=0) -> tuple[np.ndarray, np.ndarray]:
    r"""One-shot RLHF under BT: fit scores to ``n`` pairs from ``π_ref``, return ``(π ∝ π_ref e^{r̂/τ}, r̂)``."""
    from rlbook.bandits import kl_optimal_policy
    from rlbook.rewards import fit_bt_table

    yw, yl = sample_pairs(P, ref, n, rng)
    r = fit_bt_table(np.zeros(n, dtype=int), yw, yl, 1, len(ref), steps=400, lr=0.1, seed=seed)[0]
    return kl_optimal_policy(ref, r, tau), r


def metrics(P, pi, ref, tau, nash) -> dict:
    """Regularised duality gap, TV to the regularised Nash policy, unregularised exploitability."""
    return {"gap": G.duality_gap(P, pi, ref, tau), "tv_nash": G.tv(pi, nash), "exploit": G.exploitability(P, pi)}


def run_smoke(cfg: Config, seed: int) -> dict:
    """The whole smoke experiment for one seed: the game, its Nash policy, four learners, metrics per iteration."""
    t0 = time.perf_counter()
    P = G.intransitive_game(0.9, 0.35, 0.99, 0.45)
    K = P.shape[0]
    ref = np.full(K, 1.0 / K)
    nash = G.regularised_nash(P, ref, cfg.tau)
    rng = np.random.default_rng([seed, 1])
    traj = {"omd": [ref], "inpo": [ref], "dpo": [ref]}
    for _ in range(cfg.iterations):
        traj["omd"].append(G.omd_step(P, traj["omd"][-1], ref, cfg.tau, cfg.eta))
        traj["inpo"].append(inpo_step(P, traj["inpo"][-1], ref, cfg.tau, cfg.eta, cfg.pairs, rng, cfg.fit_iters))
        traj["dpo"].append(dpo_step(P, traj["dpo"][-1], cfg.dpo_beta, cfg.pairs, rng, cfg.fit_iters))
    traj = {k: np.stack(v) for k, v in traj.items()}
    bt_pi, bt_r = bt_policy(P, ref, cfg.tau, cfg.bt_pairs, np.random.default_rng([seed, 2]), seed)
    curves = {k: {m: np.array([metrics(P, p, ref, cfg.tau, nash)[m] for p in v]) for m in ("gap", "tv_nash", "exploit")}
              for k, v in traj.items()}
    # the loss-minimiser check: one INPO step from pi_ref with many pairs vs the closed form
    big = inpo_step(P, ref, ref, cfg.tau, cfg.eta, cfg.check_pairs, np.random.default_rng([seed, 3]), cfg.fit_iters)
    omd1 = G.omd_step(P, ref, ref, cfg.tau, cfg.eta)
    return {
        "P": P, "ref": ref, "nash": nash, "traj": traj, "curves": curves,
        "bt": {"pi": bt_pi, "r": bt_r, **metrics(P, bt_pi, ref, cfg.tau, nash)},
        "step_check_tv": G.tv(big, omd1), "seconds": time.perf_counter() - t0,
    }


def exact_inpo_minimiser(P, pi_t, ref, tau, eta, iters: int = 200) -> np.ndarray:
    r"""Minimise the INPO loss with *exact* expectations over :math:`y,y'\sim\pi_t` and the oracle's labels.

    :math:`\sum_{y,y'}\pi_t(y)\pi_t(y')\,P[y,y']\,(h_t(\pi,y,y')-\eta/2)^2` over tabular logits
    (each ordered pair enters once as winner-first with its probability). Equals the OMD
    step :func:`rlbook.games.omd_step` (the chapter's derivation and a unit test).
    """
    import torch

    from rlbook.losses.inpo import inpo_loss

    K = len(pi_t)
    yw, yl = (torch.as_tensor(a.ravel()) for a in np.meshgrid(np.arange(K), np.arange(K), indexing="ij"))
    w = torch.as_tensor((pi_t[:, None] * pi_t[None, :] * P).ravel())  # P(draw y, y' and y wins)
    lt = torch.log(torch.as_tensor(pi_t, dtype=torch.float64).clamp_min(1e-300))
    lr_ = torch.log(torch.as_tensor(ref, dtype=torch.float64))

    def loss(lp):
        # inpo_loss is a mean over pairs; weight each ordered pair by its probability instead
        per_pair = torch.stack([inpo_loss(lp[yw[i:i + 1]], lp[yl[i:i + 1]], lr_[yw[i:i + 1]], lr_[yl[i:i + 1]],
                                          lt[yw[i:i + 1]], lt[yl[i:i + 1]], eta, tau) for i in range(len(yw))])
        return (w * per_pair).sum()

    return _fit_logits(loss, lt.numpy(), iters)


# ----------------------------------------------------------------------------- full profile


def _train_pairs(model, ref_model, prev_model, tok, rows, cfg: Config, method: str, device: str) -> None:
    """One INPO (or iterative-DPO) iteration on ``rows`` of ``{"prompt", "chosen", "rejected"}``, AdamW, in place.

    The log-probs of ``π_ref`` and of the previous iterate ``π_t`` are computed without
    gradients; the policy's with gradients (:func:`rlbook.lm_selfplay.completion_logprobs`).
    ``method``: ``"inpo"`` (:func:`rlbook.losses.inpo.inpo_loss`) or ``"dpo"``
    (:func:`rlbook.losses.dpo_loss` with reference ``π_t`` and ``β = 1/η``).
    """
    import torch

    from rlbook import lm_selfplay as S
    from rlbook.losses import dpo_loss
    from rlbook.losses.inpo import inpo_loss

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.full_lr)
    model.train()
    for _ in range(cfg.full_epochs):
        for i in range(0, len(rows), cfg.full_batch):
            b = rows[i : i + cfg.full_batch]
            p, w, l_ = [r["prompt"] for r in b], [r["chosen"] for r in b], [r["rejected"] for r in b]
            with torch.no_grad():
                rw, rl = S.completion_logprobs(ref_model, tok, p, w, device), S.completion_logprobs(ref_model, tok, p, l_, device)
                tw, tl = S.completion_logprobs(prev_model, tok, p, w, device), S.completion_logprobs(prev_model, tok, p, l_, device)
            lw, ll = S.completion_logprobs(model, tok, p, w, device), S.completion_logprobs(model, tok, p, l_, device)
            if method == "inpo":
                loss = inpo_loss(lw, ll, rw, rl, tw, tl, cfg.full_eta, cfg.full_tau)
            else:
                loss, _ = dpo_loss(lw, tw, ll, tl, 1.0 / cfg.full_eta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    model.eval()


def run_full(cfg: Config, seed: int, device: str, output_dir: str, methods=("inpo", "dpo")) -> dict:
    """INPO on a language model, next to iterative DPO at the same budget (``output_dir`` is unused: nothing is saved).

    Per iteration and method: two completions per training prompt from ``π_t``, ordered by a
    Bernoulli draw from the judge's :math:`\\sigma(r(y)-r(y'))`
    (:class:`rlbook.lm_selfplay.PairwiseJudge`), then one pass of :func:`_train_pairs`. After
    each iteration: the judge's win rate against ``π_0`` on held-out prompts and the mean
    completion length in tokens. Returns ``{"history": [rows]}``.
    """
    import copy

    import torch

    from rlbook import lm_selfplay as S
    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    base, tok = load_pretrained(cfg.model, device=device, dtype=dtype)
    base.eval()
    judge = S.PairwiseJudge(cfg.judge, device)
    prompts, questions = S.load_prompts(cfg.dataset, cfg.full_prompts, seed, tok)
    ev_prompts, ev_q = S.load_prompts(cfg.dataset, cfg.full_eval_prompts, seed, tok, offset=cfg.full_prompts)
    rng = np.random.default_rng([seed, 5])
    torch.manual_seed(seed)
    init_comp = [c[0] for c in S.generate(base, tok, ev_prompts, 1, cfg.full_max_new_tokens, device)]
    history = []
    for method in methods:
        model = copy.deepcopy(base)
        for t in range(cfg.full_iterations):
            prev = copy.deepcopy(model).eval()
            comps = S.generate(model, tok, prompts, 2, cfg.full_max_new_tokens, device)
            rows = []
            for p, q, (a, b) in zip(prompts, questions, comps):
                ra, rb = judge.scores([q, q], [a, b])
                a_wins = rng.random() < judge.prob(ra, rb)
                rows.append({"prompt": p, "chosen": a if a_wins else b, "rejected": b if a_wins else a})
            _train_pairs(model, base, prev, tok, rows, cfg, method, device)
            del prev
            comp = [c[0] for c in S.generate(model, tok, ev_prompts, 1, cfg.full_max_new_tokens, device)]
            history.append({
                "method": method, "iteration": t + 1,
                "win_rate_vs_init": S.win_rate(judge, ev_q, comp, init_comp),
                "length": float(np.mean([len(tok(c, add_special_tokens=False)["input_ids"]) for c in comp])),
            })
    return {"history": history}
