"""Jiang-style portfolio simulator, synthetic markets, and two rewards.

The simulator follows Jiang, Xu & Liang (2017, arXiv 1706.10059), as used by the
official code of Huang, Zhou & Song (2024, arXiv 2412.18563,
github.com/watermeloncq/drl-dynamic-optimization-portfolio-SB3py37,
``rl_portfolio_management/environments/portfolio.py``, class ``PortfolioSim``).

Notation (one step = one trading day; asset 0 is cash, assets 1..N are risky):

- ``y_t``  (N+1,) price relatives of day t, ``y_{t,i} = close_{t,i} / close_{t-1,i}``, ``y_{t,0} = 1``
- ``w_{t-1}`` (N+1,) the weights held over day t (on the simplex)
- ``w'_t = (y_t * w_{t-1}) / (y_t . w_{t-1})``  the weights drifted by the day's prices (Jiang eq. 7)
- ``c_t = kappa * sum_{i>=1} |w_t,i - w'_t,i|`` the proportional cost of rebalancing to ``w_t``
  (Jiang eq. 16's linear approximation, cash excluded as in the official code)
- ``p_t = p_{t-1} (y_t . w_{t-1}) (1 - c_t)``  wealth (Jiang eqs. 2, 11)

Timing used here: at the close of day t the agent sees the relatives up to ``y_t``,
rebalances from the drifted weights to its action ``w_t`` (paying ``c_t``), and holds
``w_t`` over day t+1. The per-step log growth is ``log(1 - c_t) + log(y_{t+1} . w_t)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- simulator


def with_cash(relatives: np.ndarray) -> np.ndarray:
    """Prepend the cash relative 1: ``(..., N) -> (..., N+1)``."""
    relatives = np.asarray(relatives, dtype=float)
    return np.concatenate([np.ones(relatives.shape[:-1] + (1,)), relatives], axis=-1)


def drift_weights(w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights after prices move: ``w' = (y * w) / (y . w)`` (Jiang eq. 7).

    ``w, y: (..., N+1)`` (cash first, ``y[..., 0] = 1``) -> ``(..., N+1)``, sums to 1.
    """
    grown = y * w
    return grown / grown.sum(-1, keepdims=True)


def transaction_cost(w_drift: np.ndarray, w_new: np.ndarray, kappa: float) -> np.ndarray:
    """Proportional cost ``c = kappa * sum_{i>=1} |w_new_i - w_drift_i|`` (Jiang eq. 16, linearised).

    Cash (index 0) is excluded "to avoid double counting", exactly as in the official
    ``PortfolioSim._step``. ``w_drift, w_new: (..., N+1)`` -> ``(...)``.
    """
    return kappa * np.abs(w_new[..., 1:] - w_drift[..., 1:]).sum(-1)


def turnover(w_drift: np.ndarray, w_new: np.ndarray) -> np.ndarray:
    """One-step turnover ``sum_{i>=1} |w_new_i - w_drift_i|`` (risky assets): ``(..., N+1) -> (...)``."""
    return np.abs(w_new[..., 1:] - w_drift[..., 1:]).sum(-1)


def simulate(y: np.ndarray, weights: np.ndarray, kappa: float, w0: np.ndarray | None = None) -> dict:
    """Run fixed decisions through the simulator.

    ``y: (..., T, N+1)`` relatives of days 1..T (cash first); ``weights: (..., T, N+1)``, where
    ``weights[..., t, :]`` is chosen at the close *before* ``y[..., t, :]`` and held over that day.
    Leading axes are independent runs. ``w0`` is the portfolio held before the first decision
    (default: all cash).

    Returns ``log_growth (..., T)`` = ``log(1-c_t) + log(y_t . w_t)``, ``wealth (..., T+1)``
    (starts at 1), ``cost (..., T)``, ``turnover (..., T)``, ``drifted (..., T, N+1)``.
    """
    y = np.asarray(y, dtype=float)
    weights = np.asarray(weights, dtype=float)
    T, n1 = y.shape[-2:]
    cur = np.broadcast_to(np.eye(n1)[0] if w0 is None else np.asarray(w0, dtype=float), y.shape[:-2] + (n1,))
    lg, cost, turn = np.empty(y.shape[:-1]), np.empty(y.shape[:-1]), np.empty(y.shape[:-1])
    drifted = np.empty(y.shape)
    for t in range(T):
        w, yt = weights[..., t, :], y[..., t, :]
        turn[..., t] = turnover(cur, w)
        cost[..., t] = kappa * turn[..., t]
        lg[..., t] = np.log1p(-cost[..., t]) + np.log((yt * w).sum(-1))
        cur = drift_weights(w, yt)
        drifted[..., t, :] = cur
    zero = np.zeros(y.shape[:-2] + (1,))
    wealth = np.exp(np.concatenate([zero, np.cumsum(lg, -1)], -1))
    return dict(log_growth=lg, wealth=wealth, cost=cost, turnover=turn, drifted=drifted)


