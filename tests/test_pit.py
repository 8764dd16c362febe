"""Tests of PIT's objectives (rlbook.losses.pit) and the attribute-response world (rlbook.attributes)."""

import numpy as np
import pytest
import torch

from rlbook import losses
from rlbook.attributes import random_attribute_world
from rlbook.bandits import kl_optimal_policy, softmax
from rlbook.losses.pit import pit_policy_loss, pit_rm_loss, pit_rm_loss_ordered
from rlbook.rewards import bt_loss


def _scores(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)


def test_pit_rm_loss_hand_value():
    r = [torch.tensor([v], dtype=torch.float64) for v in (1.0, -1.0, 0.2, 0.1)]
    loss, d = pit_rm_loss(*r)
    sp = lambda z: np.log1p(np.exp(-z))  # noqa: E731  -log sigmoid
    assert loss.item() == pytest.approx(sp(2.0) + sp(0.8) + sp(1.1), abs=1e-12)
    assert d["accuracy"].item() == 1.0
    with pytest.raises(ValueError):
        pit_rm_loss(r[0], r[1], r[2], torch.zeros(2))


def test_edge_pit_rm_difference_form_is_bt():
    """With a difference-form gap model R(x, y, y') = r(x, y) - r(x, y'), the PIT reward-model loss
    is the Bradley-Terry loss at twice the scale plus twice the ordinary Bradley-Terry loss."""
    r_w, r_l = _scores()
    gap = lambda a, b: a - b  # noqa: E731
    loss, _ = pit_rm_loss(gap(r_w, r_l), gap(r_l, r_w), gap(r_w, r_w), gap(r_l, r_l))
    want = bt_loss(2 * r_w, 2 * r_l) + 2 * bt_loss(r_w, r_l)
    assert loss.item() == pytest.approx(want.item(), abs=1e-12)


def test_edge_pit_rm_ordered_difference_form_is_bt():
    """The same for the full-order loss: BT at twice the scale plus four times the ordinary BT loss."""
    r_w, r_l = _scores(seed=3)
    gap = lambda a, b: a - b  # noqa: E731
    loss, d = pit_rm_loss_ordered(gap(r_w, r_l), gap(r_l, r_w), gap(r_w, r_w), gap(r_l, r_l))
    want = bt_loss(2 * r_w, 2 * r_l) + 4 * bt_loss(r_w, r_l)
    assert loss.item() == pytest.approx(want.item(), abs=1e-12)
    three, _ = pit_rm_loss(gap(r_w, r_l), gap(r_l, r_w), gap(r_w, r_w), gap(r_l, r_l))
    assert (loss - three).item() == pytest.approx(d["same_reference"].item(), abs=1e-12)


def test_edge_pit_fixed_reference_is_rlhf():
    """With a fixed reference and a difference-form gap reward, PIT's KL-regularised objective has the RLHF
    optimum: pi* ∝ pi_SFT exp(r / beta) (the reference's reward is a constant that cancels)."""
    rng = np.random.default_rng(0)
    ref_probs = softmax(rng.standard_normal((4, 12)))
    r = rng.standard_normal((4, 12))
    for y_ref in range(12):
        gap = r - r[:, [y_ref]]
        np.testing.assert_allclose(kl_optimal_policy(ref_probs, gap, 0.3), kl_optimal_policy(ref_probs, r, 0.3),
                                   atol=1e-12)


def _fit_linear_gap(loss_fn, n=2000, s=2.0):
    """Maximum-likelihood (a, b) of the gap model R = a q(y) - b q(y_ref) on Bradley-Terry pairs of scale s."""
    g = torch.Generator().manual_seed(0)
    q1, q2 = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    first = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(s * (q1 - q2))
    qw, ql = torch.where(first, q1, q2), torch.where(first, q2, q1)
    ab = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=25, line_search_fn="strong_wolfe")
    R = lambda y, yr: ab[0] * y - ab[1] * yr  # noqa: E731

    def closure():
        opt.zero_grad()
        loss, _ = loss_fn(R(qw, ql), R(ql, qw), R(qw, qw), R(ql, ql))
        loss.backward()
        return loss

    opt.step(closure)
    return ab.detach().tolist()


