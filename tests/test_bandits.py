"""Bandits and Bradley-Terry reward fits: closed forms checked against brute force."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from rlbook import bandits, rewards


def test_kl_optimal_policy_maximises_the_regularised_objective():
    rng = np.random.default_rng(0)
    ref = bandits.softmax(rng.standard_normal(6))
    r = rng.standard_normal(6)
    beta = 0.7
    pi = bandits.kl_optimal_policy(ref, r, beta)
    best = bandits.regularised_objective(pi, ref, r, beta)
    # numerical maximisation over logits agrees
    f = lambda z: -bandits.regularised_objective(bandits.softmax(z), ref, r, beta)
    res = minimize(f, np.zeros(6), method="BFGS", options={"gtol": 1e-10})
    assert best == pytest.approx(-res.fun, abs=1e-8)
    np.testing.assert_allclose(pi, bandits.softmax(res.x), atol=1e-4)
    # the optimum's value is beta * log Z (hand-derivable identity)
    assert best == pytest.approx(beta * np.log((ref * np.exp(r / beta)).sum()), abs=1e-12)


def test_kl_hand_values():
    assert bandits.kl(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    # KL([1, 0] || [0.5, 0.5]) = log 2, with 0 log 0 = 0
    assert bandits.kl(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    with pytest.raises(ValueError):
        bandits.kl_optimal_policy(np.ones(2) / 2, np.zeros(2), 0.0)


def test_bt_prob_hand_values():
    assert bandits.bt_prob(0.0, 0.0) == 0.5
    assert bandits.bt_prob(np.log(3), 0.0) == pytest.approx(0.75)  # σ(log 3) = 3/4


def test_sampling_follows_the_policy_and_pairs_are_distinct():
    rng = np.random.default_rng(1)
    b = bandits.random_contextual_bandit(3, 5, rng)
    x = np.zeros(200_000, dtype=int)
    y = b.sample(b.ref_probs, x, rng)
    freq = np.bincount(y, minlength=5) / len(y)
    np.testing.assert_allclose(freq, b.ref_probs[0], atol=0.005)
    xs, y1, y2 = b.sample_pairs(1000, rng)
    assert (y1 != y2).all() and xs.min() >= 0 and xs.max() < 3


def test_labels_follow_bradley_terry():
    rng = np.random.default_rng(2)
    b = bandits.ContextualBandit(r=np.array([[1.0, 0.0]]), ref_logits=np.zeros((1, 2)))
    n = 100_000
    p = b.label(np.zeros(n, int), np.zeros(n, int), np.ones(n, int), rng)
    assert (p.yw == 0).mean() == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.005)


def test_feature_bandit_shapes_and_errors():
    rng = np.random.default_rng(3)
    b = bandits.random_contextual_bandit(4, 6, rng, d=3)
    assert b.phi.shape == (4, 6, 3) and b.X == 4 and b.Y == 6
    with pytest.raises(ValueError):
        bandits.ContextualBandit(r=np.zeros((2, 3)), ref_logits=np.zeros((2, 4)))


def test_bt_loss_hand_value_and_fits_recover_rewards():
    # -log σ(0) = log 2
    assert rewards.bt_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(np.log(2))
    rng = np.random.default_rng(4)
    b = bandits.random_contextual_bandit(4, 8, rng, d=5, reward_scale=2.0)
    x, y1, y2 = b.sample_pairs(20_000, rng)
    p = b.label(x, y1, y2, rng)
    s = rewards.fit_bt_table(p.x, p.yw, p.yl, b.X, b.Y, steps=400)
    centred = b.r - b.r.mean(-1, keepdims=True)
    assert np.corrcoef(s.ravel(), centred.ravel())[0, 1] > 0.97
    w = rewards.fit_bt_linear(b.phi[p.x, p.yw], b.phi[p.x, p.yl], steps=400)
    assert np.corrcoef((b.phi @ w).ravel(), b.r.ravel())[0, 1] > 0.99
