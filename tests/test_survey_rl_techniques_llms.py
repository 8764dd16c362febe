"""Tests of the survey chapter: the PPO loss, the family-tree edges, the testbed, the full-profile dry run."""

import numpy as np
import pytest
import torch

from rlbook import bandits
from rlbook.experiments import survey_rl_techniques_llms as E
from rlbook.losses import dpo_loss, group_normalise, grpo_loss, weighted_logprob_loss
from rlbook.losses.ppo import ppo_clip_loss, value_loss


def _rand(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- the PPO loss


def test_ppo_clip_hand_computed():
    # one token, A = +1: ratio 1.5 is clipped to 1.2; A = -1: ratio 0.5 is clipped to 0.8
    logp = torch.log(torch.tensor([[1.5], [0.5], [1.1]], dtype=torch.float64))
    old = torch.zeros(3, 1, dtype=torch.float64)
    adv = torch.tensor([[1.0], [-1.0], [2.0]], dtype=torch.float64)
    loss, d = ppo_clip_loss(logp, old, adv, torch.ones(3, 1), eps=0.2)
    # min(1.5, 1.2) = 1.2; min(-0.5, -0.8) = -0.8; min(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2) / 3, abs=1e-12)
    assert d["clip_frac"].item() == pytest.approx(2 / 3)


def test_ppo_clip_mask_and_shapes():
    logp, old, adv = _rand((4, 5), 1), _rand((4, 5), 2), _rand((4, 5), 3)
    mask = torch.ones(4, 5)
    mask[:, 3:] = 0
    a, _ = ppo_clip_loss(logp, old, adv, mask)
    b, _ = ppo_clip_loss(logp[:, :3], old[:, :3], adv[:, :3], torch.ones(4, 3))
    assert a.item() == pytest.approx(b.item(), abs=1e-12)
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, old, adv[:, :2], mask)


def test_value_loss_hand_computed():
    v = torch.tensor([[1.0, 2.0]])
    r = torch.tensor([[0.0, 4.0]])
    assert value_loss(v, r, torch.ones(1, 2)).item() == pytest.approx(0.5 * (1 + 4) / 2)


# ----------------------------------------------------------------------------- family-tree edges


def test_edge_grpo_is_ppo_with_group_baseline():
    """GRPO (no KL) = PPO-clip whose per-token advantage is the group-normalised reward (equal lengths)."""
    B, G, T = 3, 4, 5
    r = _rand((B, G), 4)
    adv = group_normalise(r).reshape(-1)  # (N,)
    logp, old = _rand((B * G, T), 5) * 0.3, _rand((B * G, T), 6) * 0.3
    mask = torch.ones(B * G, T)
    a, _ = grpo_loss(logp, old, adv, mask, 0.2, 0.2, beta=0.0)
    b, _ = ppo_clip_loss(logp, old, adv[:, None].expand(B * G, T), mask, eps=0.2)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_edge_ppo_on_policy_gradient_is_reinforce():
    """At ratio 1 (first epoch on fresh samples) the PPO-clip gradient is the REINFORCE gradient with weights A."""
    z = _rand((6, 3), 7).requires_grad_(True)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    adv = _rand((6,), 8)
    logp = torch.log_softmax(z, -1)[torch.arange(6), y][:, None]
    loss, _ = ppo_clip_loss(logp, logp.detach(), adv[:, None], torch.ones(6, 1))
    g1 = torch.autograd.grad(loss, z)[0]
    logp = torch.log_softmax(z, -1)[torch.arange(6), y][:, None]
    g2 = torch.autograd.grad(weighted_logprob_loss(logp, torch.ones(6, 1), adv), z)[0]
    assert torch.allclose(g1, g2, atol=1e-12)


def test_edge_dpo_optimum_is_rlhf_optimum():
    """The population DPO minimiser equals the KL-regularised RLHF optimum π_ref e^{r/β}/Z (10 arms, 1e-4)."""
    rng = np.random.default_rng(0)
    ref = bandits.softmax(rng.normal(size=10))
    r = rng.normal(size=10)
    for beta in (0.5, 2.0):
        closed = bandits.kl_optimal_policy(ref, r, beta)
        assert np.abs(E.dpo_population_optimum(ref, r, beta) - closed).max() < 1e-4
        assert np.abs(E.kl_regularised_ascent(ref, r, beta) - closed).max() < 1e-4


