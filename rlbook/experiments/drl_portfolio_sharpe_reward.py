"""Chapter experiment: DRL portfolio optimisation with an average-Sharpe reward (arXiv 2412.18563).

Smoke profile (CPU, seconds): a synthetic regime-switching market and an i.i.d. control
market; an A2C agent with the official simplex head (Gaussian logits -> softmax) is trained
on random 128-day windows of the training period with (i) the official running-Sharpe
reward and (ii) the base simulator's log-return reward, then backtested on the later test
period next to equal weight, risk parity and rolling mean-variance.

Full profile: the same pipeline on real daily close prices loaded from a CSV file or URL
(:func:`load_prices`), with the paper's window/episode sizes and a longer run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from rlbook import finance
from rlbook.config import check
from rlbook.rl.a2c import A2CConfig, deterministic_policy, train_a2c
from rlbook.rl.envs.portfolio import (LogReturnReward, Market, PortfolioEnv, RunningSharpeReward,
                                      backtest_policy, iid_market, regime_market, simulate,
                                      with_cash)
from rlbook.rl.nets import EIIEActorCritic


@dataclass
class Config:
    """The chapter's experiment. Paper/official values are quoted where they exist."""

    profile: str = "smoke"
    """"smoke" (synthetic market, CPU seconds) or "full" (real prices from ``prices_csv``)"""
    n_assets: int = 6
    """risky assets (plus cash); the official notebooks use 10 (+1 cash)"""
    n_train_days: int = 1500
    """synthetic market: days of the training period (agents see only these)"""
    n_test_days: int = 1000
    """synthetic market: days of each backtest period that follows the training period"""
    test_periods: int = 5
    """synthetic market: consecutive backtest periods after training; metrics pool all of them"""
    test_frac: float = 0.08
    """full profile (real prices): last fraction of the days held out for one backtest, as the
    official data split (training 2019-2022, test from 2023)"""
    p_stay: float = 0.99
    """probability that the synthetic regime (the leading asset) persists for another day"""
    mu_base: float = 0.0002
    """daily log drift of every synthetic asset"""
    mu_lead: float = 0.005
    """extra daily log drift of the regime's leading asset"""
    factor_vol: float = 0.008
    """daily volatility of the common market factor"""
    idio_vol_lo: float = 0.008
    """smallest asset-specific daily volatility"""
    idio_vol_hi: float = 0.020
    """largest asset-specific daily volatility (linear in between)"""
    kappa: float = 0.0025
    """proportional cost; official ``trading_cost=0.0025`` ("max rate of 0.25% at Poloniex")"""
    window: int = 20
    """days of history in the observation (the official notebooks use ``window_length = 50``)"""
    episode_len: int = 128
    """training episode length; official ``steps = 128`` random windows"""
    num_envs: int = 512
    """parallel training episodes"""
    n_steps: int = 4
    """A2C rollout length between updates"""
    n_updates: int = 200
    """A2C updates per agent"""
    lr: float = 1e-2
    """Adam learning rate"""
    gae_lambda: float = 0.0
    """GAE lambda of the log-reward agent"""
    gae_lambda_sharpe: float = 0.9
    """GAE lambda of the Sharpe-reward agent (its reward credits every later step)"""
    hidden: int = 0
    """width of the asset-wise network; 0 = a linear score of the price window (smoke)"""
    init_log_std: float = -0.5
    """initial log-std of the Gaussian over logits"""
    ent_coef: float = 0.0
    """entropy bonus"""
    log_reward_scale: float = 252.0
    """multiplies the official log reward ``log(p_t/p_{t-1})/T`` (only rescales the critic's target)"""
    lookback: int = 60
    """trailing days for the risk-parity and mean-variance baselines"""
    risk_aversion: float = 5.0
    """gamma of the mean-variance baseline"""
    prices_csv: str = ""
    """full profile: path or URL of a wide CSV of daily closes (see :func:`load_prices`)"""
    device: str = "cpu"
    """torch device of the agent"""

    def __post_init__(self):
        check(self.profile in ("smoke", "full"), f"unknown profile {self.profile!r}")
        check(self.n_assets >= 2, "need at least 2 risky assets")
        check(0.0 < self.test_frac < 1.0, "test_frac must be in (0, 1)")
        check(self.n_test_days >= 10 and self.test_periods >= 1, "n_test_days >= 10, test_periods >= 1")
        check(0.0 < self.p_stay < 1.0, "p_stay must be in (0, 1)")
        check(0.0 <= self.kappa < 0.1, "kappa must be in [0, 0.1)")
        check(self.window >= 2 and self.episode_len >= 2, "window and episode_len must be >= 2")
        check(self.n_updates >= 1 and self.num_envs >= 1, "n_updates and num_envs must be >= 1")
        check(self.lookback >= 2, "lookback must be >= 2")


