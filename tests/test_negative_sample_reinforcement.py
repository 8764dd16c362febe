"""The NSR chapter: its derivation, objectives, tabular policy, LM loop and the full-profile dry run."""

import numpy as np
import pytest
import torch

from rlbook import rl_lm
from rlbook import tabular_policy as tp
from rlbook.config import from_params
from rlbook import hub, math_data
from rlbook.experiments import negative_sample_reinforcement as E
from rlbook.losses import nsr_loss, psr_loss, weighted_logprob_loss


def _one_token_grad(loss_fn, z, y, correct):
    z = z.clone().requires_grad_(True)
    logp = torch.log_softmax(z, -1)[y].view(1, 1)
    loss_fn(logp, torch.ones(1, 1), torch.tensor([correct])).backward()
    return z.grad


def test_nsr_logit_gradient_redistributes_by_prior():
    """-dL_NSR/dz for one wrong token: -(1-p) on the sampled token, +p_v on every other (paper Sec. 4)."""
    z = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p, y = torch.softmax(z, -1), 3
    update = -_one_token_grad(nsr_loss, z, y, False)
    expected = p.clone()
    expected[y] = -(1 - p[y])
    torch.testing.assert_close(update, expected, atol=1e-12, rtol=0)
    # PSR on a correct token: +(1-p) on it, -p_v elsewhere (all mass to the sampled token)
    torch.testing.assert_close(-_one_token_grad(psr_loss, z, y, True), -expected, atol=1e-12, rtol=0)


def test_expected_psr_and_nsr_gradients_are_equal():
    z0, correct = tp.make_bandit(tp.BanditConfig(prompts=5, candidates=9), np.random.default_rng(0))
    g = tp.expected_gradients(z0, correct)
    torch.testing.assert_close(g["psr"], g["grad_p"], atol=1e-12, rtol=0)
    torch.testing.assert_close(g["nsr"], g["grad_p"], atol=1e-12, rtol=0)


def test_expected_gradients_match_monte_carlo():
    z0, correct = tp.make_bandit(tp.BanditConfig(prompts=1, candidates=6, max_offset=0.0), np.random.default_rng(1))
    g = tp.expected_gradients(z0, correct)["nsr"][0]
    y = torch.multinomial(torch.softmax(z0[0], -1), 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    pi = torch.softmax(z0[0], -1)
    wrong = (~correct[0][y]).double()
    mc = -(wrong[:, None] * (torch.nn.functional.one_hot(y, 6).double() - pi)).mean(0)
    torch.testing.assert_close(mc, g, atol=5e-3, rtol=0)


@pytest.mark.parametrize("method", E.METHODS)
def test_objectives_use_the_official_advantages(method):
    """Each objective is the weighted log-prob loss with the official code's advantage."""
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 4, generator=g)
    mask = torch.ones(6, 4)
    mask[0, 3] = 0
    r = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # (B=2, G=3)
    got = E.objective(method, lam=0.1)(logp, mask, r)
    want = weighted_logprob_loss(logp, mask, E.paper_advantages(r.flatten(), method, 0.1))
    torch.testing.assert_close(got, want)


def test_paper_advantages_values():
    r = torch.tensor([1.0, 0.0])
    assert E.paper_advantages(r, "PSR").tolist() == [1.0, 0.0]
    assert E.paper_advantages(r, "NSR").tolist() == [0.0, -1.0]
    assert E.paper_advantages(r, "W-REINFORCE", 0.1).tolist() == pytest.approx([0.1, -1.0])
    assert E.paper_advantages(r, "REINFORCE").tolist() == [1.0, -1.0]
    with pytest.raises(ValueError):
        E.paper_advantages(r, "GRPO")


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="unknown method"):
        from_params(E.Config, lm_methods="PSR,XYZ")
    with pytest.raises(ValueError, match="power of two"):
        from_params(E.Config, max_k=100)
    with pytest.raises(TypeError):
        from_params(E.Config, lm_steps="ten")
    assert from_params(E.Config, max_k=8).ks == [1, 2, 4, 8]


