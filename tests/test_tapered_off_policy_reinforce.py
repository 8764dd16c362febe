"""Tests of TOPR (rlbook.losses.topr) and its chapter's experiment module."""

import json

import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import tapered_off_policy_reinforce as E
from rlbook.losses import reinforce_loss, sft_loss
from rlbook.losses.common import grad_wrt as _grad  # d f(x) / dx
from rlbook.losses.topr import (
    effective_positive_fraction,
    is_weights,
    offpolicy_reinforce_loss,
    topr_loss,
    truncated_is_loss,
)


def _batch(seed=0, N=12, T=5):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(N, T, generator=g, dtype=torch.float64) * 2
    logp_mu = -torch.rand(N, T, generator=g, dtype=torch.float64) * 2
    mask = (torch.rand(N, T, generator=g) > 0.3).double()
    mask[:, 0] = 1
    r = torch.where(torch.rand(N, generator=g) < 0.4, 1.0, -1.0).double()
    return logp, logp_mu, mask, r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_topr_is_reinforce_on_policy(seed):
    """pi = mu: every weight is 1 and TOPR's gradient equals REINFORCE's (rlbook.losses.reinforce_loss)."""
    logp, _, _, r = _batch(seed)
    mask = torch.ones_like(logp)  # equal lengths: the book's token-mean REINFORCE is the sequence mean / T
    T = logp.shape[1]
    assert torch.equal(is_weights(logp, logp, mask, r, "tapered"), torch.ones_like(r))
    g_topr = _grad(lambda x: topr_loss(x, x.detach(), mask, r)[0], logp)
    g_naive = _grad(lambda x: offpolicy_reinforce_loss(x, mask, r), logp)
    g_book = _grad(lambda x: T * reinforce_loss(x, mask, r), logp)
    assert torch.allclose(g_topr, g_naive, atol=1e-14)
    assert torch.allclose(g_topr, g_book, atol=1e-14)
    # ragged masks too, against the naive off-policy form
    _, _, mask2, _ = _batch(seed)
    g1 = _grad(lambda x: topr_loss(x, x.detach(), mask2, r)[0], logp)
    g2 = _grad(lambda x: offpolicy_reinforce_loss(x, mask2, r), logp)
    assert torch.allclose(g1, g2, atol=1e-14)


def test_edge_topr_on_positives_is_sft():
    """Only non-negative rewards (r = 1): TOPR is SFT on the sequences (weight 1, no importance ratio)."""
    logp, logp_mu, _, _ = _batch(3)
    mask = torch.ones_like(logp)
    r = torch.ones(logp.shape[0], dtype=logp.dtype)
    T = logp.shape[1]
    g1 = _grad(lambda x: topr_loss(x, logp_mu, mask, r)[0], logp)
    g2 = _grad(lambda x: T * sft_loss(x, mask), logp)
    assert torch.allclose(g1, g2, atol=1e-14)


@pytest.mark.parametrize("c", [-0.5, 0.0, 0.3, 0.5])
def test_edge_baseline_is_dataset_composition(c):
    """Rewards +-1 minus c: the positives' share of |r - c| is p(1-c)/(1+(1-2p)c), exactly."""
    g = torch.Generator().manual_seed(4)
    r = torch.where(torch.rand(997, generator=g) < 0.3, 1.0, -1.0).double()
    p = float((r > 0).double().mean())
    w = (r - c).abs()
    share = float(w[r > 0].sum() / w.sum())
    assert abs(share - float(effective_positive_fraction(p, c))) < 1e-12
    assert abs(E.positive_weight_share(r, c) - float(effective_positive_fraction(p, c))) < 1e-12


def test_weights_by_hand():
    """rho = 1 on positives; min(1, pi/mu) on negatives (TOPR) or on all (truncated IS)."""
    lp = torch.log(torch.tensor([[0.2], [0.6], [0.2], [0.6]], dtype=torch.float64))
    lmu = torch.log(torch.tensor([[0.4], [0.3], [0.4], [0.3]], dtype=torch.float64))
    mask = torch.ones_like(lp)
    r = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    assert torch.allclose(is_weights(lp, lmu, mask, r, "tapered"), torch.tensor([1, 1, 0.5, 1], dtype=torch.float64))
    assert torch.allclose(is_weights(lp, lmu, mask, r, "truncated"), torch.tensor([0.5, 1, 0.5, 1], dtype=torch.float64))
    assert torch.equal(is_weights(lp, lmu, mask, r, "none"), torch.ones(4, dtype=torch.float64))
    loss, diag = topr_loss(lp, lmu, mask, r)
    expect = -(1 * lp[0, 0] + 1 * lp[1, 0] - 0.5 * lp[2, 0] - 1 * lp[3, 0]) / 4
    assert torch.allclose(loss, expect)
    assert float(diag["tapered_frac"]) == 0.5
    expect_tis = -(0.5 * lp[0, 0] + lp[1, 0] - 0.5 * lp[2, 0] - lp[3, 0]) / 4
    assert torch.allclose(truncated_is_loss(lp, lmu, mask, r), expect_tis)


