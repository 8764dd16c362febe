"""Tests of C3PO (rlbook.losses.c3po) and its chapter experiment (rlbook.experiments.c3po_verbal_feedback)."""

import numpy as np
import pytest
import torch

from rlbook import losses
from rlbook.config import from_params
from rlbook.experiments import c3po_verbal_feedback as E
from rlbook.losses.c3po import c3po_loss, scd_loss


def _dpo_inputs(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(4)]


def test_edge_c3po_zero_constraint_is_dpo():
    """C3PO with lam_out = lam_near = 0 is DPO on the in-scope pairs."""
    a = _dpo_inputs()
    s_out, s_near = torch.tensor(1.7, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    got, d = c3po_loss(*a, 0.1, s_out, s_near, lam_out=0.0, lam_near=0.0)
    want, _ = losses.dpo_loss(*a, 0.1)
    assert got.item() == pytest.approx(want.item(), abs=1e-14)
    got2, _ = c3po_loss(*a, 0.1, s_out, s_near, lam_out=0.2, lam_near=0.1)
    assert got2.item() == pytest.approx(want.item() + 0.2 * 1.7 + 0.1 * 0.4, abs=1e-12)
    assert d["dpo"].item() == pytest.approx(want.item())


def test_edge_scd_kappa0_is_sft():
    """SCD with kappa = 0 (the paper's choice) is the SFT loss on the original model's responses."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    y = torch.randint(0, 11, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.float64)
    got, _ = scd_loss(logits, ref, y, mask, kappa=0.0, temperature=5.0)
    logp = torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0]
    assert got.item() == pytest.approx(losses.sft_loss(logp, mask).item(), abs=1e-12)


def test_edge_scd_expected_nll_is_forward_kl():
    """In expectation over y ~ pi_0, SCD's NLL is KL(pi_0 || pi_theta) + H(pi_0): same minimiser and gradient
    as the KL term (kappa = 1, T = 1), so both pin the policy to pi_0."""
    g = torch.Generator().manual_seed(2)
    V = 6
    z = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True)
    z0 = torch.randn(V, generator=g, dtype=torch.float64)
    p0 = torch.softmax(z0, -1)
    lp = torch.log_softmax(z, -1)
    exp_nll = -(p0 * lp).sum()
    kl, _ = scd_loss(z.view(1, 1, V), z0.view(1, 1, V), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1),
                     kappa=1.0, temperature=1.0)
    ent = -(p0 * p0.log()).sum()
    assert exp_nll.item() == pytest.approx(kl.item() + ent.item(), abs=1e-12)
    g1 = torch.autograd.grad(exp_nll, z, retain_graph=True)[0]
    g2 = torch.autograd.grad(kl, z)[0]
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)
    # the minimiser of both is pi_0: the gradient vanishes at z = z0
    zz = z0.clone().requires_grad_(True)
    kl0, _ = scd_loss(zz.view(1, 1, V), z0.view(1, 1, V), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), 1.0)
    assert kl0.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.autograd.grad(kl0, zz)[0].abs().max() < 1e-12


def test_scd_matches_official_formula():
    """(1-kappa)*token-mean NLL + kappa*T^2*KL summed over tokens, mean over sequences (official lcdpo.py)."""
    g = torch.Generator().manual_seed(3)
    N, T, V, kap, temp = 2, 4, 5, 0.5, 5.0
    logits = torch.randn(N, T, V, generator=g, dtype=torch.float64)
    ref = torch.randn(N, T, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N, T), generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    got, d = scd_loss(logits, ref, y, mask, kappa=kap, temperature=temp)
    nll = torch.nn.functional.cross_entropy(logits[mask.bool()], y[mask.bool()])
    ps, pt = torch.log_softmax(logits / temp, -1), torch.log_softmax(ref / temp, -1)
    kl = ((pt.exp() * (pt - ps)).sum(-1) * mask).sum(-1).mean()
    assert got.item() == pytest.approx((1 - kap) * nll.item() + kap * temp**2 * kl.item(), abs=1e-12)
    assert d["nll"].item() == pytest.approx(nll.item(), abs=1e-12)


def test_losses_refuse_bad_input():
    a = _dpo_inputs()
    with pytest.raises(ValueError):
        c3po_loss(*a, 0.1, torch.zeros(2), torch.tensor(0.0))
    with pytest.raises(ValueError):
        c3po_loss(*a, 0.1, torch.tensor(0.0), torch.tensor(0.0), lam_out=-1.0)
    with pytest.raises(ValueError):
        scd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2))
    with pytest.raises(ValueError):
        scd_loss(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1),
                 kappa=2.0)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, beta=0.0)
    with pytest.raises(ValueError):
        from_params(E.Config, lam_near=-0.1)
    with pytest.raises(ValueError):
        from_params(E.Config, learning_rate=0.1)
    assert from_params(E.Config, beta=1).beta == 1.0


@pytest.fixture(scope="module")
def world():
    cfg = E.Config(prompts_per_scope=10, n_pairs=50, n_scd=50, steps=60)
    w = E.make_world(cfg, np.random.default_rng(0))
    return cfg, w, E.make_data(w, cfg, np.random.default_rng(1))


def test_world_and_data(world):
    cfg, w, data = world
    s = E.style_bits()
    assert s.shape == (8, 3) and len(np.unique(s, axis=0)) == 8
    assert w.bandit.phi.shape == (60, 8, 3 * (cfg.embed_dim + 1))
    # the revised response is the original with the emoji bit cleared, nothing else
    assert np.all(s[data.y_l, 0] == 1) and np.all(s[data.y_w, 0] == 0)
    np.testing.assert_array_equal(s[data.y_l, 1:], s[data.y_w, 1:])
    assert np.all(w.scope[data.x_in] == 0) and np.all(w.train[data.x_in])
    assert np.all(w.scope[data.x_near] == 1) and np.all(w.scope[data.x_out] == 2)
    m = E.evaluate(w.bandit.ref_logits, w)
    assert m["near_overgen"] == 0.0 and m["out_tv"] == 0.0


def test_first_order_leakage_is_the_kernel_ratio(world):
    """A small gradient step on one in-scope pair moves another prompt's emoji log-odds by k(x,x')/k(x,x)."""
    cfg, w, data = world
    phi = torch.as_tensor(w.bandit.phi)
    ref = torch.as_tensor(w.bandit.ref_logits)
    delta = torch.zeros(phi.shape[-1], dtype=torch.float64, requires_grad=True)
    x, yw, yl = int(data.x_in[0]), int(data.y_w[0]), int(data.y_l[0])
    lp = torch.log_softmax(ref + phi @ delta, -1)
    lp0 = torch.log_softmax(ref, -1)
    loss, _ = losses.dpo_loss(lp[x, yw][None], lp0[x, yw][None], lp[x, yl][None], lp0[x, yl][None], 0.1)
    (g,) = torch.autograd.grad(loss, delta)
    new = ref + phi @ (-1e-3 * g)
    # change of the logit difference "same response without vs with emoji" at every prompt
    d = ((new - ref)[:, yw] - (new - ref)[:, yl]).numpy()
    for other in (w.idx("near", False)[0], w.idx("out", False)[0]):
        assert d[other] / d[x] == pytest.approx(E.leak_ratio_first_order(w, x, other), rel=1e-9)


def test_c3po_reduces_overgeneralisation(world):
    cfg, w, data = world
    m = {k: E.evaluate(E.train(k, w, data, cfg)["logits"], w) for k in ("dpo", "c3po", "in_context")}
    assert m["dpo"]["adherence"] > 0.9 and m["c3po"]["adherence"] > 0.9
    assert m["c3po"]["near_overgen"] < 0.7 * m["dpo"]["near_overgen"]
    assert m["in_context"]["near_overgen"] > 0.3
    with pytest.raises(ValueError):
        E.train("ppo", w, data, cfg)


def test_full_helpers():
    p = E.scoped_prompts(np.random.default_rng(0), 10)
    assert {k: len(v) for k, v in p.items()} == {"in": 10, "near": 10, "out": 10}
    assert all("boss" in q or "manager" in q or "supervisor" in q for q in p["in"])
    np.testing.assert_array_equal(E.follows(["x Best regards, Alex", "Best, Alex"], E.Config().feedback_regex),
                                  [True, False])


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from rlbook.models import save_tiny_policy

    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ?.!:,'\"-()\n"
    save_tiny_policy(tmp_path / "policy", alphabet, max_len=256)
    cfg = E.Config(model=str(tmp_path / "policy"), full_prompts_per_scope=4, full_eval_prompts=2,
                   full_max_new_tokens=6, full_batch=2, full_per_device_batch=2, full_lora_r=0,
                   full_max_length=200, full_max_steps=2, full_lr=1e-3)
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    for m in ("original", "in_context", "dpo", "c3po"):
        assert set(("in", "near", "out", "near_overgen")) <= set(out[m])
    assert len(out["c3po"]["log"]) == 2 and len(out["dpo"]["log"]) == 2
    assert all(np.isfinite(h["loss"]) for h in out["c3po"]["log"])
    assert all("scd/near_nll" in h and "scd/out_nll" in h for h in out["c3po"]["log"])
    assert not any("scd/near_nll" in h for h in out["dpo"]["log"])  # lam = 0: plain DPO
