r"""Chapter "Actor-Critics Can Achieve Optimal Sample Efficiency" (arXiv 2505.03710).

A tabular instance of the paper's algorithm on DeepSea (:mod:`rlbook.exploration`): an optimistic,
off-policy critic that targets ``Q*``, an exponential-weights actor, rare critic switches with actor
resets, next to a naive on-policy actor-critic and UCBVI; then hybrid RL (the critic initialised
from offline trajectories) and the non-optimistic variant that needs enough offline data.

Smoke profile: DeepSea ``N = 10``, 2,000 episodes, 5 repetitions per seed (a few seconds).
Full profile: the same code at ``N`` in {20, 30}, more episodes and 20 repetitions (:func:`run_full`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlbook import exploration as X
from rlbook.config import check


@dataclass
class Config:
    """The experiment's knobs (smoke profile unless marked *full*)."""

    N: int = 10
    """DeepSea size (horizon H = N, N + 1 columns, 2 actions); a random policy succeeds w.p. 2^-N"""
    episodes: int = 2000
    """online episodes T of every agent"""
    reps: int = 5
    """independent DeepSea instances (action maps) and agent seeds per notebook seed"""
    eta: float = 0.5
    """η of the exponential-weights actor"""
    bonus: float = 1.0
    """b of the optimistic critic's bonus b / sqrt(n)"""
    v_max: float = 2.0
    """cap of the critic's values (1 + b, rewards in [0, 1]); also the value of unvisited pairs"""
    epsilon: float = 0.1
    """ε-greedy exploration of the naive on-policy actor-critic"""
    td_lr: float = 0.1
    """TD step size of the naive critic"""
    n_offline: int = 1000
    """offline trajectories that initialise the hybrid agent's critic"""
    p_right: float = 0.6
    """behaviour policy of the offline data: right with this probability"""
    pess_N: int = 12
    """DeepSea size of the non-optimistic (pessimistic) hybrid study"""
    pess_p_right: float = 0.7
    """behaviour policy of the pessimistic study's offline data"""
    pess_n_offline: tuple = (10, 100, 1000)
    """offline data sizes of the pessimistic study"""
    pess_reps: int = 10
    """instances per offline data size in the pessimistic study"""
    pess_episodes: int = 100
    """online episodes of the pessimistic agent"""
    slope_start: int = 200
    """first episode of the log-log regret fit"""
    # full profile
    full_N: tuple = (20, 30)
    """*full*: DeepSea sizes"""
    full_episodes: int = 20000
    """*full*: online episodes"""
    full_reps: int = 20
    """*full*: instances per size"""

    def __post_init__(self) -> None:
        check(2 <= self.N <= 40 and 2 <= self.pess_N <= 40, "N and pess_N must be in 2..40")
        check(self.episodes >= 10 and self.reps >= 1, "episodes >= 10 and reps >= 1")
        check(self.eta > 0 and self.bonus >= 0 and self.v_max > 1, "eta > 0, bonus >= 0, v_max > 1")
        check(0 <= self.epsilon <= 1 and self.td_lr > 0, "epsilon in [0, 1], td_lr > 0")
        check(0 < self.p_right < 1 and 0 < self.pess_p_right < 1, "p_right values must be in (0, 1)")
        check(self.n_offline >= 1 and all(n >= 1 for n in self.pess_n_offline), "offline sizes must be >= 1")
        check(self.pess_reps >= 1 and self.pess_episodes >= 1, "pess_reps and pess_episodes must be >= 1")
        check(1 <= self.slope_start < self.episodes, "slope_start must be in 1..episodes-1")


def ac_config(cfg: Config, kind: str, episodes: int | None = None) -> X.ACConfig:
    """The agent settings of ``kind`` from the chapter's config."""
    return X.ACConfig(kind=kind, episodes=cfg.episodes if episodes is None else episodes, eta=cfg.eta,
                      bonus=cfg.bonus, v_max=cfg.v_max, epsilon=cfg.epsilon, td_lr=cfg.td_lr)


def solved(res: X.ACResult) -> bool:
    """The output policy reaches at least 95% of the optimal return."""
    return res.final_return >= 0.95 * res.optimal_return


