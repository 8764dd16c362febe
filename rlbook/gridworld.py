r"""A small gridworld MDP solved exactly: soft value iteration, policy evaluation, segment sampling.

Written for the CPL chapter (Hejna et al. 2023, arXiv 2310.13639), whose preference model is
over *segments* of trajectories in a general MDP, not over whole responses of a token tree
(that is :mod:`rlbook.mdp`).

The grid is a list of strings: ``.`` free cell, ``L`` lava (an extra cost per step spent
there), ``G`` the goal (absorbing: every action stays, reward 0), ``#`` wall (not a state).
Actions ``0..3`` = up, right, down, left; a move into a wall or off the grid stays put.
Transitions are deterministic. The reward of ``(s, a)`` is ``step_reward`` (plus
``lava_reward`` if ``s`` is lava, plus ``goal_reward`` if ``a`` enters the goal).

Maximum-entropy RL with temperature :math:`\alpha` (Ziebart 2010; CPL Sec. 2-3):

.. math:: Q^*(s,a)=r(s,a)+\gamma V^*(s'),\quad V^*(s)=\alpha\log\sum_a e^{Q^*(s,a)/\alpha},\quad
          \pi^*(a|s)=e^{(Q^*(s,a)-V^*(s))/\alpha},\quad A^*(s,a)=Q^*(s,a)-V^*(s)=\alpha\log\pi^*(a|s).

Shapes: ``S`` states, ``A = 4`` actions; tabular policies are log-probability tables ``logp: (S, A)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
"""(row, column) offsets of the actions up, right, down, left"""
ARROWS = "↑→↓←"
"""one character per action, for printing policies"""


@dataclass(frozen=True)
class GridWorld:
    """A deterministic gridworld (see the module docstring)."""

    layout: tuple
    """the rows of the grid, as strings"""
    cells: np.ndarray
    """``(S, 2)`` int: (row, column) of every state"""
    next_state: np.ndarray
    """``(S, A)`` int: the state each action leads to"""
    reward: np.ndarray
    """``(S, A)``: r(s, a)"""
    gamma: float
    """discount"""
    goal: int
    """index of the absorbing goal state"""
    start: np.ndarray
    """``(S,)`` start distribution of segments and of evaluation (uniform over non-goal states)"""

    @property
    def n_states(self) -> int:
        return len(self.cells)

    @property
    def n_actions(self) -> int:
        return self.next_state.shape[1]

    def kind(self, s: int) -> str:
        """The layout character of state ``s``."""
        r, c = self.cells[s]
        return self.layout[r][c]

    def transition_matrix(self) -> np.ndarray:
        """``(S, A, S)`` one-hot transition probabilities."""
        P = np.zeros((self.n_states, self.n_actions, self.n_states))
        P[np.arange(self.n_states)[:, None], np.arange(self.n_actions)[None, :], self.next_state] = 1.0
        return P


def make_gridworld(
    layout, gamma: float = 0.9, step_reward: float = -1.0, lava_reward: float = -4.0, goal_reward: float = 5.0
) -> GridWorld:
    """Build a :class:`GridWorld` from ``layout`` (list of equal-length strings, exactly one ``G``)."""
    layout = tuple(layout)
    if len({len(r) for r in layout}) != 1:
        raise ValueError("layout rows must have equal length")
    if sum(r.count("G") for r in layout) != 1:
        raise ValueError("layout needs exactly one goal 'G'")
    if not 0 < gamma < 1:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    bad = set("".join(layout)) - set(".LG#")
    if bad:
        raise ValueError(f"unknown layout characters {sorted(bad)}: use . L G #")
    cells = [(r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch != "#"]
    index = {rc: i for i, rc in enumerate(cells)}
    S = len(cells)
    goal = next(i for i, (r, c) in enumerate(cells) if layout[r][c] == "G")
    nxt = np.zeros((S, 4), dtype=np.int64)
    rew = np.zeros((S, 4))
    for i, (r, c) in enumerate(cells):
        for a, (dr, dc) in enumerate(MOVES):
            if i == goal:
                nxt[i, a] = i
                continue
            j = index.get((r + dr, c + dc), i)
            nxt[i, a] = j
            rew[i, a] = step_reward + (lava_reward if layout[r][c] == "L" else 0.0) + (goal_reward if j == goal else 0.0)
    start = np.ones(S) / (S - 1)
    start[goal] = 0.0
    return GridWorld(layout, np.array(cells), nxt, rew, float(gamma), goal, start)


@dataclass(frozen=True)
class SoftSolution:
    """The exact maximum-entropy solution of a :class:`GridWorld` at temperature ``alpha``."""

    alpha: float
    """entropy temperature α"""
    Q: np.ndarray
    """``(S, A)`` Q*"""
    V: np.ndarray
    """``(S,)`` V*"""
    logp: np.ndarray
    """``(S, A)`` log π*"""

    @property
    def adv(self) -> np.ndarray:
        """``(S, A)`` optimal advantage A* = Q* - V* (= α log π*)."""
        return self.Q - self.V[:, None]


def soft_value_iteration(g: GridWorld, alpha: float, tol: float = 1e-12, max_iter: int = 100_000) -> SoftSolution:
    r"""Iterate :math:`V\leftarrow\alpha\log\sum_a\exp\big((r(s,a)+\gamma V(s'))/\alpha\big)` to convergence (a γ-contraction)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    V = np.zeros(g.n_states)
    for _ in range(max_iter):
        Q = g.reward + g.gamma * V[g.next_state]
        m = Q.max(1)
        V_new = m + alpha * np.log(np.exp((Q - m[:, None]) / alpha).sum(1))
        if np.max(np.abs(V_new - V)) < tol:
            V = V_new
            break
        V = V_new
    Q = g.reward + g.gamma * V[g.next_state]
    logp = (Q - V[:, None]) / alpha
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))  # renormalise away the last tol
    return SoftSolution(float(alpha), Q, V, logp)


