"""The REDI chapter: the loss (checked against the official 'reinforce' loss), its family-tree edges
(SFT on positives, DPO, SimPO), the policy and stage-2 loop, the full-profile dry run."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlbook.config import from_params
from rlbook.experiments import redi_reinforcement_distillation as E
from rlbook.losses.common import grad_wrt, masked_mean, sequence_logprob
from rlbook.losses.dpo import dpo_loss
from rlbook.losses.redi import redi_loss, simpo_loss
from rlbook.losses.sft import sft_loss
from rlbook.tasks import scratchpad as sp


def _pairs(seed=0, N=6, Tw=7, Tl=9, ragged=True):
    g = torch.Generator().manual_seed(seed)
    lw = -torch.rand(N, Tw, generator=g, dtype=torch.float64) * 2
    ll = -torch.rand(N, Tl, generator=g, dtype=torch.float64) * 2
    mw = (torch.rand(N, Tw, generator=g) > (0.3 if ragged else -1)).double()
    ml = (torch.rand(N, Tl, generator=g) > (0.3 if ragged else -1)).double()
    mw[:, 0] = ml[:, 0] = 1
    return lw, mw, ll, ml


def _grad(fn, *xs):  # always a list, one gradient per input
    g = grad_wrt(fn, *xs)
    return list(g) if isinstance(g, tuple) else [g]


def test_redi_by_hand_as_the_official_reinforce_loss():
    """official dpo2_trainer.py: losses = -c_w * logp_w/|y_w| + c_l * logp_l/|y_l|, mean over pairs."""
    lw = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]])
    mw = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    ll = torch.tensor([[-3.0, -1.0], [-2.0, 0.0]])
    ml = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, d = redi_loss(lw, mw, ll, ml, alpha=0.8)
    per_pair = [-(-3.0 / 2) + 0.8 * (-4.0 / 2), -(-1.5 / 3) + 0.8 * (-2.0 / 1)]
    assert loss.item() == pytest.approx(sum(per_pair) / 2)
    torch.testing.assert_close(d["norm_logp_w"], torch.tensor([-1.5, -0.5]))
    torch.testing.assert_close(d["norm_logp_l"], torch.tensor([-2.0, -2.0]))
    assert redi_loss(lw, mw, ll, ml, alpha=0.8, chosen_coef=2.0)[0].item() == pytest.approx(
        (-2 * -1.5 + 0.8 * -2.0 + -2 * -0.5 + 0.8 * -2.0) / 2)


def test_redi_gradient_weights_are_constant():
    """REDI's gradient on each token is -1/|y_w| (positive) and +alpha/|y_l| (negative), whatever the values."""
    lw, mw, ll, ml = _pairs(1)
    gw, gl = _grad(lambda a, b: redi_loss(a, mw, b, ml, alpha=0.5)[0], lw, ll)
    N = lw.shape[0]
    torch.testing.assert_close(gw, -mw / mw.sum(1, keepdim=True) / N)
    torch.testing.assert_close(gl, 0.5 * ml / ml.sum(1, keepdim=True) / N)
    gw2, _ = _grad(lambda a, b: redi_loss(a, mw, b, ml, alpha=0.5)[0], lw * 3 - 1, ll * 5)
    torch.testing.assert_close(gw, gw2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_redi_alpha0_is_sft_on_positives(seed):
    """REDI with alpha = 0 is SFT on the positives (rejection-sampling SFT), per-sequence length-normalised;
    with equal lengths it is exactly rlbook's token-averaged sft_loss."""
    lw, mw, ll, ml = _pairs(seed)
    loss0 = redi_loss(lw, mw, ll, ml, alpha=0.0)[0]
    torch.testing.assert_close(loss0, -masked_mean(lw, mw, dim=-1).mean())
    gl = _grad(lambda a, b: redi_loss(a, mw, b, ml, alpha=0.0)[0], lw, ll)[1]
    assert torch.count_nonzero(gl) == 0  # the negatives are ignored
    lw, mw, ll, ml = _pairs(seed, ragged=False)
    torch.testing.assert_close(redi_loss(lw, mw, ll, ml, alpha=0.0)[0], sft_loss(lw, mw))
    ga = _grad(lambda a: redi_loss(a, mw, ll, ml, alpha=0.0)[0], lw)[0]
    gb = _grad(lambda a: sft_loss(a, mw), lw)[0]
    torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_simpo_gradient_is_sigmoid_weighted_symmetric_redi(seed):
    """Per pair, grad SimPO = beta * sigma(-margin) * grad REDI(alpha = 1): REDI is SimPO without the sigmoid weight."""
    lw, mw, ll, ml = _pairs(seed)
    beta, gamma = 2.0, 0.5
    _, d = simpo_loss(lw, mw, ll, ml, beta, gamma)
    w = beta * torch.sigmoid(-d["margin"])  # (N,)
    gs = _grad(lambda a, b: simpo_loss(a, mw, b, ml, beta, gamma)[0], lw, ll)
    # REDI(alpha=1) per pair, weighted by w (constants), summed / N = a weighted REDI
    def weighted_redi(a, b):
        nw, nl = masked_mean(a, mw, dim=-1), masked_mean(b, ml, dim=-1)
        return (w * (-nw + nl)).mean()
    gr = _grad(weighted_redi, lw, ll)
    for x, y in zip(gs, gr):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-9)
    # and REDI(alpha=1) itself is that with w = 1
    g1 = _grad(lambda a, b: redi_loss(a, mw, b, ml, alpha=1.0)[0], lw, ll)
    w1 = w
    w = torch.ones_like(w)
    g2 = _grad(weighted_redi, lw, ll)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y)
    assert w1.min() < beta  # the sigmoid weight is a real down-weighting


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_dpo_gradient_is_sigmoid_weighted_unnormalised_symmetric_redi(seed):
    """grad DPO = beta * sigma(-margin) * grad of -(log pi(y_w) - log pi(y_l)) per pair (no length normalisation):
    DPO is symmetric, sequence-level REDI times a sigmoid weight that vanishes once the margin is large."""
    lw, mw, ll, ml = _pairs(seed)
    g = torch.Generator().manual_seed(seed + 10)
    rw, rl = -torch.rand(lw.shape[0], generator=g, dtype=torch.float64), -torch.rand(lw.shape[0], generator=g,
                                                                                        dtype=torch.float64)
    beta = 0.1
    _, d = dpo_loss(sequence_logprob(lw, mw), rw, sequence_logprob(ll, ml), rl, beta)
    w = beta * torch.sigmoid(-d["margin"])
    gd = _grad(lambda a, b: dpo_loss(sequence_logprob(a, mw), rw, sequence_logprob(b, ml), rl, beta)[0], lw, ll)
    gs = _grad(lambda a, b: (w * -(sequence_logprob(a, mw) - sequence_logprob(b, ml))).mean(), lw, ll)
    for x, y in zip(gd, gs):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-9)


