"""Tests of RSO: rlbook.losses.rso, rlbook.sampling and rlbook.experiments.rso_statistical_rejection_sampling."""

import numpy as np
import pytest
import torch

from rlbook import bandits as B
from rlbook import losses
from rlbook import sampling as S
from rlbook.config import from_params
from rlbook.experiments import rso_statistical_rejection_sampling as E
from rlbook.losses import rso


def _logps(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) * 3 - 10 for _ in range(4)]


# ----------------------------------------------------------------------------- family-tree edges


def test_edge_rso_sampler_targets_kl_optimum():
    """RSO changes DPO's *sampling distribution*: accepted proposals follow pi* ∝ pi_sft exp(r/beta)."""
    rng = np.random.default_rng(0)
    bandit = B.random_contextual_bandit(1, 10, rng, ref_scale=1.5)
    beta = 0.5
    p_sft, r = bandit.ref_probs[0], bandit.r[0]
    star = B.kl_optimal_policy(p_sft, r, beta)
    acc, prop = S.exact_rejection_sample(p_sft, r, beta, 200_000, np.random.default_rng(1))
    emp = S.empirical_distribution(acc, 10)
    assert S.total_variation(emp, star) < 0.015
    # a test that can fail: the accepted samples are not pi_sft
    assert S.total_variation(emp, p_sft) > 0.1
    # the acceptance rate is Z / M (eq. 18)
    assert len(acc) / len(prop) == pytest.approx(S.acceptance_rate(p_sft[None], r[None], beta)[0], rel=0.02)
    # Algorithm 1 with a long candidate list (envelope = max over the list) gets close to pi* too
    cand = np.random.default_rng(2).choice(10, size=(10_000, 200), p=p_sft)
    pos = S.rso_rejection_sample(r[cand], 1, beta, np.random.default_rng(3))[:, 0]
    emp1 = S.empirical_distribution(cand[np.arange(len(cand)), pos], 10)
    assert S.total_variation(emp1, star) < 0.03


def test_edge_rso_sigmoid_norm_is_dpo():
    """sigmoid-norm (RSO eq. 8) with gamma = beta is DPO's loss (DPO eq. 7)."""
    w, rw, l_, rl = _logps()
    for gamma in (0.05, 0.5, 2.0):
        a, _ = rso.sigmoid_norm_loss(w, rw, l_, rl, gamma)
        b, _ = losses.dpo_loss(w, rw, l_, rl, gamma)
        assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_edge_rso_hinge_norm_is_slic_hinge_on_log_ratios():
    """hinge-norm (eq. 10) = gamma x SLiC's hinge (eq. 9 / SLiC eq. 1) on log-ratios with margin delta = 1/gamma."""
    w, rw, l_, rl = _logps(seed=1)
    for gamma in (0.05, 0.5, 2.0):
        a, _ = rso.hinge_norm_loss(w, rw, l_, rl, gamma)
        b = gamma * rso.slic_hinge_loss(w - rw, l_ - rl, delta=1.0 / gamma)
        assert a.item() == pytest.approx(b.item(), abs=1e-12)
        # with a uniform (constant) reference it is SLiC's hinge on raw log-likelihoods
        c = torch.full_like(w, -3.0)
        a2, _ = rso.hinge_norm_loss(w, c, l_, c, gamma)
        assert a2.item() == pytest.approx(gamma * rso.slic_hinge_loss(w, l_, 1.0 / gamma).item(), abs=1e-12)


# ----------------------------------------------------------------------------- losses


def test_losses_hand_computed():
    w, rw, l_, rl = (torch.tensor([x], dtype=torch.float64) for x in (-1.0, -2.0, -3.0, -2.5))
    # margin = gamma * ((−1+2) − (−3+2.5)) = gamma * 1.5
    s, d = rso.sigmoid_norm_loss(w, rw, l_, rl, 0.5)
    assert d["margin"].item() == pytest.approx(0.75)
    assert s.item() == pytest.approx(np.log1p(np.exp(-0.75)))
    h, _ = rso.hinge_norm_loss(w, rw, l_, rl, 0.5)
    assert h.item() == pytest.approx(0.25)
    h, _ = rso.hinge_norm_loss(w, rw, l_, rl, 1.0)
    assert h.item() == 0.0  # margin 1.5 >= 1: no loss, no gradient
    with pytest.raises(ValueError):
        rso.sigmoid_norm_loss(w, rw, l_, rl, 0.0)
    with pytest.raises(ValueError):
        rso.hinge_norm_loss(w[None], rw[None], l_[None], rl[None], 1.0)


def test_hinge_norm_matches_trl_formula():
    """TRL 1.16 DPOTrainer, loss_type="hinge": relu(1 - beta * (chosen_logratio - rejected_logratio)).mean()."""
    w, rw, l_, rl = _logps(seed=2)
    beta = 0.1
    trl_formula = torch.relu(1 - beta * ((w - rw) - (l_ - rl))).mean()
    ours, _ = rso.hinge_norm_loss(w, rw, l_, rl, beta)
    assert ours.item() == pytest.approx(trl_formula.item(), abs=1e-12)


# ----------------------------------------------------------------------------- sampler


def _paper_listing(rewards, num_samples, beta, rng):
    """RSO Appendix A.1, Algorithm 1, literally (candidates keyed by position)."""
    candidates = dict(enumerate(rewards))
    accepted = []
    while len(accepted) < num_samples:
        max_reward = max(candidates.values())
        to_remove = []
        for c, r in candidates.items():
            u = rng.uniform()
            if u >= np.exp((r - max_reward) / beta):
                continue
            accepted.append(c)
            to_remove.append(c)
            if len(accepted) == num_samples:
                break
        for c in to_remove:
            candidates.pop(c)
    return accepted


