"""Tests of rlbook.games: preference matrices, minimax winners, exploitability, the regularised game."""

import numpy as np
import pytest

from rlbook import games as G


def test_matrices_are_preference_matrices():
    for P in (G.rock_paper_scissors(0.8), G.intransitive_game(), G.intransitive_game(0.8, 0.3),
              G.bt_plus_cycle(np.random.default_rng(0).normal(size=10))):
        G.check_preference_matrix(P)
        assert np.allclose(np.diag(P), 0.5)
    with pytest.raises(ValueError):
        G.check_preference_matrix(np.array([[0.5, 0.7], [0.7, 0.5]]))
    with pytest.raises(ValueError):
        G.from_beats(3, {(1, 1): 0.9})


def test_intransitive_game_entries():
    P = G.intransitive_game(0.9, 0.35, 0.99, 0.45)
    assert P[0, 1] == P[1, 2] == P[2, 0] == 0.9
    assert P[3, 0] == 0.35 and P[0, 3] == pytest.approx(0.65) and P[3, 4] == 0.99
    assert P[4, 1] == 0.45 and P[4, 5] == 0.5
    # a Bradley-Terry style average win rate ranks the favourite first
    assert np.argmax(P.mean(1)) == 3


def test_bt_plus_cycle_is_intransitive():
    s = np.array([2.0, 1.9, 1.8, -1.0, 0.0])
    P = G.bt_plus_cycle(s, top=3, bonus=0.3)
    assert P[0, 1] > 0.5 and P[1, 2] > 0.5 and P[2, 0] > 0.5  # 0 > 1 > 2 > 0
    # below the top three it is Bradley-Terry
    assert P[4, 3] == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_minimax_winner_rps_and_value():
    P = G.rock_paper_scissors(1.0)
    w = G.minimax_winner(P)
    assert np.allclose(w, 1 / 3, atol=1e-8)
    # symmetric game: the value is 1/2 and no response beats the winner on average
    assert G.exploitability(P, w) == pytest.approx(0.0, abs=1e-8)
    assert G.preference(P, w, w) == pytest.approx(0.5)


def test_minimax_winner_transitive_is_condorcet_winner():
    s = np.array([0.3, 1.2, -0.5, 0.0])
    P = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    assert np.allclose(G.minimax_winner(P), np.eye(4)[1], atol=1e-8)


def test_minimax_winner_random_game_unexploitable():
    rng = np.random.default_rng(3)
    A = rng.random((7, 7))
    P = np.triu(A, 1) + np.tril(1 - A.T, -1) + 0.5 * np.eye(7)
    w = G.minimax_winner(P)
    assert G.exploitability(P, w) <= 1e-8
    # any other policy is exploitable at least 0
    assert G.exploitability(P, np.ones(7) / 7) >= -1e-12


def test_exploitability_hand_values():
    P = G.intransitive_game(0.8, 0.3)
    assert G.exploitability(P, np.eye(6)[3]) == pytest.approx(0.2)  # the BT favourite loses 0.3 to the cycle
    assert G.exploitability(P, np.eye(6)[0]) == pytest.approx(0.3)  # response 2 beats response 0 w.p. 0.8
    assert np.allclose(G.win_rates(P, np.eye(6)[0]), P[:, 0])
    # batched matrices
    Ps = np.stack([P, G.intransitive_game()])
    pis = np.stack([np.eye(6)[0], np.eye(6)[1]])
    assert np.allclose(G.win_rates(Ps, pis), np.stack([P[:, 0], G.intransitive_game()[:, 1]]))


def test_duality_gap_definition_by_brute_force():
    rng = np.random.default_rng(1)
    P, ref, tau = G.intransitive_game(), np.ones(6) / 6, 0.1
    pi = rng.dirichlet(np.ones(6))
    # max over pi' of J(pi', pi) is attained at pi' ∝ ref exp(P pi / tau); min over pi' of J(pi, pi') by symmetry
    br = ref * np.exp(G.win_rates(P, pi) / tau)
    br /= br.sum()
    worst = br  # the minimiser of J(pi, .) is the same best response (P^T = 1 - P)
    gap = G.regularised_payoff(P, br, pi, ref, tau) - G.regularised_payoff(P, pi, worst, ref, tau)
    assert G.duality_gap(P, pi, ref, tau) == pytest.approx(gap, abs=1e-12)
    for _ in range(20):  # no other response does better
        q = rng.dirichlet(np.ones(6))
        assert G.regularised_payoff(P, q, pi, ref, tau) <= G.regularised_payoff(P, br, pi, ref, tau) + 1e-12
    assert G.duality_gap(P, pi, ref, tau) > 0


def test_regularised_nash_fixed_point():
    P, ref, tau = G.intransitive_game(), np.ones(6) / 6, 0.1
    nash = G.regularised_nash(P, ref, tau)
    fixed = ref * np.exp(G.win_rates(P, nash) / tau)
    assert np.allclose(nash, fixed / fixed.sum(), atol=1e-9)
    assert G.duality_gap(P, nash, ref, tau) < 1e-9
    # its OMD step is itself
    assert np.allclose(G.omd_step(P, nash, ref, tau, 1.0), nash, atol=1e-9)


def test_omd_step_closed_form():
    P, ref = G.intransitive_game(), np.random.default_rng(2).dirichlet(np.ones(6))
    pi = np.random.default_rng(3).dirichlet(np.ones(6))
    eta, tau = 0.7, 0.2
    expect = pi ** (1 - eta * tau) * ref ** (eta * tau) * np.exp(eta * (P @ pi))
    assert np.allclose(G.omd_step(P, pi, ref, tau, eta), expect / expect.sum())
    with pytest.raises(ValueError):
        G.omd_step(P, pi, ref, tau=2.0, eta=1.0)


def test_mwu_average_iterate_converges_to_minimax_winner():
    P = G.intransitive_game(0.8, 0.3)
    it = G.self_play(P, np.ones(6) / 6, 3000, lr=0.5)
    avg = G.running_average(it)
    assert G.exploitability(P, avg[-1]) < 0.01
    assert G.tv(avg[-1], G.minimax_winner(P)) < 0.02
    # the last iterate on a pure cycle does not converge (it cycles)
    rps = G.rock_paper_scissors(1.0)
    last = G.self_play(rps, np.array([0.5, 0.3, 0.2]), 2000, lr=0.5)
    assert G.exploitability(rps, last[-1]) > 0.1
    assert G.exploitability(rps, G.running_average(last)[-1]) < 0.05


def test_running_average_and_tv():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert np.allclose(G.running_average(x)[-1], [1 / 3, 2 / 3])
    assert G.tv(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert G.kl(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
