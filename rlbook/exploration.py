r"""Strategic exploration in finite-horizon tabular MDPs: DeepSea, optimistic critics, exponential-weights actors.

The tabular instance of "Actor-Critics Can Achieve Optimal Sample Efficiency" (Tan, Fan, Wei,
ICML 2025, arXiv 2505.03710). Notation: horizon ``H``, states ``S``, actions ``A``; a
time-inhomogeneous MDP has transition probabilities ``P: (H, S, A, S)``, mean rewards ``R: (H, S, A)``
and a start state ``s0``; a policy is ``pi: (H, S, A)``; values ``V: (H+1, S)`` (``V[H] = 0``) and
``Q: (H, S, A)``. Everything is float64 numpy and exact (backward induction).

Pieces:

- :class:`FiniteMDP`, :func:`deep_sea` (Osband et al. 2019), :func:`random_mdp`;
- :func:`backward_induction` (``Q*``), :func:`evaluate_policy` (``Q^π``), :func:`occupancy` (``d^π_h``);
- :class:`Counts` (the data: visit counts, empirical rewards and transitions) and
  :func:`optimistic_critic` (backward induction on the empirical model with a Hoeffding-style bonus
  ``bonus/sqrt(n)``, capped; the tabular stand-in for the paper's GOLF-style confidence set);
- :func:`run_actor_critic`: the paper-style actor-critic (optimistic off-policy critic targeting ``Q*``,
  exponential-weights actor, rare switching with actor resets), the naive on-policy actor-critic,
  and UCBVI (greedy on the optimistic critic every episode), with regret tracking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# ----------------------------------------------------------------------------- MDPs


@dataclass
class FiniteMDP:
    """A finite-horizon, time-inhomogeneous tabular MDP."""

    P: np.ndarray
    """``(H, S, A, S)`` transition probabilities"""
    R: np.ndarray
    """``(H, S, A)`` mean rewards (deterministic rewards in DeepSea)"""
    s0: int = 0
    """start state"""

    def __post_init__(self):
        H, S, A, S2 = self.P.shape
        if S2 != S or self.R.shape != (H, S, A):
            raise ValueError(f"P must be (H, S, A, S) and R (H, S, A); got {self.P.shape}, {self.R.shape}")
        if not np.allclose(self.P.sum(-1), 1.0):
            raise ValueError("rows of P must sum to 1")

    @property
    def H(self) -> int:
        return self.P.shape[0]

    @cached_property
    def tables(self) -> tuple[list, list, list | None]:
        """``(cumulative P, R, next state or None)`` as nested lists, for fast step-by-step sampling.

        The third table is given when every transition is deterministic (DeepSea)."""
        det = bool(np.all((self.P == 0) | (self.P == 1)))
        return np.cumsum(self.P, -1).tolist(), self.R.tolist(), self.P.argmax(-1).tolist() if det else None

    @property
    def S(self) -> int:
        return self.P.shape[1]

    @property
    def A(self) -> int:
        return self.P.shape[2]


@dataclass
class DeepSea(FiniteMDP):
    """DeepSea of size ``N`` (``H = N`` steps, columns ``0..N`` as states, 2 actions)."""

    right: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=int))
    """``(H, S)`` which action index moves right in each cell (randomised, as in bsuite)"""


def deep_sea(N: int, rng: np.random.Generator, move_cost: float = 0.01) -> DeepSea:
    r"""DeepSea (Osband et al. 2019) as a finite-horizon MDP.

    The agent starts in column 0 and takes ``N`` steps; each step moves one column right or left
    (column 0 is a wall). Moving right costs ``move_cost / N``; arriving in column ``N`` (right at
    every step) pays 1. So :math:`V^*(s_0)=1-\text{move\_cost}`, every other policy that goes left
    once gets at most 0, and a uniformly random policy succeeds with probability :math:`2^{-N}`.
    Which action index means "right" is drawn per (step, column), so no fixed action is a shortcut.
    """
    if N < 1:
        raise ValueError("N must be >= 1")
    H, S, A = N, N + 1, 2
    right = rng.integers(0, 2, size=(H, S))
    P = np.zeros((H, S, A, S))
    R = np.zeros((H, S, A))
    for h in range(H):
        for s in range(S):
            for a in range(A):
                goes_right = a == right[h, s]
                s2 = min(s + 1, S - 1) if goes_right else max(s - 1, 0)
                P[h, s, a, s2] = 1.0
                R[h, s, a] = -move_cost / N if goes_right else 0.0
                if h == H - 1 and goes_right and s2 == N and s == N - 1:
                    R[h, s, a] += 1.0
    return DeepSea(P=P, R=R, s0=0, right=right)


def random_mdp(H: int, S: int, A: int, rng: np.random.Generator) -> FiniteMDP:
    """A random MDP: Dirichlet transitions, uniform rewards in [0, 1]."""
    P = rng.dirichlet(np.ones(S), size=(H, S, A))
    return FiniteMDP(P=P, R=rng.random((H, S, A)), s0=0)


# ----------------------------------------------------------------------------- exact planning


def backward_induction(mdp: FiniteMDP) -> tuple[np.ndarray, np.ndarray]:
    r"""``(Q*: (H, S, A), V*: (H+1, S))`` by :math:`Q^*_h=R_h+P_hV^*_{h+1}`, :math:`V^*_h=\max_aQ^*_h`."""
    V = np.zeros((mdp.H + 1, mdp.S))
    Q = np.zeros((mdp.H, mdp.S, mdp.A))
    for h in reversed(range(mdp.H)):
        Q[h] = mdp.R[h] + mdp.P[h] @ V[h + 1]
        V[h] = Q[h].max(-1)
    return Q, V


def evaluate_policy(mdp: FiniteMDP, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""``(Q^π: (H, S, A), V^π: (H+1, S))`` of ``pi: (H, S, A)`` by :math:`V^\pi_h=\langle\pi_h,Q^\pi_h\rangle`."""
    V = np.zeros((mdp.H + 1, mdp.S))
    Q = np.zeros((mdp.H, mdp.S, mdp.A))
    for h in reversed(range(mdp.H)):
        Q[h] = mdp.R[h] + mdp.P[h] @ V[h + 1]
        V[h] = (pi[h] * Q[h]).sum(-1)
    return Q, V


