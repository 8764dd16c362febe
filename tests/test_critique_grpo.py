"""The Critique-GRPO chapter: the loss, its family-tree edges, the tabular experiment, the full-profile dry run."""

import math

import numpy as np
import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import critique_grpo as E
from rlbook.losses import group_normalise, grpo_loss
from rlbook.losses.common import grad_wrt as _grad  # d f(x) / dx
from rlbook.losses.critique_grpo import (
    critique_group_advantage,
    critique_grpo_loss,
    shaping,
    shaping_weight,
)


def _batch(seed=0, N=12, T=6):
    g = torch.Generator().manual_seed(seed)
    logp = -2.0 * torch.rand(N, T, generator=g, dtype=torch.float64)
    logp_old = logp + 0.3 * torch.randn(N, T, generator=g, dtype=torch.float64)  # off-policy: ratios != 1
    mask = (torch.rand(N, T, generator=g) > 0.25).double()
    mask[:, 0] = 1
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    return logp, logp_old, mask, adv


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_no_refinements_is_grpo(seed):
    """With no refinement rows, Critique-GRPO's loss (value and gradient) is GRPO's clipped surrogate."""
    logp, old, mask, adv = _batch(seed)
    none = torch.zeros(len(adv), dtype=torch.bool)
    a, _ = critique_grpo_loss(logp, old, adv, mask, none)
    b, _ = grpo_loss(logp, old, adv, mask)
    torch.testing.assert_close(a, b, atol=1e-14, rtol=0)
    ga = _grad(lambda x: critique_grpo_loss(x, old, adv, mask, none)[0], logp)
    gb = _grad(lambda x: grpo_loss(x, old, adv, mask)[0], logp)
    torch.testing.assert_close(ga, gb, atol=1e-14, rtol=0)
    assert ga.abs().max() > 1e-3
    # and the group advantage over initial answers only is GRPO's (Dr. GRPO without the std)
    r = (torch.rand(4, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).double()
    torch.testing.assert_close(critique_group_advantage(r), group_normalise(r, scale=False))


@pytest.mark.parametrize("gamma", [0.01, 0.1, 0.5])
def test_edge_shaping_weight_vs_log_likelihood(gamma):
    """A refinement token's gradient is A * p*gamma/(p+gamma)^2 * grad log p: the log-likelihood (SFT) gradient
    reweighted, at most 1/4 of it (at p = gamma), ~p/gamma for p << gamma; the unshaped term's weight is p."""
    logp, old, mask, adv = _batch(3)
    ref = torch.ones(len(adv), dtype=torch.bool)
    g = _grad(lambda x: critique_grpo_loss(x, old, adv, mask, ref, gamma=gamma)[0], logp)
    p = logp.exp()
    n_tok = mask.sum(1, keepdim=True)
    expect = -adv[:, None] * shaping_weight(p, gamma) * mask / n_tok / len(adv)  # d(-A f)/d log p, seq-mean-token-mean
    torch.testing.assert_close(g, expect, atol=1e-14, rtol=1e-10)
    g0 = _grad(lambda x: critique_grpo_loss(x, old, adv, mask, ref, reshape="none")[0], logp)
    torch.testing.assert_close(g0, -adv[:, None] * p * mask / n_tok / len(adv), atol=1e-14, rtol=1e-10)
    w = E.gradient_weights(np.array([gamma, gamma / 100]), gamma)
    assert abs(w["shaped"][0] - 0.25) < 1e-12
    assert abs(w["shaped"][1] / (0.01 / 1.01**2) - 1) < 1e-9 and abs(w["unshaped"][1] - gamma / 100) < 1e-12


def test_edge_large_gamma_is_unshaped_off_policy_term():
    """gamma * f_gamma(p) -> p as gamma -> infinity: the scaled shaped loss tends to the unshaped off-policy
    term of LUFFY / the official ``off_policy_reshape="no_reshape"``; as gamma -> 0, f -> 1 and the gradient
    of a refinement token (p fixed) vanishes."""
    logp, old, mask, adv = _batch(4)
    ref = torch.ones(len(adv), dtype=torch.bool)
    big = 1e7
    shaped = _grad(lambda x: big * critique_grpo_loss(x, old, adv, mask, ref, gamma=big)[0], logp)
    plain = _grad(lambda x: critique_grpo_loss(x, old, adv, mask, ref, reshape="none")[0], logp)
    torch.testing.assert_close(shaped, plain, atol=1e-9, rtol=1e-5)
    tiny = _grad(lambda x: critique_grpo_loss(x, old, adv, mask, ref, gamma=1e-9)[0], logp)
    assert tiny.abs().max() < 1e-7
    assert abs(float(shaping(torch.tensor(0.3), 0.1)) - 0.75) < 1e-12


def test_mixed_group_and_aggregations():
    """Rows are routed by the refinement flag; the three aggregations; logp_old is ignored on refinement rows."""
    logp, old, mask, adv = _batch(5)
    ref = torch.zeros(len(adv), dtype=torch.bool)
    ref[-3:] = True
    loss, diag = critique_grpo_loss(logp, old, adv, mask, ref, gamma=0.1, clip=False, agg="token-mean")
    per = torch.where(ref[:, None], -adv[:, None] * shaping(logp.exp(), 0.1), -adv[:, None] * (logp - old).exp())
    torch.testing.assert_close(loss, (per * mask).sum() / mask.sum())
    loss2, _ = critique_grpo_loss(logp, old, adv, mask, ref, clip=False, agg="token-sum-norm")
    torch.testing.assert_close(loss2, (per * mask).sum() / logp.shape[1])
    old2 = old.clone()
    old2[-3:] += 5.0
    a, _ = critique_grpo_loss(logp, old, adv, mask, ref)
    b, _ = critique_grpo_loss(logp, old2, adv, mask, ref)
    torch.testing.assert_close(a, b)
    assert 0 < float(diag["off_prob"]) < 1 and 0 < float(diag["off_weight"]) <= 0.25
    with pytest.raises(ValueError):
        critique_grpo_loss(logp, old, adv, mask, ref, gamma=0.0)
    with pytest.raises(ValueError):
        critique_grpo_loss(logp, old, adv, mask, ref, reshape="sqrt")
    with pytest.raises(ValueError):
        critique_grpo_loss(logp, old, adv, mask, ref, agg="sum")
    with pytest.raises(ValueError):
        critique_grpo_loss(logp, old, adv[:-1], mask, ref)


def test_group_advantage_with_missing_members():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]])
    valid = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    a = critique_group_advantage(r, valid)
    torch.testing.assert_close(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0]))
    torch.testing.assert_close(a[1], torch.tensor([-0.2, -0.2, -0.2, 0.8, -0.2]))
    s = critique_group_advantage(r, valid, scale=True, eps=0.0)
    torch.testing.assert_close(s[1], (r[1] - 0.2) / r[1].std())
    assert float(s[0, 4]) == 0.0


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, critique_kind="hint")
    with pytest.raises(ValueError):
        from_params(E.Config, methods="GRPO,PPO")
    with pytest.raises(ValueError):
        from_params(E.Config, uptake=1.5)


