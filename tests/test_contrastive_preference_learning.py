"""Tests of the CPL chapter experiment (rlbook.experiments.contrastive_preference_learning)."""

import numpy as np
import pytest
import torch

from rlbook import gridworld as GW
from rlbook.config import from_params
from rlbook.experiments import contrastive_preference_learning as E


@pytest.fixture(scope="module")
def world():
    cfg = E.Config(n_pairs=400)
    g = GW.make_gridworld(cfg.layout, cfg.gamma, lava_reward=cfg.lava_reward, goal_reward=cfg.goal_reward)
    sol = GW.soft_value_iteration(g, cfg.alpha)
    data = E.regret_preferences(g, sol, cfg, np.random.default_rng(0))
    return cfg, g, sol, data


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, lam=0.0)
    with pytest.raises(ValueError):
        from_params(E.Config, gamma=1.0)
    with pytest.raises(ValueError):
        from_params(E.Config, full_methods=("ppo",))
    with pytest.raises(ValueError):
        from_params(E.Config, learning_rate=0.1)
    with pytest.raises(TypeError):
        from_params(E.Config, steps=1.5)


def test_regret_labels(world):
    cfg, g, sol, data = world
    assert data.s_pos.shape == (cfg.n_pairs, cfg.segment_length)
    d = E.regret_score(sol.adv, data.s_pos, data.a_pos, g.gamma) - E.regret_score(sol.adv, data.s_neg, data.a_neg, g.gamma)
    # P(the higher-regret-score segment is preferred) = E[sigma(|d|)]
    assert abs(np.mean(d > 0) - np.mean(1 / (1 + np.exp(-np.abs(d))))) < 0.05
    assert np.all(data.s_pos[:, 1:] == g.next_state[data.s_pos[:, :-1], data.a_pos[:, :-1]])


def test_edge_cpl_optimum_is_the_max_ent_optimal_policy(world):
    """With labels from the regret model, π* is a stationary point of the (expected-label) CPL loss on any pairs."""
    cfg, g, sol, data = world
    z = torch.as_tensor(sol.logp).clone().requires_grad_(True)
    assert E.expected_label_cpl_grad(z, data, sol, g.gamma).abs().max() < 1e-12
    z0 = torch.zeros_like(z, requires_grad=True)
    assert E.expected_label_cpl_grad(z0, data, sol, g.gamma).abs().max() > 1e-3


def test_metrics():
    assert E.spearman(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == pytest.approx(1.0)
    assert E.spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)


@pytest.mark.slow
def test_training_cpl_beats_sft(world):
    cfg, g, sol, data = world
    small = E.Config(n_pairs=400, steps=200, eval_every=100, lr=0.1)
    runs = E.train_all(g, sol, data, small, seed=0)
    assert runs.steps.tolist() == [0, 100, 200]
    assert np.allclose(runs.norm_return[:, 0], 0.0, atol=1e-9)  # everyone starts uniform
    final = dict(zip(runs.names, runs.norm_return[:, -1]))
    # 400 pairs is the finite-data regime where the conservative bias pays (the chapter's last claim)
    assert final["cpl_lambda"] > final["cpl"] + 0.1 and final["cpl_lambda"] > final["sft_pos"] + 0.05
    assert final["sft_pos"] > final["bc_all"] and final["cpl"] > final["bc_all"]
    assert E.normalised_return(g, sol.logp, sol, cfg.alpha) == pytest.approx(1.0)
    assert E.advantage_recovery(g, sol, data, sol.logp) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        E.train_all(g, sol, data, small, 0, learners=("ppo",))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    from test_dpo_q_function import _tiny_full_setup

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_full_setup(tmp_path)
    cfg = E.Config(
        model=str(tmp_path / "policy"), dataset=str(tmp_path / "prefs"), reward_model=str(tmp_path / "rm"),
        full_pairs=8, full_eval_prompts=3, full_max_new_tokens=4, full_batch=4, full_per_device_batch=4,
        full_max_length=64, full_max_steps=2, full_lr=1e-3,
    )
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert set(out["reward"]) == {"initial", "cpl", "cpl_lambda", "dpo", "sft"}
    assert all(np.isfinite(v) for v in out["reward"].values())
    for m in cfg.full_methods:
        assert len(out["logs"][m]) == 2 and all(np.isfinite(h["loss"]) for h in out["logs"][m])
    assert "cpl/accuracy" in out["logs"]["cpl"][0]
