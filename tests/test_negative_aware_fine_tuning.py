"""The NFT chapter: the loss, its family-tree edges (GRPO / Dr. GRPO / RFT), the experiment, the full-profile dry run."""

import math

import pytest
import torch

from rlbook import math_data
from rlbook import hub
from rlbook.config import from_params
from rlbook.experiments import negative_aware_fine_tuning as E
from rlbook.losses import group_normalise, grpo_loss
from rlbook.losses.nft import clamp_preserve_grad, nft_loss, nft_prompt_weights, nft_sample_loss
from rlbook.losses.common import grad_wrt as _grad  # d f(x) / dx


def _batch(seed=0, B=5, G=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B * G, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B * G, T, generator=g) > 0.2).double()
    mask[:, 0] = 1
    r = (torch.rand(B, G, generator=g) > 0.5).double()
    r[0], r[1] = 1.0, 0.0  # one all-correct and one all-wrong group
    r[2] = 0.0
    r[2, 0] = 1.0  # and a mixed one with r_hat = 1/G
    return logp, mask, r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_nft_equals_dr_grpo_on_policy(seed):
    """NFT with prompt weight 1 - r_hat, at R = 1, has Dr. GRPO's gradient (paper Sec. 4.2)."""
    logp, mask, r = _batch(seed)
    a = _grad(lambda x: nft_loss(x, x.detach(), mask, r, prompt_weight="dr_grpo")[0], logp)
    b = _grad(lambda x: grpo_loss(x, x.detach(), group_normalise(r, scale=False).flatten(), mask)[0], logp)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-6)
    assert a.abs().max() > 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_nft_equals_grpo_on_policy(seed):
    """NFT with prompt weight sqrt((1 - r_hat)/r_hat), at R = 1, has GRPO's gradient (population std, no eps)."""
    logp, mask, r = _batch(seed)
    G = r.shape[1]
    a = _grad(lambda x: nft_loss(x, x.detach(), mask, r, prompt_weight="grpo")[0], logp)
    adv = (group_normalise(r, eps=0.0) * math.sqrt(G / (G - 1))).nan_to_num(0.0)  # (r - mean) / std_population
    b = _grad(lambda x: grpo_loss(x, x.detach(), adv.flatten(), mask)[0], logp)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-6)
    # with group_normalise's defaults (unbiased std + 1e-4) the two differ only by a per-group constant
    b2 = _grad(lambda x: grpo_loss(x, x.detach(), group_normalise(r).flatten(), mask)[0], logp)
    cos = float((a * b2).sum() / (a.norm() * b2.norm()))
    assert cos > 1 - 1e-6


def test_edge_rft_is_nft_without_negatives():
    """neg_weight = 0 is rejection-sampling fine-tuning: only correct samples carry gradient, -(1 - r_hat) log R."""
    logp, mask, r = _batch(0)
    old = logp - 0.1
    a = _grad(lambda x: nft_loss(x, old, mask, r, neg_weight=0.0)[0], logp)
    wrong = (r.flatten() == 0)
    assert torch.all(a[wrong] == 0)
    r_hat, w = nft_prompt_weights(r)
    G = r.shape[1]
    ww = (w.repeat_interleave(G) * r.flatten())[:, None]
    want = -ww * mask / mask.sum(1, keepdim=True) / logp.shape[0]
    torch.testing.assert_close(a, want, atol=1e-12, rtol=1e-9)