def test_world_refinement_policy_and_step():
    cfg = E.Config(n_prompts=6, n_persistent=3, steps=2)
    w = E.make_world(cfg, 0)
    pi = torch.softmax(w.z0, -1)
    p_star = pi[:, 0]
    assert bool((p_star[w.persistent] < 0.005).all()) and bool((p_star[~w.persistent] > 0.04).all())
    torch.testing.assert_close(pi.sum(-1), torch.ones(9, dtype=torch.float64))
    # the refinement policy is a distribution; with uptake 1 and a ground-truth critique it is the correct answer
    ref = E.refinement_probs(pi[:, None, :].expand(-1, 12, -1), w.consistent["ground_truth"], 1.0)
    torch.testing.assert_close(ref.sum(-1), torch.ones(9, 12, dtype=torch.float64))
    assert torch.allclose(ref[:, 1:, 0], torch.ones(9, 11, dtype=torch.float64))
    s = {k: E.refinement_success(w.z0, w, k, 0.5) for k in ("indicative", "ground_truth", "cot")}
    assert bool((s["ground_truth"] >= s["cot"] - 1e-12).all()) and bool((s["cot"] >= s["indicative"] - 1e-12).all())
    # Monte-Carlo check of the exact refinement success on one prompt
    x = int(torch.nonzero(w.persistent)[0])
    g = torch.Generator().manual_seed(0)
    ys = torch.multinomial(pi[x] * (~w.correct[x]), 4000, replacement=True, generator=g)
    rp = E.refinement_probs(pi[x].expand(4000, -1), w.consistent["cot"][x][ys], 0.5)
    mc = float(rp[:, 0].mean())
    assert abs(mc - float(s["cot"][x])) < 0.02
    b = E.critique_step(w.z0, w, 8, 2, "cot", 0.5, torch.Generator().manual_seed(1))
    assert b["y"].shape == (9, 10) and b["refinement"][:, 8:].all() and not b["refinement"][:, :8].any()
    # a prompt with all answers right gets no refinement; refinements of failed answers prefer correct ones
    all_right = b["r"][:, :8].sum(1) == 8
    assert not bool(b["valid"][all_right, 8:].any())
    loss = E.group_loss(w.z0.clone().requires_grad_(True), b, 0.1)
    assert torch.isfinite(loss)


