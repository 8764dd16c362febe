"""Tests of rlbook.losses.cpl, rlbook.losses.copg, rlbook.losses.ipo, and the family-tree edges
of the CPL and CoPG chapters (each ``test_edge_*`` is one edge of the book's family tree)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlbook import bandits as B
from rlbook.experiments import contrastive_policy_gradient as CE
from rlbook.losses.common import sequence_logprob
from rlbook.losses.copg import copg_loss, regularised_reward
from rlbook.losses.cpl import cpl_loss, segment_score
from rlbook.losses.dpo import dpo_loss
from rlbook.losses.ipo import ipo_loss
from rlbook.rewards import bt_loss

DT = torch.float64


def _rand_logp(gen, n, t):
    return torch.log_softmax(torch.randn(n, t, 5, generator=gen, dtype=DT), -1)[..., 0]  # (n, t) valid log-probs


# ----------------------------------------------------------------------------- CPL


def test_cpl_hand_computed():
    lp_pos = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=DT)
    lp_neg = torch.tensor([[math.log(0.25), math.log(0.5)]], dtype=DT)
    ones = torch.ones(1, 2, dtype=DT)
    # alpha 1, gamma 1: scores log 0.25 and log 0.125; P(pos) = 0.25 / (0.25 + 0.125) = 2/3
    loss, d = cpl_loss(lp_pos, ones, lp_neg, ones, alpha=1.0)
    assert loss.item() == pytest.approx(-math.log(2 / 3), abs=1e-12)
    assert d["accuracy"].item() == 1.0
    # gamma 0.5 discounts the second step: scores log .5 + .5 log .5 and log .25 + .5 log .5
    s = segment_score(lp_pos, ones, alpha=2.0, gamma=0.5)
    assert s.item() == pytest.approx(2 * (math.log(0.5) + 0.5 * math.log(0.5)), abs=1e-12)
    # lambda 0.5 on the negative score: -log sigma(log .25 - .5 log .125)
    loss, _ = cpl_loss(lp_pos, ones, lp_neg, ones, alpha=1.0, lam=0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-(math.log(0.25) - 0.5 * math.log(0.125))))), abs=1e-12)


def test_cpl_matches_official_biased_bce():
    """The official code's ``biased_bce_with_logits(adv1, adv2, y, bias)`` (jhejna/cpl, research/algs/cpl.py),
    re-typed: y = 1 means segment 2 is preferred; logit21 = adv2 - bias * adv1, stable softplus."""
    gen = torch.Generator().manual_seed(0)
    adv1, adv2 = -3 * torch.rand(64, generator=gen, dtype=DT), -3 * torch.rand(64, generator=gen, dtype=DT)
    y = (torch.rand(64, generator=gen) < 0.5).to(DT)
    bias = 0.5
    official = (y * F.softplus(-(adv2 - bias * adv1)) + (1 - y) * F.softplus(-(adv1 - bias * adv2))).mean()
    pos = torch.where(y > 0.5, adv2, adv1)[:, None]  # one-step "segments" whose score is the advantage sum
    neg = torch.where(y > 0.5, adv1, adv2)[:, None]
    ones = torch.ones_like(pos)
    ours, _ = cpl_loss(pos, ones, neg, ones, alpha=1.0, lam=bias)
    assert ours.item() == pytest.approx(official.item(), abs=1e-12)


def test_cpl_mask_and_errors():
    gen = torch.Generator().manual_seed(1)
    lp = _rand_logp(gen, 4, 6)
    mask = torch.ones(4, 6, dtype=DT)
    mask[:, 4:] = 0
    a, _ = cpl_loss(lp, mask, lp.flip(0), mask, alpha=0.3)
    b, _ = cpl_loss(lp[:, :4], mask[:, :4], lp.flip(0)[:, :4], mask[:, :4], alpha=0.3)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)
    with pytest.raises(ValueError):
        cpl_loss(lp, mask, lp, mask, alpha=0.3, lam=0.0)
    with pytest.raises(ValueError):
        cpl_loss(lp, mask, lp, mask, alpha=0.0)
    with pytest.raises(ValueError):
        cpl_loss(lp[:, 0], mask[:, 0], lp[:, 0], mask[:, 0], alpha=1.0)


def test_edge_cpl_is_bradley_terry_on_regret():
    """CPL replaces the reward with the regret: CPL(λ=1) is the Bradley-Terry loss whose score of a
    segment is its discounted advantage sum Σ_t γ^t A(s_t, a_t), with A = α log π_θ."""
    gen = torch.Generator().manual_seed(2)
    lp_p, lp_n = _rand_logp(gen, 32, 7), _rand_logp(gen, 32, 7)
    ones = torch.ones(32, 7, dtype=DT)
    alpha, gamma = 0.7, 0.9
    disc = gamma ** torch.arange(7, dtype=DT)
    adv_sum = lambda lp: (disc * alpha * lp).sum(-1)  # noqa: E731
    ours, _ = cpl_loss(lp_p, ones, lp_n, ones, alpha=alpha, gamma=gamma)
    assert ours.item() == pytest.approx(bt_loss(adv_sum(lp_p), adv_sum(lp_n)).item(), abs=1e-12)


def test_edge_cpl_lambda1_is_reference_free_dpo():
    """With λ = 1 and γ = 1 (whole responses), CPL is DPO with β = α and no reference (log π_ref = 0)."""
    gen = torch.Generator().manual_seed(3)
    lp_p, lp_n = _rand_logp(gen, 16, 5), _rand_logp(gen, 16, 5)
    ones = torch.ones(16, 5, dtype=DT)
    ours, _ = cpl_loss(lp_p, ones, lp_n, ones, alpha=0.4)
    zero = torch.zeros(16, dtype=DT)
    dpo, _ = dpo_loss(sequence_logprob(lp_p, ones), zero, sequence_logprob(lp_n, ones), zero, 0.4)
    assert ours.item() == pytest.approx(dpo.item(), abs=1e-12)


# ----------------------------------------------------------------------------- IPO


def test_ipo_hand_computed():
    lw, rw = torch.tensor([-1.0], dtype=DT), torch.tensor([-2.0], dtype=DT)
    ll, rl = torch.tensor([-3.0], dtype=DT), torch.tensor([-2.5], dtype=DT)
    # h = (-1 + 2) - (-3 + 2.5) = 1.5; tau = 0.25: (1.5 - 2)^2 = 0.25
    loss, d = ipo_loss(lw, rw, ll, rl, tau=0.25)
    assert d["h"].item() == pytest.approx(1.5)
    assert loss.item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        ipo_loss(lw, rw, ll, rl, tau=0.0)


# ----------------------------------------------------------------------------- CoPG


def test_copg_gradient_is_the_paper_update():
    """-∇ L_CoPG = ½ (R^β(y) - R^β(y')) (∇log π(y) - ∇log π(y')), per pair, with autograd on a softmax policy."""
    gen = torch.Generator().manual_seed(4)
    K, n, beta = 6, 1, 0.3
    z = torch.randn(K, generator=gen, dtype=DT, requires_grad=True)
    ref = torch.log_softmax(torch.randn(K, generator=gen, dtype=DT), -1)
    R = torch.rand(K, generator=gen, dtype=DT)
    y, yp = torch.tensor([1]), torch.tensor([4])
    lp = torch.log_softmax(z, -1)
    loss, d = copg_loss(lp[y], ref[y], R[y], lp[yp], ref[yp], R[yp], beta)
    (grad,) = torch.autograd.grad(loss, z)
    p = torch.softmax(z, -1).detach()
    e = torch.eye(K, dtype=DT)
    rb = regularised_reward(R, lp.detach(), ref, beta)
    g_hat = 0.5 * (rb[1] - rb[4]) * ((e[1] - p) - (e[4] - p))
    torch.testing.assert_close(-grad, g_hat, atol=1e-12, rtol=0)
    assert d["adv"].item() == pytest.approx((rb[1] - rb[4]).item())
    assert n == 1


def test_copg_symmetric_and_errors():
    gen = torch.Generator().manual_seed(5)
    a, b, c, d, e, f = (torch.randn(8, generator=gen, dtype=DT) for _ in range(6))
    l1, _ = copg_loss(a, b, c, d, e, f, 0.2)
    l2, _ = copg_loss(d, e, f, a, b, c, 0.2)
    assert l1.item() == pytest.approx(l2.item(), abs=1e-12)
    with pytest.raises(ValueError):
        copg_loss(a, b, c, d, e, f, 0.0)
    with pytest.raises(ValueError):
        copg_loss(a[None], b[None], c[None], d[None], e[None], f[None], 0.2)


def test_edge_copg_with_half_indicator_reward_is_ipo():
    """CoPG contains IPO: with R(y_w) - R(y_l) = 1/2 (half the preference indicator) and β = τ,
    L_CoPG = (β/4) L_IPO on any pairs, so both have the same minimisers and proportional gradients."""
    gen = torch.Generator().manual_seed(6)
    lw, rw, ll, rl = (-5 * torch.rand(64, generator=gen, dtype=DT) for _ in range(4))
    tau = 0.3
    ipo, _ = ipo_loss(lw, rw, ll, rl, tau)
    copg, _ = copg_loss(lw, rw, torch.full_like(lw, 0.5), ll, rl, torch.zeros_like(ll), beta=tau)
    assert copg.item() == pytest.approx(tau / 4 * ipo.item(), rel=1e-12)


def test_edge_copg_on_policy_is_policy_gradient():
    """CoPG contains policy gradient: on-policy (y, y' ~ π) its expected update equals the exact gradient
    of J(π) = E_π[R] - β KL(π‖π_ref), i.e. the regularised policy gradient E_π[R^β_π ∇log π]."""
    gen = torch.Generator().manual_seed(7)
    K, beta = 9, 0.25
    z = torch.randn(K, generator=gen, dtype=DT, requires_grad=True)
    ref = torch.log_softmax(torch.randn(K, generator=gen, dtype=DT), -1)
    R = torch.rand(K, generator=gen, dtype=DT)
    p = torch.softmax(z, -1)
    J = (p * R).sum() - beta * (p * (torch.log(p) - ref)).sum()
    (grad_J,) = torch.autograd.grad(J, z)
    with torch.no_grad():
        g = CE.expected_copg_direction(z, R, ref, torch.softmax(z, -1), beta)
    torch.testing.assert_close(g, grad_J, atol=1e-12, rtol=0)
    assert grad_J.abs().max() > 1e-3


@pytest.mark.parametrize("behaviour", ["uniform", "skewed", "random"])
def test_edge_copg_optimum_is_the_kl_regularised_optimum(behaviour):
    """The population CoPG loss under any full-support behaviour μ is minimised by π* ∝ π_ref e^{R/β}:
    zero gradient at π*, and gradient descent from π_ref reaches π*."""
    rng = np.random.default_rng(8)
    K, beta = 7, 0.2
    R = rng.random(K)
    ref = B.softmax(rng.standard_normal(K))
    mu = {"uniform": np.full(K, 1 / K), "skewed": B.softmax(-4 * R), "random": B.softmax(2 * rng.standard_normal(K))}[behaviour]
    opt = B.kl_optimal_policy(ref, R, beta)
    t = lambda a: torch.as_tensor(a, dtype=DT)  # noqa: E731
    z = t(np.log(opt)).requires_grad_(True)
    (g,) = torch.autograd.grad(CE.population_copg_loss(z, t(R), t(np.log(ref)), t(mu), beta), z)
    assert g.abs().max() < 1e-12
    z = t(np.log(ref)).requires_grad_(True)
    solver = torch.optim.LBFGS([z], lr=1.0, max_iter=200, tolerance_grad=1e-14, tolerance_change=0, line_search_fn="strong_wolfe")

    def closure():
        solver.zero_grad()
        loss = CE.population_copg_loss(z, t(R), t(np.log(ref)), t(mu), beta)
        loss.backward()
        return loss

    solver.step(closure)
    p = torch.softmax(z, -1).detach().numpy()
    assert B.kl(p, opt) < 1e-8


# ----------------------------------------------------------------------------- IPO vs TRL


@pytest.mark.slow
def test_ipo_loss_equals_trl_ipo(tmp_path):
    """rlbook's ipo_loss on per-token *mean* log-ratios equals TRL 1.16 DPOTrainer(loss_type=["ipo"]),
    loss and gradients (TRL's own ``compute_loss`` on its own collated batch)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from rlbook.losses.common import masked_mean
    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    tok = char_tokenizer("abcdefghij +=0123456789")
    policy = tiny_llama(len(tok), TinyConfig(), seed=0, tokenizer=tok)
    ref = tiny_llama(len(tok), TinyConfig(), seed=1, tokenizer=tok)
    ds = Dataset.from_dict(
        {"prompt": ["1+2=", "3+4=", "ab", "9+9="], "chosen": ["3", "7", "cd e", "18"], "rejected": ["4", "77", "j", "1"]}
    )
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, beta=0.4, loss_type=["ipo"], report_to="none",
        use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False, save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )
    tr = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    model = tr.model
    model.train()
    model.zero_grad()
    trl_loss = tr.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    def token_logps(m, ids, att):
        logits = m(input_ids=ids, attention_mask=att).logits[:, :-1]
        return F.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)

    ids, att, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"][:, 1:]
    lp = token_logps(model, ids, att)
    with torch.no_grad():
        lr_ = token_logps(tr.ref_model, ids, att)
    avg = lambda x: masked_mean(x, mask, dim=-1)  # noqa: E731  per-token mean log-prob, (2N,)
    aw, al = avg(lp).chunk(2)
    bw, bl = avg(lr_).chunk(2)
    loss, _ = ipo_loss(aw, bw, al, bl, tau=0.4)
    loss.backward()
    torch.testing.assert_close(loss.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)
    for n, p in model.named_parameters():
        if n in trl_grads:
            torch.testing.assert_close(p.grad, trl_grads[n], atol=1e-6, rtol=1e-4, msg=n)
    # and the summed (paper) form gives another number: TRL's length normalisation matters
    s = lambda x: (x * mask).sum(-1)  # noqa: E731
    cw, cl = s(lp).chunk(2)
    dw, dl = s(lr_).chunk(2)
    assert abs(ipo_loss(cw, dw, cl, dl, 0.4)[0].item() - loss.item()) > 1e-4