def policy_evaluation(g: GridWorld, logp: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    r"""Exact state values of a policy, by one linear solve: ``(S,)``.

    .. math:: V^\pi = (I-\gamma P_\pi)^{-1}\Big(\sum_a\pi(a|s)\big(r(s,a)-\alpha\log\pi(a|s)\big)\Big)

    ``alpha = 0``: the plain discounted return; ``alpha > 0``: the maximum-entropy (soft) return,
    which π* maximises at the same α. ``logp: (S, A)``.
    """
    pi = np.exp(logp)
    r_pi = (pi * (g.reward - alpha * logp)).sum(1)
    P_pi = np.zeros((g.n_states, g.n_states))
    np.add.at(P_pi, (np.repeat(np.arange(g.n_states), g.n_actions), g.next_state.ravel()), pi.ravel())
    return np.linalg.solve(np.eye(g.n_states) - g.gamma * P_pi, r_pi)


def expected_return(g: GridWorld, logp: np.ndarray, alpha: float = 0.0) -> float:
    """``start · V^π``: the expected (soft if ``alpha > 0``) discounted return from the start distribution."""
    return float(g.start @ policy_evaluation(g, logp, alpha))


def sample_segments(
    g: GridWorld, logps: np.ndarray, which: np.ndarray, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Roll out ``n = len(which)`` segments of ``length`` steps from the start distribution.

    ``logps: (M, S, A)`` behaviour policies; segment ``i`` follows policy ``which[i]``.
    Returns ``states, actions: (n, length)`` int (state before each action, and the action).
    """
    n = len(which)
    s = rng.choice(g.n_states, size=n, p=g.start)
    states = np.zeros((n, length), dtype=np.int64)
    actions = np.zeros((n, length), dtype=np.int64)
    probs = np.exp(logps)
    for t in range(length):
        p = probs[which, s]  # (n, A)
        cdf = np.cumsum(p, 1)
        a = np.minimum((rng.random((n, 1)) * cdf[:, -1:] > cdf).sum(1), g.n_actions - 1)
        states[:, t], actions[:, t] = s, a
        s = g.next_state[s, a]
    return states, actions


def epsilon_soft(logp: np.ndarray, eps: float) -> np.ndarray:
    """``(S, A)`` log-probs of the policy that takes the greedy action of ``logp`` w.p. ``1 - eps``, else uniform."""
    A = logp.shape[1]
    p = np.full(logp.shape, eps / A)
    p[np.arange(len(logp)), logp.argmax(1)] += 1 - eps
    with np.errstate(divide="ignore"):
        return np.log(p)  # -inf for the other actions when eps = 0


def greedy_arrows(g: GridWorld, logp: np.ndarray) -> list[str]:
    """The greedy action of every cell as an arrow (``G`` goal, ``#`` wall), one string per row."""
    rows = [list(r) for r in g.layout]
    for s, (r, c) in enumerate(g.cells):
        rows[r][c] = "G" if s == g.goal else ARROWS[int(np.argmax(logp[s]))]
    return ["".join(r) for r in rows]
