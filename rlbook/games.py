r"""Preference games: general (possibly intransitive) preferences as two-player games.

A *preference matrix* ``P: (K, K)`` over ``K`` responses of one prompt holds
:math:`P[y, y'] = \mathcal P(y\succ y')`, with :math:`P + P^\top = 1` (so the diagonal is
1/2). A policy is a probability vector ``pi: (K,)``. The chapters of Part 3 (SPO, DNO,
INPO) all build on the same few exact quantities:

- the win rate of each response against a policy, :math:`\mathcal P(y\succ\pi)=(P\pi)_y`;
- the *Minimax (von Neumann) winner*
  :math:`\arg\max_p\min_q p^\top P q` of the symmetric zero-sum game (value 1/2),
  by linear programming (:func:`minimax_winner`);
- the exploitability :math:`\max_y\mathcal P(y\succ\pi)-\tfrac12\ge 0` (zero exactly at a
  minimax winner);
- the KL-regularised game of INPO,
  :math:`J(\pi,\pi')=\pi^\top P\pi'-\tau\,\mathrm{KL}(\pi\|\pi_{ref})+\tau\,\mathrm{KL}(\pi'\|\pi_{ref})`,
  its Nash equilibrium, its duality gap, and the online-mirror-descent step in closed form;
- multiplicative weights (Hedge) in self-play, the no-regret learner behind SPO and DNO.

Everything is numpy and exact; the chapters add sampling and learning on top.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- matrices


def check_preference_matrix(P: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    r"""Return ``P`` as a float array after checking :math:`P+P^\top=1` and :math:`0\le P\le 1`."""
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"a preference matrix must be square (K, K), got {P.shape}")
    if not np.allclose(P + P.T, 1.0, atol=atol):
        raise ValueError("a preference matrix needs P[y, y'] + P[y', y] = 1")
    if P.min() < -atol or P.max() > 1 + atol:
        raise ValueError("preferences must lie in [0, 1]")
    return P


def from_beats(K: int, beats: dict[tuple[int, int], float]) -> np.ndarray:
    r"""Build ``P: (K, K)`` from ``{(y, y'): P(y ≻ y')}``; the other entries are 1/2, and ``P[y', y] = 1 - P[y, y']``."""
    P = np.full((K, K), 0.5)
    for (a, b), p in beats.items():
        if a == b:
            raise ValueError("a response cannot beat itself")
        P[a, b], P[b, a] = p, 1.0 - p
    return check_preference_matrix(P)


def rock_paper_scissors(p_win: float = 1.0) -> np.ndarray:
    """The 3-cycle 0 ≻ 1 ≻ 2 ≻ 0, each with probability ``p_win`` (``(3, 3)``); its minimax winner is uniform."""
    return from_beats(3, {(0, 1): p_win, (1, 2): p_win, (2, 0): p_win})


def intransitive_game(
    cycle_win: float = 0.9,
    fav_vs_cycle: float = 0.35,
    fav_vs_dominated: float = 0.99,
    dominated_vs_cycle: float = 0.45,
    dominated_tie: float = 0.5,
) -> np.ndarray:
    r"""The 6-response intransitive game of the Part 3 chapters (``(6, 6)``).

    - responses 0, 1, 2: a Condorcet cycle (0 ≻ 1 ≻ 2 ≻ 0 with probability ``cycle_win``);
    - response 3: a "BT favourite" that crushes the dominated pair (``fav_vs_dominated``)
      but loses to every cycle member (:math:`P(3\succ c)=` ``fav_vs_cycle`` < 1/2);
    - responses 4, 5: a dominated pair (``dominated_vs_cycle`` against each cycle member,
      ``dominated_tie`` between themselves).

    A Bradley-Terry fit ranks 3 first (its average win rate is the highest), while the
    minimax winner is the uniform cycle. INPO's catalog game: the defaults; SPO's:
    ``cycle_win=0.8, fav_vs_cycle=0.3``.
    """
    beats = {(0, 1): cycle_win, (1, 2): cycle_win, (2, 0): cycle_win}
    for c in range(3):
        beats[(3, c)] = fav_vs_cycle
        beats[(4, c)] = beats[(5, c)] = dominated_vs_cycle
    beats[(3, 4)] = beats[(3, 5)] = fav_vs_dominated
    beats[(4, 5)] = dominated_tie
    return from_beats(6, beats)


def bt_plus_cycle(scores: np.ndarray, top: int = 3, bonus: float = 0.3, clip: float = 0.01) -> np.ndarray:
    r"""Bradley-Terry on ``scores: (K,)`` plus a rock-paper-scissors bonus among the ``top`` best (DNO's oracle).

    :math:`P(y\succ y')=\sigma(s_y-s_{y'})`; then, for the ``top`` responses ranked by score
    :math:`y_{(1)}, y_{(2)}, y_{(3)}`, the cycle :math:`y_{(1)}\succ y_{(2)}\succ y_{(3)}\succ y_{(1)}`
    gets ``+bonus`` on the winner's side (and ``-bonus`` on the loser's), clipped to
    ``[clip, 1-clip]``. With ``bonus`` large enough, the third-best response beats the best:
    the preference is intransitive and no score explains it.
    """
    s = np.asarray(scores, dtype=float)
    P = 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))
    order = np.argsort(-s)[:top]
    for i in range(top):
        a, b = order[i], order[(i + 1) % top]
        P[a, b] += bonus
        P[b, a] -= bonus
    P = np.clip(P, clip, 1 - clip)
    np.fill_diagonal(P, 0.5)
    return check_preference_matrix(P)


# ----------------------------------------------------------------------------- the unregularised game


def win_rates(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    r""":math:`\mathcal P(y\succ\pi)=\sum_{y'}\pi(y')P[y,y']` for every ``y``.

    ``P: (K, K)`` or one matrix per prompt ``(X, K, K)``; ``pi: (..., K)`` → ``(..., K)``.
    """
    return np.einsum("...ij,...j->...i", np.asarray(P), np.asarray(pi))


def preference(P: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    r""":math:`\mathcal P(p\succ q)=p^\top P q`: the probability that a draw of ``p`` beats a draw of ``q``."""
    return float(np.asarray(p) @ np.asarray(P) @ np.asarray(q))


def exploitability(P: np.ndarray, pi: np.ndarray) -> float:
    r""":math:`\max_y\mathcal P(y\succ\pi)-\tfrac12` (SPO's exploit; ``≥ 0``, and 0 iff ``pi`` is a minimax winner)."""
    return float(win_rates(P, pi).max() - 0.5)


def minimax_winner(P: np.ndarray) -> np.ndarray:
    r"""A Minimax (von Neumann) winner :math:`\arg\max_{p\in\Delta}\min_{q\in\Delta} p^\top P q` by linear programming.

    SPO (arXiv 2401.04056), Sec. 3, the Minimax Winner definition ( the "Minimax Winner" of social choice).
    Write it as: maximise ``v`` s.t. :math:`(P^\top p)_{y'}\ge v` for every ``y'``,
    :math:`\sum p=1,\ p\ge 0` (``scipy.optimize.linprog``, HiGHS). The game is symmetric
    (:math:`P^\top = 1-P`), so the value is 1/2. Returns ``p: (K,)``. Where the winner is
    not unique, one of them.
    """
    from scipy.optimize import linprog

    P = check_preference_matrix(P)
    K = P.shape[0]
    c = np.zeros(K + 1)
    c[-1] = -1.0  # maximise v
    A_ub = np.hstack([-P.T, np.ones((K, 1))])  # v - (P^T p)_{y'} <= 0
    A_eq = np.hstack([np.ones((1, K)), np.zeros((1, 1))])
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(K), A_eq=A_eq, b_eq=[1.0],
                  bounds=[(0, None)] * K + [(None, None)], method="highs")
    if not res.success:  # pragma: no cover - an LP on the simplex is always feasible
        raise RuntimeError(res.message)
    p = np.clip(res.x[:K], 0, None)
    return p / p.sum()


def tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance ``0.5 * sum |p - q|`` along the last axis (a float for vectors)."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1).max())


# ----------------------------------------------------------------------------- no-regret self-play


def _normalise_log(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def mwu_step(P: np.ndarray, pi: np.ndarray, lr: float) -> np.ndarray:
    r"""One multiplicative-weights (Hedge) self-play step, :math:`\pi'\propto\pi\,e^{\,lr\,\mathcal P(y\succ\pi)}`.

    With ``lr = 1/η`` this is DNO's soft policy iteration (arXiv 2404.03715, Algorithm 1):
    :math:`\pi_{t+1}\propto\pi_t\exp(r_t/\eta)`, :math:`r_t(y)=\mathcal P(y\succ\pi_t)`.
    SPO uses the same reward (the win proportion against the current policy) with any
    no-regret learner. ``pi: (K,)`` or ``(X, K)`` with ``P`` broadcast.
    """
    return _normalise_log(np.log(np.clip(pi, 1e-300, None)) + lr * win_rates(P, pi))


def self_play(P: np.ndarray, pi0: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """Iterates ``(steps + 1, K)`` of :func:`mwu_step` from ``pi0`` (row 0 is ``pi0``)."""
    out = [np.asarray(pi0, dtype=float)]
    for _ in range(steps):
        out.append(mwu_step(P, out[-1], lr))
    return np.stack(out)


def running_average(iterates: np.ndarray) -> np.ndarray:
    """``(T, ...)`` → the running mean over the first axis (the *average iterate* of a no-regret learner)."""
    return np.cumsum(iterates, axis=0) / np.arange(1, len(iterates) + 1).reshape(-1, *([1] * (iterates.ndim - 1)))


# ----------------------------------------------------------------------------- the KL-regularised game (INPO)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    r""":math:`\mathrm{KL}(p\|q)` of two vectors (0 log 0 = 0)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = p > 0
    return float((p[m] * (np.log(p[m]) - np.log(q[m]))).sum())


def regularised_payoff(P: np.ndarray, pi: np.ndarray, pi2: np.ndarray, ref: np.ndarray, tau: float) -> float:
    r"""INPO's game payoff :math:`J(\pi,\pi')=\mathcal P(\pi\succ\pi')-\tau\mathrm{KL}(\pi\|\pi_{ref})+\tau\mathrm{KL}(\pi'\|\pi_{ref})`.

    arXiv 2407.00617, Sec. 2-3, the KL-regularised game (per prompt). Player 1 (``pi``) maximises, player 2 (``pi2``) minimises.
    """
    return preference(P, pi, pi2) - tau * kl(pi, ref) + tau * kl(pi2, ref)


def best_response_value(P: np.ndarray, pi: np.ndarray, ref: np.ndarray, tau: float) -> float:
    r""":math:`\max_{\pi'}\ \pi'^\top P\pi-\tau\mathrm{KL}(\pi'\|\pi_{ref})=\tau\log\sum_y\pi_{ref}(y)e^{\mathcal P(y\succ\pi)/\tau}`."""
    z = np.log(np.clip(ref, 1e-300, None)) + win_rates(P, pi) / tau
    m = z.max()
    return float(tau * (m + np.log(np.exp(z - m).sum())))


def duality_gap(P: np.ndarray, pi: np.ndarray, ref: np.ndarray, tau: float) -> float:
    r"""Duality gap of ``pi`` in the KL-regularised game: :math:`\max_{\pi'}J(\pi',\pi)-\min_{\pi'}J(\pi,\pi')`.

    By symmetry (:math:`P^\top=1-P`) the two terms mirror each other and
    :math:`\mathrm{gap}(\pi)=2\big[\max_{\pi'}(\pi'^\top P\pi-\tau\mathrm{KL}(\pi'\|\pi_{ref}))+\tau\mathrm{KL}(\pi\|\pi_{ref})\big]-1`
    (:func:`best_response_value`). It is ``≥ 0`` and zero exactly at the regularised Nash equilibrium.
    """
    return 2.0 * (best_response_value(P, pi, ref, tau) + tau * kl(pi, ref)) - 1.0


def omd_step(P: np.ndarray, pi: np.ndarray, ref: np.ndarray, tau: float, eta: float) -> np.ndarray:
    r"""INPO's online-mirror-descent step in closed form (arXiv 2407.00617, Sec. 3, the OMD update):

    .. math:: \pi_{t+1}(y)\propto\pi_t(y)^{1-\eta\tau}\,\pi_{ref}(y)^{\eta\tau}\exp\big(\eta\,\mathcal P(y\succ\pi_t)\big).

    ``pi, ref: (K,)`` → ``(K,)``. Needs :math:`\eta\tau\le 1`.
    """
    if not 0 < eta * tau <= 1:
        raise ValueError(f"need 0 < eta*tau <= 1, got {eta * tau}")
    lg = (1 - eta * tau) * np.log(np.clip(pi, 1e-300, None)) + eta * tau * np.log(ref) + eta * win_rates(P, pi)
    return _normalise_log(lg)


def omd_iterates(P: np.ndarray, pi0: np.ndarray, ref: np.ndarray, tau: float, eta: float, steps: int) -> np.ndarray:
    """``(steps + 1, K)`` iterates of :func:`omd_step` from ``pi0``."""
    out = [np.asarray(pi0, dtype=float)]
    for _ in range(steps):
        out.append(omd_step(P, out[-1], ref, tau, eta))
    return np.stack(out)


def regularised_nash(P: np.ndarray, ref: np.ndarray, tau: float, tol: float = 1e-12, max_iter: int = 200_000) -> np.ndarray:
    r"""The Nash equilibrium of the KL-regularised game, the fixed point :math:`\pi^*\propto\pi_{ref}e^{\mathcal P(y\succ\pi^*)/\tau}`.

    Found by the OMD iteration (:func:`omd_step`) with a step size :math:`\eta=\min(1/\tau,\,\tau/\|P-\tfrac12\|^2)`
    small enough to contract, until the iterates move less than ``tol`` (the last-iterate
    convergence that INPO proves); the result is checked by its duality gap.
    """
    P = check_preference_matrix(P)
    ref = np.asarray(ref, float)
    eta = min(1.0 / tau, 0.5 * tau / max(np.abs(P - 0.5).max() ** 2, 1e-12))
    pi = ref.copy()
    for _ in range(max_iter):
        new = omd_step(P, pi, ref, tau, eta)
        if np.abs(new - pi).max() < tol:
            pi = new
            break
        pi = new
    gap = duality_gap(P, pi, ref, tau)
    if gap > 1e-8:
        raise RuntimeError(f"the OMD iteration did not converge (duality gap {gap:.2e})")
    return pi
