"""Tests of the "Implicit Reward as the Bridge" chapter: the implicit-reward SFT losses
(rlbook.losses.implicit_reward_sft), the family-tree edges SFT <-> implicit reward <-> DPO, and
the experiment (rlbook.experiments.sft_dpo_implicit_reward_bridge)."""

import numpy as np
import pytest
import torch

from rlbook.bandits import kl_optimal_policy, random_contextual_bandit, regularised_objective, softmax
from rlbook.config import from_params
from rlbook.experiments import sft_dpo_implicit_reward_bridge as E
from rlbook.losses import dpo_loss, sft_loss
from rlbook.losses import implicit_reward_sft as F



def _demo_set(rng, Y=6, n=100):
    """One prompt: π_ref, a demonstrator π_E with probabilities k/n, and n demos enumerating π_E exactly."""
    counts = rng.multinomial(n - Y, np.ones(Y) / Y) + 1  # every response demonstrated at least once
    demos = np.repeat(np.arange(Y), counts)
    pi_e = torch.tensor(counts / n)
    ref = torch.tensor(softmax(rng.standard_normal(Y)))
    return pi_e, ref, torch.as_tensor(demos)


# ----------------------------------------------------------------------------- family-tree edges


def test_edge_sft_gradient_is_implicit_reward_gradient():
    """SFT is implicit-reward learning: ∇ of -β E_demo[log π - log π_ref] = β ∇ NLL, for any π_ref."""
    rng = np.random.default_rng(0)
    N, Y, d, beta = 7, 5, 4, 0.3
    phi = torch.tensor(rng.standard_normal((N, Y, d)))
    demos = torch.as_tensor(rng.integers(0, Y, N))
    grads = []
    for ref_seed in (1, 2):  # two different reference policies
        ref_logp = torch.log_softmax(torch.tensor(np.random.default_rng(ref_seed).standard_normal((N, Y))), -1)
        theta = torch.tensor(np.random.default_rng(9).standard_normal(d), requires_grad=True)
        lp = torch.log_softmax(phi @ theta, -1)[torch.arange(N), demos]
        g_irl = torch.autograd.grad(F.implicit_reward_sft_loss(lp, ref_logp[torch.arange(N), demos], beta), theta)[0]
        lp = torch.log_softmax(phi @ theta, -1)[torch.arange(N), demos]
        g_sft = torch.autograd.grad(sft_loss(lp[:, None], torch.ones(N, 1)), theta)[0]
        torch.testing.assert_close(g_irl, beta * g_sft, atol=1e-12, rtol=0)
        grads.append(g_irl)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)  # π_ref contributes nothing


def test_edge_bilevel_objective_collapses_to_sft():
    """E_E[r] - max_π(E_π[r] - β KL(π‖π_ref)), with r the implicit reward of π, equals β E_E[log π/π_ref]."""
    rng = np.random.default_rng(1)
    b = random_contextual_bandit(4, 7, rng)
    beta = 0.7
    pi_e = softmax(rng.standard_normal((4, 7)))
    for _ in range(3):
        r = rng.standard_normal((4, 7))  # any reward ...
        pi_r = kl_optimal_policy(b.ref_probs, r, beta)  # ... and its own optimal policy
        inner = regularised_objective(pi_r, b.ref_probs, r, beta)  # max_π(E_π[r] - β KL) = β log Z
        logZ = np.log((b.ref_probs * np.exp(r / beta)).sum(-1))
        np.testing.assert_allclose(inner, beta * logZ, atol=1e-12)
        bilevel = (pi_e * r).sum(-1) - inner
        collapsed = beta * (pi_e * (np.log(pi_r) - np.log(b.ref_probs))).sum(-1)
        np.testing.assert_allclose(bilevel, collapsed, atol=1e-12)


def test_edge_dpo_and_sft_share_the_reward_parametrisation():
    """r = β log π_r/π_ref + β log Z: DPO's loss on π_r equals the Bradley-Terry loss of r itself."""
    rng = np.random.default_rng(2)
    b = random_contextual_bandit(5, 6, rng)
    beta = 0.4
    pi_r = kl_optimal_policy(b.ref_probs, b.r, beta)
    implicit = beta * (np.log(pi_r) - np.log(b.ref_probs))
    shift = b.r - implicit  # = -β log Z(x): constant in y
    np.testing.assert_allclose(shift, shift[:, :1].repeat(6, 1), atol=1e-12)
    x, y1, y2 = b.sample_pairs(50, rng)
    lp, lr = torch.tensor(np.log(pi_r)), torch.tensor(np.log(b.ref_probs))
    loss, _ = dpo_loss(lp[x, y1], lr[x, y1], lp[x, y2], lr[x, y2], beta)
    bt = -torch.nn.functional.logsigmoid(torch.tensor(b.r[x, y1] - b.r[x, y2])).mean()
    torch.testing.assert_close(loss, bt, atol=1e-12, rtol=0)


