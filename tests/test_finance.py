"""Tests of rlbook.finance: hand-computed metrics, baselines, the two-asset closed forms."""

import numpy as np
import pytest

from rlbook import finance


def test_metrics_hand_values():
    g = np.log1p(np.array([0.01, 0.03]))  # simple returns 1% and 3%
    assert finance.annualised_return(g) == pytest.approx(252 * 0.02)
    assert finance.annualised_volatility(g) == pytest.approx(np.sqrt(252) * 0.01)
    assert finance.sharpe_ratio(g) == pytest.approx(np.sqrt(252) * 2.0)
    assert finance.sharpe_ratio(np.log1p(np.array([0.1, -0.1]))) == pytest.approx(0.0, abs=1e-12)


def test_max_drawdown_hand_value():
    wealth = np.array([1.0, 1.2, 0.9, 1.1])
    g = np.diff(np.log(wealth))
    assert finance.max_drawdown(g) == pytest.approx(1 - 0.9 / 1.2)
    np.testing.assert_allclose(finance.drawdown_curve(g), [0, 0, 0.25, 1 - 1.1 / 1.2])
    assert finance.max_drawdown(np.log([0.5])) == pytest.approx(0.5)  # from the start p_0 = 1
    s = finance.summary(g, turnover=np.array([0.1, 0.3, 0.2]))
    assert s["turnover"] == pytest.approx(0.2) and s["max_drawdown"] == pytest.approx(0.25)


def test_equal_weight_and_risk_parity():
    w = finance.equal_weight(3, 4)
    np.testing.assert_allclose(w, np.tile([0, 0.25, 0.25, 0.25, 0.25], (3, 1)))
    rng = np.random.default_rng(0)
    r = rng.standard_normal((30, 2)) * np.array([0.01, 0.02])
    rp = finance.risk_parity(r, first=20, n_steps=2, lookback=20)
    inv = 1 / r[0:20].std(0)
    np.testing.assert_allclose(rp[0], np.r_[0, inv / inv.sum()])
    inv = 1 / r[1:21].std(0)
    np.testing.assert_allclose(rp[1], np.r_[0, inv / inv.sum()])


def test_project_simplex():
    np.testing.assert_allclose(finance.project_simplex(np.array([0.5, 0.2, 0.3])), [0.5, 0.2, 0.3])
    np.testing.assert_allclose(finance.project_simplex(np.array([2.0, 0.0, 0.0])), [1, 0, 0])
    np.testing.assert_allclose(finance.project_simplex(np.array([1.0, 1.0, -1.0])), [0.5, 0.5, 0])
    v = np.random.default_rng(1).standard_normal((50, 6))
    p = finance.project_simplex(v)
    assert (p >= 0).all() and np.allclose(p.sum(1), 1)
    # optimality: the projection is closer to v than random simplex points
    q = np.random.default_rng(2).dirichlet(np.ones(6), size=50)
    assert (((p - v) ** 2).sum(1) <= ((q - v) ** 2).sum(1) + 1e-12).all()


def test_mean_variance_matches_scipy():
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    r = 0.001 + 0.01 * rng.standard_normal((61, 4)) + np.array([0.002, 0, -0.001, 0.001])
    w = finance.mean_variance(r, first=60, n_steps=1, lookback=60, risk_aversion=5.0, ridge=0.1,
                              iters=3000)[0, 1:]
    win = r[:60]
    mu, cov = win.mean(0), np.cov(win.T)
    S = cov + 0.1 * np.trace(cov) / 4 * np.eye(4)
    res = minimize(lambda x: -(mu @ x - 2.5 * x @ S @ x), np.full(4, 0.25), method="SLSQP",
                   bounds=[(0, 1)] * 4, constraints={"type": "eq", "fun": lambda x: x.sum() - 1},
                   options={"ftol": 1e-14, "maxiter": 500})
    np.testing.assert_allclose(w, res.x, atol=2e-4)


def test_two_asset_kelly_and_max_sharpe_closed_forms():
    mu1, mu2, s1, s2, rho = 0.10, 0.04, 0.30, 0.10, 0.2
    a = np.linspace(-1, 2, 300001)
    var = a**2 * s1**2 + (1 - a) ** 2 * s2**2 + 2 * a * (1 - a) * rho * s1 * s2
    mean = a * mu1 + (1 - a) * mu2
    growth = mean - var / 2
    sharpe = mean / np.sqrt(var)
    assert finance.kelly_weight_2(mu1, mu2, s1, s2, rho) == pytest.approx(a[growth.argmax()], abs=2e-5)
    assert finance.max_sharpe_weight_2(mu1, mu2, s1, s2, rho) == pytest.approx(a[sharpe.argmax()], abs=2e-5)
    assert finance.kelly_weight_2(mu1, mu2, s1, s2, rho) == pytest.approx(0.064 / 0.088)
