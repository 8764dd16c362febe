"""Tests of the Part 3 chapters (DNO, INPO, SPO): their losses, the family-tree edges, the experiments."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlbook import games as G
from rlbook.config import from_params
from rlbook.experiments import direct_nash_optimization as DNO
from rlbook.experiments import inpo_iterative_nash_policy_optimization as INPO
from rlbook.experiments import spo_minimaximalist_rlhf as SPO
from rlbook.losses import dpo_loss
from rlbook.losses.dno import dno_loss
from rlbook.losses.inpo import inpo_loss


def _rand(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(6)]


# ----------------------------------------------------------------------------- the losses


def test_inpo_loss_hand_value():
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # h = (-1 - -3) - 0.2*(0 - 1) - 0.8*(-2 - -1) = 2 + 0.2 + 0.8 = 3; (3 - 0.5)^2
    val = inpo_loss(one(-1.0), one(-3.0), one(0.0), one(1.0), one(-2.0), one(-1.0), eta=1.0, tau=0.2)
    assert val.item() == pytest.approx(6.25)
    with pytest.raises(ValueError):
        inpo_loss(one(0.0), one(0.0), one(0.0), one(0.0), one(0.0), torch.zeros(2), 1.0, 0.1)
    with pytest.raises(ValueError):
        inpo_loss(one(0.0), one(0.0), one(0.0), one(0.0), one(0.0), one(0.0), 2.0, 1.0)


def test_dno_loss_hand_value():
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # m = 0.5 * ((0 - -1) - (-2 - -2)) = 0.5 ; p = 0.7
    val = dno_loss(one(0.0), one(-1.0), one(-2.0), one(-2.0), one(0.7), eta=0.5)
    m = torch.tensor(0.5, dtype=torch.float64)
    assert val.item() == pytest.approx(-(0.7 * F.logsigmoid(m) + 0.3 * F.logsigmoid(-m)).item())


def test_dno_loss_minimised_at_soft_policy_iteration():
    """Derivation check: the soft-label loss is minimised where eta * log-ratio differences equal r_t differences."""
    P = G.intransitive_game()
    pi_t = np.random.default_rng(0).dirichlet(np.ones(6))
    eta = 0.5
    r = G.win_rates(P, pi_t)
    y1, y2 = (torch.as_tensor(a.ravel()) for a in np.meshgrid(np.arange(6), np.arange(6), indexing="ij"))
    lt = torch.log(torch.as_tensor(pi_t))
    target = torch.sigmoid(torch.as_tensor(r)[y1] - torch.as_tensor(r)[y2])
    pi = INPO._fit_logits(lambda lp: dno_loss(lp[y1], lt[y1], lp[y2], lt[y2], target, eta), lt.numpy(), 60)
    assert np.allclose(pi, G.mwu_step(P, pi_t, 1.0 / eta), atol=1e-6)


# ----------------------------------------------------------------------------- family-tree edges


def test_edge_inpo_minimiser_is_omd_step():
    """INPO -> OMD: the exact-expectation minimiser of the INPO loss is the closed-form mirror-descent step."""
    P = G.intransitive_game()
    rng = np.random.default_rng(1)
    for _ in range(2):
        pi_t, ref = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
        for eta, tau in ((1.0, 0.1), (0.5, 0.8)):
            got = INPO.exact_inpo_minimiser(P, pi_t, ref, tau, eta)
            assert G.tv(got, G.omd_step(P, pi_t, ref, tau, eta)) < 1e-6


def test_edge_inpo_tau0_is_ipo_with_reference_pi_t():
    """INPO with tau = 0 is IPO (Azar et al. eq. 17) with reference pi_t and IPO strength 1/eta."""
    lw, ll, rw, rl, tw, tl = _rand(64, 2)
    eta = 0.7
    ipo = (((lw - tw) - (ll - tl) - 1 / (2 * (1 / eta))) ** 2).mean()
    assert torch.allclose(inpo_loss(lw, ll, rw, rl, tw, tl, eta, 0.0), ipo)


def test_edge_dno_hard_label_is_dpo_with_reference_pi_t():
    """DNO -> DPO: with a hard label (p = 1) DNO's loss is DPO's with reference pi_t and beta = eta (DNO-Prct)."""
    l1, t1, l2, t2, _, _ = _rand(64, 3)
    eta = 0.3
    a = dno_loss(l1, t1, l2, t2, torch.ones(64, dtype=torch.float64), eta)
    b, _ = dpo_loss(l1, t1, l2, t2, beta=eta)
    assert torch.allclose(a, b)


def test_edge_spo_and_dno_reach_the_minimax_winner():
    """SPO and DNO compute the same minimax winner by different routes (time-averaged iterates).

    DNO's route: soft policy iteration pi_{t+1} ∝ pi_t exp(r_t / eta), each step being the
    minimiser of DNO's regression loss (checked here on the first step, and in general by
    test_dno_loss_minimised_at_soft_policy_iteration). SPO's route: softmax policy gradient on
    the win proportion against the current policy. Both averages land on the LP's minimax winner.
    """
    P = G.intransitive_game(0.8, 0.3)
    K = len(P)
    mw = G.minimax_winner(P)
    eta, pi0 = 2.0, np.full(K, 1.0 / K)
    # the first DNO step by loss minimisation equals the closed-form step
    y1, y2 = (torch.as_tensor(a.ravel()) for a in np.meshgrid(np.arange(K), np.arange(K), indexing="ij"))
    r = torch.as_tensor(G.win_rates(P, pi0))
    lt = torch.log(torch.as_tensor(pi0))
    target = torch.sigmoid(r[y1] - r[y2])
    first = INPO._fit_logits(lambda lp: dno_loss(lp[y1], lt[y1], lp[y2], lt[y2], target, eta), lt.numpy(), 50)
    assert np.allclose(first, G.mwu_step(P, pi0, 1.0 / eta), atol=1e-6)
    dno_avg = G.running_average(G.self_play(P, pi0, 3000, 1.0 / eta))[-1]
    # SPO's route: softmax policy gradient on the win proportion against the current policy
    theta = np.zeros(K)
    spo_iters = []
    for _ in range(3000):
        p = np.exp(theta - theta.max())
        p /= p.sum()
        spo_iters.append(p)
        r = G.win_rates(P, p)  # expected win proportion of each response against pi_t
        theta += 2.0 * p * (r - p @ r)  # exact gradient of E_{y~pi}[r(y)] with the opponent held fixed
    spo_avg = np.mean(spo_iters, 0)
    for avg in (dno_avg, spo_avg):
        assert G.tv(avg, mw) < 0.05 and G.exploitability(P, avg) < 0.02
    assert G.tv(dno_avg, spo_avg) < 0.05


# ----------------------------------------------------------------------------- experiments


def test_configs_refuse_bad_values():
    with pytest.raises(ValueError):
        from_params(INPO.Config, eta=1.0, tau=2.0)
    with pytest.raises(ValueError):
        from_params(DNO.Config, margin=1.5)
    with pytest.raises(ValueError):
        from_params(SPO.Config, noise=0.6)
    with pytest.raises(ValueError):
        from_params(SPO.Config, unknown=1)


def test_inpo_sampled_step_close_to_omd():
    P, ref = G.intransitive_game(), np.full(6, 1 / 6)
    got = INPO.inpo_step(P, ref, ref, 0.1, 1.0, 100_000, np.random.default_rng(0))
    assert G.tv(got, G.omd_step(P, ref, ref, 0.1, 1.0)) < 0.01


def test_inpo_sample_pairs_labels():
    P = G.rock_paper_scissors(0.9)
    yw, yl = INPO.sample_pairs(P, np.array([0.5, 0.5, 0.0]), 20_000, np.random.default_rng(0))
    mixed = yw != yl
    assert abs(np.mean(yw[mixed] == 0) - 0.9) < 0.02


def test_dno_world_and_pairs():
    cfg = DNO.Config(n_prompts=5, n_responses=8)
    w = DNO.make_world(cfg, np.random.default_rng(0))
    assert w.P.shape == (5, 8, 8) and np.allclose(w.teacher.sum(1), 1) and np.allclose(w.pi0.sum(1), 1)
    assert DNO.win_rate(w.P, w.pi0, w.pi0) == pytest.approx(0.5)
    x, yp, ym = DNO.collect_pairs(w.P, w.pi0, w.teacher, cfg, np.random.default_rng(1))
    assert len(x) == len(yp) == len(ym) and np.all(yp != ym)
    # the kept winner is better on average under the oracle
    assert w.P[x, yp, ym].mean() > 0.6


def test_dno_soft_policy_iteration_average_unexploitable():
    cfg = DNO.Config(n_prompts=4, n_responses=8)
    w = DNO.make_world(cfg, np.random.default_rng(0))
    it = DNO.soft_policy_iteration(w, 0.5, 400)
    assert DNO.exploitability(w.P, it.mean(0)) < 0.03 < DNO.exploitability(w.P, w.pi0)


def test_spo_win_proportion_expectation():
    P = G.rock_paper_scissors(0.8)
    ys = np.array([0, 1, 2, 0])
    rng = np.random.default_rng(0)
    r = np.mean([SPO.win_proportion(P, ys, rng) for _ in range(4000)], 0)
    expect = np.array([(P[y, ys].sum() - 0.5) / 3 for y in ys])
    assert np.allclose(r, expect, atol=0.02)
    # every pair is judged once: the win proportions of a group sum to (N choose 2) / (N - 1)
    assert SPO.win_proportion(P, ys, rng).sum() == pytest.approx(6 / 3)


def test_spo_rater_is_intransitive():
    tree = SPO.TokenTree(3, 5)
    P = SPO.majority_rater(tree, 0.1)
    mw = G.minimax_winner(P)
    assert G.exploitability(P, mw) < 1e-8
    assert max(G.exploitability(P, np.eye(len(P))[i]) for i in range(len(P))) > 0.3
    assert min(G.exploitability(P, np.eye(len(P))[i]) for i in range(len(P))) > 0.05  # no Condorcet winner


def test_spo_reinforce_grad_matches_autograd_of_reinforce_loss():
    from rlbook import mdp as M
    from rlbook.losses import reinforce_loss

    tree = SPO.TokenTree(3, 4)
    rng = np.random.default_rng(0)
    theta = torch.tensor(rng.normal(size=(1, tree.n_states, 3)), requires_grad=True)
    lp = torch.log_softmax(theta, -1)
    ys = M.sample_responses(lp.detach().numpy(), np.zeros(6, dtype=int), tree, rng)
    r = torch.as_tensor(rng.random(6))
    st, ac = tree.path_states[ys], tree.path_actions[ys]
    tok = lp[0][torch.as_tensor(st), torch.as_tensor(ac)]  # (G, T)
    loss = tree.horizon * reinforce_loss(tok, torch.ones_like(tok), r, r.mean())
    loss.backward()
    got = SPO.reinforce_grad(lp[0].detach().numpy(), st, ac, (r - r.mean()).numpy())
    assert np.allclose(got, theta.grad[0].numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- full profiles (dry runs)


def _tiny_full_setup(tmp_path):
    import datasets

    from rlbook.models import save_tiny_policy, save_tiny_reward_model

    tok = save_tiny_policy(tmp_path / "policy", "abcdefghijklmnopqrstuvwxyz ?.!:>\n", max_len=128)
    save_tiny_reward_model(tmp_path / "rm", tok, max_len=256)
    rows = []
    for i in range(16):
        q = [{"role": "user", "content": f"say {'abcd'[i % 4]}?"}]
        rows.append({"chosen": q + [{"role": "assistant", "content": "yes"}],
                     "rejected": q + [{"role": "assistant", "content": "no"}]})
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs"))
    return dict(model=str(tmp_path / "policy"), dataset=str(tmp_path / "prefs"), judge=str(tmp_path / "rm"))


@pytest.mark.slow
def test_dno_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = _tiny_full_setup(tmp_path)
    cfg = DNO.Config(**paths, full_prompts=6, full_eval_prompts=3, full_iterations=2, full_samples=3, full_margin=0.0,
                     full_batch=4, full_per_device_batch=4, full_max_new_tokens=6, full_max_length=64,
                     full_max_steps=1, full_lr=1e-3)
    out = DNO.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    assert [h["iteration"] for h in out["history"]] == [1, 2]
    assert all(0 <= h["win_rate_vs_init"] <= 1 for h in out["history"])
    assert all(k > 0 for k in out["pairs_kept"])


@pytest.mark.slow
def test_inpo_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = _tiny_full_setup(tmp_path)
    cfg = INPO.Config(**paths, full_prompts=4, full_eval_prompts=3, full_iterations=2, full_batch=2,
                      full_max_new_tokens=5, full_lr=1e-3)
    out = INPO.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"))
    h = out["history"]
    assert [(r["method"], r["iteration"]) for r in h] == [("inpo", 1), ("inpo", 2), ("dpo", 1), ("dpo", 2)]
    assert all(0 <= r["win_rate_vs_init"] <= 1 and r["length"] >= 0 for r in h)
    # one INPO step changes the policy's parameters
    from rlbook.models import load_pretrained

    model, tok = load_pretrained(paths["model"])
    ref, _ = load_pretrained(paths["model"])
    before = [p.detach().clone() for p in model.parameters()]
    rows = [{"prompt": "u:say a?\na:", "chosen": "yes", "rejected": "no"}] * 2
    INPO._train_pairs(model, ref, ref, tok, rows, cfg, "inpo", "cpu")
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_spo_trl_win_proportion_reward_groups_by_prompt():
    class FakeJudge:
        def scores(self, qs, texts):
            return np.array([float(len(t)) for t in texts])

        prob = staticmethod(lambda a, b: 1 / (1 + np.exp(-(a - b) * 50)))  # nearly deterministic

    f = SPO.win_proportion_reward(FakeJudge())
    r = f(["p1", "p1", "p1", "p2", "p2"], ["a", "aaa", "aa", "b", "bbbb"])
    assert np.allclose(r, [0.0, 1.0, 0.5, 0.0, 1.0])


@pytest.mark.slow
def test_spo_full_profile_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = _tiny_full_setup(tmp_path)
    cfg = SPO.Config(**paths, full_prompts=4, full_eval_prompts=2, full_group=2, full_per_device_batch=4,
                     full_max_new_tokens=5, full_lr=1e-3)
    out = SPO.run_full(cfg, seed=0, device="cpu", output_dir=str(tmp_path / "out"), max_steps=1)
    assert 0 <= out["summary"]["spo_vs_rm_win_rate"] <= 1
    assert len(out["reward_logs"]["spo"]) >= 1
