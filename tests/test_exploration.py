"""Tests of rlbook.exploration (DeepSea, exact planning, optimistic critics, actor-critic agents) and of the
"Actor-Critics Can Achieve Optimal Sample Efficiency" chapter experiment."""

import itertools

import numpy as np
import pytest

from rlbook import exploration as X
from rlbook.config import from_params
from rlbook.experiments import optimistic_actor_critic_sample_efficiency as E


def test_deep_sea_structure():
    N = 6
    mdp = X.deep_sea(N, np.random.default_rng(0))
    assert (mdp.H, mdp.S, mdp.A) == (N, N + 1, 2)
    Q, V = X.backward_induction(mdp)
    assert V[0, 0] == pytest.approx(1 - 0.01, abs=1e-12)
    # the optimal policy goes right at every step along the diagonal
    pi = X.greedy(Q)
    for h in range(N):
        assert pi[h, h, mdp.right[h, h]] == 1.0
    # a uniform policy reaches the treasure with probability 2^-N
    uni = np.full((mdp.H, mdp.S, mdp.A), 0.5)
    d = X.occupancy(mdp, uni)
    assert d[N - 1, N - 1] * 0.5 == pytest.approx(2.0**-N, abs=1e-15)
    with pytest.raises(ValueError):
        X.deep_sea(0, np.random.default_rng(0))