def test_vectorised_algorithm_matches_paper_listing_in_distribution():
    r = np.array([0.1, 0.9, 0.4, 0.6, 0.2])
    beta, k, n = 0.3, 2, 10_000
    rng = np.random.default_rng(0)
    ref = [tuple(sorted(_paper_listing(r, k, beta, rng))) for _ in range(n)]
    ours = [tuple(sorted(row)) for row in S.rso_rejection_sample(np.tile(r, (n, 1)), k, beta, np.random.default_rng(1))]
    keys = sorted(set(ref) | set(ours))
    f_ref = np.array([ref.count(t) for t in keys]) / n
    f_ours = np.array([ours.count(t) for t in keys]) / n
    assert S.total_variation(f_ref, f_ours) < 0.03


def test_rso_rejection_sample_properties():
    rng = np.random.default_rng(0)
    r = rng.random((50, 16))
    out = S.rso_rejection_sample(r, 6, 0.2, rng)
    assert out.shape == (50, 6) and out.min() >= 0 and out.max() < 16
    assert all(len(set(row)) == 6 for row in out)  # distinct candidates
    # beta -> infinity: everything is accepted, so the first k in order
    np.testing.assert_array_equal(S.rso_rejection_sample(r, 3, 1e9, rng), np.tile(np.arange(3), (50, 1)))
    # beta -> 0: only the current maximum is accepted, so the top-k by reward (top-k-over-N)
    np.testing.assert_array_equal(S.rso_rejection_sample(r, 3, 1e-9, rng), np.argsort(-r, -1)[:, :3])
    with pytest.raises(ValueError):
        S.rso_rejection_sample(r, 17, 0.2, rng)


def test_first_round_pairs_and_tv():
    a, b = S.first_round_pairs(np.array([[5, 6, 7, 8]]))
    np.testing.assert_array_equal(a, [[5, 7]])
    np.testing.assert_array_equal(b, [[6, 8]])
    assert S.total_variation(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0
    np.testing.assert_allclose(S.empirical_distribution(np.array([0, 0, 2]), 3), [2 / 3, 0, 1 / 3])


# ----------------------------------------------------------------------------- experiment


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, beta=0.0)
    with pytest.raises(ValueError):
        from_params(E.Config, num_samples=7)
    with pytest.raises(ValueError):
        from_params(E.Config, num_samples=128)
    with pytest.raises(ValueError):
        from_params(E.Config, gama=1.0)
    with pytest.raises(TypeError):
        from_params(E.Config, steps=1.5)


def test_pairs_share_the_budget_and_follow_the_ranker():
    cfg = E.Config(n_prompts=4, rounds=8)
    world = E.build_world(cfg, np.random.default_rng(0))
    for s in E.SAMPLERS:
        p = E.make_pairs(world, s, cfg, np.random.default_rng(1))
        assert len(p) <= cfg.n_prompts * cfg.rounds * cfg.num_samples // 2
        assert np.all(world.r_psi[p.x, p.yw] >= world.r_psi[p.x, p.yl]) and np.all(p.yw != p.yl)
    sft = E.make_pairs(world, "sft-sample-rank", cfg, np.random.default_rng(1))
    rs = E.make_pairs(world, "rso-sample-rank", cfg, np.random.default_rng(1))
    # rejection-sampled responses have a higher gold reward than pi_sft's
    assert world.bandit.r[rs.x, rs.yw].mean() > world.bandit.r[sft.x, sft.yw].mean() + 0.1
    with pytest.raises(ValueError):
        E.make_pairs(world, "best-of-n", cfg, np.random.default_rng(1))


def test_rso_data_beats_sft_data_with_sigmoid_norm():
    cfg = E.Config(n_prompts=8, steps=300)
    out = E.run_smoke(cfg, seed=0, samplers=("sft-sample-rank", "rso-sample-rank"), loss_names=("sigmoid-norm",))
    m = out["metrics"]
    assert m[("rso-sample-rank", "sigmoid-norm")]["gold_reward"] > m[("sft-sample-rank", "sigmoid-norm")]["gold_reward"] + 0.05
    for p in out["policies"].values():
        np.testing.assert_allclose(p.sum(-1), 1.0)
    world = out["world"]
    ev = E.evaluate(world, world.pi_star)
    assert ev["kl_from_star"] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- full profile (dry run)


def _tiny_full_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy, save_tiny_reward_model

    tok = save_tiny_policy(tmp_path / "policy", "abcdefghijklmnopqrstuvwxyz ?.!:\n", max_len=128, chat=False)
    save_tiny_reward_model(tmp_path / "rm", tok, max_len=256)
    rows = [{"prompt": f"summarise {'abcdef'[i % 6]} post:"} for i in range(8)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prompts"))


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_full_setup(tmp_path)
    cfg = E.Config(
        model=str(tmp_path / "policy"), dataset=str(tmp_path / "prompts"), reward_model=str(tmp_path / "rm"),
        full_train_prompts=4, full_eval_prompts=2, full_candidates=4, full_num_samples=2, full_max_new_tokens=6,
        full_batch=2, full_per_device_batch=2, full_max_length=64, full_max_steps=1, full_lr=1e-3,
    )
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert set(out["pairs"]) == {"sft-sample-rank", "rso-sample-rank"}
    assert set(out["runs"]) == {f"{lo}/{s}" for lo in ("sigmoid-norm", "hinge-norm") for s in out["pairs"]}
    assert all(np.isfinite(v["reward"]) and 0 <= v["win_rate_vs_sft"] <= 1 for v in out["runs"].values())
    assert out["candidate_scores"].shape == (4, 4)