def test_simpo_by_hand():
    lw = torch.tensor([[-1.0, -1.0]])
    ll = torch.tensor([[-2.0, -4.0]])
    m = torch.ones(1, 2)
    loss, d = simpo_loss(lw, m, ll, m, beta=2.0, gamma=0.5)
    margin = 2.0 * -1.0 - 2.0 * -3.0 - 0.5
    assert d["margin"].item() == pytest.approx(margin)
    assert loss.item() == pytest.approx(-F.logsigmoid(torch.tensor(margin)).item())


def test_losses_refuse_bad_shapes():
    lw, mw, ll, ml = _pairs(0)
    with pytest.raises(ValueError):
        redi_loss(lw, mw[:, :-1], ll, ml)
    with pytest.raises(ValueError):
        redi_loss(lw[:-1], mw[:-1], ll, ml)
    with pytest.raises(ValueError):
        redi_loss(lw, mw, ll, ml, alpha=-0.1)
    with pytest.raises(ValueError):
        simpo_loss(lw.sum(-1), mw.sum(-1), ll, ml)


def test_policy_features_and_logprobs():
    task = sp.ScratchpadAddition(3)
    p = sp.AddProblem(147, 258)
    ids, mask = E.encode([p.prompt], [task.gold(p)])
    assert mask.sum().item() == len(task.gold(p)) + 1  # trace + EOS
    pol = E.ScratchpadPolicy(3)
    f = pol.features(ids)
    assert f.shape[:2] == ids.shape and torch.all(f.sum(-1) == 4 + pol.k + 2)  # one-hots: 4 digits, k tokens, 2
    lp, m = E.token_logprobs(pol, ids, mask)
    lp2, _ = E.token_logprobs(pol, ids, mask, pol.features(ids[:, :-1]))
    torch.testing.assert_close(lp, lp2)
    assert torch.all(lp[m == 0] == 0) and torch.all(lp[m == 1] < 0)
    # features at a position only depend on the prefix (causal): appending tokens changes nothing before
    ids2, _ = E.encode([p.prompt], [task.gold(p) + ";1"])
    torch.testing.assert_close(pol.features(ids2)[:, : ids.shape[1] - 1], f[:, :-1])


