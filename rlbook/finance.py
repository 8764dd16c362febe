"""Portfolio baselines and performance metrics (daily data, zero risk-free rate).

Baselines return *decisions*: ``weights: (T, N+1)`` (cash first), where row ``t`` is chosen
with the returns of days ``< t`` only, ready for :func:`rlbook.rl.envs.portfolio.simulate`.

Metrics take the per-step log growth ``g_t = log(p_t / p_{t-1})`` of a backtest; the simple
return is ``rho_t = exp(g_t) - 1``:

- annualised return ``A * mean(rho)``; annualised volatility ``sqrt(A) * std(rho)``
  (population std, ``ddof=0``, as the official ``util.sharpe``); Sharpe = their ratio
- max drawdown ``max_t (1 - p_t / max_{s<=t} p_s)`` with ``p_0 = 1``
- turnover: the mean one-step ``sum_{i>=1} |w_t,i - w'_t,i|``
"""

from __future__ import annotations

import numpy as np

TRADING_DAYS = 252
"""annualisation factor A for daily data"""


# ----------------------------------------------------------------------------- metrics


def annualised_return(log_growth: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """``A * mean(exp(g) - 1)``: the arithmetic mean simple return, annualised."""
    return float(periods * np.mean(np.expm1(log_growth)))


def annualised_volatility(log_growth: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """``sqrt(A) * std(exp(g) - 1)`` (ddof=0)."""
    return float(np.sqrt(periods) * np.std(np.expm1(log_growth)))


def sharpe_ratio(log_growth: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """``sqrt(A) * mean(rho) / std(rho)`` with ``rho = exp(g) - 1``, zero risk-free rate."""
    rho = np.expm1(log_growth)
    return float(np.sqrt(periods) * rho.mean() / rho.std())


def max_drawdown(log_growth: np.ndarray) -> float:
    """``max_t (1 - p_t / max_{s<=t} p_s)`` with ``p = exp(cumsum(g))`` and ``p_0 = 1``; in [0, 1)."""
    logp = np.concatenate([[0.0], np.cumsum(log_growth)])
    return float(np.max(1.0 - np.exp(logp - np.maximum.accumulate(logp))))


def drawdown_curve(log_growth: np.ndarray) -> np.ndarray:
    """``1 - p_t / max_{s<=t} p_s`` for ``t = 0..T``: ``(T,) -> (T+1,)``."""
    logp = np.concatenate([[0.0], np.cumsum(log_growth)])
    return 1.0 - np.exp(logp - np.maximum.accumulate(logp))


def summary(log_growth: np.ndarray, turnover: np.ndarray | None = None,
            periods: int = TRADING_DAYS) -> dict:
    """All metrics of one backtest as a dict (``turnover`` optional, per step)."""
    out = {
        "ann_return": annualised_return(log_growth, periods),
        "ann_vol": annualised_volatility(log_growth, periods),
        "sharpe": sharpe_ratio(log_growth, periods),
        "max_drawdown": max_drawdown(log_growth),
    }
    if turnover is not None:
        out["turnover"] = float(np.mean(turnover))
    return out


# ----------------------------------------------------------------------------- baselines


def _with_cash_col(w_risky: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(w_risky.shape[:-1] + (1,)), w_risky], axis=-1)


def equal_weight(n_steps: int, n_assets: int) -> np.ndarray:
    """``1/N`` in every risky asset, rebalanced every day: ``(T, N+1)``."""
    return _with_cash_col(np.full((n_steps, n_assets), 1.0 / n_assets))


def _windows(returns: np.ndarray, first: int, n_steps: int, lookback: int) -> np.ndarray:
    """Trailing windows ``returns[first+t-lookback : first+t]`` for t < n_steps: ``(T, lookback, N)``."""
    idx = first + np.arange(n_steps)[:, None] + np.arange(-lookback, 0)[None, :]
    if idx.min() < 0:
        raise ValueError("not enough history before the first decision")
    return returns[idx]


def risk_parity(returns: np.ndarray, first: int, n_steps: int, lookback: int = 60) -> np.ndarray:
    """Naive risk parity (inverse volatility): ``w_i ∝ 1 / sigma_i`` over the trailing ``lookback`` days.

    ``returns: (T_all, N)`` simple daily returns; decision ``t`` uses ``returns[first+t-lookback :
    first+t]``. Returns ``(n_steps, N+1)``.
    """
    win = _windows(returns, first, n_steps, lookback)  # (T, L, N)
    inv = 1.0 / win.std(axis=1)
    return _with_cash_col(inv / inv.sum(-1, keepdims=True))


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto the probability simplex (Duchi et al. 2008): ``(..., N)``."""
    n = v.shape[-1]
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    k = np.arange(1, n + 1)
    cond = u - css / k > 0
    rho = n - 1 - np.argmax(cond[..., ::-1], axis=-1)  # last index where cond holds
    theta = np.take_along_axis(css, rho[..., None], axis=-1) / (rho[..., None] + 1.0)
    return np.maximum(v - theta, 0.0)


def mean_variance(returns: np.ndarray, first: int, n_steps: int, lookback: int = 60,
                  risk_aversion: float = 5.0, ridge: float = 0.1, iters: int = 300) -> np.ndarray:
    """Rolling long-only mean-variance: ``argmax_{w in simplex} mu'w - (gamma/2) w' S w``.

    ``mu`` and ``S`` are the sample mean and covariance of the trailing ``lookback`` days,
    with ridge shrinkage ``S = Cov + ridge * (tr(Cov)/N) I``. Solved for all days at once
    by projected gradient ascent (step ``1/(gamma * tr(S))``). Fully invested in the risky
    assets (no cash), like the paper's mean-variance baseline. Returns ``(n_steps, N+1)``.
    """
    win = _windows(returns, first, n_steps, lookback)  # (T, L, N)
    n = win.shape[-1]
    mu = win.mean(1)  # (T, N)
    xc = win - mu[:, None, :]
    cov = np.einsum("tli,tlj->tij", xc, xc) / (lookback - 1)  # (T, N, N)
    tr = np.trace(cov, axis1=1, axis2=2)[:, None, None]
    S = cov + ridge * tr / n * np.eye(n)
    step = 1.0 / (risk_aversion * np.trace(S, axis1=1, axis2=2))[:, None]
    w = np.full((len(mu), n), 1.0 / n)
    for _ in range(iters):
        grad = mu - risk_aversion * np.einsum("tij,tj->ti", S, w)
        w = project_simplex(w + step * grad)
    return _with_cash_col(w)


# ----------------------------------------------------------------------------- two-asset example


def kelly_weight_2(mu1: float, mu2: float, s1: float, s2: float, rho: float) -> float:
    """Weight of asset 1 maximising the growth rate ``g(a) = w'mu - w'Sigma w / 2``, ``w = (a, 1-a)``.

    ``a_K = (mu1 - mu2 + s2^2 - rho s1 s2) / (s1^2 + s2^2 - 2 rho s1 s2)`` (unconstrained).
    """
    return (mu1 - mu2 + s2**2 - rho * s1 * s2) / (s1**2 + s2**2 - 2 * rho * s1 * s2)


def max_sharpe_weight_2(mu1: float, mu2: float, s1: float, s2: float, rho: float) -> float:
    """Weight of asset 1 in the fully invested tangency portfolio ``w ∝ Sigma^{-1} mu``.

    ``a_S = (mu1 s2^2 - mu2 rho s1 s2) / (mu1 s2^2 + mu2 s1^2 - (mu1 + mu2) rho s1 s2)``.
    """
    c = rho * s1 * s2
    return (mu1 * s2**2 - mu2 * c) / (mu1 * s2**2 + mu2 * s1**2 - (mu1 + mu2) * c)
