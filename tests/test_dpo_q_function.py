"""Tests of the "From r to Q*" chapter experiment (rlbook.experiments.dpo_q_function)."""

import numpy as np
import pytest
import torch

from rlbook import losses
from rlbook import mdp as M
from rlbook.config import from_params
from rlbook.experiments import dpo_q_function as E

SMALL = dict(n_prompts=2, vocab=3, horizon=3, pairs_per_prompt=6000, steps=150, batch_size=1024, eval_every=50, fresh_samples=256)


@pytest.fixture(scope="module")
def small():
    cfg = E.Config(**SMALL)
    mdp = E.build_mdp(cfg, np.random.default_rng(0))
    sol = M.soft_value_iteration(mdp)
    data = E.bradley_terry_pairs(mdp, cfg.pairs_per_prompt, np.random.default_rng(1))
    return cfg, mdp, sol, data


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, beta=0.0)
    with pytest.raises(ValueError):
        from_params(E.Config, beam_width=0)
    with pytest.raises(ValueError):
        from_params(E.Config, learning_rate=0.1)
    with pytest.raises(TypeError):
        from_params(E.Config, steps=1.5)
    assert from_params(E.Config, beta=1).beta == 1.0


def test_bradley_terry_labels(small):
    cfg, mdp, sol, data = small
    R = mdp.returns()
    rw, rl = R[data.prompt, data.chosen], R[data.prompt, data.rejected]
    d = np.abs(rw - rl)
    neq = d > 0
    # P(the higher-return response is chosen) = E[sigma(|R1 - R2|)] over pairs with different returns
    expected = np.mean(1 / (1 + np.exp(-d[neq])))
    observed = np.mean(rw[neq] > rl[neq])
    assert abs(observed - expected) < 0.02
    assert len(data.prompt) == cfg.n_prompts * cfg.pairs_per_prompt


def test_token_dpo_equals_sequence_dpo(small):
    cfg, mdp, sol, data = small
    tree = mdp.tree
    logp = torch.log_softmax(torch.randn(mdp.n_prompts, tree.n_states, tree.vocab, dtype=torch.float64), -1)
    ref = torch.as_tensor(mdp.logp_ref)
    p, w, l_ = (torch.as_tensor(a[:64]) for a in (data.prompt, data.chosen, data.rejected))
    st, ac = torch.as_tensor(tree.path_states), torch.as_tensor(tree.path_actions)
    tok = lambda lp, y: M.token_logprobs(lp, p, st[y], ac[y])  # noqa: E731
    ones = torch.ones(64, tree.horizon, dtype=torch.float64)
    a, _ = losses.dpo_token_loss(tok(logp, w), tok(ref, w), ones, tok(logp, l_), tok(ref, l_), ones, cfg.beta)
    seq, seq_ref = M.sequence_logprobs(logp, tree), M.sequence_logprobs(ref, tree)
    b, _ = losses.dpo_loss(seq[p, w], seq_ref[p, w], seq[p, l_], seq_ref[p, l_], cfg.beta)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_metrics_at_the_optimum(small):
    cfg, mdp, sol, data = small
    assert E.q_recovery(sol.logp, mdp, sol) == pytest.approx(1.0, abs=1e-12)
    assert E.credit_assignment(sol.logp, mdp, data) > 0.75
    # at pi_ref every implicit reward is 0 and beam search of pi_ref is likelihood search
    f = E.implicit_reward_on_fresh_samples(mdp.logp_ref, mdp, 100, np.random.default_rng(0))
    assert f["mean"] == 0.0 and f["neg_beta_kl"] == 0.0
    f = E.implicit_reward_on_fresh_samples(sol.logp, mdp, 4000, np.random.default_rng(0))
    assert f["neg_beta_kl"] < 0 and abs(f["mean"] - f["neg_beta_kl"]) < 5 * f["se"]
    sv = E.search_vs_sampling(sol.logp, mdp, width=mdp.tree.n_responses)
    R = mdp.returns()
    seq = M.sequence_logprobs(sol.logp, mdp.tree)
    assert sv["beam"] == pytest.approx(np.mean(R[np.arange(mdp.n_prompts), seq.argmax(-1)]))


def test_weighted_corr():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    assert E.weighted_corr(x, 2 * x + 1, np.ones(4)) == pytest.approx(1.0)
    assert E.weighted_corr(x, -x, np.ones(4)) == pytest.approx(-1.0)
    # a zero weight removes a point
    y = np.array([1.0, 2.0, 3.0, -50.0])
    assert E.weighted_corr(x, y, np.array([1, 1, 1, 0.0])) == pytest.approx(1.0)


def test_dpo_learns_the_q_function_and_sft_does_not(small):
    cfg, mdp, sol, data = small
    res = {k: E.train(k, mdp, data, cfg, seed=0) for k in ("dpo", "sft", "bandit")}
    q = {k: E.q_recovery(r.logp, mdp, sol) for k, r in res.items()}
    assert q["dpo"] > 0.9 and q["bandit"] > 0.8
    assert q["dpo"] > q["sft"] + 0.05
    assert res["dpo"].steps == [0, 50, 100, 150]
    assert abs(res["dpo"].fresh_reward[0]) < 1e-12 and res["dpo"].fresh_reward[-1] < 0
    np.testing.assert_allclose(np.exp(res["bandit"].logp).sum(-1), 1.0)
    with pytest.raises(ValueError):
        E.train("ppo", mdp, data, cfg, seed=0)


def _tiny_full_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy, save_tiny_reward_model

    alphabet = "abcdefghijklmnopqrstuvwxyz ?.!:>\n"
    tok = save_tiny_policy(tmp_path / "policy", alphabet, max_len=128)

    save_tiny_reward_model(tmp_path / "rm", tok, max_len=256)
    rows = []
    for i in range(12):
        q = [{"role": "user", "content": f"say {'ab'[i % 2]}?"}]
        rows.append({
            "chosen": q + [{"role": "assistant", "content": "yes " + "ab"[i % 2]}],
            "rejected": q + [{"role": "assistant", "content": "no"}],
            "score_chosen": 8.0, "score_rejected": 2.0,
        })
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs"))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_full_setup(tmp_path)
    cfg = E.Config(
        model=str(tmp_path / "policy"), dataset=str(tmp_path / "prefs"), reward_model=str(tmp_path / "rm"),
        full_pairs=8, full_eval_prompts=3, full_heatmap_pairs=2, full_max_new_tokens=4, full_beams=(1, 2),
        full_batch=4, full_per_device_batch=4, full_max_length=64, full_max_steps=2, full_lr=1e-3,
    )
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert out["curves"]["step"] == [1, 2]
    assert len(out["curves"]["rewards/chosen"]) == 2
    assert len(out["heatmaps"]) == 2
    h = out["heatmaps"][0]["chosen"]
    assert len(h["tokens"]) == len(h["r"]) > 0 and np.all(np.isfinite(h["r"]))
    assert set(out["decode"]) == {"sampling", "beam1", "beam2"}
    assert all(np.isfinite(v["reward"]) for v in out["decode"].values())