def test_greedy_decodes_a_teacher_forced_policy():
    """A policy trained a little on one trace decodes it greedily; the verifier accepts it."""
    torch.manual_seed(0)
    task = sp.ScratchpadAddition(2)
    p = sp.AddProblem(47, 38)
    pol = E.ScratchpadPolicy(2)
    opt = torch.optim.Adam(pol.parameters(), lr=3e-2)
    ids, mask = E.encode([p.prompt], [task.gold(p)])
    for _ in range(40):
        lp, m = E.token_logprobs(pol, ids, mask)
        loss = -masked_mean(lp, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert E.greedy(pol, [p.prompt], task.max_trace_len + 1) == [task.gold(p)]


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, alpha=1.5)
    with pytest.raises(ValueError):
        from_params(E.Config, methods="REDI,PPO")
    with pytest.raises(ValueError):
        from_params(E.Config, optimizer="rmsprop")


def test_committed_stage1_matches_its_recipe():
    model, info = E.load_stage1()
    assert info["recipe"] == E.asdict(E.Stage1Recipe())
    assert 0.2 < info["competence"]["acc"] < 0.8  # partial competence: room for stage 2


@pytest.mark.slow
def test_stage2_step_moves_the_model_and_pair_objectives_run():
    cfg = from_params(E.Config, steps=2, eval_every=1, eval_problems=20, batch=8)
    recipe = E.Stage1Recipe()
    base, _ = E.load_stage1(recipe)
    data = E.teacher_data(recipe)
    ev = E.eval_set(data["task"], 20)
    for m in E.METHODS:
        h = E.train_stage2(base, data, ev, m, cfg, 0, recipe)
        assert h["step"] == [0, 1, 2] and all(np.isfinite(h["ll_pos"]))
        moved = any(not torch.equal(a, b) for a, b in zip(h["model"].state_dict().values(), base.state_dict().values()))
        assert moved, m


@pytest.mark.slow
def test_gradient_vs_margin_dpo_vanishes_redi_does_not():
    recipe = E.Stage1Recipe()
    base, _ = E.load_stage1(recipe)
    gm = E.gradient_vs_margin(base, E.teacher_data(recipe), beta=0.1, n=16)
    assert gm["dpo"][-1] < 0.01 * gm["dpo"][0]
    np.testing.assert_allclose(gm["redi"], gm["redi"][0], rtol=1e-5)


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end: a tiny local model, an Open-R1-like data set and a MATH-500-like eval set (1 step each)."""
    from datasets import Dataset, DatasetDict

    from rlbook.models import save_tiny_policy

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_tiny_policy(tmp_path / "model", "0123456789+=?\\{}boxed \nPlasrtpyuhfwinc.,", max_len=512, chat=True)
    rows = [{"problem": f"{a}+{b}=?", "generations": [f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b + 1}}}"],
             "correctness_math_verify": [True, False]} for a in range(3) for b in range(3)]
    rows.append({"problem": "1+1=?", "generations": ["\\boxed{2}"], "correctness_math_verify": [True]})  # no negative
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "data"))
    DatasetDict({"test": Dataset.from_list([{"problem": "1+2=?", "answer": "3"}, {"problem": "2+2=?", "answer": "4"}])
                 }).save_to_disk(str(tmp_path / "eval"))
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_data=str(tmp_path / "data"),
                      full_eval_data=str(tmp_path / "eval"), full_pairs=4, full_max_len=400, full_sft_steps=1,
                      full_redi_steps=1, full_batch=2, full_micro_batch=1, full_eval_problems=2,
                      full_eval_samples=1, full_max_new_tokens=4)
    res = E.run_full(cfg, seed=0, device="cpu")
    assert res["pairs"] == 4
    assert [r["stage"] for r in res["log"]] == ["sft", "redi"]
    assert all(np.isfinite(r["loss"]) for r in res["log"])
    assert set(res["stage1"]) == {1} and 0.0 <= res["redi"][1] <= 1.0