def full_config(**overrides) -> Config:
    """The full profile: the official notebook's sizes (50-day window, 128-day episodes)."""
    base = dict(profile="full", window=50, episode_len=128, num_envs=128, n_steps=32,
                n_updates=3000, hidden=64, lr=1e-3, device="cuda")
    base.update(overrides)
    return Config(**base)


# ----------------------------------------------------------------------------- data


def make_markets(cfg: Config, seed: int) -> dict[str, Market]:
    """The regime market and the i.i.d. control, both derived from ``seed``: one path each of
    ``n_train_days + test_periods * n_test_days`` days."""
    kw = dict(mu_base=cfg.mu_base, mu_lead=cfg.mu_lead, factor_vol=cfg.factor_vol,
              idio_vol=(cfg.idio_vol_lo, cfg.idio_vol_hi))
    n = cfg.n_train_days + cfg.test_periods * cfg.n_test_days
    regime = regime_market(n, cfg.n_assets, np.random.default_rng([seed, 101]), p_stay=cfg.p_stay, **kw)
    iid = iid_market(n, cfg.n_assets, np.random.default_rng([seed, 202]), **kw)
    return {"regime": regime, "iid": iid}


def load_prices(source: str, min_coverage: float = 0.95) -> Market:
    """Daily close prices from a wide CSV (a local path or an http(s) URL; pandas reads both).

    Expected layout: a first column of dates, then one column of daily closes per asset,
    e.g. exported for random CSI 300 constituents with akshare::

        import akshare as ak, pandas as pd
        closes = {c: ak.stock_zh_a_hist(symbol=c, period="daily", adjust="qfq")
                     .set_index("日期")["收盘"] for c in ["600009", "600029", ...]}
        pd.DataFrame(closes).sort_index().to_csv("csi300_closes.csv")

    Columns with less than ``min_coverage`` non-missing values are dropped, gaps are
    forward-filled, leading rows with any missing value are dropped. Returns
    ``Market(relatives (T-1, N), names)``.
    """
    import pandas as pd

    df = pd.read_csv(source, index_col=0, parse_dates=True).sort_index()
    df = df.apply(pd.to_numeric, errors="coerce")
    df = df.loc[:, df.notna().mean() >= min_coverage].ffill().dropna()
    if df.shape[1] < 2 or len(df) < 3:
        raise ValueError(f"{source}: need >= 2 assets and >= 3 days after cleaning, got {df.shape}")
    px = df.to_numpy(dtype=float)
    return Market(relatives=px[1:] / px[:-1], regime=None, names=tuple(map(str, df.columns)))


# ----------------------------------------------------------------------------- pieces


def split(cfg: Config, market: Market) -> tuple[np.ndarray, int]:
    """``(first_days (K,), n)``: backtest k decides at the closes ``first_days[k] .. + n - 1``.

    Synthetic (smoke) markets: K = ``test_periods`` consecutive periods of ``n_test_days``
    after the ``n_train_days`` of training. Real prices (full): one period, the last
    ``test_frac`` of the days. Training uses days ``<= first_days[0]`` only.
    """
    T = len(market.relatives)
    if cfg.profile == "smoke":
        n = cfg.n_test_days
        first = cfg.n_train_days - 1 + n * np.arange(cfg.test_periods)
        check(first[-1] + n <= T - 1, "market path shorter than train + test periods")
    else:
        n = int(round(cfg.test_frac * T)) - 1
        first = np.array([T - 1 - n])
    check(first[0] - cfg.episode_len >= cfg.window, "training period too short for window + episode")
    return first, n


def train_agent(cfg: Config, market: Market, reward: str, seed: int) -> tuple[torch.nn.Module, dict]:
    """Train one A2C agent on random windows of the training period with ``reward`` in {"sharpe", "log"}."""
    first_test = split(cfg, market)[0][0]
    if reward == "sharpe":
        rfn = RunningSharpeReward(cfg.episode_len)
    elif reward == "log":
        rfn = LogReturnReward(cfg.episode_len, scale=cfg.log_reward_scale)
    else:
        raise ValueError(f"unknown reward {reward!r}: 'sharpe' or 'log'")
    train = market.relatives[: first_test + 1]  # the training period only
    env = PortfolioEnv(train, rfn, window=cfg.window, episode_len=cfg.episode_len,
                       num_envs=cfg.num_envs, kappa=cfg.kappa, seed=seed)
    torch.manual_seed(seed)
    net = EIIEActorCritic(market.relatives.shape[1], cfg.window, hidden=cfg.hidden,
                          init_log_std=cfg.init_log_std)
    lam = cfg.gae_lambda_sharpe if reward == "sharpe" else cfg.gae_lambda
    a2c = A2CConfig(n_updates=cfg.n_updates, n_steps=cfg.n_steps, lr=cfg.lr, ent_coef=cfg.ent_coef,
                    gamma=1.0, gae_lambda=lam)
    hist = train_a2c(env, net, a2c, seed=seed, device=cfg.device)
    return net.cpu(), hist