def test_edge_dpo_implicit_reward_is_reward_up_to_constant():
    """At the RLHF optimum, β log π*/π_ref = r − β log Z: DPO's implicit reward, and the DPO margin is r_w − r_l."""
    rng = np.random.default_rng(1)
    ref = bandits.softmax(rng.normal(size=10))
    r = rng.normal(size=10)
    beta = 0.7
    pi = bandits.kl_optimal_policy(ref, r, beta)
    implicit = beta * (np.log(pi) - np.log(ref))
    assert np.allclose(implicit - r, (implicit - r)[0], atol=1e-10)
    w, l_ = torch.tensor([0, 3]), torch.tensor([5, 7])
    lp, lr_ = torch.tensor(np.log(pi)), torch.tensor(np.log(ref))
    _, d = dpo_loss(lp[w], lr_[w], lp[l_], lr_[l_], beta)
    assert np.allclose(d["margin"].numpy(), r[[0, 3]] - r[[5, 7]], atol=1e-10)


# ----------------------------------------------------------------------------- the testbed


def test_world_and_verifier():
    cfg = E.Config(n_prompts=6)
    w = E.build_world(cfg, np.random.default_rng(0))
    assert w.correct.shape == (6, 12) and (w.correct.sum(1) == 2).all()  # bare and padded correct answer
    assert E.verify("12+30=", "42 ...") and not E.verify("12+30=", "43")
    assert (w.length[:, 6:] > w.length[:, :6]).all()
    assert np.allclose(w.ref_probs.sum(1), 1.0)


def test_ai_judge_agreement():
    cfg = E.Config(n_prompts=20, n_pairs=20000)
    w = E.build_world(cfg, np.random.default_rng(0))
    pairs = E.human_pairs(w, cfg, np.random.default_rng(1))
    ai = E.ai_judge_relabel(w, pairs, 0.7, np.random.default_rng(2))
    mixed = w.correct[ai.x, ai.yw] != w.correct[ai.x, ai.yl]
    assert w.correct[ai.x, ai.yw][mixed].mean() == pytest.approx(0.7, abs=0.02)


def test_gsm8k_parsing():
    assert E.gsm8k_target("so 3+4\n#### 1,234") == "1234"
    assert E.extract_number("blah 12 then #### 42.") == "42"
    assert E.exact_match_reward(["x #### 7", "7 8", [{"role": "assistant", "content": "#### 8"}]], ["7", "8", "8"]) == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- full profile dry run


def _tiny_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy

    save_tiny_policy(tmp_path / "policy", "abcdefghijklmnopqrstuvwxyz0123456789 ?.!:#<>'+=\n", max_len=256)
    rows = [{"question": f"what is {i}+{i}?", "answer": f"ok\n#### {2 * i}"} for i in range(12)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:4])}
                         ).save_to_disk(str(tmp_path / "math"))
    prefs = []
    for i in range(12):
        q = [{"role": "user", "content": f"say {'ab'[i % 2]}?"}]
        prefs.append({"prompt": q[0]["content"], "chosen": q + [{"role": "assistant", "content": "yes " + "ab"[i % 2]}],
                      "rejected": q + [{"role": "assistant", "content": "no"}]})
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(prefs)}).save_to_disk(str(tmp_path / "prefs"))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_setup(tmp_path)
    cfg = E.Config(full_model=str(tmp_path / "policy"), full_math_data=str(tmp_path / "math"),
                   full_pref_data=str(tmp_path / "prefs"), full_pairs=8, full_group=2, full_prompts_per_step=2,
                   full_max_completion=6, full_eval_problems=3, full_per_device_batch=2, full_max_length=64,
                   full_lr=1e-3, full_dpo_lr=1e-3, full_rm_lr=1e-3)
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"), max_steps=2)
    assert set(out) == {"base", "grpo", "dpo", "rlhf_rloo"}
    for v in out.values():
        assert 0.0 <= v["accuracy"] <= 1.0 and 0 < v["length"] <= 6