# ----------------------------------------------------------------------------- rewards


def log_return_reward(log_growth: np.ndarray, horizon: int) -> np.ndarray:
    """The base simulator's reward ``r_t = log(p_t / p_{t-1}) / T`` (Jiang eq. 22).

    The official ``PortfolioSim._step`` returns ``reward = r1 / self.steps``; the episode
    return is the average log growth per step. ``log_growth: (E,)`` -> ``(E,)``.
    """
    return log_growth / horizon


def running_sharpe(s1: np.ndarray, s2: np.ndarray, n: np.ndarray, annualisation: float = 252.0,
                   eps: float = 1e-8) -> np.ndarray:
    """Annualised Sharpe of the returns seen so far, from running sums.

    ``S_t = sqrt(A) * mean(r_{1:t}) / (std(r_{1:t}) + eps)`` with the population std
    (``np.std``, ddof=0) and zero risk-free rate, as in the official ``util.sharpe``.
    ``s1 = sum r``, ``s2 = sum r^2``, ``n`` = count, each ``(E,)``. Defined as 0 while ``n < 2``.
    """
    n_safe = np.maximum(n, 1)
    mean = s1 / n_safe
    var = np.maximum(s2 / n_safe - mean**2, 0.0)
    out = np.sqrt(annualisation) * mean / (np.sqrt(var) + eps)
    return np.where(n >= 2, out, 0.0)


def running_sharpe_reward(s1: np.ndarray, s2: np.ndarray, n: np.ndarray, horizon: int,
                          annualisation: float = 252.0, eps: float = 1e-8) -> np.ndarray:
    """The 'average Sharpe ratio' reward ``r_t = S_t / T`` (official ``maxAVGSharpe`` notebooks).

    In the official notebook the simulator keeps the log returns ``r_1..r_t`` of the
    episode and returns ``reward = sharpe(np.array(self.ret)) / self.steps``, so the
    episode return is ``J = (1/T) sum_t S_t``: the *time average of the running Sharpe*,
    not the Sharpe of the whole episode. ``(E,) -> (E,)``.
    """
    return running_sharpe(s1, s2, n, annualisation, eps) / horizon


class LogReturnReward:
    """Stateless wrapper of :func:`log_return_reward` with the env's reward interface."""

    def __init__(self, horizon: int, scale: float = 1.0):
        self.horizon, self.scale = horizon, scale

    def reset(self, mask: np.ndarray) -> None:
        pass

    def __call__(self, log_growth: np.ndarray) -> np.ndarray:
        return self.scale * log_return_reward(log_growth, self.horizon)


class RunningSharpeReward:
    """Stateful wrapper of :func:`running_sharpe_reward`: keeps ``sum r``, ``sum r^2``, ``n`` per env."""

    def __init__(self, horizon: int, scale: float = 1.0, annualisation: float = 252.0,
                 official_start: bool = True):
        self.horizon, self.scale, self.annualisation = horizon, scale, annualisation
        self.official_start = official_start
        self.s1 = self.s2 = self.n = None

    def reset(self, mask: np.ndarray) -> None:
        if self.s1 is None or self.s1.shape != mask.shape:
            self.s1, self.s2, self.n = (np.zeros(mask.shape) for _ in range(3))
        self.s1[mask] = self.s2[mask] = 0.0
        # the official env's reset() takes one all-cash step first, so every episode's return
        # list starts with a zero return: n starts at 1. This bounds |S_t| <= sqrt(A (t-1)).
        self.n[mask] = 1.0 if self.official_start else 0.0

    def __call__(self, log_growth: np.ndarray) -> np.ndarray:
        self.s1 += log_growth
        self.s2 += log_growth**2
        self.n += 1
        r = running_sharpe_reward(self.s1, self.s2, self.n, self.horizon, self.annualisation)
        return self.scale * r


# ----------------------------------------------------------------------------- markets


@dataclass
class Market:
    """A market path: price relatives of the risky assets and (for synthetic ones) the regime."""

    relatives: np.ndarray
    """(T, N) daily price relatives close_t / close_{t-1} of the risky assets (no cash column)"""
    regime: np.ndarray | None = None
    """(T,) index of the leading asset on each day (synthetic regime market), else None"""
    names: tuple[str, ...] = ()
    """asset names (tickers) where known"""