def test_three_term_rm_loss_scores_only_the_reference():
    """A caveat found while building the chapter: under Bradley-Terry labels P(w > l) = sigma(s (q_w - q_l)),
    the maximum-likelihood gap model R = a q(y) - b q(y_ref) of the three-term loss has a + b = s (term 1)
    and b = s (terms 2 and 3), so a = 0: it scores only the reference. The full-order loss (next test) gives
    a = b > 0, a multiple of the true gap (its terms want a + b = s and a = b = s at once; the fit compromises)."""
    s = 2.0
    a, b = _fit_linear_gap(pit_rm_loss, s=s)
    assert abs(a) < 0.2 and b == pytest.approx(s, rel=0.1)


def test_ordered_rm_loss_scores_the_candidate():
    s = 2.0
    a, b = _fit_linear_gap(pit_rm_loss_ordered, s=s)
    assert a == pytest.approx(b, rel=1e-6) and 0.5 * s < a < s


def test_pit_policy_loss_is_reinforce_with_group_baseline_plus_kl():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(3, 4, generator=g, dtype=torch.float64)
    gap = torch.randn(3, 4, generator=g, dtype=torch.float64)
    kl = torch.rand(3, generator=g, dtype=torch.float64)
    got = pit_policy_loss(logp, gap, kl, beta=0.5)
    adv = gap - gap.mean(1, keepdim=True)
    assert got.item() == pytest.approx((-(adv * logp).mean() + 0.5 * kl.mean()).item(), abs=1e-12)
    base = gap.mean(1, keepdim=True).expand(3, 4).reshape(-1)
    pg = losses.reinforce_loss(logp.reshape(-1, 1), torch.ones(12, 1, dtype=torch.float64), gap.reshape(-1), base)
    assert got.item() == pytest.approx(pg.item() + 0.5 * kl.mean().item(), abs=1e-12)
    with pytest.raises(ValueError):
        pit_policy_loss(logp, gap[:, :2], kl, 0.1)


def test_attribute_world():
    w = random_attribute_world(5, np.random.default_rng(0))
    assert w.responses.shape == (125, 3) and w.moves.shape == (27, 3)
    np.testing.assert_array_equal(w.index(w.responses), np.arange(125))
    q = w.gold_table()
    a = w.responses[7]
    u = a / 4
    assert q[2, 7] == pytest.approx(w.w[2] @ u - w.gamma * u[0] * u[2])
    # edits are clipped to the level range; the zero move keeps the response
    top = np.array([[4, 4, 0]])
    np.testing.assert_array_equal(w.apply(top, np.array([26])), [[4, 4, 1]])
    np.testing.assert_array_equal(w.apply(top, np.array([13])), top)
    b = w.bandit()
    np.testing.assert_allclose(b.ref_probs.sum(-1), 1.0)


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    from rlbook.experiments import pit_implicit_self_improvement as E
    from rlbook.models import save_tiny_policy, save_tiny_reward_model

    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ?.!:,'\"-()[]\n"
    tok = save_tiny_policy(tmp_path / "policy", alphabet, max_len=512, chat=False)

    save_tiny_reward_model(tmp_path / "judge", tok, max_len=512)
    rows = [{"chosen": f"\n\nHuman: say {'ab'[i % 2]}?\n\nAssistant: yes {'ab'[i % 2]}",
             "rejected": f"\n\nHuman: say {'ab'[i % 2]}?\n\nAssistant: no"} for i in range(12)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hh"))
    cfg = E.Config(model=str(tmp_path / "policy"), dataset=str(tmp_path / "hh"), judge=str(tmp_path / "judge"),
                   full_pairs=8, full_rl_prompts=8, full_eval_prompts=2, full_max_new_tokens=4, full_max_length=256,
                   full_batch=4, full_per_device_batch=4, full_max_steps=2, full_lr=1e-3)
    out = E.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert len(out["judge_score_by_round"]) == 4 and np.all(np.isfinite(out["judge_score_by_round"]))
    assert len(out["rm_log"]) == 2
