"""rlbook.losses: hand-computed values, identities, shape errors, gradients.

Expected values are worked out by hand in the comments next to them; tolerances are
float64 round-off unless a comment says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rlbook import losses as L

D = torch.float64


def t(x, dtype=D, **kw):
    return torch.tensor(x, dtype=dtype, **kw)


def close(a, b, tol=1e-12):
    return torch.allclose(torch.as_tensor(a, dtype=D), torch.as_tensor(b, dtype=D), atol=tol, rtol=0)


# ----------------------------------------------------------------------------- primitives


def test_masked_mean_hand_values():
    x = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = t([[1, 1, 0], [0, 0, 1]])
    # all valid entries: (1 + 2 + 6) / 3 = 3
    assert close(L.masked_mean(x, m), 3.0)
    # per row: (1 + 2) / 2 = 1.5 ; 6 / 1 = 6
    assert close(L.masked_mean(x, m, dim=-1), [1.5, 6.0])


def test_masked_mean_empty_row_is_zero_and_bool_mask():
    x = t([[1.0, 2.0], [3.0, 4.0]])
    m = torch.tensor([[True, False], [False, False]])
    # row 0: 1 / 1 ; row 1: 0 / clamp(0, 1) = 0
    assert close(L.masked_mean(x, m, dim=-1), [1.0, 0.0])
    assert close(L.masked_mean(x, torch.zeros(2, 2)), 0.0)


def test_sequence_logprob_hand_values():
    logp = t([[-1.0, -2.0, -9.0], [-0.5, -0.25, -0.125]])
    m = t([[1, 1, 0], [1, 1, 1]])
    # -1 - 2 = -3 ; -0.5 - 0.25 - 0.125 = -0.875
    assert close(L.sequence_logprob(logp, m), [-3.0, -0.875])


def test_kl_k3_hand_values_nonneg_and_zero_at_equality():
    logp = t([[0.0, 0.0, -1.0]])
    logp_ref = t([[math.log(2.0), 0.0, -2.0]])
    # d = ref - logp: ln2 -> 2 - ln2 - 1 = 1 - ln2 ; 0 -> 0 ; -1 -> e^-1 + 1 - 1 = e^-1
    assert close(L.kl_k3(logp, logp_ref), [[1 - math.log(2.0), 0.0, math.exp(-1.0)]])
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 7, generator=g, dtype=D) * 3
    b = torch.randn(50, 7, generator=g, dtype=D) * 3
    assert (L.kl_k3(a, b) >= 0).all()
    assert (L.kl_k3(a, a) == 0).all()


def test_kl_k3_unbiased_for_kl_on_a_categorical():
    # pi (the sampling policy) and pi_ref over 5 tokens
    p = t([0.5, 0.2, 0.15, 0.1, 0.05])
    q = t([0.1, 0.3, 0.2, 0.3, 0.1])
    kl = (p * (p / q).log()).sum()
    lp, lq = p.log(), q.log()
    # exact expectation: E_p[q/p - log(q/p) - 1] = sum(q) - 1 + KL(p||q) = KL
    exact = (p * L.kl_k3(lp, lq)).sum()
    assert close(exact, kl, 1e-12)
    # Monte Carlo, tokens sampled from pi: within 4 standard errors
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    k3 = L.kl_k3(lp[idx], lq[idx])
    se = k3.std() / math.sqrt(k3.numel())
    assert abs(k3.mean() - kl) < 4 * se
    assert se < 0.01 * kl  # the test can tell a biased estimator from an unbiased one


def test_group_normalise_hand_values():
    r = t([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    # row 0: mean 0.25; unbiased var = (0.75^2 + 3 * 0.25^2) / 3 = 0.75 / 3 = 0.25, std 0.5
    #   A = (0.75, -0.25, -0.25, -0.25) / (0.5 + 1e-4)
    # row 1: all equal -> centred 0 -> A = 0 (std 0, eps keeps it finite)
    a = L.group_normalise(r)
    assert close(a[0], t([0.75, -0.25, -0.25, -0.25]) / 0.5001)
    assert close(a[1], [0.0] * 4)
    # eps is an argument
    assert close(L.group_normalise(r, eps=0.0)[0], [1.5, -0.5, -0.5, -0.5])


def test_group_normalise_unscaled_rows_sum_to_zero_and_int_rewards():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(6, 8, generator=g, dtype=D)
    c = L.group_normalise(r, scale=False)
    assert close(c.sum(dim=1), torch.zeros(6), 1e-12)
    assert close(c, r - r.mean(1, keepdim=True))
    # 0/1 integer rewards are accepted (cast to float)
    ri = torch.tensor([[1, 0, 0, 1]])
    assert close(L.group_normalise(ri, scale=False), [[0.5, -0.5, -0.5, 0.5]], 1e-6)


def test_group_normalise_errors():
    with pytest.raises(ValueError, match=r"\(B, G\)"):
        L.group_normalise(torch.zeros(4))
    with pytest.raises(ValueError, match="G >= 2"):
        L.group_normalise(torch.zeros(3, 1))
    assert L.group_normalise(torch.zeros(3, 1), scale=False).shape == (3, 1)


# ----------------------------------------------------------------------------- SFT


def test_sft_loss_hand_value_and_gradient():
    logp = t([[-1.0, -3.0], [-2.0, -100.0]], requires_grad=True)
    m = t([[1, 1], [1, 0]])
    # -( -1 - 3 - 2 ) / 3 = 2
    loss = L.sft_loss(logp, m)
    assert close(loss, 2.0)
    loss.backward()
    # d/dlogp = -m / 3
    assert close(logp.grad, -m / 3)


# ----------------------------------------------------------------------------- DPO


def test_implicit_reward():
    # beta * (logp - logp_ref) = 0.1 * (-1 - (-3)) = 0.2
    assert close(L.implicit_reward(t([-1.0]), t([-3.0]), 0.1), [0.2])


def test_dpo_loss_hand_value():
    # reward_w = 0.5 * (-1 - (-2)) = 0.5 ; reward_l = 0.5 * (-3 - (-2)) = -0.5 ; margin = 1
    # loss = -log sigmoid(1) = log(1 + e^-1) = 0.31326168751822286
    loss, d = L.dpo_loss(t([-1.0]), t([-2.0]), t([-3.0]), t([-2.0]), beta=0.5)
    assert close(loss, math.log1p(math.exp(-1.0)))
    assert close(d["reward_w"], [0.5]) and close(d["reward_l"], [-0.5]) and close(d["margin"], [1.0])
    # at the reference (all ratios 1) the loss is log 2 whatever beta
    z = t([-4.0, -1.0])
    loss0, _ = L.dpo_loss(z, z, z - 1, z - 1, beta=3.0)
    assert close(loss0, math.log(2.0))


def test_dpo_loss_gradient_hand_value():
    # dL/dlogp_w = -beta * sigmoid(-margin) ; dL/dlogp_l = +beta * sigmoid(-margin)
    logp_w = t([-1.0], requires_grad=True)
    logp_l = t([-3.0], requires_grad=True)
    loss, _ = L.dpo_loss(logp_w, t([-2.0]), logp_l, t([-2.0]), beta=0.5)
    loss.backward()
    s = 1.0 / (1.0 + math.e)  # sigmoid(-1)
    assert close(logp_w.grad, [-0.5 * s]) and close(logp_l.grad, [0.5 * s])


def test_dpo_token_loss_equals_dpo_loss_on_summed_logprobs():
    g = torch.Generator().manual_seed(2)
    n, tw, tl = 5, 6, 4
    lw, rw = -torch.rand(n, tw, generator=g, dtype=D), -torch.rand(n, tw, generator=g, dtype=D)
    ll, rl = -torch.rand(n, tl, generator=g, dtype=D), -torch.rand(n, tl, generator=g, dtype=D)
    mw = (torch.rand(n, tw, generator=g) < 0.7).to(D)
    ml = (torch.rand(n, tl, generator=g) < 0.7).to(D)
    a, da = L.dpo_token_loss(lw, rw, mw, ll, rl, ml, beta=0.2)
    b, db = L.dpo_loss((lw * mw).sum(1), (rw * mw).sum(1), (ll * ml).sum(1), (rl * ml).sum(1), beta=0.2)
    assert close(a, b) and close(da["margin"], db["margin"])
    # and the per-token implicit rewards sum (telescope) to the sequence-level reward
    assert close((L.implicit_reward(lw, rw, 0.2) * mw).sum(1), da["reward_w"])


def test_dpo_shape_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        L.dpo_loss(torch.zeros(3, 2), x, x, x, 0.1)
    with pytest.raises(ValueError, match="shape mismatch"):
        L.dpo_loss(x, x, torch.zeros(1), x, 0.1)  # would silently broadcast
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        L.dpo_token_loss(x, x, x, x, x, x, 0.1)
    with pytest.raises(ValueError, match="shape mismatch"):
        L.dpo_token_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 3), *(torch.zeros(3, 2),) * 3, 0.1)


# ----------------------------------------------------------------------------- REINFORCE / PSR / NSR


def test_weighted_logprob_loss_hand_value():
    logp = t([[-1.0, -2.0], [-4.0, -8.0]], requires_grad=True)
    m = t([[1, 1], [1, 0]])
    w = t([2.0, -1.0])
    # -(2 * (-1 - 2) + (-1) * (-4)) / 3 = -(-6 + 4) / 3 = 2/3
    loss = L.weighted_logprob_loss(logp, m, w)
    assert close(loss, 2.0 / 3.0)
    loss.backward()
    # d/dlogp_{n,t} = -w_n m_{n,t} / 3
    assert close(logp.grad, [[-2 / 3, -2 / 3], [1 / 3, 0.0]])


def test_weighted_logprob_loss_treats_weights_as_constants():
    w = t([1.0, 2.0], requires_grad=True)
    L.weighted_logprob_loss(t([[-1.0], [-1.0]], requires_grad=True), torch.ones(2, 1), w).backward()
    assert w.grad is None


def test_reinforce_with_baseline_hand_value():
    logp = t([[-1.0], [-2.0]])
    m = torch.ones(2, 1)
    # weights r - b = (1 - 0.5, 0 - 0.5) = (0.5, -0.5): -(0.5 * -1 + -0.5 * -2) / 2 = -0.25
    assert close(L.reinforce_loss(logp, m, t([1.0, 0.0]), baseline=0.5), -0.25)
    assert close(L.reinforce_loss(logp, m, t([1.0, 0.0]), baseline=t([0.5, 0.5])), -0.25)


def _pg_batch(seed=3, n=6, tt=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, tt, 7, generator=g, dtype=D, requires_grad=True)
    y = torch.randint(0, 7, (n, tt), generator=g)
    mask = (torch.rand(n, tt, generator=g) < 0.8).to(D)
    correct = torch.tensor([True, False, True, False, False, True])[:n]
    return logits, y, mask, correct


def _logp(logits, y):
    return F.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)


def test_psr_nsr_hand_values():
    logp = t([[-1.0, -2.0], [-3.0, -5.0]])
    m = t([[1, 1], [1, 1]])
    correct = torch.tensor([True, False])
    # PSR: w = (1, 0): -(-1 - 2) / 4 = 0.75 ; NSR: w = (0, -1): -(3 + 5) / 4 = -2
    assert close(L.psr_loss(logp, m, correct), 0.75)
    assert close(L.nsr_loss(logp, m, correct), -2.0)
    # 0/1 integers work like bools
    assert close(L.nsr_loss(logp, m, torch.tensor([1, 0])), -2.0)
    # W-REINFORCE, lam = 0.1: w = (0.1, -1): -(0.1 * -3 + 8) / 4 = -1.925
    assert close(L.w_reinforce_loss(logp, m, correct, lam=0.1), -1.925)
    assert close(L.w_reinforce_loss(logp, m, correct), -1.925)  # the paper's default lam


def test_reinforce_pm1_equals_psr_plus_nsr_and_w_reinforce_lam1():
    logits, y, mask, correct = _pg_batch()
    logp = _logp(logits, y)
    r = correct.to(D) * 2 - 1  # +1 / -1
    rl = L.reinforce_loss(logp, mask, r)
    split = L.psr_loss(logp, mask, correct) + L.nsr_loss(logp, mask, correct)
    assert close(rl, split)
    assert close(L.w_reinforce_loss(logp, mask, correct, lam=1.0), rl)
    # lam = 0 is NSR alone
    assert close(L.w_reinforce_loss(logp, mask, correct, lam=0.0), L.nsr_loss(logp, mask, correct))
    # same gradients too
    (g1,) = torch.autograd.grad(rl, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(split, logits)
    assert close(g1, g2)


def test_nsr_logit_gradient_identity():
    # one wrong sample, one token, softmax policy over V = 6 tokens
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, 1, 6, generator=g, dtype=D, requires_grad=True)
    y = torch.tensor([[2]])
    loss = L.nsr_loss(_logp(z, y), torch.ones(1, 1), torch.tensor([False]))
    (grad,) = torch.autograd.grad(loss, z)
    p = F.softmax(z.detach(), -1)[0, 0]
    expected = p.clone()  # -dL/dz_v = +p_v for v != y
    expected[2] = -(1 - p[2])  # -dL/dz_y = -(1 - p_y)
    assert torch.allclose(-grad[0, 0], expected, atol=1e-8, rtol=0)
    # over T tokens of one wrong sequence the same holds per position, scaled by 1/T
    z = torch.randn(1, 3, 6, generator=g, dtype=D, requires_grad=True)
    y = torch.tensor([[0, 5, 1]])
    (grad,) = torch.autograd.grad(L.nsr_loss(_logp(z, y), torch.ones(1, 3), torch.tensor([0])), z)
    p = F.softmax(z.detach(), -1)[0]
    expected = p - F.one_hot(y[0], 6).to(D)
    assert torch.allclose(-grad[0] * 3, expected, atol=1e-8, rtol=0)


def test_pg_shape_errors():
    with pytest.raises(ValueError, match=r"w must be \(N,\)"):
        L.weighted_logprob_loss(torch.zeros(3, 2), torch.ones(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="shape mismatch"):
        L.psr_loss(torch.zeros(3, 2), torch.ones(3, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        L.reinforce_loss(torch.zeros(2, 3, 4), torch.ones(2, 3, 4), torch.ones(2))


def test_pg_gradients_flow_to_logits():
    logits, y, mask, correct = _pg_batch()
    for loss in (
        L.psr_loss(_logp(logits, y), mask, correct),
        L.nsr_loss(_logp(logits, y), mask, correct),
        L.w_reinforce_loss(_logp(logits, y), mask, correct),
        L.sft_loss(_logp(logits, y), mask),
    ):
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        # masked tokens get no gradient
        assert (g[mask == 0] == 0).all()


# ----------------------------------------------------------------------------- GRPO


def _grpo_hand_inputs():
    # logp_old = 0, so the ratio is exp(logp)
    logp = t([[math.log(1.5), math.log(0.5)], [math.log(0.5), 0.0]])
    logp_old = torch.zeros(2, 2, dtype=D)
    adv = t([1.0, -2.0])
    mask = t([[1, 1], [1, 0]])
    return logp, logp_old, adv, mask


def test_grpo_loss_hand_value():
    logp, logp_old, adv, mask = _grpo_hand_inputs()
    # eps = 0.2. row 0, A = +1: tok 0 ratio 1.5 -> min(1.5, 1.2) = 1.2 ; tok 1 ratio 0.5 -> min(0.5, 0.8) = 0.5
    #   row loss = -(1.2 + 0.5) / 2 = -0.85
    # row 1, A = -2: tok 0 ratio 0.5 -> min(-1.0, 0.8 * -2 = -1.6) = -1.6 ; tok 1 masked
    #   row loss = 1.6
    # loss = (-0.85 + 1.6) / 2 = 0.375
    loss, d = L.grpo_loss(logp, logp_old, adv, mask)
    assert close(loss, 0.375)
    # clip_frac: gradient removed at (0, 0) [ratio > 1.2, A > 0] and (1, 0) [ratio < 0.8, A < 0];
    # not at (0, 1): ratio 0.5 < 0.8 but A > 0, so the unclipped branch is the min -> 2 of 3 valid tokens
    assert close(d["clip_frac"], 2 / 3)
    assert "kl" not in d


def test_grpo_loss_hand_value_with_kl_and_asymmetric_clip():
    logp, logp_old, adv, mask = _grpo_hand_inputs()
    logp_ref = logp + math.log(2.0)
    # k3 with d = ln 2 on every token: 2 - ln 2 - 1 = 1 - ln 2 ; beta = 0.1 adds 0.1 (1 - ln 2) to each row
    loss, d = L.grpo_loss(logp, logp_old, adv, mask, beta=0.1, logp_ref=logp_ref)
    assert close(loss, 0.375 + 0.1 * (1 - math.log(2.0)))
    assert close(d["kl"], 1 - math.log(2.0))
    # eps_high = 0.6 leaves ratio 1.5 unclipped: row 0 = -(1.5 + 0.5) / 2 = -1 ; loss = (-1 + 1.6) / 2 = 0.3
    loss, d = L.grpo_loss(logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.6)
    assert close(loss, 0.3) and close(d["clip_frac"], 1 / 3)


def test_grpo_loss_gradient_hand_value():
    logp, logp_old, adv, mask = _grpo_hand_inputs()
    logp.requires_grad_(True)
    L.grpo_loss(logp, logp_old, adv, mask)[0].backward()
    # clipped tokens get 0; (0, 1): d/dlogp of -(ratio * A) / 2 / 2 = -0.5 * 1 / 4 = -0.125 ; (1, 1) masked
    assert close(logp.grad, [[0.0, -0.125], [0.0, 0.0]])


def test_grpo_on_policy_gradient_is_reinforce_with_group_normalised_advantages():
    b, g_, tt, v = 3, 4, 5, 7
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(b * g_, tt, v, generator=gen, dtype=D, requires_grad=True)
    y = torch.randint(0, v, (b * g_, tt), generator=gen)
    lens = torch.randint(1, tt + 1, (b * g_,), generator=gen)
    mask = (torch.arange(tt)[None] < lens[:, None]).to(D)  # unequal lengths
    r = torch.randint(0, 2, (b, g_), generator=gen).to(D)
    adv = L.group_normalise(r).reshape(-1)  # (B, G) -> (N,)
    logp = _logp(logits, y)
    grpo, _ = L.grpo_loss(logp, logp.detach(), adv, mask, beta=0.0)
    # REINFORCE surrogate, sequence-mean aggregation: -(1/N) sum_n A_n (1/|o_n|) sum_t log pi
    reinforce_seq = -(adv * L.masked_mean(logp, mask, dim=-1)).mean()
    (g1,) = torch.autograd.grad(grpo, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(reinforce_seq, logits, retain_graph=True)
    assert close(g1, g2, 1e-12)
    # with equal lengths, sequence mean = token mean: equal to reinforce_loss with weights A
    full = torch.ones_like(mask)
    grpo_full, _ = L.grpo_loss(logp, logp.detach(), adv, full)
    (g3,) = torch.autograd.grad(grpo_full, logits, retain_graph=True)
    (g4,) = torch.autograd.grad(L.reinforce_loss(logp, full, adv), logits)
    assert close(g3, g4, 1e-12)


def test_grpo_shape_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"adv must be \(N,\)"):
        L.grpo_loss(z, z, torch.zeros(2, 3), z)
    with pytest.raises(ValueError, match="shape mismatch"):
        L.grpo_loss(z, torch.zeros(2, 4), torch.zeros(2), z)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        L.grpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="logp_ref"):
        L.grpo_loss(z, z, torch.zeros(2), z, beta=0.1)
    with pytest.raises(ValueError, match="shape mismatch"):
        L.grpo_loss(z, z, torch.zeros(2), z, beta=0.1, logp_ref=torch.zeros(2, 4))


def test_grpo_gradients_flow_and_constants_are_constants():
    logits, y, mask, _ = _pg_batch()
    logp = _logp(logits, y)
    old = (logp + 0.3 * torch.randn_like(logp)).detach()
    ref = (logp + 0.3 * torch.randn_like(logp)).detach()
    adv = torch.randn(logp.shape[0], dtype=D, requires_grad=True)
    loss, d = L.grpo_loss(logp, old, adv, mask, beta=0.05, logp_ref=ref)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert adv.grad is None  # advantages are constants
    assert not d["clip_frac"].requires_grad and not d["kl"].requires_grad


def test_float32_inputs_give_float32_losses():
    logp = -torch.rand(2, 3)
    m = torch.ones(2, 3)
    assert L.grpo_loss(logp, logp, torch.ones(2), m)[0].dtype == torch.float32
    assert L.psr_loss(logp, m, torch.tensor([True, False])).dtype == torch.float32
    assert L.dpo_token_loss(logp, logp, m, logp, logp, m, 0.1)[0].dtype == torch.float32


def test_grad_wrt_matches_hand_gradients_and_leaves_inputs_alone():
    from rlbook.losses.common import grad_wrt

    x = torch.tensor([1.0, -2.0, 3.0])
    y = torch.tensor([0.5, 0.5])
    g = grad_wrt(lambda a: (a**2).sum() + (a * a.detach()).sum(), x)  # d/da = 2a + a (the detached copy is a constant)
    assert torch.allclose(g, 3 * x) and not x.requires_grad and x.grad is None
    gx, gy = grad_wrt(lambda a, b: a.sum() * 2.0, x, y)  # b unused: zeros
    assert torch.equal(gx, torch.full_like(x, 2.0)) and torch.equal(gy, torch.zeros_like(y))