def _asset_vols(n_assets: int, lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, n_assets)


def regime_market(n_steps: int, n_assets: int, rng: np.random.Generator, p_stay: float = 0.98,
                  mu_base: float = 0.0002, mu_lead: float = 0.002, factor_vol: float = 0.008,
                  idio_vol: tuple[float, float] = (0.010, 0.025)) -> Market:
    """Regime-switching one-factor market.

    A hidden Markov regime ``k_t`` (stays with probability ``p_stay``, else jumps to a
    uniformly drawn other asset) names the one asset with extra drift ``mu_lead``. Log
    returns: ``x_{t,i} = mu_base + mu_lead * 1[i = k_t] + f_t + sigma_i * eps_{t,i}``,
    ``f_t ~ N(0, factor_vol^2)`` common, ``sigma_i`` linear in ``idio_vol``. Returns
    ``Market(relatives=exp(x): (T, N), regime: (T,))``.
    """
    k = np.empty(n_steps, dtype=int)
    k[0] = rng.integers(n_assets)
    switch = rng.random(n_steps) > p_stay
    jumps = rng.integers(1, n_assets, size=n_steps)
    for t in range(1, n_steps):
        k[t] = (k[t - 1] + jumps[t]) % n_assets if switch[t] else k[t - 1]
    sig = _asset_vols(n_assets, *idio_vol)
    f = factor_vol * rng.standard_normal((n_steps, 1))
    x = mu_base + mu_lead * (np.arange(n_assets)[None, :] == k[:, None]) + f
    x = x + sig * rng.standard_normal((n_steps, n_assets))
    return Market(relatives=np.exp(x), regime=k)


def iid_market(n_steps: int, n_assets: int, rng: np.random.Generator, mu_base: float = 0.0002,
               mu_lead: float = 0.002, factor_vol: float = 0.008,
               idio_vol: tuple[float, float] = (0.010, 0.025)) -> Market:
    """The negative control: same factor and volatilities, no regimes, i.i.d. over time.

    Every asset has the *unconditional* drift of the regime market,
    ``mu_base + mu_lead / N``, so the past carries no information about the future.
    """
    sig = _asset_vols(n_assets, *idio_vol)
    f = factor_vol * rng.standard_normal((n_steps, 1))
    x = mu_base + mu_lead / n_assets + f + sig * rng.standard_normal((n_steps, n_assets))
    return Market(relatives=np.exp(x), regime=None)


# ----------------------------------------------------------------------------- environment