def test_sequence_level_ratio_and_stop_gradient():
    """The ratio is the product over a sequence's valid tokens, and carries no gradient."""
    lp = torch.log(torch.tensor([[0.5, 0.5, 0.9]], dtype=torch.float64))
    lmu = torch.log(torch.tensor([[0.5, 1.0, 0.1]], dtype=torch.float64))
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([-1.0], dtype=torch.float64)
    assert torch.allclose(is_weights(lp, lmu, mask, r), torch.tensor([0.5], dtype=torch.float64))
    x = lp.clone().requires_grad_(True)
    topr_loss(x, lmu, mask, r)[0].backward()
    assert torch.allclose(x.grad, 0.5 * mask)  # d/dlogp of -(sg(0.5) * -1 * sum logp)


def test_negative_gradient_vanishes_only_with_the_taper():
    """One softmax, one negative answer pushed towards pi -> 0: naive gradient norm stays ~1, TOPR's -> 0."""
    mu = torch.log_softmax(torch.zeros(5, dtype=torch.float64), -1)
    for shift in (0.0, 5.0, 20.0):
        z = torch.zeros(5, dtype=torch.float64)
        z[0] = -shift
        z.requires_grad_(True)
        logp = torch.log_softmax(z, -1)[:1][None]  # (1, 1) the negative answer
        r = torch.tensor([-1.0], dtype=torch.float64)
        g_naive = torch.autograd.grad(offpolicy_reinforce_loss(logp, torch.ones_like(logp), r), z)[0]
        logp = torch.log_softmax(z, -1)[:1][None]
        g_topr = torch.autograd.grad(topr_loss(logp, mu[:1][None], torch.ones_like(logp), r)[0], z)[0]
        assert g_naive.norm() > 0.8
        if shift == 20.0:
            assert g_topr.norm() < 1e-7


def test_shapes_are_checked():
    logp, logp_mu, mask, r = _batch()
    with pytest.raises(ValueError):
        topr_loss(logp, logp_mu[:, :3], mask, r)
    with pytest.raises(ValueError):
        topr_loss(logp, logp_mu, mask, r[:3])
    with pytest.raises(ValueError):
        is_weights(logp, logp_mu, mask, r, "bogus")


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, baseline=1.0)
    with pytest.raises(ValueError):
        from_params(E.Config, methods="TOPR,GRPO")
    with pytest.raises(ValueError):
        from_params(E.Config, c_sweep="0.5,2")


def test_answers_reward_and_malformed_by_hand():
    a, b = torch.tensor([3, 45, 99, 0]), torch.tensor([4, 60, 99, 0])
    y = E.answer_tokens(a, b)
    assert y.tolist() == [[7, 10, 10, 10], [1, 0, 5, 10], [1, 9, 8, 10], [0, 10, 10, 10]]
    assert E.reward(y, a, b).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert not E.malformed(y).any()
    junk = torch.tensor([[7, 10, 3, 3], [1, 0, 5, 7], [10, 1, 1, 1], [0, 5, 10, 10]])
    assert E.reward(junk, a, b).tolist() == [1.0, -1.0, -1.0, -1.0]  # tokens after EOS do not count
    assert E.malformed(junk).tolist() == [False, True, True, True]  # ok, no EOS, empty, leading zero
    assert E.completion_mask(junk).tolist()[0] == [1, 1, 0, 0]


def test_committed_base_loads_and_matches_its_record():
    model, info = E.load_base(300)
    assert info["recipe"]["steps"] == 300
    comp = E.evaluate(model)
    assert abs(comp["pass@1"] - info["competence"]["pass@1"]) < 1e-5
    assert 0.25 < comp["pass@1"] < 0.5  # partial competence: room to improve


def test_splits_are_disjoint():
    a1, b1 = E.split_prompts("train")
    a2, b2 = E.split_prompts("test")
    assert len(set((a1 * 100 + b1).tolist()) & set((a2 * 100 + b2).tolist())) == 0
    assert len(a1) + len(a2) == 10000


def test_offline_training_reports_curves():
    cfg = from_params(E.Config, steps=4, eval_every=2, data_prompts=8, data_samples=4, batch=16, eval_prompts=10,
                      eval_samples=2)
    mu, _ = E.load_base(300)
    data = E.make_dataset(mu, 8, 4, seed=0)
    assert data.y.shape == (32, E.L) and data.logp_mu.shape == (32, E.L)
    run = E.train_offline(mu, data, "TOPR", cfg, seed=0)
    assert run["step"].tolist() == [0, 2, 4]
    assert all(0 <= v <= 1 for v in run["pass@1"])


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local MATH-like data set (a few steps)."""
    from rlbook import math_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_train_data=str(tmp_path / "train"),
                      full_eval_data=str(tmp_path / "eval"), full_group=2, full_batch=2)
    res = E.run_full(cfg, seed=0, cpu=True, problems=2, eval_problems=2, eval_samples=2, max_completion=8,
                     generation_batch=2)
    assert set(res) == {"base", "positives", "TOPR", "SFT+", "REINFORCE"}
    assert all(0.0 <= v <= 1.0 for v in res["TOPR"].values())
    json.dumps(res)