def test_edge_kl_fdiv_sft_reduces_to_sft():
    """The f-divergence objective with f(u) = u log u is the implicit-reward SFT objective (reference term = 1)."""
    rng = np.random.default_rng(3)
    N, Y, beta = 9, 5, 0.2
    logp = torch.log_softmax(torch.tensor(rng.standard_normal((N, Y))), -1)
    ref = torch.log_softmax(torch.tensor(rng.standard_normal((N, Y))), -1)
    demos = torch.as_tensor(rng.integers(0, Y, N))
    ar = torch.arange(N)
    a = F.fdiv_kl_sft_loss(logp[ar, demos] - ref[ar, demos], logp - ref, ref.exp(), beta)
    b = F.implicit_reward_sft_loss(logp[ar, demos], ref[ar, demos], beta)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["kl", "chi2", "hellinger"])
def test_edge_fdiv_sft_maximiser_is_the_demonstrator(kind):
    """J_f(π) <= β D_f(π_E‖π_ref), with equality at π = π_E: every f-divergence SFT recovers π_E."""
    rng = np.random.default_rng(4)
    beta = 0.5
    pi_e, ref, demos = _demo_set(rng)
    fn = {"kl": F.fdiv_kl_sft_loss, "chi2": F.chi2_sft_loss, "hellinger": F.hellinger_sft_loss}[kind]

    def J(pi):
        lr = torch.log(pi) - torch.log(ref)
        return -fn(lr[demos], lr[None], ref[None], beta)

    target = beta * F.f_divergence(pi_e, ref, kind)
    torch.testing.assert_close(J(pi_e), target, atol=1e-12, rtol=0)
    for _ in range(20):
        pi = torch.softmax(torch.log(pi_e) + 0.5 * torch.tensor(rng.standard_normal(len(ref))), -1)
        assert J(pi) <= target + 1e-12


def test_fdiv_reference_terms():
    """KL: the reference term E_ref[u] is 1 for every π (no anchor); χ²: E_ref[u²] = 1 + χ²(π‖π_ref) (an anchor)."""
    rng = np.random.default_rng(5)
    ref = torch.softmax(torch.tensor(rng.standard_normal(6)), -1)
    demo_lr = torch.zeros(4)  # demos with u = 1: only the reference term varies below
    for _ in range(5):
        pi = torch.softmax(torch.tensor(rng.standard_normal(6)), -1)
        lr = (torch.log(pi) - torch.log(ref))[None]
        kl_loss = F.fdiv_kl_sft_loss(demo_lr, lr, ref[None], 1.0)
        torch.testing.assert_close(kl_loss, torch.tensor(-1.0 + 1.0, dtype=torch.float64), atol=1e-12, rtol=0)
        chi2_loss = F.chi2_sft_loss(demo_lr, lr, ref[None], 1.0)  # -(2 - E_ref[u^2] - 1)
        torch.testing.assert_close(chi2_loss, F.f_divergence(pi, ref, "chi2"), atol=1e-12, rtol=0)


def test_fdiv_losses_check_shapes():
    with pytest.raises(ValueError):
        F.chi2_sft_loss(torch.zeros(3, 1), torch.zeros(3, 2), torch.ones(3, 2) / 2, 1.0)
    with pytest.raises(ValueError):
        F.hellinger_sft_loss(torch.zeros(3), torch.zeros(3, 2), torch.ones(3, 3) / 3, 1.0)
    with pytest.raises(ValueError):
        F.implicit_reward_sft_loss(torch.zeros(3), torch.zeros(2), 1.0)
    with pytest.raises(ValueError):
        F.f_divergence(torch.ones(2) / 2, torch.ones(2) / 2, "tv")


def test_f_divergence_hand_values():
    p, q = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.25, 0.75], dtype=torch.float64)
    kl = torch.tensor(0.5 * np.log(2) + 0.5 * np.log(2 / 3), dtype=torch.float64)
    torch.testing.assert_close(F.f_divergence(p, q, "kl"), kl, atol=1e-7, rtol=0)
    chi2 = 0.25**2 / 0.25 + 0.25**2 / 0.75  # Σ (p - q)² / q
    torch.testing.assert_close(F.f_divergence(p, q, "chi2"), torch.tensor(chi2, dtype=torch.float64), atol=1e-7, rtol=0)
    h = (np.sqrt(0.5) - np.sqrt(0.25)) ** 2 + (np.sqrt(0.5) - np.sqrt(0.75)) ** 2
    torch.testing.assert_close(F.f_divergence(p, q, "hellinger"), torch.tensor(h, dtype=torch.float64), atol=1e-7, rtol=0)