def run_online(cfg: Config, seed: int, N: int | None = None, episodes: int | None = None, reps: int | None = None,
               kinds=("naive", "optimistic", "hybrid"), ucbvi_reps: int = 1) -> dict:
    """Every agent on ``reps`` DeepSea instances; returns ``{kind: [ACResult per rep]}``.

    ``"hybrid"`` is the optimistic agent with its counts initialised from ``cfg.n_offline``
    trajectories of the ``cfg.p_right`` behaviour policy; UCBVI runs on the first ``ucbvi_reps``.
    """
    N = cfg.N if N is None else N
    reps = cfg.reps if reps is None else reps
    out: dict = {k: [] for k in (*kinds, "ucbvi")}
    for rep in range(reps):
        mdp = X.deep_sea(N, np.random.default_rng([seed, rep, 0]))
        for kind in kinds:
            rng = np.random.default_rng([seed, rep, 1])
            if kind == "hybrid":
                off = X.offline_data(mdp, cfg.n_offline, cfg.p_right, np.random.default_rng([seed, rep, 2]))
                out[kind].append(X.run_actor_critic(mdp, ac_config(cfg, "optimistic", episodes), rng, counts=off))
            else:
                out[kind].append(X.run_actor_critic(mdp, ac_config(cfg, kind, episodes), rng))
        if rep < ucbvi_reps:
            out["ucbvi"].append(X.run_actor_critic(mdp, ac_config(cfg, "ucbvi", episodes), np.random.default_rng([seed, rep, 1])))
    return out


def run_pessimistic(cfg: Config, seed: int) -> dict[int, float]:
    """Success rate of the non-optimistic hybrid agent per offline data size (``cfg.pess_reps`` instances each)."""
    rates = {}
    for n_off in cfg.pess_n_offline:
        wins = []
        for rep in range(cfg.pess_reps):
            mdp = X.deep_sea(cfg.pess_N, np.random.default_rng([seed, rep, 5]))
            off = X.offline_data(mdp, n_off, cfg.pess_p_right, np.random.default_rng([seed, rep, 6, n_off]))
            res = X.run_actor_critic(mdp, ac_config(cfg, "pessimistic", cfg.pess_episodes),
                                     np.random.default_rng([seed, rep, 7]), counts=off)
            wins.append(solved(res))
        rates[n_off] = float(np.mean(wins))
    return rates


def summarise(runs: dict, cfg: Config, episodes: int | None = None) -> dict:
    """Per agent: solved count, mean final return, mean regret at T, log-log slope of the mean cumulative regret, switches."""
    T = cfg.episodes if episodes is None else episodes
    out = {}
    for kind, rs in runs.items():
        if not rs:
            continue
        cum = np.mean([r.cumulative for r in rs], axis=0)
        out[kind] = {
            "solved": int(sum(solved(r) for r in rs)),
            "runs": len(rs),
            "final_return": float(np.mean([r.final_return for r in rs])),
            "regret_T": float(cum[-1]),
            "slope": X.loglog_slope(cum, min(cfg.slope_start, T - 1)),
            "switches": float(np.mean([len(r.switches) for r in rs])),
        }
    return out


def run_smoke(cfg: Config, seed: int) -> dict:
    """The chapter's experiment for one notebook seed."""
    t0 = time.perf_counter()
    runs = run_online(cfg, seed)
    pess = run_pessimistic(cfg, seed)
    return {"runs": runs, "summary": summarise(runs, cfg), "pessimistic": pess, "seconds": time.perf_counter() - t0}


def run_full(cfg: Config, seed: int) -> dict:
    """The larger-scale run: DeepSea at every size of ``cfg.full_N``, ``cfg.full_episodes`` episodes, ``cfg.full_reps`` instances.

    Pure numpy on the CPU (no GPU needed); about ``reps × sizes × 4`` agent runs whose cost grows
    linearly with episodes (roughly 0.3-0.5 ms per episode on one core).
    """
    out = {}
    for N in cfg.full_N:
        t0 = time.perf_counter()
        runs = run_online(cfg, seed, N=N, episodes=cfg.full_episodes, reps=cfg.full_reps, ucbvi_reps=cfg.full_reps)
        out[N] = {"summary": summarise(runs, cfg, cfg.full_episodes),
                  "cumulative": {k: np.mean([r.cumulative for r in rs], 0) for k, rs in runs.items() if rs},
                  "seconds": time.perf_counter() - t0}
    return out
