"""Tests of rlbook.rl.envs.portfolio: simulator identities, rewards, markets, env API."""

import numpy as np
import pytest

from rlbook.rl.envs.portfolio import (LogReturnReward, PortfolioEnv, RunningSharpeReward,
                                      backtest_policy, drift_weights, iid_market,
                                      log_return_reward, regime_market, running_sharpe,
                                      simulate, transaction_cost, with_cash)


def _official_sharpe(r, freq=252, eps=1e-8):
    # rl_portfolio_management/util.py (official repository)
    return np.sqrt(freq) * np.mean(r) / (np.std(r) + eps)


def test_drift_weights_hand_value_and_sum():
    w = np.array([0.5, 0.5, 0.0])
    y = np.array([1.0, 1.1, 0.9])
    np.testing.assert_allclose(drift_weights(w, y), [0.5 / 1.05, 0.55 / 1.05, 0.0], atol=1e-15)
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(5), size=100)
    Y = with_cash(np.exp(0.02 * rng.standard_normal((100, 4))))
    np.testing.assert_allclose(drift_weights(W, Y).sum(-1), 1.0, atol=1e-14)


def test_transaction_cost_excludes_cash():
    wd = np.array([0.2, 0.5, 0.3])
    wn = np.array([0.6, 0.1, 0.3])
    assert transaction_cost(wd, wn, 0.0025) == pytest.approx(0.0025 * 0.4, abs=1e-15)


def test_zero_cost_log_wealth_is_sum_log_dot():
    rng = np.random.default_rng(1)
    T, N = 300, 4
    y = with_cash(np.exp(0.02 * rng.standard_normal((T, N))))
    w = rng.dirichlet(np.ones(N + 1), size=T)
    res = simulate(y, w, kappa=0.0)
    assert abs(np.log(res["wealth"][-1]) - np.sum(np.log((y * w).sum(1)))) < 1e-12
    np.testing.assert_allclose(res["drifted"].sum(1), 1.0, atol=1e-14)


def test_constant_weights_without_rebalancing_have_no_cost():
    # buy-and-hold: deciding the drifted weights every day trades nothing
    rng = np.random.default_rng(2)
    y = with_cash(np.exp(0.02 * rng.standard_normal((50, 3))))
    w = [np.array([0.1, 0.3, 0.3, 0.3])]
    for t in range(49):
        w.append(drift_weights(w[-1], y[t]))
    res = simulate(y, np.array(w), kappa=0.01, w0=w[0])
    np.testing.assert_allclose(res["cost"], 0.0, atol=1e-15)
    assert res["wealth"][-1] == pytest.approx(np.prod(y, 0) @ w[0], rel=1e-12)


def test_running_sharpe_matches_official_formula_with_zero_start():
    rng = np.random.default_rng(3)
    r = 0.01 * rng.standard_normal(40)
    rew = RunningSharpeReward(horizon=40)
    rew.reset(np.ones(1, dtype=bool))
    got = np.array([rew(np.array([x]))[0] for x in r])
    # the official env's reset() takes an all-cash step, so the return list starts with 0
    want = np.array([_official_sharpe(np.concatenate([[0.0], r[: t + 1]])) / 40 for t in range(40)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_running_sharpe_zero_below_two_samples_and_hand_value():
    s = running_sharpe(np.array([0.01, 0.03]), np.array([1e-4, 0.01**2 + 0.02**2]), np.array([1.0, 2.0]))
    assert s[0] == 0.0
    # returns (0.01, 0.02): mean 0.015, population std 0.005
    assert s[1] == pytest.approx(np.sqrt(252) * 3.0, rel=1e-5)  # eps=1e-8 in the denominator


def test_log_return_reward_sums_to_mean_log_growth():
    g = np.array([0.01, -0.02, 0.005])
    assert np.sum(log_return_reward(g, 3)) == pytest.approx(g.mean(), abs=1e-15)


def test_regime_market_persistence_and_iid_drift():
    rng = np.random.default_rng(4)
    m = regime_market(20000, 5, rng, p_stay=0.98)
    assert m.relatives.shape == (20000, 5) and m.regime.shape == (20000,)
    stay = np.mean(m.regime[1:] == m.regime[:-1])
    assert abs(stay - 0.98) < 0.005
    lead = np.log(m.relatives)[np.arange(20000), m.regime].mean()
    other = np.log(m.relatives).mean()
    assert lead > other + 0.0012
    iid = iid_market(20000, 5, np.random.default_rng(5))
    assert iid.regime is None
    assert abs(np.log(iid.relatives).mean() - (0.0002 + 0.002 / 5)) < 0.0003


def _env(y, **kw):
    base = dict(window=5, episode_len=10, num_envs=3, kappa=0.0025, seed=0)
    base.update(kw)
    return PortfolioEnv(y, LogReturnReward(base["episode_len"]), **base)


def test_env_api_shapes_and_termination():
    y = np.exp(0.01 * np.random.default_rng(6).standard_normal((100, 4)))
    env = _env(y)
    obs, info = env.reset(seed=1)
    assert obs.shape == (3, env.obs_dim) == (3, 4 * 5 + 5) and isinstance(info, dict)
    np.testing.assert_allclose(obs[:, -5:], np.eye(5)[[0, 0, 0]])  # starts in cash
    a = np.full((3, 5), 0.2)
    for k in range(10):
        obs, r, term, trunc, info = env.step(a)
        assert r.shape == term.shape == trunc.shape == (3,)
        assert term.all() == (k == 9) and not trunc.any()
    np.testing.assert_allclose(obs[:, -5:], np.eye(5)[[0, 0, 0]])  # auto-reset to cash
    with pytest.raises(ValueError):
        env.step(np.full((3, 5), 0.3))


def test_env_matches_simulate_and_has_no_lookahead():
    rng = np.random.default_rng(7)
    y = np.exp(0.01 * rng.standard_normal((60, 3)))
    env = _env(y, num_envs=1, random_start=False, first_day=20, episode_len=30)
    obs, _ = env.reset()
    W = rng.dirichlet(np.ones(4), size=30)
    lg = []
    for k in range(30):
        obs, _, _, _, info = env.step(W[k][None])
        lg.append(info["log_growth"][0])
    ref = simulate(with_cash(y[21:51]), W, kappa=0.0025)
    np.testing.assert_allclose(lg, ref["log_growth"], atol=1e-12)
    # the observation at day t must not change when the future (days > t) changes
    y2 = y.copy()
    y2[21:] *= 1.05
    o1, _ = _env(y, num_envs=1, random_start=False, first_day=20).reset()
    o2, _ = _env(y2, num_envs=1, random_start=False, first_day=20).reset()
    np.testing.assert_array_equal(o1, o2)


def test_backtest_policy_periods_are_independent():
    rng = np.random.default_rng(8)
    y = np.exp(0.01 * rng.standard_normal((200, 3)))

    def ew(obs):
        return np.tile([0.0, 1 / 3, 1 / 3, 1 / 3], (len(obs), 1))

    both = backtest_policy(y, ew, [50, 120], 40, window=5)
    one = backtest_policy(y, ew, [120], 40, window=5)
    np.testing.assert_allclose(both["log_growth"][1], one["log_growth"][0], atol=1e-14)
    assert both["log_growth"].shape == (2, 40)