# ----------------------------------------------------------------------------- experiment

SMALL = dict(n_prompts=60, n_responses=8, dim=12, n_demo_prompts=8, n_dpo_prompts=12, sft_steps=60,
             dpo_pairs=200, dpo_steps=40, log_every=20)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, fdiv="tv")
    with pytest.raises(ValueError):
        from_params(E.Config, n_prompts=50)
    with pytest.raises(ValueError):
        from_params(E.Config, sft_lrs=(0.3,))
    with pytest.raises(ValueError):
        from_params(E.Config, learning_rate=0.1)


def test_world_geometry_and_reference_metrics():
    cfg = E.Config(**SMALL)
    w = E.build_world(cfg, np.random.default_rng(0))
    assert abs(np.linalg.norm(w.theta_ref) - cfg.ref_norm) < 1e-12
    assert abs(w.theta_ref @ w.w_star / cfg.ref_norm - cfg.ref_cos) < 1e-12
    parts = np.concatenate([w.demo_prompts, w.dpo_prompts, w.eval_prompts])
    assert sorted(parts.tolist()) == list(range(cfg.n_prompts))
    m = E.evaluate(w, w.theta_ref)
    assert abs(m["win"] - 0.5) < 1e-12 and abs(m["kl"]) < 1e-12


def test_sft_and_implicit_reward_sft_take_identical_steps():
    """β = 1: the implicit-reward loss has exactly the NLL gradient, so Adam follows the same path."""
    cfg = E.Config(**SMALL)
    w = E.build_world(cfg, np.random.default_rng(1))
    a = E.sft(w, cfg, 0.05, "nll", log=False)
    b = E.sft(w, cfg, 0.05, "implicit", log=False)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-12)


def test_smoke_run_is_finite_and_lr_controls_drift():
    cfg = E.Config(**SMALL)
    out = E.run_smoke(cfg, 0)
    rows = out["rows"]
    assert set(rows) == {"SFT lr 0.3", "SFT lr 0.03", "SFT lr 0.003", "chi2-SFT lr 0.3"}
    assert all(np.isfinite(v) for r in rows.values() for v in r.values())
    assert rows["SFT lr 0.3"]["sft_kl"] > rows["SFT lr 0.003"]["sft_kl"]
    run = out["runs"]["SFT lr 0.3"]
    assert run.steps == [0, 20, 40, 60] and run.kl[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        E.sft(out["world"], cfg, 0.1, "ppo")


# ----------------------------------------------------------------------------- full profile (dry run)


def _tiny_full_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy, save_tiny_reward_model

    tok = save_tiny_policy(tmp_path / "policy", "abcdefghijklmnopqrstuvwxyz ?.!:>\n", max_len=128)
    save_tiny_reward_model(tmp_path / "rm", tok, max_len=256)
    sft_rows, pref_rows = [], []
    for i in range(12):
        q = [{"role": "user", "content": f"say {'ab'[i % 2]}?"}]
        sft_rows.append({"messages": q + [{"role": "assistant", "content": "ok " + "ab"[i % 2]}]})
        pref_rows.append({
            "chosen": q + [{"role": "assistant", "content": "yes " + "ab"[i % 2]}],
            "rejected": q + [{"role": "assistant", "content": "no"}],
        })
    datasets.Dataset.from_list(sft_rows).save_to_disk(str(tmp_path / "sft"))
    datasets.Dataset.from_list(pref_rows).save_to_disk(str(tmp_path / "prefs"))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_full_setup(tmp_path)
    cfg = E.Config(
        model=str(tmp_path / "policy"), sft_dataset=str(tmp_path / "sft"), pref_dataset=str(tmp_path / "prefs"),
        reward_model=str(tmp_path / "rm"), full_sft_examples=8, full_dpo_pairs=8, full_eval_prompts=3,
        full_batch=4, full_per_device_batch=4, full_max_length=64, full_max_new_tokens=4, full_max_steps=2,
        full_lrs=(1e-3, 1e-4), full_dpo_lr=1e-3,
    )
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert set(out["pipelines"]) == {"0.001", "0.0001"}
    for p in out["pipelines"].values():
        assert len(p["sft_loss"]) == 2 and np.isfinite(p["reward"]) and np.isfinite(p["kl_sft_base"])
    assert 0.0 <= out["win_rate_reduced_vs_standard"] <= 1.0
