"""Tests of rlbook.mdp: the token tree, exact soft value iteration and tabular-policy helpers."""

import numpy as np
import pytest
import torch

from rlbook import mdp as M


@pytest.fixture(scope="module")
def world():
    m = M.make_tree_mdp(np.random.default_rng(0), n_prompts=3, vocab=3, horizon=3, beta=0.7)
    return m, M.soft_value_iteration(m)


def test_tree_indexing():
    tree = M.TokenTree(vocab=3, horizon=3)
    assert tree.n_states == 1 + 3 + 9 and tree.n_responses == 27
    toks = tree.path_actions
    assert np.array_equal(tree.response_index(toks), np.arange(27))
    # state before token t is offset(t) + (prefix as a base-V number)
    for n in range(27):
        code = 0
        for t in range(3):
            assert tree.path_states[n, t] == tree.offset(t) + code
            code = code * 3 + toks[n, t]
    assert np.array_equal(tree.depth, [0, 1, 1, 1] + [2] * 9)


def test_make_tree_mdp_reward():
    m = M.make_tree_mdp(np.random.default_rng(1), n_prompts=2, vocab=4, horizon=3, target_bonus=0.5, error_penalty=2.0)
    assert np.all(m.target != m.error)
    np.testing.assert_allclose(np.exp(m.logp_ref).sum(-1), 1.0)
    R = m.returns()
    tokens = m.tree.path_actions
    expected = 0.5 * (tokens[None] == m.target[:, None, :]).sum(-1) - 2.0 * (tokens[None] == m.error[:, None, :]).sum(-1)
    np.testing.assert_allclose(R, expected)


def test_soft_vi_hand_computed_one_step():
    # horizon 1: V*(s0) = beta log sum_a pi_ref(a) exp(r(a)/beta)
    tree = M.TokenTree(vocab=2, horizon=1)
    beta = 0.5
    logp_ref = np.log(np.array([[[0.25, 0.75]]]))
    reward = np.array([[[1.0, 0.0]]])
    sol = M.soft_value_iteration(M.TreeTokenMDP(tree, beta, logp_ref, reward))
    v = beta * np.log(0.25 * np.exp(2.0) + 0.75)
    assert sol.V[0, 0] == pytest.approx(v, abs=1e-12)
    p0 = 0.25 * np.exp(2.0) / (0.25 * np.exp(2.0) + 0.75)
    np.testing.assert_allclose(np.exp(sol.logp[0, 0]), [p0, 1 - p0], atol=1e-12)


def test_pi_star_two_ways(world):
    m, sol = world
    token_level = M.sequence_logprobs(sol.logp, m.tree)
    closed_form = M.optimal_sequence_logprobs(m)
    np.testing.assert_allclose(token_level, closed_form, atol=1e-10)
    np.testing.assert_allclose(np.exp(sol.logp).sum(-1), 1.0, atol=1e-12)
    # beta log Z = V*(s0)
    logZ = np.log((np.exp(M.sequence_logprobs(m.logp_ref, m.tree)) * np.exp(m.returns() / m.beta)).sum(-1))
    np.testing.assert_allclose(m.beta * logZ, sol.V[:, 0], atol=1e-10)


def test_per_token_reward_identity(world):
    m, sol = world
    r = m.beta * (sol.logp - m.logp_ref) + sol.V[:, :, None] - sol.V_next
    np.testing.assert_allclose(r, m.reward, atol=1e-8)
    # Bellman: Q* = r + beta log pi_ref + V*(s')
    np.testing.assert_allclose(sol.Q, m.reward + m.beta * m.logp_ref + sol.V_next, atol=1e-12)


def test_marginalisation_round_trip(world):
    m, sol = world
    seq = M.sequence_logprobs(sol.logp, m.tree)
    np.testing.assert_allclose(M.token_logp_from_sequences(seq, m.tree), sol.logp, atol=1e-10)


def test_state_visitation(world):
    m, _ = world
    d = M.state_visitation(m.logp_ref, m.tree)
    for k in range(m.tree.horizon):
        np.testing.assert_allclose(d[:, m.tree.depth_slice(k)].sum(-1), 1.0)
    # visitation of a depth-1 state is pi_ref(a|s0)
    np.testing.assert_allclose(d[:, 1:4], np.exp(m.logp_ref[:, 0, :]))


def test_token_logprobs_numpy_and_torch(world):
    m, sol = world
    y = np.array([0, 5, 26])
    p = np.array([0, 1, 2])
    st, ac = m.tree.path_states[y], m.tree.path_actions[y]
    a = M.token_logprobs(sol.logp, p, st, ac)
    b = M.token_logprobs(torch.as_tensor(sol.logp), torch.as_tensor(p), torch.as_tensor(st), torch.as_tensor(ac))
    np.testing.assert_allclose(a, b.numpy())
    np.testing.assert_allclose(a.sum(-1), M.sequence_logprobs(sol.logp, m.tree)[p, y])
    np.testing.assert_allclose(M.sequence_logprobs(torch.as_tensor(sol.logp), m.tree).numpy(), M.sequence_logprobs(sol.logp, m.tree))


def test_sampling_matches_probabilities(world):
    m, _ = world
    rng = np.random.default_rng(0)
    n = 60_000
    y = M.sample_responses(m.logp_ref, np.zeros(n, dtype=int), m.tree, rng)
    freq = np.bincount(y, minlength=27) / n
    p = np.exp(M.sequence_logprobs(m.logp_ref, m.tree)[0])
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / n)


def test_beam_search(world):
    m, sol = world
    seq = M.sequence_logprobs(sol.logp, m.tree)
    for p in range(m.n_prompts):
        best, score = M.beam_search(sol.logp, p, m.tree, width=m.tree.n_responses)
        assert best[0] == np.argmax(seq[p]) and score[0] == pytest.approx(seq[p].max())
        np.testing.assert_allclose(score, np.sort(seq[p])[::-1])
        # width 1 is greedy decoding
        code = 0
        for d in range(m.tree.horizon):
            a = int(np.argmax(sol.logp[p, m.tree.offset(d) + code]))
            code = code * m.tree.vocab + a
        assert M.beam_search(sol.logp, p, m.tree, width=1)[0][0] == code
    with pytest.raises(ValueError):
        M.beam_search(sol.logp, 0, m.tree, width=0)


def test_implicit_reward_under_ref_is_minus_beta_kl(world):
    m, sol = world
    seq_ref = M.sequence_logprobs(m.logp_ref, m.tree)
    seq = M.sequence_logprobs(sol.logp, m.tree)
    mean_implicit = (np.exp(seq_ref) * m.beta * (seq - seq_ref)).sum(-1)
    kl = M.kl_sequences(seq_ref, seq)
    np.testing.assert_allclose(mean_implicit, -m.beta * kl, atol=1e-12)
    assert np.all(kl > 0) and np.allclose(M.kl_sequences(seq, seq), 0.0)