def baselines(cfg: Config, market: Market) -> dict[str, np.ndarray]:
    """Decisions ``(K, n, N+1)`` of the three baselines in each backtest period."""
    firsts, n = split(cfg, market)
    rets = market.relatives - 1.0
    K, N = len(firsts), rets.shape[1]
    # the K periods are consecutive: decide all K*n days at once. The decision at the close of
    # day f+k uses the returns of days <= f+k, i.e. rows < f+k+1.
    check(np.all(np.diff(firsts) == n), "backtest periods must be consecutive")
    f = firsts[0] + 1
    return {
        "equal weight": finance.equal_weight(K * n, N).reshape(K, n, N + 1),
        "risk parity": finance.risk_parity(rets, f, K * n, cfg.lookback).reshape(K, n, N + 1),
        "mean-variance": finance.mean_variance(rets, f, K * n, cfg.lookback,
                                               cfg.risk_aversion).reshape(K, n, N + 1),
    }


def backtest(cfg: Config, market: Market, agents: dict[str, torch.nn.Module]) -> dict[str, dict]:
    """Backtest agents (deterministic action ``softmax(mu(s))``) and baselines in every test period.

    Each entry holds ``log_growth, turnover: (K, n)``, ``weights: (K, n, N+1)`` and ``summary``:
    the metrics of :func:`rlbook.finance.summary` on the K periods pooled.
    """
    firsts, n = split(cfg, market)
    out = {}
    for name, net in agents.items():
        out[name] = backtest_policy(market.relatives, deterministic_policy(net), firsts, n,
                                    cfg.window, cfg.kappa)
    y = np.stack([with_cash(market.relatives[f + 1: f + 1 + n]) for f in firsts])  # (K, n, N+1)
    for name, w in baselines(cfg, market).items():
        sim = simulate(y, w, cfg.kappa)
        out[name] = dict(log_growth=sim["log_growth"], turnover=sim["turnover"], weights=w)
    for res in out.values():
        res["summary"] = finance.summary(res["log_growth"].ravel(), res["turnover"].ravel())
    return out


def run_smoke(cfg: Config, seed: int) -> dict:
    """Train the Sharpe- and log-reward agents on the regime market, the Sharpe agent on the
    i.i.d. market, and backtest everything. Returns markets, histories, backtests, seconds."""
    t0 = time.perf_counter()
    markets = make_markets(cfg, seed)
    net_s, hist_s = train_agent(cfg, markets["regime"], "sharpe", seed)
    net_l, hist_l = train_agent(cfg, markets["regime"], "log", seed)
    net_i, hist_i = train_agent(cfg, markets["iid"], "sharpe", seed)
    bt_regime = backtest(cfg, markets["regime"], {"DRL (Sharpe reward)": net_s, "DRL (log reward)": net_l})
    bt_iid = backtest(cfg, markets["iid"], {"DRL (Sharpe reward)": net_i})
    return dict(markets=markets, history={"sharpe": hist_s, "log": hist_l, "iid": hist_i},
                regime=bt_regime, iid=bt_iid, split=split(cfg, markets["regime"]),
                seconds=time.perf_counter() - t0)


def summary_table(backtests: dict[str, dict]):
    """The metrics of each strategy as a DataFrame (one row per strategy)."""
    import pandas as pd

    return pd.DataFrame({k: v["summary"] for k, v in backtests.items()}).T.round(3)


def run_full(cfg: Config, seed: int) -> dict:
    """Real prices (``cfg.prices_csv``): train both agents, backtest on the last ``test_frac`` of days."""
    check(bool(cfg.prices_csv), "the full profile needs prices_csv (a path or URL, see load_prices)")
    t0 = time.perf_counter()
    market = load_prices(cfg.prices_csv)
    cfg = replace(cfg, n_assets=market.relatives.shape[1])
    net_s, hist_s = train_agent(cfg, market, "sharpe", seed)
    net_l, hist_l = train_agent(cfg, market, "log", seed)
    bt = backtest(cfg, market, {"DRL (Sharpe reward)": net_s, "DRL (log reward)": net_l})
    return dict(market=market, history={"sharpe": hist_s, "log": hist_l}, backtest=bt,
                table=summary_table(bt), config=asdict(cfg), seconds=time.perf_counter() - t0)