def policy_values(mdp: FiniteMDP, pis: np.ndarray) -> np.ndarray:
    r"""``(n,)``: :math:`V^{\pi_i}(s_0)` of a batch of policies ``pis: (n, H, S, A)`` (batched backward induction)."""
    V = np.zeros((len(pis), mdp.S))
    for h in reversed(range(mdp.H)):
        Q = mdp.R[h] + np.einsum("sat,nt->nsa", mdp.P[h], V)  # (n, S, A)
        V = (pis[:, h] * Q).sum(-1)
    return V[:, mdp.s0]


def occupancy(mdp: FiniteMDP, pi: np.ndarray) -> np.ndarray:
    r"""``d: (H, S)``: :math:`d^\pi_h(s)=\Pr(s_h=s)` from :math:`s_0`."""
    d = np.zeros((mdp.H, mdp.S))
    d[0, mdp.s0] = 1.0
    for h in range(mdp.H - 1):
        d[h + 1] = np.einsum("s,sa,sat->t", d[h], pi[h], mdp.P[h])
    return d


def greedy(Q: np.ndarray) -> np.ndarray:
    """``(H, S, A)`` deterministic policy picking the first maximiser of ``Q: (H, S, A)``."""
    pi = np.zeros_like(Q)
    np.put_along_axis(pi, Q.argmax(-1)[..., None], 1.0, axis=-1)
    return pi