def test_backward_induction_equals_best_deterministic_policy():
    rng = np.random.default_rng(1)
    mdp = X.random_mdp(2, 2, 2, rng)
    Q, V = X.backward_induction(mdp)
    best = -np.inf
    for acts in itertools.product(range(2), repeat=mdp.H * mdp.S):
        pi = np.zeros((mdp.H, mdp.S, mdp.A))
        for i, a in enumerate(acts):
            pi[i // mdp.S, i % mdp.S, a] = 1.0
        best = max(best, X.evaluate_policy(mdp, pi)[1][0, mdp.s0])
    assert V[0, mdp.s0] == pytest.approx(best, abs=1e-12)


def test_policy_values_batch_matches_evaluate_policy():
    rng = np.random.default_rng(2)
    mdp = X.random_mdp(4, 3, 2, rng)
    pis = rng.dirichlet(np.ones(2), size=(5, 4, 3))
    batch = X.policy_values(mdp, pis)
    one = [X.evaluate_policy(mdp, p)[1][0, mdp.s0] for p in pis]
    np.testing.assert_allclose(batch, one, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_performance_difference_decomposition(seed):
    """V*(s0) - V^π(s0) = Σ_h E_{d^π*}<f_h, π* - π_h> + Bellman errors of f (any critic f, any actor π)."""
    rng = np.random.default_rng(seed)
    mdp = X.random_mdp(4, 5, 3, rng)
    pi_star = X.greedy(X.backward_induction(mdp)[0])
    pi = rng.dirichlet(np.ones(3), size=(4, 5))
    f = rng.normal(size=(4, 5, 3))
    t = X.performance_difference(mdp, pi_star, pi, f)
    assert t["lhs"] == pytest.approx(t["rhs"], abs=1e-10)
    # with f = Q^π the Bellman errors vanish: the classic performance-difference lemma
    t = X.performance_difference(mdp, pi_star, pi, X.evaluate_policy(mdp, pi)[0])
    assert abs(t["bellman_star"]) < 1e-12 and abs(t["bellman_pi"]) < 1e-12
    assert t["lhs"] == pytest.approx(t["actor"], abs=1e-10)


def test_hedge_regret_bound():
    rng = np.random.default_rng(3)
    K, A, M, eta = 200, 4, 3.0, 0.1
    gains = M * rng.random((K, A))
    reg, pis = X.hedge_regret(gains, eta)
    assert reg <= np.log(A) / eta + eta * K * M**2 / 8
    np.testing.assert_allclose(pis[0], 0.25)


def test_edge_exponential_weights_with_large_eta_is_greedy():
    """The actor's step π ∝ π_0 exp(η f) from uniform tends to greedy(f) as η → ∞ (UCBVI's policy)."""
    rng = np.random.default_rng(4)
    f = rng.normal(size=(3, 4, 5))
    logits = 1e4 * f
    pi = np.exp(logits - logits.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    np.testing.assert_allclose(pi, X.greedy(f), atol=1e-12)


def test_edge_pessimistic_critic_is_optimistic_critic_without_bonus():
    """With every pair visited, the critic with bonus 0 is the plug-in Q* of the empirical model, whatever `unvisited`."""
    mdp = X.deep_sea(4, np.random.default_rng(5))
    c = X.Counts.empty(mdp.H, mdp.S, mdp.A)
    for h in range(mdp.H):  # visit every (h, s, a) once: deterministic, so the empirical model is exact
        for s in range(mdp.S):
            for a in range(mdp.A):
                s2 = int(mdp.P[h, s, a].argmax())
                c.n[h, s, a] += 1
                c.r_sum[h, s, a] += mdp.R[h, s, a]
                c.nxt[h, s, a, s2] += 1
    Q = X.backward_induction(mdp)[0]
    for unv in (None, -0.1):
        np.testing.assert_allclose(X.optimistic_critic(c, 0.0, 2.0, unv), Q, atol=1e-12)


def test_optimistic_critic_hand_values():
    c = X.Counts.empty(2, 2, 2)
    c.add([(0, 1, 0.5, 1), (1, 0, 0.0, 0)])
    f = X.optimistic_critic(c, bonus=0.1, v_max=2.0)
    assert f[1, 1, 0] == pytest.approx(0.1)  # r̂ = 0, terminal, bonus 0.1/sqrt(1)
    assert f[1, 0, 1] == 2.0  # unvisited: optimistic
    assert f[0, 0, 1] == pytest.approx(min(0.5 + 2.0 + 0.1, 2.0))  # next state 1 still has an unvisited action
    g = X.optimistic_critic(c, bonus=0.0, v_max=2.0, unvisited=-0.1)
    assert g[1, 0, 1] == -0.1 and g[0, 0, 1] == pytest.approx(0.5 + 0.0)


def test_offline_data_counts():
    mdp = X.deep_sea(5, np.random.default_rng(7))
    c = X.offline_data(mdp, 400, 0.7, np.random.default_rng(8))
    assert c.n.sum() == 400 * mdp.H and c.n[0].sum() == 400
    frac_right = c.n[0, 0, mdp.right[0, 0]] / 400
    assert 0.6 < frac_right < 0.8
    np.testing.assert_allclose(c.nxt.sum(-1), c.n)


def test_rollout_matches_transition_model():
    mdp = X.random_mdp(3, 3, 2, np.random.default_rng(9))
    pi = np.full((3, 3, 2), 0.5)
    rng = np.random.default_rng(10)
    c = X.Counts.empty(3, 3, 2)
    for _ in range(3000):
        c.add(X.rollout(mdp, pi, rng))
    emp = c.nxt[0, 0] / c.n[0, 0][:, None]
    np.testing.assert_allclose(emp, mdp.P[0, 0], atol=0.05)


def test_agents_on_a_small_deep_sea():
    mdp = X.deep_sea(5, np.random.default_rng(11))
    T = 300
    opt = X.run_actor_critic(mdp, X.ACConfig(kind="optimistic", episodes=T), np.random.default_rng(0))
    naive = X.run_actor_critic(mdp, X.ACConfig(kind="naive", episodes=T), np.random.default_rng(0))
    assert opt.final_return == pytest.approx(opt.optimal_return)
    assert naive.regret.shape == (T,) and np.isfinite(naive.final_return) and naive.switches == []
    assert len(opt.switches) <= mdp.H * mdp.S * mdp.A * (np.log2(T) + 1)
    assert opt.regret.shape == (T,) and np.all(opt.regret >= -1e-12)
    with pytest.raises(ValueError):
        X.run_actor_critic(mdp, X.ACConfig(kind="ppo"), np.random.default_rng(0))


def test_loglog_slope():
    t = np.arange(1, 1001)
    assert X.loglog_slope(3 * np.sqrt(t), 100) == pytest.approx(0.5, abs=1e-9)


def test_experiment_config_and_small_run():
    with pytest.raises(ValueError):
        from_params(E.Config, N=1)
    with pytest.raises(ValueError):
        from_params(E.Config, p_right=1.5)
    with pytest.raises(ValueError):
        from_params(E.Config, steps=3)
    cfg = E.Config(N=4, episodes=150, reps=2, n_offline=50, pess_N=4, pess_reps=2, pess_episodes=5,
                   slope_start=20, pess_n_offline=(5, 50))
    out = E.run_smoke(cfg, 0)
    s = out["summary"]
    assert set(s) == {"naive", "optimistic", "hybrid", "ucbvi"}
    assert s["optimistic"]["runs"] == 2 and s["ucbvi"]["runs"] == 1
    assert set(out["pessimistic"]) == {5, 50} and all(0 <= v <= 1 for v in out["pessimistic"].values())


def test_full_profile_runs_at_tiny_scale():
    cfg = E.Config(full_N=(3, 4), full_episodes=30, full_reps=2, slope_start=10)
    out = E.run_full(cfg, seed=0)
    assert set(out) == {3, 4}
    for res in out.values():
        assert set(res["summary"]) == {"naive", "optimistic", "hybrid", "ucbvi"}
        assert res["summary"]["ucbvi"]["runs"] == 2
        assert all(c.shape == (30,) for c in res["cumulative"].values())
