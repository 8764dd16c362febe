"""Tests of rlbook.gridworld: exact soft value iteration, policy evaluation, segment sampling."""

import numpy as np
import pytest

from rlbook import gridworld as GW

LAYOUT = ["G..", ".L.", "..#"]


@pytest.fixture(scope="module")
def grid():
    return GW.make_gridworld(LAYOUT, gamma=0.9, step_reward=-1.0, lava_reward=-4.0, goal_reward=5.0)


def test_layout_and_rewards(grid):
    assert grid.n_states == 8 and grid.n_actions == 4  # one wall
    g = grid.goal
    assert grid.kind(g) == "G" and np.all(grid.next_state[g] == g) and np.all(grid.reward[g] == 0)
    s = next(i for i in range(grid.n_states) if tuple(grid.cells[i]) == (0, 1))
    assert grid.next_state[s, 3] == g and grid.reward[s, 3] == 4.0  # -1 step + 5 goal
    assert grid.next_state[s, 0] == s  # off the grid: stay
    lava = next(i for i in range(grid.n_states) if grid.kind(i) == "L")
    assert np.all(grid.reward[lava] == -5.0)
    corner = next(i for i in range(grid.n_states) if tuple(grid.cells[i]) == (2, 1))
    assert grid.next_state[corner, 1] == corner  # wall: stay
    assert grid.start[g] == 0 and abs(grid.start.sum() - 1) < 1e-12
    P = grid.transition_matrix()
    assert np.allclose(P.sum(-1), 1)
    with pytest.raises(ValueError):
        GW.make_gridworld(["..", ".."])
    with pytest.raises(ValueError):
        GW.make_gridworld(["G", "x"])


def test_soft_bellman_and_advantage_is_alpha_log_pi(grid):
    for alpha in (0.3, 1.0):
        sol = GW.soft_value_iteration(grid, alpha)
        Q = grid.reward + grid.gamma * sol.V[grid.next_state]
        assert np.allclose(Q, sol.Q, atol=1e-10)
        assert np.allclose(sol.V, alpha * np.log(np.exp(sol.Q / alpha).sum(1)), atol=1e-10)
        assert np.allclose(sol.adv, alpha * sol.logp, atol=1e-9)  # A* = alpha log pi*
        assert np.allclose(np.exp(sol.logp).sum(1), 1)


def test_policy_evaluation_matches_monte_carlo_and_optimum_is_best(grid):
    alpha = 0.5
    sol = GW.soft_value_iteration(grid, alpha)
    # pi*'s soft value equals V*
    assert np.allclose(GW.policy_evaluation(grid, sol.logp, alpha), sol.V, atol=1e-8)
    # and no other policy does better (random policies)
    rng = np.random.default_rng(0)
    for _ in range(5):
        z = rng.standard_normal((grid.n_states, 4))
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        assert GW.expected_return(grid, lp, alpha) < GW.expected_return(grid, sol.logp, alpha)
    # plain return of the uniform policy by Monte Carlo (truncated at 80 steps, gamma^80 ~ 2e-4)
    unif = np.full((grid.n_states, 4), -np.log(4))
    st, ac = GW.sample_segments(grid, unif[None], np.zeros(20000, dtype=int), 80, rng)
    mc = (grid.gamma ** np.arange(80) * grid.reward[st, ac]).sum(1).mean()
    assert abs(mc - GW.expected_return(grid, unif)) < 0.1


def test_sample_segments_follow_the_policy(grid):
    rng = np.random.default_rng(1)
    sol = GW.soft_value_iteration(grid, 1.0)
    greedy = GW.epsilon_soft(sol.logp, 0.0)
    assert np.allclose(np.exp(GW.epsilon_soft(sol.logp, 0.4)).sum(1), 1)
    st, ac = GW.sample_segments(grid, np.stack([greedy, sol.logp]), np.array([0] * 500 + [1] * 500), 6, rng)
    assert st.shape == ac.shape == (1000, 6)
    assert np.all(ac[:500] == sol.logp.argmax(1)[st[:500]])  # the greedy half takes argmax actions
    assert np.all(st[:, 1:] == grid.next_state[st[:, :-1], ac[:, :-1]])  # consistent transitions
    assert np.all(grid.start[st[:, 0]] > 0)
    assert GW.greedy_arrows(grid, sol.logp)[0][0] == "G"