def performance_difference(
    mdp: FiniteMDP, pi_star: np.ndarray, pi: np.ndarray, f: np.ndarray
) -> dict[str, float]:
    r"""The actor-critic decomposition of :math:`V^{\pi^*}(s_0)-V^{\pi}(s_0)` for any critic ``f: (H, S, A)``.

    With :math:`g_h(s)=\langle f_h(s,\cdot),\pi_h(\cdot|s)\rangle` and the Bellman error of ``f`` under the
    actor, :math:`\varepsilon_h=R_h+P_hg_{h+1}-f_h` (:math:`g_H=0`):

    .. math:: V^{\pi^*}(s_0)-V^\pi(s_0)=\sum_h\mathbb{E}_{s\sim d^{\pi^*}_h}\big[\langle f_h(s,\cdot),\pi^*_h-\pi_h\rangle\big]
              +\sum_h\mathbb{E}_{d^{\pi^*}_h\times\pi^*_h}[\varepsilon_h]-\sum_h\mathbb{E}_{d^{\pi}_h\times\pi_h}[\varepsilon_h]

    (the actor's mirror-descent regret term plus the critic's Bellman errors under the two
    occupancies; the paper's analysis bounds the last two with optimism). Returns each term and
    the exact left-hand side.
    """
    g = np.zeros((mdp.H + 1, mdp.S))
    g[:-1] = (f * pi).sum(-1)
    eps = mdp.R + np.einsum("hsat,ht->hsa", mdp.P, g[1:]) - f  # (H, S, A)
    d_star, d_pi = occupancy(mdp, pi_star), occupancy(mdp, pi)
    actor = float(np.einsum("hs,hsa->", d_star, f * (pi_star - pi)))
    err_star = float(np.einsum("hs,hsa,hsa->", d_star, pi_star, eps))
    err_pi = float(np.einsum("hs,hsa,hsa->", d_pi, pi, eps))
    lhs = evaluate_policy(mdp, pi_star)[1][0, mdp.s0] - evaluate_policy(mdp, pi)[1][0, mdp.s0]
    return {"lhs": float(lhs), "actor": actor, "bellman_star": err_star, "bellman_pi": err_pi,
            "rhs": actor + err_star - err_pi}


def hedge_regret(gains: np.ndarray, eta: float) -> tuple[float, np.ndarray]:
    r"""Regret of exponential weights :math:`\pi_{k+1}\propto\pi_k e^{\eta f_k}` from uniform on gains ``(K, A)``.

    Returns ``(max_a Σ_k f_k(a) - Σ_k <π_k, f_k>, policies (K, A))``. Classic bound for gains in
    ``[0, M]``: :math:`\log A/\eta+\eta KM^2/8`.
    """
    K, A = gains.shape
    logits = np.zeros(A)
    pis = np.zeros((K, A))
    for k in range(K):
        p = np.exp(logits - logits.max())
        pis[k] = p / p.sum()
        logits += eta * gains[k]
    return float(gains.sum(0).max() - (pis * gains).sum()), pis


# ----------------------------------------------------------------------------- data and critics


@dataclass
class Counts:
    """Everything the critic sees: visit counts, summed rewards and transition counts."""

    n: np.ndarray
    """``(H, S, A)`` visits"""
    r_sum: np.ndarray
    """``(H, S, A)`` summed observed rewards"""
    nxt: np.ndarray
    """``(H, S, A, S)`` transition counts"""

    @classmethod
    def empty(cls, H: int, S: int, A: int) -> "Counts":
        return cls(np.zeros((H, S, A)), np.zeros((H, S, A)), np.zeros((H, S, A, S)))

    def add(self, traj: list[tuple[int, int, float, int]]) -> None:
        """Add one trajectory: ``[(s_h, a_h, r_h, s_{h+1}) for h in range(H)]``."""
        for h, (s, a, r, s2) in enumerate(traj):
            self.n[h, s, a] += 1
            self.r_sum[h, s, a] += r
            self.nxt[h, s, a, s2] += 1


def optimistic_critic(counts: Counts, bonus: float, v_max: float, unvisited: float | None = None) -> np.ndarray:
    r"""``f: (H, S, A)``: backward induction toward :math:`Q^*` on the empirical model, plus a bonus.

    .. math:: f_h(s,a)=\min\Big(\hat r_h(s,a)+\hat P_h(\cdot|s,a)^\top\max_{a'}f_{h+1}(\cdot,a')+\frac{b}{\sqrt{n_h(s,a)}},\ v_{max}\Big)

    and :math:`f_h(s,a)=` ``unvisited`` (default ``v_max``: optimism) where :math:`n_h(s,a)=0`. The backup
    uses :math:`\max_{a'}` (it targets :math:`Q^*`, whatever policy collected the data: an off-policy critic).
    With ``bonus = 0`` and a negative ``unvisited`` it is the pessimistic, non-optimistic critic.
    """
    n, (H, S, A) = counts.n, counts.n.shape
    f = np.zeros((H, S, A))
    v_next = np.zeros(S)
    safe = np.maximum(n, 1)
    for h in reversed(range(H)):
        q = counts.r_sum[h] / safe[h] + (counts.nxt[h] / safe[h][..., None]) @ v_next + bonus / np.sqrt(safe[h])
        q = np.minimum(q, v_max)
        f[h] = np.where(n[h] > 0, q, v_max if unvisited is None else unvisited)
        v_next = f[h].max(-1)
    return f