def test_implicit_negative_policy_is_a_distribution():
    """pi^- = (pi_old - r pi_theta)/(1 - r) sums to 1, and equals pi_old's wrong-answer conditional when pi_theta = pi^+."""
    g = torch.Generator().manual_seed(0)
    pi_old = torch.softmax(torch.randn(10, generator=g, dtype=torch.float64), -1)
    correct = torch.zeros(10, dtype=torch.bool)
    correct[[1, 4, 7]] = True
    r = pi_old[correct].sum()
    pi_plus = torch.where(correct, pi_old, 0.0) / r
    pi_minus = (pi_old - r * pi_plus) / (1 - r)
    torch.testing.assert_close(pi_minus.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(pi_minus, torch.where(~correct, pi_old, 0.0) / (1 - r))


def test_loss_values_by_hand():
    """One positive and one negative token: -log R and -log((1 - r R)/(1 - r)), weighted by 1 - r_hat."""
    logp_old = torch.log(torch.tensor([[0.5], [0.4]], dtype=torch.float64))
    logp = torch.log(torch.tensor([[0.6], [0.3]], dtype=torch.float64))
    r = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # r_hat = 0.5
    loss, diag = nft_loss(logp, logp_old, torch.ones(2, 1), r, eps=1e-6)
    pos = -math.log(0.6 / 0.5)
    neg = -math.log((1 - 0.5 * 0.75) / 0.5)
    assert loss.item() == pytest.approx(0.5 * (pos + neg) / 2, rel=1e-12)
    assert diag["clamp_frac"].item() == 0.0


def test_clamp_preserves_gradient():
    x = torch.tensor([0.3, 2.0], requires_grad=True)
    y = clamp_preserve_grad(x, 1.0)
    assert y.tolist() == [1.0, 2.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


def test_clamp_fraction_counts_negatives_below_eps():
    logp_old = torch.zeros(4, 1, dtype=torch.float64) + math.log(0.25)
    logp = torch.log(torch.tensor([[0.5], [0.5], [0.1], [0.25]], dtype=torch.float64))
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # negatives: R = 2 (clamped), 0.4, 1
    _, diag = nft_loss(logp, logp_old, torch.ones(4, 1), r, eps=1.0)
    assert diag["clamp_frac"].item() == pytest.approx(1 / 3)


def test_degenerate_groups_contribute_nothing():
    logp, mask, r = _batch(0)
    a = _grad(lambda x: nft_loss(x, x.detach() - 0.2, mask, r)[0], logp)
    G = r.shape[1]
    assert torch.all(a[: 2 * G] == 0)


def test_shapes_are_checked():
    logp, mask, r = _batch(0)
    with pytest.raises(ValueError):
        nft_loss(logp, logp, mask, r[:, :3])
    with pytest.raises(ValueError):
        nft_loss(logp, logp, mask, r, prompt_weight="ppo")
    with pytest.raises(ValueError):
        nft_sample_loss(logp, logp, mask, r.flatten()[:3], r.flatten(), r.flatten())


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="unknown method"):
        from_params(E.Config, lm_methods="RFT,XYZ")
    with pytest.raises(ValueError, match="prompt_weight"):
        from_params(E.Config, prompt_weight="ppo")
    with pytest.raises(TypeError):
        from_params(E.Config, tab_iters="ten")


def test_tabular_first_mini_step_matches_dr_grpo_and_nft_beats_rft_with_sgd():
    cfg = from_params(E.Config, tab_prompts=40, tab_iters=10)
    out = E.run_tabular(cfg, 0)
    nft = out["sgd"]["NFT"]
    assert nft["cos_dr_grpo"][0] == pytest.approx(1.0, abs=1e-9)
    assert out["sgd"]["NFT"]["acc"][-1] > out["sgd"]["RFT"]["acc"][-1]
    assert out["sgd"]["NFT"]["acc"][-1] > out["base_acc"]


@pytest.mark.slow
def test_lm_gradient_check_on_the_zoo_model():
    from rlbook.models import zoo

    model, tok, task, _ = zoo.load("countdown4")
    res = E.lm_gradient_check(model, tok, task, seed=0)
    assert res["rel_err_dr_grpo"] < 1e-5 and res["rel_err_grpo"] < 1e-5
    assert res["cos_rft_grpo"] < 0.99


@pytest.mark.slow
def test_trainer_subclass_stores_group_statistics(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    tok = char_tokenizer("0123456789+=")
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=64), seed=0,
                       tokenizer=tok)
    ds = Dataset.from_list([{"prompt": f"{a}+{a}="} for a in range(8)])

    def reward(completions, **kw):  # 1, 0, 0, 0 per group of 4: r_hat = 0.25
        return [float(i % 4 == 0) for i in range(len(completions))]

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=4, max_steps=1, beta=0.0, learning_rate=1e-4, logging_steps=1,
                      **hub.trl_offline(False, 0))
    trainer = E.make_trainer_class()(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                                     processing_class=tok)
    out = trainer._generate_and_score_completions([ds[0]] * 4)
    assert out["nft_correct"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert out["nft_r_hat"].tolist() == [0.25] * 4
    assert out["nft_weight"].tolist() == [0.75] * 4
    loss = trainer._compute_loss(trainer.model, out)
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local MATH-like data set (1 step)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_train_data=str(tmp_path / "train"),
                      full_eval_data=str(tmp_path / "eval"), full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, eval_problems=2,
                     eval_samples=2, max_completion=8, generation_batch=2)
    assert set(res) == {"base", "RFT", "NFT"}
    assert all(0.0 <= v <= 1.0 for v in res["NFT"].values())
