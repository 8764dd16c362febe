"""The ConvSearch-R1 chapter: the pointer policy, the rewards, the warm-up and GRPO loop, the full-profile dry run."""

import numpy as np
import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import convsearch_r1_query_reformulation as E
from rlbook.losses import group_normalise, grpo_loss
from rlbook.tasks import conv_search as cs


@pytest.fixture(scope="module")
def task():
    return cs.ConvSearchTask(seed=0)


def test_reward_of_each_name():
    rank = np.array([1, 3, 10, 50, 200])
    np.testing.assert_allclose(E.reward_of("rank", rank), cs.rank_incentive(rank))
    np.testing.assert_allclose(E.reward_of("recall1", rank), [1, 0, 0, 0, 0])
    np.testing.assert_allclose(E.reward_of("mrr3", rank), [1, 1 / 3, 0, 0, 0])
    with pytest.raises(ValueError):
        E.reward_of("ndcg", rank)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, runs="rank,bleu")
    with pytest.raises(ValueError):
        from_params(E.Config, runs="rank+sft")
    with pytest.raises(ValueError):
        from_params(E.Config, group=1)


def test_rollout_shapes_masks_and_rewrites(task):
    cfg = E.Config()
    pol = E.make_policy(task, cfg, seed=0)
    convs = task.sample(4, np.random.default_rng(0))
    out = pol.rollout(convs, 3, generator=torch.Generator().manual_seed(0))
    assert out["actions"].shape == out["logp"].shape == out["mask"].shape == (12, cfg.max_copy)
    words = pol.candidates(convs)[0]
    for n, rw in enumerate(out["rewrites"]):
        c = convs[n // 3]
        assert rw.startswith(c.query)
        extra = rw[len(c.query):].split()
        assert len(extra) <= cfg.max_copy and len(set(extra)) == len(extra)  # distinct copies
        assert all(w in words[n // 3] for w in extra)  # copied from the history
    # after STOP: masked, no log-prob
    m = out["mask"]
    assert torch.all(m[:, 0] == 1) and torch.all(out["logp"][m == 0] == 0) and torch.all(out["logp"][m == 1] <= 0)
    assert torch.all(m[:, 1:] <= m[:, :-1])


def test_replaying_actions_gives_the_same_logprobs(task):
    pol = E.make_policy(task, E.Config(), seed=1)
    convs = task.sample(5, np.random.default_rng(2))
    out = pol.rollout(convs, 2, generator=torch.Generator().manual_seed(1))
    rep = pol.rollout(convs, 2, actions=out["actions"])
    torch.testing.assert_close(rep["logp"], out["logp"])
    assert rep["rewrites"] == out["rewrites"]
    # probabilities of each step sum to one (the policy is a proper distribution over candidates + STOP)
    words, ids, st, cmask = pol.candidates(convs[:1])
    assert cmask.sum() == len(words[0])


def test_base_policy_is_near_uniform_and_weak(task):
    pol = E.make_policy(task, E.Config(), seed=0)
    ev = E.evaluate(pol, task, task.sample(100, np.random.default_rng(4), "test"))
    assert ev["mrr10"] < 0.15 and ev["recall1"] < 0.1


def test_edge_convsearch_r1_step_is_grpo_with_the_rank_reward(task):
    """ConvSearch-R1 stage 2 is GRPO: the loop takes a grpo_loss step with group_normalise(rank reward) advantages;
    on-policy its gradient is the policy gradient with those advantages (the clip is inactive)."""
    cfg = from_params(E.Config, steps=1, prompts=4, group=4, eval_every=1, eval_conversations=10)
    pol = E.make_policy(task, cfg, seed=0)
    before = [p.detach().clone() for p in pol.parameters()]
    h = E.train_grpo(pol, task, "rank", cfg, 0, task.sample(10, np.random.default_rng(0), "test"))
    assert h["step"] == [0, 1] and len(h["train_reward"]) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, pol.parameters()))
    # on-policy at one step: the clip is inactive and the gradient is the policy gradient with GRPO advantages
    convs = task.sample(4, np.random.default_rng(1))
    out = pol.rollout(convs, 4, generator=torch.Generator().manual_seed(3))
    r = torch.as_tensor(E.reward_of("rank", task.ranks(out["rewrites"], [c for c in convs for _ in range(4)])),
                        dtype=torch.float32).view(4, 4)
    adv = group_normalise(r).flatten()
    loss, d = grpo_loss(out["logp"], out["logp"].detach(), adv, out["mask"])
    pg = (-(adv[:, None] * out["logp"] * out["mask"]).sum(1) / out["mask"].sum(1)).mean()
    params = list(pol.parameters())
    g1 = torch.autograd.grad(loss, params, retain_graph=True)
    g2 = torch.autograd.grad(pg, params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert float(d["clip_frac"]) == 0.0


def test_warmup_keeps_only_good_rewrites_and_moves_towards_them(task):
    cfg = from_params(E.Config, warmup_conversations=200, warmup_samples=4)
    pol = E.make_policy(task, cfg, seed=0)
    ev = task.sample(100, np.random.default_rng(5), "test")
    before = E.evaluate(pol, task, ev)["mrr10"]
    info = E.warmup(pol, task, cfg, seed=0)
    assert 0 < info["kept"] < info["sampled"] == 800
    assert E.evaluate(pol, task, ev)["mrr10"] > before


def test_reward_fn_for_trl(task):
    fn = E.make_reward_fn(task)
    c = task.sample(1, np.random.default_rng(0))[0]
    name = task.entities[c.entity]
    good = f"<think>it is {name}</think>\n<rewrite>{c.query} {name}</rewrite>"
    vals = fn([good, f"{c.query} {name}", [{"role": "assistant", "content": good}]], gold=[c.gold] * 3)
    r = int(task.ranks([f"{c.query} {name}"], [c])[0])
    assert vals[0] == pytest.approx(float(cs.rank_incentive(r))) and vals[1] == -0.1 and vals[2] == vals[0]
    prompt = E.conversation_prompt(c)
    assert prompt[0]["role"] == "system" and c.query in prompt[1]["content"]


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full: TRL GRPOTrainer with the rank reward on a tiny local model, one step."""
    from rlbook.models import save_tiny_policy

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ,.?:<>/\n"
    save_tiny_policy(tmp_path / "model", alphabet, max_len=512, chat=True)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_conversations=8, full_group=2,
                      full_batch=2, full_lr=1e-4)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, eval_conversations=2,
                     max_completion=8, micro_batch=2)
    assert 0.0 <= res["mrr10_before"] <= 1.0 and 0.0 <= res["mrr10_after"] <= 1.0
    assert any("loss" in row for row in res["log"])