def test_grpo_learns_nothing_on_persistent_without_correct_samples():
    """An all-wrong group has zero advantage: GRPO's gradient on a persistent prompt is zero unless it samples y*."""
    cfg = E.Config(n_prompts=2, n_persistent=2)
    w = E.make_world(cfg, 1)
    b = E.critique_step(w.z0, w, 8, 0, None, 0.5, torch.Generator().manual_seed(0))
    z = w.z0.clone().requires_grad_(True)
    E.group_loss(z, b, 0.1).backward()
    dead = b["r"].sum(1) == 0
    assert bool(dead.any()) and float(z.grad[dead].abs().max()) == 0.0


def test_train_tabular_short():
    cfg = E.Config(n_prompts=8, n_persistent=4, steps=3, methods="GRPO,Critique-GRPO")
    out = E.run_tabular(cfg, 0)
    for m in ("GRPO", "Critique-GRPO"):
        assert set(out["traces"][m]) >= {"pass@1", "persistent", "refined_correct"}
        assert len(out["traces"][m]["pass@1"]) == 3 and 0 <= out[m]["pass@1"] <= 1


def test_full_helpers():
    assert "\\boxed{3}" in E.full_critique("so \\boxed{3}", "4") and "4" in E.full_critique("x", "4")
    comp = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 2, 0, 0], [5, 6, 7, 8, 9]])
    m = E._completion_mask(comp, eos_id=2, pad_id=0)
    assert m.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end on a tiny local model and a tiny MATH-like data set (1 step per method)."""
    from rlbook import math_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=paths["model"], full_train_data=paths["train"],
                      full_eval_data=paths["eval"], full_prompts=2, full_n=3, full_k=1, full_micro_batch=4)
    out = E.run_full(cfg, 0, cpu=True, max_steps=1, eval_problems=2, eval_samples=2, max_completion=8)
    assert set(out) >= {"base", "GRPO", "Critique-GRPO", "logs"}
    assert all(0.0 <= v <= 1.0 for v in out["Critique-GRPO"].values())
    assert len(out["logs"]["Critique-GRPO"]) == 1 and math.isfinite(out["logs"]["Critique-GRPO"][0]["loss"])
