"""Tests of the "Unpacking DPO and PPO" chapter (rlbook.experiments.unpacking_dpo_ppo)."""

import numpy as np
import pytest
import torch

from rlbook import bandits as B
from rlbook.config import from_params
from rlbook.experiments import unpacking_dpo_ppo as E

SMALL = dict(n_general=30, n_math=30, n_math_unlabelled=30, n_pairs=400, dpo_steps=80, rl_steps=40, rm_steps=100)


def _argmin(fn, K, steps=200):
    x = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = fn(x)
        v.backward()
        return v

    opt.step(closure)
    return torch.softmax(x.detach(), -1).numpy()


def test_edge_dpo_optimum_is_kl_rl_optimum():
    """DPO's population minimiser = the maximiser of E[r] - beta KL (what PPO optimises) = pi_ref e^{r/beta}/Z."""
    rng = np.random.default_rng(0)
    K, beta = 6, 0.5
    r = torch.as_tensor(rng.standard_normal(K))
    ref = torch.as_tensor(rng.standard_normal(K))
    closed = B.kl_optimal_policy(torch.softmax(ref, -1).numpy(), r.numpy(), beta)
    for mu in (torch.full((K,), 1.0 / K), torch.softmax(ref, -1), torch.softmax(-r, -1)):  # any full-support pair law
        dpo = _argmin(lambda z: E.population_dpo_loss(z, ref, r, beta, mu), K)
        np.testing.assert_allclose(dpo, closed, atol=1e-6)
    rl = _argmin(lambda z: -E.kl_rl_objective(z, ref, r, beta), K)
    np.testing.assert_allclose(rl, closed, atol=1e-6)
    # a different beta gives a different optimum: the test can fail
    assert np.abs(B.kl_optimal_policy(torch.softmax(ref, -1).numpy(), r.numpy(), 2 * beta) - closed).max() > 1e-2


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, noise_low=0.6)
    with pytest.raises(ValueError):
        from_params(E.Config, rl_group=1)
    with pytest.raises(ValueError):
        from_params(E.Config, kl=0.1)
    with pytest.raises(TypeError):
        from_params(E.Config, dpo_steps=2.5)


def test_world_and_pairs():
    cfg = E.Config(**{**SMALL, "n_pairs": 3000})
    w = E.build_world(cfg, np.random.default_rng(0))
    X = cfg.n_general + cfg.n_math + cfg.n_math_unlabelled
    assert w.bandit.r.shape == (X, cfg.n_responses) and w.math.sum() == cfg.n_math + cfg.n_math_unlabelled
    lin = w.bandit.phi @ np.linalg.lstsq(w.bandit.phi[~w.math].reshape(-1, cfg.d), w.bandit.r[~w.math].ravel(), rcond=None)[0]
    np.testing.assert_allclose(lin[~w.math], w.bandit.r[~w.math], atol=1e-10)  # general reward is linear
    assert np.abs(lin[w.math] - w.bandit.r[w.math]).max() > 0.5  # math reward is not
    for flip in (0.0, 0.3):
        p = E.make_pairs(w, cfg, flip, np.random.default_rng(1))
        assert np.all(w.labelled[p.x]) and np.all(p.yw != p.yl)
        wrong = np.mean(w.bandit.r[p.x, p.yw] < w.bandit.r[p.x, p.yl])
        assert abs(wrong - flip) < 0.04  # 4.8 standard errors at n = 3000


def test_policy_starts_at_sft_and_reward_models_rank():
    cfg = E.Config(**SMALL)
    w = E.build_world(cfg, np.random.default_rng(0))
    np.testing.assert_allclose(E.Policy(w).probs(), w.bandit.ref_probs, atol=1e-12)
    p = E.make_pairs(w, cfg, 0.0, np.random.default_rng(1))
    gen = np.flatnonzero(~w.math)
    s = E.fit_reward_model(w, p, "linear", cfg, 0)
    assert s.shape == w.bandit.r.shape and np.allclose(s.mean(-1), 0)
    assert E.rm_accuracy(w, s, gen, 2000, np.random.default_rng(2)) > 0.9
    with pytest.raises(ValueError):
        E.fit_reward_model(w, p, "transformer", cfg, 0)


def test_study_runs_and_gains_are_differences():
    cfg = E.Config(**SMALL)
    out = E.run_study(cfg, seed=0)
    assert set(out["results"]) == set(E.RUNS)
    g = E.factor_gains(out["results"])
    R = out["results"]
    hi, lo = ("ppo", "high", "mlp", "labelled+math"), ("ppo", "high", "mlp", "labelled")
    assert g["prompts"]["math"] == pytest.approx(R[hi]["math"] - R[lo]["math"])
    # every learner improves on pi_sft with clean-ish data
    for run in (("dpo", "high", "linear", "labelled"), ("ppo", "high", "linear", "labelled")):
        assert R[run]["general"] > out["sft"]["general"] + 0.2


def test_gsm8k_answer():
    assert E.gsm8k_answer("so 3 + 4 = 7.\n#### 1,234") == "1234"
    assert E.gsm8k_answer("The answer is 42.") == "42"
    assert E.gsm8k_answer("no number") is None


# ----------------------------------------------------------------------------- full profile (dry run)


def _tiny_full_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy

    save_tiny_policy(tmp_path / "policy", "abcdefghijklmnopqrstuvwxyz0123456789 ?.!:#\n", max_len=256)
    rows = []
    for i in range(16):
        q = [{"role": "user", "content": f"say {'ab'[i % 2]}?"}]
        rows.append({"chosen": q + [{"role": "assistant", "content": "yes " + "ab"[i % 2]}],
                     "rejected": q + [{"role": "assistant", "content": "no"}]})
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs"))
    datasets.Dataset.from_list([{"question": f"what is {i} plus 1?", "answer": f"{i} + 1\n#### {i + 1}"} for i in range(3)]
                               ).save_to_disk(str(tmp_path / "gsm8k"))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_full_setup(tmp_path)
    cfg = E.Config(
        model=str(tmp_path / "policy"), dataset=str(tmp_path / "prefs"), gsm8k=str(tmp_path / "gsm8k"),
        full_pairs=8, full_rl_prompts=4, full_eval_prompts=2, full_gsm8k=3, full_rl_steps=1, full_group=2,
        full_batch=4, full_per_device_batch=4, full_max_length=64, full_max_new_tokens=4, full_max_steps=1,
        full_lr=1e-3, full_rl_lr=1e-3,
    )
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert set(out) == {"seconds", "initial", "dpo", "rloo"}
    for k in ("initial", "dpo", "rloo"):
        assert 0 <= out[k]["gsm8k"] <= 1 and np.isfinite(out[k]["rm_score"])
    assert out["initial"]["rm_win_rate_vs_initial"] == 0.5
