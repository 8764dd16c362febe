"""Tests of Direct Advantage Policy Optimization (rlbook.losses.dapo_direct) and its chapter's experiment."""

import numpy as np
import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import dapo_direct_advantage_policy_optimization as E
from rlbook.losses import dpo_loss
from rlbook.losses.dapo_direct import dapo_direct_loss, dapo_pairwise_loss, kl_optimal_logpolicy


def _state_problem(seed, S=5, V=4):
    g = torch.Generator().manual_seed(seed)
    logp_ref = torch.log_softmax(torch.randn(S, V, generator=g, dtype=torch.float64), -1)
    q = torch.rand(S, V, generator=g, dtype=torch.float64)  # V(s + a)
    adv = q - (logp_ref.exp() * q).sum(-1, keepdim=True)  # A = Q - V, E_ref[A] = 0
    return logp_ref, adv


def _minimise(loss_fn, z0, b0=None):
    z = z0.clone().requires_grad_(True)
    params = [z] + ([b0.clone().requires_grad_(True)] if b0 is not None else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward()
        return loss

    opt.step(closure)
    return [p.detach() for p in params]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_edge_regression_minimiser_is_kl_optimum(seed, beta):
    """With a free per-state constant, the (population) DAPO regression is minimised by pi_ref exp(A/beta)/Z."""
    logp_ref, adv = _state_problem(seed)
    w = logp_ref.exp()  # a ~ pi_ref: the expectation is a pi_ref-weighted sum

    def loss(z, b):
        lp = torch.log_softmax(z, -1)
        return (w * (beta * (lp - logp_ref) + b[:, None] - adv) ** 2).sum(-1).mean()

    z, b = _minimise(loss, logp_ref.clone(), torch.zeros(logp_ref.shape[0], dtype=torch.float64))
    target = kl_optimal_logpolicy(logp_ref, adv, beta)
    assert torch.allclose(torch.log_softmax(z, -1), target, atol=1e-6)
    log_z = torch.logsumexp(logp_ref + adv / beta, -1)
    assert torch.allclose(b, beta * log_z, atol=1e-6)  # the constant is beta log Z(s)


@pytest.mark.parametrize("seed", [0, 1])
def test_edge_pairwise_form_removes_log_z(seed):
    """Pairwise DAPO is invariant to per-state constants in the log-ratio, and its minimiser is pi*."""
    beta = 0.3
    logp_ref, adv = _state_problem(seed)
    S, V = logp_ref.shape
    ia, ib = torch.triu_indices(V, V, 1)  # every pair of actions at every state
    rows = torch.arange(S).repeat_interleave(len(ia))
    a, b = ia.repeat(S), ib.repeat(S)

    def loss(z):
        lp = torch.log_softmax(z, -1)
        return dapo_pairwise_loss(lp[rows, a], logp_ref[rows, a], adv[rows, a], lp[rows, b], logp_ref[rows, b],
                                  adv[rows, b], beta)

    lp = torch.log_softmax(torch.randn(S, V, dtype=torch.float64), -1)
    shift = torch.randn(S, 1, dtype=torch.float64)
    l1 = dapo_pairwise_loss(lp[rows, a], logp_ref[rows, a], adv[rows, a], lp[rows, b], logp_ref[rows, b], adv[rows, b],
                            beta)
    lp2 = lp + shift  # not normalised: a per-state constant
    l2 = dapo_pairwise_loss(lp2[rows, a], logp_ref[rows, a], adv[rows, a], lp2[rows, b], logp_ref[rows, b],
                            adv[rows, b], beta)
    assert torch.allclose(l1, l2, atol=1e-12)
    (z,) = _minimise(loss, logp_ref.clone())
    assert torch.allclose(torch.log_softmax(z, -1), kl_optimal_logpolicy(logp_ref, adv, beta), atol=1e-6)


def test_edge_plain_form_is_first_order():
    """E_ref[A] = 0 makes beta log Z(s) second order in A/beta: about Var_ref(A)/(2 beta) for small A."""
    logp_ref, adv = _state_problem(3)
    for beta, scale in [(1.0, 0.1), (1.0, 0.01)]:
        a = adv * scale
        blz = beta * torch.logsumexp(logp_ref + a / beta, -1)
        var = (logp_ref.exp() * a**2).sum(-1)
        assert torch.allclose(blz, var / (2 * beta), rtol=0.05 if scale == 0.1 else 0.005)


def test_edge_pairwise_dapo_parallels_dpo_at_the_reference():
    """At pi_theta = pi_ref, pairwise DAPO on a pair with A(a) > A(b) and DPO with a preferred to b move
    the parameters in the same direction (both gradients are multiples of grad(log pi(a) - log pi(b)))."""
    g = torch.Generator().manual_seed(5)
    logp_ref = torch.log_softmax(torch.randn(6, 4, generator=g, dtype=torch.float64), -1)
    rows = torch.arange(6)
    a, b = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    adv_a, adv_b = torch.full((6,), 0.3, dtype=torch.float64), torch.full((6,), -0.1, dtype=torch.float64)
    z = logp_ref.clone().requires_grad_(True)
    lp = torch.log_softmax(z, -1)
    g1 = torch.autograd.grad(dapo_pairwise_loss(lp[rows, a], logp_ref[rows, a], adv_a, lp[rows, b], logp_ref[rows, b],
                                                adv_b, 0.3), z)[0]
    lp = torch.log_softmax(z, -1)
    g2 = torch.autograd.grad(dpo_loss(lp[rows, a], lp[rows, b], logp_ref[rows, a], logp_ref[rows, b], 0.3)[0], z)[0]
    cos = float((g1 * g2).sum() / (g1.norm() * g2.norm()))
    assert cos > 1 - 1e-12


def test_loss_by_hand_and_shapes():
    logp = torch.log(torch.tensor([0.5, 0.25], dtype=torch.float64))
    ref = torch.log(torch.tensor([0.25, 0.25], dtype=torch.float64))
    adv = torch.tensor([0.1, -0.2], dtype=torch.float64)
    loss, diag = dapo_direct_loss(logp, ref, adv, 0.5)
    expect = ((0.5 * np.log(2) - 0.1) ** 2 + (0.0 + 0.2) ** 2) / 2
    assert abs(float(loss) - expect) < 1e-12
    assert torch.allclose(diag["implicit_adv"], torch.tensor([0.5 * np.log(2), 0.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        dapo_direct_loss(logp, ref[:1], adv, 0.5)
    with pytest.raises(ValueError):
        dapo_direct_loss(logp, ref, adv, 0.0)


def test_world_outcomes_by_hand():
    """A fatal step kills, a detour is fixed by the next valid step, a final detour fails."""
    st = np.array([E.ON, E.ON, E.OFF, E.OFF, E.DEAD])
    ro = np.array([E.VALID, E.FATAL, E.VALID, E.DETOUR, E.VALID])
    assert E._step(st, ro).tolist() == [E.ON, E.DEAD, E.ON, E.OFF, E.DEAD]
    cfg = from_params(E.Config, problems=3)
    world = E.make_world(cfg, np.random.default_rng(0))
    tree = world.tree
    for p in range(3):
        for n in range(0, tree.n_responses, 17):
            status = E.ON
            for s, a in zip(tree.path_states[n], tree.path_actions[n]):
                status = int(E._step(np.array(status), np.array(world.roles[p, s, a])))
            assert world.success[p, n] == float(status == E.ON)


def test_exact_values_match_enumeration():
    cfg = from_params(E.Config, problems=2)
    world = E.make_world(cfg, np.random.default_rng(1))
    probs = np.exp(world.logp_ref[:, world.tree.path_states, world.tree.path_actions].sum(-1))  # (P, N)
    assert np.allclose(probs.sum(1), 1.0)
    assert np.allclose(E.success_prob(world, world.logp_ref), (probs * world.success).sum(1), atol=1e-12)


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0])
def test_soft_policy_improvement(beta):
    """success(pi*) >= success(pi_ref) at every problem (exact)."""
    cfg = from_params(E.Config, problems=8)
    world = E.make_world(cfg, np.random.default_rng(2))
    assert np.all(E.success_prob(world, E.oracle(world, beta)) >= E.success_prob(world, world.logp_ref) - 1e-12)


def test_rollouts_follow_pi_ref():
    cfg = from_params(E.Config, problems=1)
    world = E.make_world(cfg, np.random.default_rng(3))
    rng = np.random.default_rng(0)
    resp, states, _ = E.rollout(world, np.zeros(20000, dtype=int), np.zeros(20000, dtype=int), rng)
    assert (states[:, 0] == 0).all()
    mc = world.success[0, resp].mean()
    assert abs(mc - E.success_prob(world, world.logp_ref)[0]) < 0.02


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, p_valid=0.8, p_detour=0.3)
    with pytest.raises(ValueError):
        from_params(E.Config, beta=0.0)


def test_run_reports_everything_small():
    cfg = from_params(E.Config, problems=3, actor_steps=5, trajectories=1, candidates=2, mc_rollouts=2)
    out = E.run(cfg, seed=0)
    assert set(out["success"]) == {"pi_ref", "DAPO", "RS-SFT", "outcome-DPO", "oracle pi*"}
    assert out["budget_steps"] > 0 and 0 <= out["fatal_decrease_frac"] <= 1


def test_continuation_logps_match_token_sum():
    """The step log-prob helper of the full profile sums the continuation's token log-probs only."""
    from rlbook.models import char_tokenizer, tiny_llama

    tok = char_tokenizer("0123456789+=\n")
    torch.manual_seed(0)
    model = tiny_llama(len(tok), tokenizer=tok)
    lp = E._continuation_logps(model, tok, ["1+2=", "3="], ["3\n", "3"], "cpu")
    ids = torch.tensor([tok("3=3", add_special_tokens=False)["input_ids"]])
    full = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    assert torch.allclose(lp[1], full[-1, ids[0, -1]], atol=1e-5)
    assert E._steps("a\nb\nc") == ["a\n", "b\n", "c"]


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model (actor and critic) and a tiny local MATH-like data set."""
    from rlbook import math_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    fc = E.FullConfig(actor=str(tmp_path / "model"), critic=str(tmp_path / "model"), train_data=str(tmp_path / "train"),
                      eval_data=str(tmp_path / "eval"), problems=2, critic_samples=2, candidates=2,
                      max_steps_per_solution=2, step_tokens=4, max_completion=8, batch=2, eval_problems=2,
                      eval_samples=2)
    res = E.run_full(fc, seed=0, cpu=True, generation_batch=2)
    assert set(res) == {"base", "DAPO", "critic_rows", "actor_rows"}
    assert res["actor_rows"] >= 2 and all(0.0 <= v <= 1.0 for v in res["DAPO"].values())
