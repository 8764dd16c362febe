"""Tests of rlbook.losses.bnpo and rlbook.experiments.bnpo_beta_normalization (BNPO, arXiv 2506.02864)."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from rlbook import math_data
from rlbook import hub
from rlbook.config import from_params
from rlbook.experiments import bnpo_beta_normalization as E
from rlbook.losses import group_normalise, reinforce_loss
from rlbook.losses.bnpo import (beta_moments, beta_pdf, bnpo_advantage, bnpo_decomposed_advantage, bnpo_params,
                                bnpo_variance)


def _rewards(B=16, G=8, seed=0, mixed=False):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, 1, generator=g, dtype=torch.float64)
    r = (torch.rand(B, G, generator=g, dtype=torch.float64) < p).double()
    if mixed:  # every group has a success and a failure
        r[:, 0], r[:, 1] = 1.0, 0.0
    return r


def test_beta_pdf_matches_torch_and_end_points():
    p = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    for a, b in [(1.0, 1.0), (1.5, 1.5), (1.27, 2.0), (3.0, 1.2)]:
        ref = torch.distributions.Beta(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)).log_prob(p).exp()
        assert torch.allclose(beta_pdf(p, a, b), ref, atol=1e-12)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert beta_pdf(ends, 1.0, 1.0).tolist() == [1.0, 1.0]
    assert beta_pdf(ends, 1.5, 1.5).tolist() == [0.0, 0.0]
    assert abs(float(beta_pdf(torch.tensor(0.5, dtype=torch.float64), 1.5, 1.5)) - 0.5 / (math.pi / 8)) < 1e-12


def test_beta_moments_recovers_parameters():
    rng = np.random.default_rng(0)
    for a, b in [(0.8, 3.0), (3.0, 0.8), (2.0, 2.0)]:
        fa, fb = beta_moments(torch.tensor(rng.beta(a, b, size=2000)))
        assert abs(float(fa) / a - 1) < 0.1 and abs(float(fb) / b - 1) < 0.1


def test_beta_moments_one_prompt_and_shape():
    a, b = beta_moments(torch.tensor([0.4], dtype=torch.float64))  # official code: m = 0, v = 1
    assert float(a) == 0.0 and float(b) == -1.0
    assert [float(x) for x in bnpo_params(a, b)] == [1.0, 1.0]
    with pytest.raises(ValueError):
        beta_moments(torch.zeros(2, 2))


def test_bnpo_params_clamp():
    al, be = bnpo_params(0.6, -5.0)
    assert abs(float(al) - 1.2) < 1e-12 and float(be) == 1.0


def test_edge_bnpo_fixed_beta_1_1_is_reinforce_with_group_mean_baseline():
    r = _rewards()
    adv, info = bnpo_advantage(r, 1.0, 1.0)
    assert torch.allclose(adv, group_normalise(r, scale=False), atol=1e-12, rtol=0)
    # same gradient as rlbook's REINFORCE with the group-mean baseline
    logits = torch.randn(r.numel(), 1, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(r.numel(), 1, dtype=torch.float64)
    lp = lambda: torch.nn.functional.logsigmoid(logits)
    g1 = torch.autograd.grad(E.objective("REINFORCE")(lp(), mask, r), logits)[0]
    base = r.mean(1, keepdim=True).expand_as(r).flatten()
    g2 = torch.autograd.grad(reinforce_loss(lp(), mask, r.flatten(), baseline=base), logits)[0]
    assert torch.allclose(g1, g2, atol=1e-12)
    assert math.isnan(float(info["a"]))


def test_edge_bnpo_fixed_beta_3_2_is_grpo_normalisation_for_binary_rewards():
    G = 8
    r = _rewards(G=G, seed=1, mixed=True)
    adv, _ = bnpo_advantage(r, 1.5, 1.5)
    # population std = sqrt((G-1)/G) x rlbook's (Bessel-corrected) std; B(3/2, 3/2) = pi/8
    grpo = group_normalise(r, eps=0.0) * math.sqrt(G / (G - 1)) * math.pi / 8
    assert torch.allclose(adv, grpo, atol=1e-10, rtol=0)
    # a group of equal rewards gets 0 (GRPO with its eps too)
    r2 = torch.cat([r, torch.ones(1, G, dtype=torch.float64), torch.zeros(1, G, dtype=torch.float64)])
    adv2, _ = bnpo_advantage(r2, 1.5, 1.5)
    assert adv2[-2:].abs().max() == 0.0 and torch.isfinite(adv2).all()


def test_edge_bnpo_parameters_minimise_gradient_variance():
    from scipy import integrate

    for a, b in [(0.8, 3.0), (3.0, 0.8), (2.0, 2.0), (0.5, 0.7)]:
        # closed form = numerical integral of E_{p~Beta(a,b)}[p(1-p)/f(p; alpha, beta)^2]
        for al, be in [(1.0, 1.0), (1.5, 1.5), (1 + a / 3, 1 + b / 3)]:
            f = lambda p: (p ** (a - 1) * (1 - p) ** (b - 1) / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
                           * p * (1 - p) / float(beta_pdf(torch.tensor(p, dtype=torch.float64), al, be)) ** 2)
            num = integrate.quad(f, 0, 1, limit=200)[0]
            assert abs(num / bnpo_variance(a, b, al, be) - 1) < 1e-6
        # the stationary point (1 + a/3, 1 + b/3) is the minimum: below every perturbation and on the grid
        al, be = 1 + a / 3, 1 + b / 3
        v0 = bnpo_variance(a, b, al, be)
        for dx, dy in [(0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05), (0.05, 0.05), (-0.05, 0.05)]:
            assert v0 < bnpo_variance(a, b, al + dx, be + dy)
        gx, gy = E.variance_grid(a, b, lo=0.5, step=0.01)
        assert abs(gx - al) <= 0.011 and abs(gy - be) <= 0.011
    assert bnpo_variance(0.8, 3.0, 3.0, 1.0) == math.inf


def test_bnpo_advantage_matches_official_loop():
    """A transcription of the official compute_bnpo_outcome_advantage (per-sample loop, torch Beta)."""
    r = _rewards(B=12, G=8, seed=3, mixed=True)
    scores, index = r.flatten().clone(), np.repeat(np.arange(12), 8)
    id2score = defaultdict(list)
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    id2mean = {k: torch.mean(torch.tensor(v)) for k, v in id2score.items()}
    all_p = torch.stack(list(id2mean.values()))
    m, v = all_p.mean(), all_p.var()
    a, b = (m * (1 - m) / v - 1) * m, (m * (1 - m) / v - 1) * (1 - m)
    alpha, beta = torch.clamp(1 + a / 3, min=1.0), torch.clamp(1 + b / 3, min=1.0)
    for i in range(len(scores)):
        p = id2mean[index[i]]
        w = torch.clamp(1 / torch.distributions.Beta(alpha, beta).log_prob(p).exp(), min=0, max=1e6)
        scores[i] = w * (scores[i] - p)
    adv, info = bnpo_advantage(r)
    assert torch.allclose(adv.flatten(), scores, atol=1e-10)
    assert abs(float(info["alpha"]) - float(alpha)) < 1e-12


def test_bnpo_advantage_errors_and_centring():
    r = _rewards()
    adv, _ = bnpo_advantage(r)
    assert torch.allclose(adv.sum(1), torch.zeros(r.shape[0], dtype=torch.float64), atol=1e-10)
    with pytest.raises(ValueError):
        bnpo_advantage(r.flatten())
    with pytest.raises(ValueError):
        bnpo_advantage(r, 1.0, None)
    with pytest.raises(ValueError):
        bnpo_advantage(r, 0.5, 1.0)


def test_decomposition():
    r1, r2 = _rewards(seed=4), _rewards(seed=5)
    assert torch.allclose(bnpo_decomposed_advantage(r1[..., None]), bnpo_advantage(r1)[0])
    both = bnpo_decomposed_advantage(torch.stack([r1, r2], -1))
    assert torch.allclose(both, (bnpo_advantage(r1)[0] + bnpo_advantage(r2)[0]) / 2)
    with pytest.raises(ValueError):
        bnpo_decomposed_advantage(r1)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, lab_sets="0.8/-1")
    with pytest.raises(ValueError):
        from_params(E.Config, full_methods="PPO")
    assert from_params(E.Config).ab_sets[0] == (0.8, 3.0)


def test_lab_and_gradient_variance_small():
    cfg = from_params(E.Config, lab_sets="0.8/3", lab_draws=4000, tab_prompts=20, tab_batches=20, tab_steps=2)
    lab = E.run_lab(cfg, 0)
    assert {r["method"] for r in lab["rows"]} == set(E.METHODS)
    z, c = E.make_world(cfg, 0)
    gv = E.gradient_variance(z, c, 4, 20, 0)
    assert set(gv) == set(E.METHODS) and all(v["var"] > 0 for v in gv.values())


@pytest.mark.slow
def test_trainer_subclass_replaces_advantages(tmp_path):
    """The GRPOTrainer subclass hands the loss BNPO's advantages (fitted over the whole batch)."""
    from datasets import Dataset
    from trl import GRPOConfig

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    tok = char_tokenizer("0123456789+=")
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=64), seed=0, tokenizer=tok)
    ds = Dataset.from_list([{"prompt": f"{a}+{a}="} for a in range(8)])

    def reward(completions, **kw):  # 1, 0, 0, 0 | 1, 1, 0, 0: two mixed groups
        return [float(i in (0, 4, 5)) for i in range(len(completions))]

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
                      max_steps=1, report_to="none", use_cpu=True, bf16=False, fp16=False, **hub.checkpointing_kw(False),
                      save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, beta=0.0, loss_type="dapo",
                      learning_rate=1e-4, logging_steps=1)
    trainer = E.make_trainer_class()(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                                     method="BNPO")
    out = trainer._generate_and_score_completions([ds[0]] * 4 + [ds[1]] * 4)
    r = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float64)
    assert torch.allclose(out["advantages"].double(), bnpo_advantage(r)[0].flatten(), atol=1e-6)


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local MATH-like data set (1 step)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_train_data=str(tmp_path / "train"),
                      full_eval_data=str(tmp_path / "eval"), full_methods="BNPO,GRPO", full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, eval_problems=2,
                     eval_samples=2, max_completion=8, generation_batch=2)
    assert set(res) == {"base", "BNPO", "GRPO"}
    assert set(res["BNPO"]) == {1, 2} and all(0.0 <= v <= 1.0 for v in res["BNPO"].values())
