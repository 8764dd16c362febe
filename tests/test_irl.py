"""Tests of rlbook.irl and of the IRL-survey chapter: identities (family-tree edges), values, full-profile dry run."""

import numpy as np
import pytest
import torch

from rlbook import irl
from rlbook import mdp as M
from rlbook.experiments import irl_llm_post_training_survey as E


def _mdp(seed=0, P=3, V=3, T=3, beta=0.7):
    return M.make_tree_mdp(np.random.default_rng(seed), P, V, T, beta, 0.8, 0.5, 1.5)


def test_position_token_features_and_dense_reward():
    tree = M.TokenTree(3, 3)
    phi = irl.position_token_features(tree)
    assert phi.shape == (27, 9) and (phi.sum(1) == 3).all()
    theta = np.random.default_rng(0).normal(size=(2, 9))
    r_tok = irl.dense_from_position_weights(theta, tree)  # (P, S, V)
    assert np.allclose(M.sequence_logprobs(r_tok, tree), theta @ phi.T)


def test_shape_changes_returns_by_a_constant():
    mdp = _mdp()
    pot = np.random.default_rng(1).normal(size=(mdp.n_prompts, mdp.tree.n_states))
    d = irl.shape(mdp, pot).returns() - mdp.returns()
    assert np.allclose(d, -pot[:, :1], atol=1e-12)  # every return shifts by -Φ(s0)


def test_edge_shaping_invariance():
    """Potential shaping r + Φ(s') − Φ(s) leaves π* unchanged (1e-8); Q* and V* shift by Φ."""
    mdp = _mdp(2)
    pot = np.random.default_rng(3).normal(size=(mdp.n_prompts, mdp.tree.n_states))
    a, b = M.soft_value_iteration(mdp), M.soft_value_iteration(irl.shape(mdp, pot))
    assert np.abs(a.logp - b.logp).max() < 1e-8
    assert np.allclose(b.V, a.V - pot, atol=1e-10)


def test_edge_soft_policy_is_exp_q_minus_v():
    """The soft-optimal policy is exp((Q* − V*)/β), and its sequence form is π_ref e^{R/β}/Z."""
    mdp = _mdp(4)
    sol = M.soft_value_iteration(mdp)
    assert np.allclose(sol.logp, (sol.Q - sol.V[:, :, None]) / mdp.beta, atol=1e-12)
    seq = irl.sequence_policy_from_reward(M.sequence_logprobs(mdp.logp_ref, mdp.tree), mdp.returns(), mdp.beta)
    assert np.allclose(M.sequence_logprobs(sol.logp, mdp.tree), seq, atol=1e-10)


def test_edge_maxent_irl_is_mle():
    """The max-ent IRL feature-matching gradient (E_D φ − E_p φ)/β is the demos' log-likelihood gradient."""
    mdp = _mdp(5)
    tree = mdp.tree
    phi = irl.position_token_features(tree)
    seq_ref = M.sequence_logprobs(mdp.logp_ref, tree)
    rng = np.random.default_rng(6)
    counts = rng.integers(0, 5, size=(mdp.n_prompts, tree.n_responses)).astype(float)
    theta = rng.normal(size=(mdp.n_prompts, phi.shape[1]))
    th = torch.tensor(theta, requires_grad=True)
    logp = torch.log_softmax(torch.tensor(seq_ref) + th @ torch.tensor(phi).T / mdp.beta, -1)
    ll = (torch.tensor(counts / counts.sum(1, keepdims=True)) * logp).sum()
    (g,) = torch.autograd.grad(ll, th)
    assert np.allclose(g.numpy(), irl.maxent_irl_gradient(counts, phi, seq_ref, theta, mdp.beta), atol=1e-10)


def test_edge_maxent_irl_tabular_is_bc():
    """With one indicator feature per response, max-ent IRL's optimum is the empirical distribution, i.e. BC.

    θ*_y = β(log p̂(y) − log π_ref(y)) zeroes the gradient, and the count-based token policy (BC with α = 0)
    has the same sequence distribution p̂ (token counts telescope along the tree).
    """
    mdp = _mdp(7, P=2, V=2, T=3)
    tree = mdp.tree
    rng = np.random.default_rng(8)
    x = np.repeat(np.arange(2), 400)
    y = rng.integers(0, tree.n_responses, size=800)
    counts = np.zeros((2, tree.n_responses))
    np.add.at(counts, (x, y), 1.0)
    assert (counts > 0).all()
    emp = counts / counts.sum(1, keepdims=True)
    seq_ref = M.sequence_logprobs(mdp.logp_ref, tree)
    theta = mdp.beta * (np.log(emp) - seq_ref)
    eye = np.eye(tree.n_responses)
    assert np.abs(irl.maxent_irl_gradient(counts, eye, seq_ref, theta, mdp.beta)).max() < 1e-10
    bc = irl.behaviour_cloning(tree, x, y, 2, alpha=0.0)
    assert np.allclose(np.exp(M.sequence_logprobs(bc, tree)), emp, atol=1e-12)