# ----------------------------------------------------------------------------- agents


@dataclass
class ACConfig:
    """Knobs of :func:`run_actor_critic`."""

    kind: str = "optimistic"
    """"optimistic" (paper-style AC), "naive" (on-policy AC), "ucbvi" (greedy on the optimistic critic)
    or "pessimistic" (the non-optimistic hybrid variant: bonus 0, unvisited pairs pessimistic)"""
    episodes: int = 2000
    """online episodes ``T``"""
    eta: float = 0.5
    """actor step size η of the exponential-weights update"""
    bonus: float = 1.0
    """bonus scale ``b`` of the optimistic critic (``b / sqrt(n)``)"""
    v_max: float = 2.0
    """cap of the critic's values (1 + b for rewards in [0, 1])"""
    unvisited: float = -0.1
    """critic value of unvisited pairs in the pessimistic variant"""
    epsilon: float = 0.1
    """ε-greedy exploration of the naive actor-critic"""
    td_lr: float = 0.1
    """TD step size of the naive critic"""
    always_switch: bool = False
    """optimistic/pessimistic agents: recompute the critic (and reset the actor) after every episode
    instead of only when a count has doubled (an ablation of rare switching)"""


@dataclass
class ACResult:
    """What one run logged."""

    regret: np.ndarray
    """``(T,)`` per-episode regret :math:`V^*(s_0)-V^{\\pi_t}(s_0)` of the policy played in episode ``t``"""
    switches: list
    """episodes at which the critic was recomputed (and the actor reset)"""
    final_return: float
    """exact return of the agent's output policy (greedy on its estimate of ``Q*``, see :func:`run_actor_critic`)"""
    optimal_return: float
    """:math:`V^*(s_0)`"""

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.regret)


def rollout(mdp: FiniteMDP, pi: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int, float, int]]:
    """One episode from ``s0`` under ``pi: (H, S, A)``: ``[(s, a, r, s')] * H`` (inverse-CDF sampling)."""
    cum_pi = np.cumsum(pi, -1).tolist()  # plain lists: this loop runs once per step of every episode
    cum_P, R, nxt = mdp.tables
    u = rng.random((mdp.H, 2)).tolist()
    s, traj = mdp.s0, []
    for h in range(mdp.H):
        cp, x = cum_pi[h][s], u[h][0] * cum_pi[h][s][-1]
        a = next((i for i, c in enumerate(cp) if x < c), mdp.A - 1)
        if nxt is not None:
            s2 = nxt[h][s][a]
        else:
            s2 = next((i for i, c in enumerate(cum_P[h][s][a]) if u[h][1] < c), mdp.S - 1)
        traj.append((s, a, R[h][s][a], s2))
        s = s2
    return traj


