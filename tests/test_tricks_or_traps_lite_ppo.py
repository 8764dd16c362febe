"""The Lite PPO chapter: normalisation and aggregation identities, family-tree edges, TRL agreement, dry run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlbook import math_data
from rlbook.config import from_params
from rlbook.experiments import tricks_or_traps_lite_ppo as E
from rlbook.losses import group_normalise, grpo_loss
from rlbook.losses.common import grad_wrt as _grad  # d f(x) / dx
from rlbook.losses.lite_ppo import (aggregation_weights, clipped_pg_loss, group_weight, lite_ppo_advantage,
                                    normalise_advantages)


def _batch(seed=0, B=4, G=6, T=7, equal=False):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B * G, T, generator=g, dtype=torch.float64)
    logp_old = logp + 0.3 * torch.randn(B * G, T, generator=g, dtype=torch.float64)
    if equal:
        mask = torch.ones(B * G, T, dtype=torch.float64)
    else:
        lens = torch.randint(1, T + 1, (B * G,), generator=g)
        mask = (torch.arange(T)[None] < lens[:, None]).double()
    r = (torch.rand(B, G, generator=g) > 0.5).double()
    r[0] = 1.0  # a degenerate group
    r[1, :] = 0.0
    r[1, 0] = 1.0
    return logp, logp_old, mask, r


# ----------------------------------------------------------------------------- identities


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sum_of_squared_advantages_closed_forms(seed):
    """Binary rewards: sum_i A_i^2 = G (group std), G p(1-p)/sigma_B^2 (batch std), G p(1-p) (no std)."""
    g = torch.Generator().manual_seed(seed)
    B, G = 16, 8
    r = (torch.rand(B, G, generator=g) < torch.rand(B, 1, generator=g)).double()
    p = r.mean(1)
    var_b = r.var(unbiased=False)
    for std in ("group", "batch", "none"):
        a = normalise_advantages(r, "group", std, eps=0.0, unbiased=False).nan_to_num(0.0)
        torch.testing.assert_close((a**2).sum(1), group_weight(p, G, std, var_b), atol=1e-9, rtol=0)
    # with Bessel's correction the group-std weight is G - 1
    a = normalise_advantages(r, "group", "group", eps=0.0, unbiased=True).nan_to_num(0.0)
    nondeg = (p > 0) & (p < 1)
    torch.testing.assert_close((a**2).sum(1)[nondeg], torch.full((int(nondeg.sum()),), G - 1.0, dtype=r.dtype))


def test_aggregation_weights_by_hand():
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float64)
    tok = aggregation_weights(mask, "token")
    seq = aggregation_weights(mask, "sequence")
    torch.testing.assert_close(tok, mask / 7)
    torch.testing.assert_close(seq[0], torch.full((4,), 1 / 12, dtype=torch.float64))
    torch.testing.assert_close(seq[1], torch.tensor([1 / 3, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(seq[2], torch.tensor([1 / 6, 1 / 6, 0, 0], dtype=torch.float64))
    assert float(tok.sum()) == pytest.approx(1.0) and float(seq.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("agg", ["token", "sequence"])
def test_on_policy_gradient_is_weighted_reinforce(agg):
    """At ratio 1 the gradient w.r.t. logp is -w_{i,t} A_i: the aggregation weights times the advantage."""
    logp, _, mask, r = _batch(0)
    adv = lite_ppo_advantage(r).flatten()
    gr = _grad(lambda x: clipped_pg_loss(x, x.detach(), adv, mask, agg=agg)[0], logp)
    torch.testing.assert_close(gr, -aggregation_weights(mask, agg) * adv[:, None], atol=1e-12, rtol=1e-9)


def test_clip_higher_sides_by_hand():
    """eps_low clips ratios below 1 - eps_low for A < 0, eps_high clips above 1 + eps_high for A > 0."""
    logp_old = torch.zeros(4, 1, dtype=torch.float64)
    ratio = torch.tensor([[1.25], [1.35], [0.75], [0.85]], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(4, 1, dtype=torch.float64)
    x = ratio.log().requires_grad_(True)
    loss, diag = clipped_pg_loss(x, logp_old, adv, mask, eps_low=0.2, eps_high=0.28)
    loss.backward()
    # 1.25 < 1.28 unclipped, 1.35 clipped, 0.75 < 0.8 clipped, 0.85 unclipped
    assert x.grad.flatten().tolist() == pytest.approx([-1.25 / 4, 0.0, 0.0, 0.85 / 4])
    assert diag["clip_frac"].item() == pytest.approx(0.5)
    assert diag["clip_high_frac"].item() == pytest.approx(0.25) and diag["clip_low_frac"].item() == pytest.approx(0.25)
    want = -(1.25 + 1.28 - 0.8 - 0.85) / 4
    assert loss.item() == pytest.approx(want)


def test_batch_std_is_the_std_of_raw_rewards():
    """ROLL/TRL: the batch std is taken over the raw rewards of the whole batch, not the centred ones."""
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    a = lite_ppo_advantage(r, eps=0.0)
    centred = r - r.mean(1, keepdim=True)
    torch.testing.assert_close(a, centred / r.std())
    assert not torch.allclose(a, centred / centred.std())


def test_bad_arguments_are_refused():
    logp, logp_old, mask, r = _batch(0)
    with pytest.raises(ValueError):
        normalise_advantages(r, "prompt", "batch")
    with pytest.raises(ValueError):
        normalise_advantages(r, "group", "global")
    with pytest.raises(ValueError):
        clipped_pg_loss(logp, logp_old, r.flatten(), mask, agg="sample")
    with pytest.raises(ValueError):
        clipped_pg_loss(logp, logp_old, r.flatten()[:3], mask)
    with pytest.raises(ValueError, match="unknown variant"):
        E.objective("PPO", E.Config())
    with pytest.raises(ValueError, match="full_methods"):
        from_params(E.Config, full_methods="GRPO,DAPO")
    with pytest.raises(ValueError):
        from_params(E.Config, p_easy=0.05)


# ----------------------------------------------------------------------------- family-tree edges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_lite_normalisation_equals_grpo_for_one_group(seed):
    """With a single group in the batch, group std = batch std: Lite PPO's advantage is GRPO's."""
    r = (torch.rand(1, 8, generator=torch.Generator().manual_seed(seed)) > 0.4).double()
    r[0, 0], r[0, 1] = 1.0, 0.0
    torch.testing.assert_close(lite_ppo_advantage(r), group_normalise(r), atol=1e-12, rtol=0)
    _, _, _, r2 = _batch(seed)
    assert not torch.allclose(lite_ppo_advantage(r2), group_normalise(r2))  # not with several groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_token_equals_sequence_aggregation_for_equal_lengths(seed):
    """All responses of the same length: token-level and sequence-level aggregation are the same loss."""
    logp, logp_old, mask, r = _batch(seed, equal=True)
    adv = lite_ppo_advantage(r).flatten()
    a = clipped_pg_loss(logp, logp_old, adv, mask, 0.2, 0.28, "token")[0]
    b = clipped_pg_loss(logp, logp_old, adv, mask, 0.2, 0.28, "sequence")[0]
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    logp, logp_old, mask, r = _batch(seed)  # unequal lengths: different
    a = clipped_pg_loss(logp, logp_old, adv, mask, agg="token")[0]
    b = clipped_pg_loss(logp, logp_old, adv, mask, agg="sequence")[0]
    assert abs(float(a - b)) > 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_sequence_level_with_group_std_is_grpo_loss(seed):
    """Sequence aggregation + group std is rlbook.losses.grpo_loss (off-policy too); at ratio 1 as well."""
    logp, logp_old, mask, r = _batch(seed)
    adv = normalise_advantages(r, "group", "group").flatten()
    torch.testing.assert_close(adv, group_normalise(r).flatten())
    a = clipped_pg_loss(logp, logp_old, adv, mask, 0.2, 0.28, "sequence")[0]
    b = grpo_loss(logp, logp_old, adv, mask, 0.2, 0.28)[0]
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    ga = _grad(lambda x: clipped_pg_loss(x, x.detach(), adv, mask, agg="sequence")[0], logp)
    gb = _grad(lambda x: grpo_loss(x, x.detach(), adv, mask)[0], logp)
    torch.testing.assert_close(ga, gb, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- experiment


def test_normalisation_lab_matches_closed_forms():
    cfg = from_params(E.Config)
    lab = E.normalisation_lab(cfg, 0)
    for std in ("group", "batch", "none"):
        torch.testing.assert_close(lab[f"weight_{std}"], lab[f"closed_{std}"], atol=1e-9, rtol=0)


def test_length_bandit_world_and_logps():
    cfg = from_params(E.Config, bandit_prompts=8)
    w = E.make_length_bandit(cfg, np.random.default_rng(0))
    p = (torch.softmax(w.z0, -1) * w.correct).sum(-1)
    torch.testing.assert_close(p[~w.hard], torch.full((4,), 0.9, dtype=p.dtype))
    torch.testing.assert_close(p[w.hard], torch.full((4,), 0.1, dtype=p.dtype))
    assert bool((w.length[w.hard][w.correct[w.hard]] >= 12).all())  # hard prompts: long correct answers only
    y = torch.tensor([[0, 7], [3, 11]] * 4)
    logp, mask = E.response_logps(w.z0, y, w)
    assert torch.equal(mask.sum(1), w.length[torch.arange(8).repeat_interleave(2), y.flatten()].to(mask.dtype))
    assert bool((logp[:, 1:] == 0).all())


def test_token_level_helps_hard_prompts_in_a_short_run():
    cfg = from_params(E.Config, bandit_prompts=16, bandit_steps=5)
    out = E.run_length_bandit(cfg, 0, variants=["GRPO", "Lite PPO"])
    assert out["Lite PPO"]["acc_hard"][-1] > out["GRPO"]["acc_hard"][-1] > out["GRPO"]["acc_hard"][0]


# ----------------------------------------------------------------------------- TRL 1.16 agreement

ALPHABET = "abcdefghij +=0123456789"
G = 4
PROMPTS = ["1+2=", "3+4=", "ab"]
REWARDS = [0.0, 1.0, 1.0, 0.5, 2.0, 2.0, 3.0, -1.0, 1.0, 0.0, 0.0, 0.0]


def _reward_from_column(prompts, completions, r, **kwargs):
    return [float(x) for x in r]


def _trl_trainer(tmp_path, loss_type, scale_rewards):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    tok = char_tokenizer(ALPHABET)
    model = tiny_llama(len(tok), TinyConfig(), seed=0, tokenizer=tok)
    args = GRPOConfig(output_dir=str(tmp_path / loss_type), per_device_train_batch_size=len(REWARDS),
                      num_generations=G, max_completion_length=5, loss_type=loss_type, scale_rewards=scale_rewards,
                      beta=0.0, epsilon=0.2, epsilon_high=0.28, temperature=1.0, report_to="none", use_cpu=True,
                      bf16=False, fp16=False, gradient_checkpointing=False, save_strategy="no", disable_tqdm=True,
                      dataloader_num_workers=0, seed=0)
    ds = Dataset.from_dict({"prompt": PROMPTS, "r": [0.0] * len(PROMPTS)})
    return GRPOTrainer(model=model, reward_funcs=_reward_from_column, args=args, train_dataset=ds,
                       processing_class=tok)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["bnpo", "dapo"])
def test_lite_ppo_equals_trl_batch_scale_token_loss(tmp_path, monkeypatch, loss_type):
    """TRL 1.16 GRPOTrainer with scale_rewards="batch" and a token-level loss_type is Lite PPO (+ clip-higher)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch.nn.functional as F

    tr = _trl_trainer(tmp_path, loss_type, "batch")
    rows = [{"prompt": p, "r": r} for p, r in zip([p for p in PROMPTS for _ in range(G)], REWARDS)]
    torch.manual_seed(0)
    with torch.no_grad():
        out = tr._generate_and_score_completions(rows)
    r = torch.tensor(REWARDS).view(len(PROMPTS), G)
    torch.testing.assert_close(out["advantages"], lite_ppo_advantage(r).reshape(-1), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out["advantages"], group_normalise(r).reshape(-1), atol=1e-3)

    model = tr.model
    model.eval()  # TRL's "eval" mode: no gradient-accumulation normaliser
    tc = out["completion_ids"].shape[1]
    lens = torch.tensor([tc, 1, 3, tc, 2, tc, 4, 1, tc, 3, 2, 5]).clamp(max=tc)
    mask = (torch.arange(tc)[None] < lens[:, None]).long()
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], mask], 1)

    def token_logps():
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        return F.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)[:, -tc:]

    with torch.no_grad():
        logp0 = token_logps()
    logp_old = logp0 + 0.5 * torch.randn(logp0.shape, generator=torch.Generator().manual_seed(1))
    inputs = {"prompt_ids": out["prompt_ids"], "prompt_mask": out["prompt_mask"],
              "completion_ids": out["completion_ids"], "completion_mask": mask, "advantages": out["advantages"],
              "old_per_token_logps": logp_old, "num_items_in_batch": mask.sum()}
    model.zero_grad()
    trl_loss = tr.compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    loss, diag = clipped_pg_loss(token_logps(), logp_old, out["advantages"], mask, 0.2, 0.28, "token")
    loss.backward()
    torch.testing.assert_close(loss.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)
    for n, p in model.named_parameters():
        if n in trl_grads:
            torch.testing.assert_close(p.grad, trl_grads[n], atol=1e-6, rtol=1e-4)
    assert abs(diag["clip_frac"].item() - tr._metrics["eval"]["clip_ratio/region_mean"][-1]) < 1e-6
    assert 0.05 < diag["clip_frac"].item() < 0.95
    seq = clipped_pg_loss(token_logps(), logp_old, out["advantages"], mask, 0.2, 0.28, "sequence")[0]
    assert abs(seq.item() - loss.item()) > 1e-4  # the aggregation matters on this batch


@pytest.mark.slow
def test_lm_run_on_the_zoo_model():
    cfg = from_params(E.Config, lm_steps=2, eval_prompts=10)
    out = E.run_lm(cfg, 0)
    assert 0.0 <= out["Lite PPO"] <= 1.0 and len(out["traces"]["GRPO"]["reward"]) == 2


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local MATH-like data set (1 step each)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_train_data=str(tmp_path / "train"),
                      full_eval_data=str(tmp_path / "eval"), full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, eval_problems=2,
                     eval_samples=2, max_completion=8, generation_batch=2)
    assert set(res) == {"base", "GRPO", "Lite PPO"}
    assert all(0.0 <= v <= 1.0 for v in res["Lite PPO"].values())