class PortfolioEnv:
    """Vectorised long-only portfolio environment (gymnasium-style API, no gymnasium import).

    ``num_envs`` parallel episodes of ``episode_len`` trading days. Training episodes start
    at random days (the paper's random 128-day windows); with ``random_start=False`` each
    episode starts at ``first_day`` (a backtest; an array gives each env its own start).

    - observation ``(E, N*L + N+1)``: for each risky asset the log price of the ``L = window``
      previous closes relative to today's close, ``log(close_{t-L+j} / close_t)``, j = 0..L-1,
      divided by ``obs_scale`` and laid out ``(N, L)`` row-major (the official ``DataSrc`` divides
      the price window by the last close), then the current (drifted) weights ``(N+1,)``, as the
      official ``ConcatStates`` wrapper appends them
    - action ``(E, N+1)``: target weights on the simplex (cash first)
    - reward ``(E,)``: ``reward_fn(log_growth)`` (:class:`LogReturnReward` or :class:`RunningSharpeReward`)
    - ``terminated`` at the end of the episode (a finite-horizon objective); ``truncated`` is
      always False. Finished episodes are reset in the same call (the returned observation is
      the new episode's first one); ``info["log_growth"]``, ``info["turnover"]`` and
      ``info["weights"]`` describe the step just taken.
    """

    def __init__(self, relatives: np.ndarray, reward_fn, window: int = 30, episode_len: int = 128,
                 num_envs: int = 64, kappa: float = 0.0025, random_start: bool = True,
                 first_day=None, obs_scale: float = 0.05, seed: int | None = None):
        y = np.asarray(relatives, dtype=float)
        if y.ndim != 2:
            raise ValueError(f"relatives must be (T, N), got {y.shape}")
        self.y = with_cash(y)  # (T, N+1)
        # log prices C_t = sum_{s<=t} log y_s (C_0 = 0), scaled; the observation at day t is the
        # window C_{t-L..t-1} - C_t (the official DataSrc divides the window by the last close)
        logp = np.concatenate([np.zeros((1, y.shape[1])), np.cumsum(np.log(y[1:]), 0)]) / obs_scale
        # all observation windows at once: hist[d] = (C_{d-L..d-1} - C_d) as (N, L); rows d < L unused
        L = window
        lagged = np.stack([np.roll(logp, L - j, axis=0) for j in range(L)], axis=2)  # (T, N, L)
        self.hist = (lagged - logp[:, :, None]).reshape(len(y), -1).astype(np.float32)  # (T, N*L)
        self.n_assets = y.shape[1]
        self.window, self.episode_len, self.num_envs = window, episode_len, num_envs
        self.kappa, self.random_start, self.reward_fn = kappa, random_start, reward_fn
        # first_day: the first decision day (int), or one per env (backtests of several periods)
        self.first_day = np.broadcast_to(np.asarray(window if first_day is None else first_day,
                                                    dtype=int), (num_envs,)).copy()
        last_start = len(y) - 1 - episode_len
        if self.first_day.min() < window or last_start < self.first_day.max():
            raise ValueError(f"{len(y)} days are too few for window {window} + episode {episode_len}")
        self.last_start = last_start
        self.obs_dim = self.n_assets * window + self.n_assets + 1
        self.action_dim = self.n_assets + 1
        self.rng = np.random.default_rng(seed)

    # -- helpers
    def _starts(self, mask: np.ndarray) -> np.ndarray:
        if self.random_start:
            return self.rng.integers(self.first_day.min(), self.last_start + 1, size=int(mask.sum()))
        return self.first_day[mask]

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.hist[self.day], self.w.astype(np.float32)], axis=1)  # (E, N*L + N+1)

    def _reset_envs(self, mask: np.ndarray) -> None:
        self.day[mask] = self._starts(mask)
        self.t[mask] = 0
        self.w[mask] = np.eye(self.n_assets + 1)[0]  # start in cash, as the official sim
        self.reward_fn.reset(mask)

    # -- gymnasium API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        E = self.num_envs
        self.day = np.zeros(E, dtype=int)
        self.t = np.zeros(E, dtype=int)
        self.w = np.zeros((E, self.n_assets + 1))
        self._reset_envs(np.ones(E, dtype=bool))
        return self._obs(), {}

    def step(self, action: np.ndarray):
        a = np.asarray(action, dtype=float).reshape(self.num_envs, self.action_dim)
        if np.any(a < -1e-9) or np.any(np.abs(a.sum(1) - 1) > 1e-6):
            raise ValueError("actions must be long-only weights that sum to 1")
        y = self.y[self.day + 1]  # (E, N+1): the day the new weights are held over
        turn = turnover(self.w, a)
        lg = np.log1p(-self.kappa * turn) + np.log((y * a).sum(1))
        reward = self.reward_fn(lg)
        self.w = drift_weights(a, y)
        self.day += 1
        self.t += 1
        terminated = self.t >= self.episode_len
        info = {"log_growth": lg, "turnover": turn, "weights": a, "day": self.day.copy()}
        if terminated.any():
            self._reset_envs(terminated)
        return self._obs(), reward, terminated, np.zeros(self.num_envs, dtype=bool), info


def backtest_policy(relatives: np.ndarray, act, first_days, n_days: int, window: int,
                    kappa: float = 0.0025, obs_scale: float = 0.05) -> dict:
    """Run a policy ``act(obs (K, D)) -> weights (K, N+1)`` through K backtest periods at once.

    Period k starts with all cash at the close of ``first_days[k]`` and earns the relatives of
    days ``first_days[k]+1 .. first_days[k]+n_days``. Uses :class:`PortfolioEnv` (K envs, no
    random start), so the accounting is the simulator's. Returns ``log_growth (K, n_days)``,
    ``turnover (K, n_days)``, ``weights (K, n_days, N+1)``.
    """
    first_days = np.atleast_1d(np.asarray(first_days, dtype=int))
    K = len(first_days)
    env = PortfolioEnv(relatives, LogReturnReward(n_days), window=window, episode_len=n_days,
                       num_envs=K, kappa=kappa, random_start=False, first_day=first_days,
                       obs_scale=obs_scale)
    obs, _ = env.reset()
    lg, turn, ws = np.empty((K, n_days)), np.empty((K, n_days)), np.empty((K, n_days, env.action_dim))
    for k in range(n_days):
        obs, _, _, _, info = env.step(act(obs))
        lg[:, k], turn[:, k], ws[:, k] = info["log_growth"], info["turnover"], info["weights"]
    return dict(log_growth=lg, turnover=turn, weights=ws)