def offline_data(mdp: DeepSea, n_traj: int, p_right: float, rng: np.random.Generator) -> Counts:
    """``n_traj`` DeepSea trajectories of a behaviour policy that goes right with probability ``p_right``.

    Vectorised over trajectories (DeepSea is deterministic); returns their :class:`Counts`.
    """
    H, S, A = mdp.H, mdp.S, mdp.A
    c = Counts.empty(H, S, A)
    s = np.full(n_traj, mdp.s0)
    for h in range(H):
        go_right = rng.random(n_traj) < p_right
        a = np.where(go_right, mdp.right[h, s], 1 - mdp.right[h, s])
        s2 = mdp.P[h, s, a].argmax(-1)  # deterministic transitions
        np.add.at(c.n[h], (s, a), 1)
        np.add.at(c.r_sum[h], (s, a), mdp.R[h, s, a])
        np.add.at(c.nxt[h], (s, a, s2), 1)
        s = s2
    return c


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def run_actor_critic(
    mdp: FiniteMDP, cfg: ACConfig, rng: np.random.Generator, counts: Counts | None = None
) -> ACResult:
    r"""Run one agent for ``cfg.episodes`` episodes and track its regret exactly.

    - ``"optimistic"`` (the paper's algorithm, tabular): the critic ``f`` (:func:`optimistic_critic`) is
      recomputed only when some count :math:`n_h(s,a)` has doubled since the last switch (rare
      switching, at most :math:`HSA(\log_2T+1)` switches); at each switch the actor is reset to
      uniform; in between it runs exponential weights on the fixed critic,
      :math:`\pi^{(t+1)}_h(a|s)\propto\pi^{(t)}_h(a|s)\,e^{\eta f_h(s,a)}`, at every state.
    - ``"pessimistic"``: the same with ``bonus = 0`` and pessimistic unvisited pairs.
    - ``"ucbvi"``: greedy on the optimistic critic, recomputed every episode (value-based reference).
    - ``"naive"``: on-policy actor-critic: the critic estimates :math:`Q^\pi` by expected-SARSA TD on
      the visited pairs, the actor does the same exponential-weights step on it, and acts ε-greedily.

    ``counts``: offline data to initialise the critic with (hybrid RL); copied, not modified.
    """
    if cfg.kind not in ("optimistic", "pessimistic", "ucbvi", "naive"):
        raise ValueError(f"unknown agent {cfg.kind!r}")
    H, S, A = mdp.H, mdp.S, mdp.A
    _, V_star = backward_induction(mdp)
    v_star = V_star[0, mdp.s0]
    c = Counts.empty(H, S, A) if counts is None else Counts(counts.n.copy(), counts.r_sum.copy(), counts.nxt.copy())
    bonus = 0.0 if cfg.kind == "pessimistic" else cfg.bonus
    unvisited = cfg.unvisited if cfg.kind == "pessimistic" else None

    def critic():
        return optimistic_critic(c, bonus, cfg.v_max, unvisited)

    logits = np.zeros((H, S, A))
    f = critic() if cfg.kind != "naive" else np.zeros((H, S, A))
    n_at_switch = c.n.copy()
    switches = []
    played = np.zeros((cfg.episodes, H, S, A))  # the policy of every episode, evaluated exactly at the end
    for t in range(cfg.episodes):
        if cfg.kind == "ucbvi":
            pi = greedy(f)
        else:
            pi = _softmax(logits)
            if cfg.kind == "naive":
                pi = (1 - cfg.epsilon) * pi + cfg.epsilon / A
        played[t] = pi
        traj = rollout(mdp, pi, rng)
        c.add(traj)
        if cfg.kind == "naive":
            for h, (s, a, r, s2) in enumerate(traj):
                v_next = (pi[h + 1, s2] * f[h + 1, s2]).sum() if h + 1 < H else 0.0
                f[h, s, a] += cfg.td_lr * (r + v_next - f[h, s, a])
            logits += cfg.eta * f
        elif cfg.kind == "ucbvi":
            f = critic()
        else:
            # switch when a count visited this episode has doubled since the last switch (or was 0)
            if cfg.always_switch or any(c.n[h, s, a] >= 2 * n_at_switch[h, s, a] for h, (s, a, _, _) in enumerate(traj)):
                f = critic()
                n_at_switch = c.n.copy()
                logits[:] = 0.0  # actor reset to uniform
                switches.append(t + 1)
            logits += cfg.eta * f
    # output policy: greedy on the agent's own estimate of Q* (the plug-in critic without bonus,
    # unvisited pairs 0) for the model-based agents; greedy on the TD critic for the naive one
    final_pi = greedy(f) if cfg.kind == "naive" else greedy(optimistic_critic(c, 0.0, cfg.v_max, 0.0))
    final = evaluate_policy(mdp, final_pi)[1][0, mdp.s0]
    regret = v_star - policy_values(mdp, played)
    return ACResult(regret=regret, switches=switches, final_return=float(final), optimal_return=float(v_star))


def loglog_slope(cum_regret: np.ndarray, start: int, stop: int | None = None) -> float:
    """Least-squares slope of log(cumulative regret) against log(episode) over episodes ``start..stop``."""
    stop = len(cum_regret) if stop is None else stop
    t = np.arange(start, stop + 1)
    y = cum_regret[start - 1 : stop]
    return float(np.polyfit(np.log(t), np.log(np.maximum(y, 1e-12)), 1)[0])