def test_edge_airl_reward_is_value_shaped_reward():
    """AIRL's optimal f = β log π*/π_ref equals r + V*(s') − V*(s): the true reward shaped by the soft value.

    Hence it induces the same π*, and its reward-to-go from s_t is the true return-to-go minus V*(s_t).
    """
    mdp = _mdp(9)
    sol = M.soft_value_iteration(mdp)
    f = irl.airl_dense_reward(mdp)
    assert np.allclose(f, mdp.reward + sol.V_next - sol.V[:, :, None], atol=1e-10)
    assert np.allclose(f, irl.shape(mdp, sol.V).reward, atol=1e-10)
    same = M.soft_value_iteration(M.TreeTokenMDP(mdp.tree, mdp.beta, mdp.logp_ref, f))
    assert np.abs(same.logp - sol.logp).max() < 1e-8
    tree = mdp.tree
    st, ac = tree.path_states, tree.path_actions
    p = 1
    f_tok, r_tok = f[p, st, ac], mdp.reward[p, st, ac]  # (N, T)
    rtg_f = np.flip(np.cumsum(np.flip(f_tok, 1), 1), 1)
    rtg_r = np.flip(np.cumsum(np.flip(r_tok, 1), 1), 1)
    assert np.allclose(rtg_f, rtg_r - sol.V[p, st], atol=1e-10)


def test_maxent_irl_recovers_reward_from_optimal_demos():
    mdp = _mdp(10, P=2, V=3, T=3, beta=0.5)
    tree = mdp.tree
    phi = irl.position_token_features(tree)
    sol = M.soft_value_iteration(mdp)
    # exact demo distribution (infinite demos): counts proportional to π*(y)
    counts = 1e6 * np.exp(M.sequence_logprobs(sol.logp, tree))
    theta = irl.maxent_irl(counts, phi, M.sequence_logprobs(mdp.logp_ref, tree), mdp.beta, steps=300, lr=0.2, l2=0.0)
    learnt = M.TreeTokenMDP(tree, mdp.beta, mdp.logp_ref, irl.dense_from_position_weights(theta, tree))
    assert np.abs(M.soft_value_iteration(learnt).logp - sol.logp).max() < 1e-2


def test_behaviour_cloning_prior_and_normalisation():
    mdp = _mdp(11)
    bc = irl.behaviour_cloning(mdp.tree, np.array([0]), np.array([5]), mdp.n_prompts, prior=mdp.logp_ref, alpha=1.0)
    assert np.allclose(np.exp(bc).sum(-1), 1.0)
    assert np.allclose(bc[1], mdp.logp_ref[1])  # a prompt without demos keeps the prior


def test_objective_is_maximised_by_soft_optimum():
    mdp = _mdp(12)
    sol = M.soft_value_iteration(mdp)
    j_star = irl.objective(sol.logp, mdp)
    assert np.allclose(j_star, sol.V[:, 0], atol=1e-10)  # J(π*) = V*(s0) = β log Z
    assert (irl.objective(mdp.logp_ref, mdp) <= j_star + 1e-12).all()


def test_reinforce_tree_learns():
    mdp = _mdp(13, P=2)
    c = irl.reinforce_tree(mdp, mdp.reward, False, 60, 16, 0.1, 0)
    assert c.shape == (61, 2) and c[-1].mean() > c[0].mean()
    d = irl.reinforce_tree(mdp, irl.airl_dense_reward(mdp), True, 60, 16, 0.1, 0)
    assert d[-1].mean() > d[0].mean()


def test_chapter_smoke_small():
    cfg = E.Config(n_prompts=2, n_pairs=20, n_demos=20, irl_steps=10, rl_updates=3)
    out = E.run_smoke(cfg, 0)
    assert set(out["metrics"]) == {"bt", "maxent", "bc"}
    assert set(out["rl"]) == {"sparse", "dense"}
    assert np.isfinite(out["metrics"]["maxent"]["objective"])


# ----------------------------------------------------------------------------- full profile dry run


def _tiny_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy, save_tiny_reward_model

    tok = save_tiny_policy(tmp_path / "policy", "abcdefghijklmnopqrstuvwxyz ?.!:\n", max_len=128)
    save_tiny_reward_model(tmp_path / "judge", tok, max_len=256)
    rows = []
    for i in range(14):
        q = [{"role": "user", "content": f"say {'ab'[i % 2]}?"}]
        rows.append({"prompt": q[0]["content"], "chosen": q + [{"role": "assistant", "content": "yes " + "ab"[i % 2]}],
                     "rejected": q + [{"role": "assistant", "content": "no"}]})
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "prefs"))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_setup(tmp_path)
    cfg = E.Config(full_model=str(tmp_path / "policy"), full_pref_data=str(tmp_path / "prefs"),
                   full_judge=str(tmp_path / "judge"), full_pairs=8, full_eval_prompts=3, full_best_of=2,
                   full_max_new_tokens=4, full_per_device_batch=2, full_batch=2, full_max_length=64,
                   full_max_steps=2, full_lr=1e-3, full_sft_lr=1e-3, full_rm_lr=1e-3)
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert set(out["responses"]) == {"sft", "dpo", "rm+best-of-2", "base"}
    assert all(len(v) == 3 for v in out["responses"].values())
    assert set(out["win_rate_vs_sft"]) == {"dpo", "rm+best-of-2", "base"}
    assert all(0.0 <= v <= 1.0 for v in out["win_rate_vs_sft"].values())


def test_fit_bt_linear_per_prompt_matches_shared_fit():
    from rlbook.rewards import fit_bt_linear

    rng = np.random.default_rng(14)
    phi = rng.normal(size=(10, 3))
    x = np.repeat(np.arange(2), 30)
    yw, yl = rng.integers(0, 10, 60), rng.integers(0, 10, 60)
    w = irl.fit_bt_linear_per_prompt(phi, x, yw, yl, 2, steps=500, lr=0.1, l2=0.05)
    for p in range(2):
        ref = fit_bt_linear(phi[yw[x == p]], phi[yl[x == p]], steps=500, lr=0.1, l2=0.05)
        assert np.allclose(w[p], ref, atol=2e-3)