def test_tabular_training_is_deterministic_and_learns():
    z0, correct = tp.make_bandit(tp.BanditConfig(prompts=20, candidates=10), np.random.default_rng(0))
    a = tp.train(z0, correct, E.objective("NSR"), steps=20, lr=0.05, seed=3)
    b = tp.train(z0, correct, E.objective("NSR"), steps=20, lr=0.05, seed=3)
    assert torch.equal(a.z, b.z)
    assert a.mean_p[-1] > tp.prob_correct(z0, correct).mean().item() + 0.05
    with pytest.raises(ValueError):
        tp.train(z0, correct, E.objective("NSR"), steps=1, optimizer="rmsprop")


def test_last_boxed_and_math_reward():
    assert math_data.last_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert math_data.last_boxed("no box") is None
    assert math_data.math_reward([r"x = \boxed{\dfrac{1}{2}}", r"\boxed{3}", "7"], [r"\frac{1}{2}", "4", "7"]) == [1.0, 0.0, 0.0]
    assert math_data.math_reward([[{"role": "assistant", "content": r"\boxed{ 5 }"}]], ["5"]) == [1.0]


@pytest.fixture(scope="module")
def tiny_lm():
    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama
    from rlbook.tasks import CountdownTask

    task = CountdownTask(n_digits=3)
    tok = char_tokenizer(task.alphabet)
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=32), seed=0, tokenizer=tok)
    return model, tok, task


def test_rl_loop_changes_parameters_and_is_deterministic(tiny_lm):
    import copy

    model, tok, task = tiny_lm
    cfg = rl_lm.RLConfig(steps=3, prompts=4, group=4, lr=1e-3, max_new_tokens=task.answer_len + 1, seed=0)
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        h = rl_lm.train(m, tok, task, E.objective("REINFORCE"), cfg, mask_fn=task.logits_mask(tok))
        runs.append((m, h))
    (m1, h1), (m2, h2) = runs
    assert len(h1.reward) == 3 and h1.reward == h2.reward and h1.loss == h2.loss
    changed = any(not torch.equal(a, b) for a, b in zip(model.parameters(), m1.parameters()))
    assert changed
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert all(0.0 <= e for e in h1.entropy)


def test_score_rewards(tiny_lm):
    _, _, task = tiny_lm
    p = task.sample(1, np.random.default_rng(0))[0]
    good = task.correct_answers(p)[0]
    r = rl_lm.score(task, [p], [good, "1+2+3"[: task.answer_len]], G=2)
    assert r.shape == (1, 2) and r[0, 0] == 1.0


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local MATH-like data set (1 step)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_train_data=str(tmp_path / "train"),
                      full_eval_data=str(tmp_path / "eval"), full_methods="NSR,W-REINFORCE", full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, eval_problems=2,
                     eval_samples=2, max_completion=8, generation_batch=2)
    assert set(res) == {"base", "NSR", "W-REINFORCE"}
    assert set(res["NSR"]) == {1, 2} and all(0.0 <= v <= 1.0 for v in res["NSR"].values())


@pytest.mark.slow
def test_trainer_subclass_replaces_advantages(tmp_path):
    """The GRPOTrainer subclass hands the loss the paper's advantages (not GRPO's normalised ones)."""
    from datasets import Dataset
    from trl import GRPOConfig

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    tok = char_tokenizer("0123456789+=")
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=64), seed=0, tokenizer=tok)
    ds = Dataset.from_list([{"prompt": f"{a}+{a}="} for a in range(8)])

    def reward(completions, **kw):  # alternate 1, 0 so that every group is mixed
        return [float(i % 2 == 0) for i in range(len(completions))]

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                      max_steps=1, report_to="none", use_cpu=True, bf16=False, fp16=False, **hub.checkpointing_kw(False),
                      save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, beta=0.0, loss_type="dapo",
                      learning_rate=1e-4, logging_steps=1)
    trainer = E.make_trainer_class()(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                                     method="NSR")
    batch = [ds[0]] * 4
    out = trainer._generate_and_score_completions(batch)
    assert out["advantages"].tolist() == [0.0, -1.0, 0.0, -1.0]
