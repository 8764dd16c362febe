"""Tests of the CoPG chapter experiment (rlbook.experiments.contrastive_policy_gradient)
and of the shared rlbook.pair_trainer (its full-profile dry run)."""

import numpy as np
import pytest
import torch

from rlbook import bandits as B
from rlbook.config import from_params
from rlbook.experiments import contrastive_policy_gradient as E


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, beta=0.0)
    with pytest.raises(ValueError):
        from_params(E.Config, eval_every=0)
    with pytest.raises(ValueError):
        from_params(E.Config, full_methods=("ppo",))
    with pytest.raises(ValueError):
        from_params(E.Config, learning_rate=0.1)
    with pytest.raises(TypeError):
        from_params(E.Config, steps=1.5)


def test_world():
    cfg = E.Config(arms=8)
    w = E.make_world(cfg, np.random.default_rng(0))
    for p in [w.ref, w.opt, *w.mu.values()]:
        assert p.shape == (8,) and abs(p.sum() - 1) < 1e-12
    # pi* maximises the regularised objective
    assert E.regularised_objective(w.opt, w) > E.regularised_objective(w.ref, w)
    assert np.corrcoef(w.mu["skewed"], w.R)[0, 1] < 0


def test_expected_direction_matches_sampled_copg_gradient():
    """The exact E[ĝ] agrees with the mean of many sampled CoPG loss gradients (Monte Carlo, 5 s.e.)."""
    cfg = E.Config(arms=5)
    w = E.make_world(cfg, np.random.default_rng(1))
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    z0 = t(np.log(w.ref)) + 0.3
    mu = t(w.mu["skewed"])
    exact = E.expected_copg_direction(z0, t(w.R), t(np.log(w.ref)), mu, w.beta)
    from rlbook.losses.copg import copg_loss

    g = torch.Generator().manual_seed(0)
    n = 20000
    y, yp = torch.multinomial(mu, n, True, generator=g), torch.multinomial(mu, n, True, generator=g)
    z = z0.clone().requires_grad_(True)
    lp = torch.log_softmax(z, -1)
    ref = t(np.log(w.ref))
    R = t(w.R)
    loss, _ = copg_loss(lp[y], ref[y], R[y], lp[yp], ref[yp], R[yp], w.beta)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.allclose(-grad, exact, atol=3e-3)
    assert exact.abs().max() > 1e-2


def test_gradient_variance_zero_at_optimum_and_is_weights_hurt_when_skewed():
    cfg = E.Config()
    w = E.make_world(cfg, np.random.default_rng(0))
    v = E.gradient_variance(w, np.log(w.opt), "skewed")
    assert v["copg"] < 1e-20 and v["is_pg"] < 1e-20  # R^β is constant at π*: every sample agrees
    v = E.gradient_variance(w, np.log(w.ref), "skewed")
    assert v["is_pg"] > 3 * v["copg"]


@pytest.mark.slow
def test_training_copg_recovers_pi_star_naive_pg_does_not():
    cfg = E.Config(arms=8, steps=300, batch_size=128, lr=0.1, eval_every=50)
    out = E.run_smoke(cfg, seed=0)
    kl = out["final_kl"]
    assert max(kl[f"copg/{b}"] for b in E.BEHAVIOURS) < 1e-4
    assert kl["naive_pg/skewed"] > 0.05
    assert kl["dpo/uniform"] > 10 * kl["copg/uniform"] + 0.05
    runs = out["runs"]
    assert runs.steps.tolist() == [0, 50, 100, 150, 200, 250, 300]
    assert np.allclose(runs.kl[:, 0], B.kl(out["world"].ref, out["world"].opt))
    with pytest.raises(ValueError):
        E.train_all(out["world"], cfg, 0, methods=("ppo",))


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
    assert set(out["reward"]) == {"initial", "copg", "ipo", "dpo"}
    assert all(np.isfinite(v) for v in out["reward"].values())
    for m in ("copg", "ipo", "dpo"):
        assert len(out["logs"][m]) == 2 and all(np.isfinite(h["loss"]) for h in out["logs"][m])
    assert "copg/adv_abs" in out["logs"]["copg"][0]
