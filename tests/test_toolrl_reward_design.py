"""ToolRL chapter: the call policy, its rewards, the family-tree edges, and the full profile's dry run."""

import numpy as np
import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import toolrl_reward_design as E
from rlbook.losses.common import group_normalise
from rlbook.losses.grpo import grpo_loss
from rlbook.tasks import tool_call as tc


def _requests(n=12, seed=0):
    seen, _ = tc.combinations()
    return E.sample_requests(n, np.random.default_rng(seed), seen, 0.5)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, rewards="toolrl,nope")
    with pytest.raises(ValueError):
        from_params(E.Config, group=1)
    with pytest.raises(ValueError):
        from_params(E.Config, pool=4, prompts=32)


def test_gold_actions_render_the_gold_calls():
    reqs = _requests()
    acts = E.gold_actions(reqs, [True] * len(reqs))
    for req, text in zip(reqs, E.actions_to_texts(reqs, acts)):
        assert tc.toolrl_reward(text, req.gold) == 4.0
    acts.header[:] = 0
    assert all(tc.toolrl_reward(t, r.gold) == 3.0 for r, t in zip(reqs, E.actions_to_texts(reqs, acts)))


def test_policy_scores_what_it_samples_and_mask_counts_decisions():
    torch.manual_seed(0)
    pol = E.CallPolicy(16)
    reqs = _requests(6)
    enc = E.encode(reqs)
    acts, logp, mask = pol(*enc, G=3, generator=torch.Generator().manual_seed(0))
    assert logp.shape == mask.shape == (18, E.FACTORS)
    _, logp2, mask2 = pol(*enc, G=3, actions=acts)
    assert torch.allclose(logp, logp2) and torch.equal(mask, mask2)
    n_dec = 2 + (1 + acts.two) * (1 + E.K)  # header, count, then a tool and K key bits per call
    on = torch.stack([torch.ones_like(acts.two), acts.two], 1)
    n_dec = n_dec + (acts.keys & on[..., None].bool()).sum((1, 2))
    assert torch.equal(mask.sum(1).long(), n_dec)
    # pointers only to real slots of the request
    slot_ok = enc[3].repeat_interleave(3, 0)
    assert bool(torch.gather(slot_ok, 1, acts.ptr.flatten(1)).all())
    # the sampled distribution sums to 1 over a decision (header)
    assert torch.allclose(torch.logsumexp(pol.glob(pol.encode(*enc[:2], enc[2])[2])[:, :2].log_softmax(-1), -1),
                          torch.zeros(6), atol=1e-6)


def test_batch_rewards_equal_the_text_rewards():
    torch.manual_seed(1)
    pol = E.CallPolicy(16)
    reqs = _requests(8, seed=3)
    acts, _, _ = pol(*E.encode(reqs), G=4, generator=torch.Generator().manual_seed(1))
    rs = E.batch_rewards(reqs, acts, 4)
    texts = E.actions_to_texts(reqs, acts, 4)
    for name, fn in tc.REWARDS.items():
        ref = torch.tensor([fn(t, reqs[i // 4].gold) for i, t in enumerate(texts)]).view(-1, 4)
        assert torch.allclose(rs[name], ref), name


@pytest.mark.slow  # the first torch.optim optimiser of a process imports torch._dynamo (seconds)
def test_sft_then_one_grpo_step_moves_the_policy():
    cfg = from_params(E.Config, hidden=16, sft_demos=20, sft_steps=2, steps=1, prompts=4, group=4, pool=8,
                      eval_requests=4, eval_every=1)
    base, info = E.build_base(cfg, 0)
    assert info["demos"] == 20
    res = E.run_grpo(base, "toolrl", cfg, 0, evals={"seen": _requests(4)})
    moved = any(not torch.equal(a, b) for a, b in zip(base.parameters(), res["policy"].parameters()))
    assert moved and res["curve"]["step"] == [0, 1] and len(res["train"]["toolrl"]) == 1
    m = E.evaluate(res["policy"], _requests(4), samples=2)
    assert 0 <= m["exact"] <= 1 and -3 <= m["reward"] <= 4


# ---------------------------------------------------------------------------------
# family tree
# ---------------------------------------------------------------------------------
def test_edge_perfect_single_call_correctness_equals_rescaled_binary():
    """A single-call response with the right tool and every parameter right: R_correct = +3 = 6*binary - 3."""
    rng = np.random.default_rng(0)
    for t in tc.TOOL_NAMES:
        req = tc.make_request((t,), rng)
        text = tc.render(req.gold)
        assert tc.correctness_reward(text, req.gold) == 3.0 == 6 * tc.binary_reward(text, req.gold) - 3
        # and through the partial-credit path (no exact-match shortcut): the score reaches S_max
        c = tc.correctness_components(req.gold, req.gold)
        assert c["score"] == c["s_max"]


def _group_rewards(seed=0, B=6, G=8):
    rng = np.random.default_rng(seed)
    seen, _ = tc.combinations()
    texts, golds = [], []
    for b in range(B):
        req = tc.make_request(seen[b], rng)
        for g in range(G):
            calls = [dict(c, parameters=dict(c["parameters"])) for c in req.gold]
            if rng.random() < 0.5:  # corrupt a value or drop a call
                if rng.random() < 0.5:
                    k = next(iter(calls[0]["parameters"]))
                    calls[0]["parameters"][k] = "zzz"
                else:
                    calls = calls[:1]
            texts.append(tc.render(calls))
            golds.append(req.gold)
    return texts, golds, B, G


def test_edge_coarse_toolrl_is_grpo_with_binary_reward():
    """ToolRL with COARSEREWARD (R_correct in {-3, 3}) and valid format = 6*binary - 2: same GRPO advantage."""
    texts, golds, B, G = _group_rewards()
    binary = torch.tensor([tc.binary_reward(t, g) for t, g in zip(texts, golds)]).view(B, G)
    coarse = torch.tensor([tc.format_reward(t) + (3.0 if tc.exact_match(t, g) else -3.0)
                           for t, g in zip(texts, golds)]).view(B, G)
    assert torch.allclose(coarse, 6 * binary - 2)
    a1, a2 = group_normalise(binary, eps=0.0).nan_to_num(0.0), group_normalise(coarse, eps=0.0).nan_to_num(0.0)
    assert torch.allclose(a1, a2, atol=1e-6)
    logp = torch.randn(B * G, 3, requires_grad=True)
    mask = torch.ones(B * G, 3)
    g1 = torch.autograd.grad(grpo_loss(logp, logp.detach(), a1.flatten(), mask)[0], logp)[0]
    g2 = torch.autograd.grad(grpo_loss(logp, logp.detach(), a2.flatten(), mask)[0], logp)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


def test_edge_format_dominant_equals_toolrl_once_format_is_valid():
    """With every format valid, format-dominant = 4 + (R_c + 3)/6 = (ToolRL + 26)/6: the same GRPO advantage."""
    texts, golds, B, G = _group_rewards(1)
    toolrl = torch.tensor([tc.toolrl_reward(t, g) for t, g in zip(texts, golds)], dtype=torch.float64).view(B, G)
    fd = torch.tensor([tc.format_dominant_reward(t, g) for t, g in zip(texts, golds)], dtype=torch.float64).view(B, G)
    assert torch.allclose(fd, (toolrl + 26) / 6)
    adv = lambda r: group_normalise(r, eps=0.0).nan_to_num(0.0)
    assert torch.allclose(adv(fd), adv(toolrl))
    # ... but not when formats differ inside a group: the format term then dominates the advantage
    t_bad = tc.render(golds[0], think=None)
    t_wrong = tc.render([{"name": "calculator", "parameters": {}}])
    r_t = torch.tensor([[tc.toolrl_reward(t_bad, golds[0]), tc.toolrl_reward(t_wrong, golds[0])]])
    r_f = torch.tensor([[tc.format_dominant_reward(t_bad, golds[0]), tc.format_dominant_reward(t_wrong, golds[0])]])
    assert r_t[0, 0] > r_t[0, 1] and r_f[0, 0] < r_f[0, 1]  # opposite preferences


# ---------------------------------------------------------------------------------
# full profile
# ---------------------------------------------------------------------------------
def test_trl_reward_matches_toolrl_reward():
    gold = [{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}]
    gt = tc.render(gold)
    comps = [gt, [{"role": "assistant", "content": gt}], "no call", tc.render(gold, think=None)]
    assert E.trl_reward(comps, [gt] * 4) == [4.0, 4.0, -3.0, 3.0]


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local ToolRL-style data set (1 step)."""
    from datasets import Dataset

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        req = tc.make_request((tc.TOOL_NAMES[i % 6],), rng)
        rows.append({"prompt": [{"role": "user", "content": req.text[:20]}], "ground_truth": tc.render(req.gold)})
    no_call = "<think></think>\n<response>hi</response>"  # not a tool call: dropped by load_rl_data
    rows.append({"prompt": [{"role": "user", "content": "hi"}], "ground_truth": no_call})
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    alphabet = "".join(sorted(set("".join(r["prompt"][0]["content"] for r in rows) + "\n")))
    tok = char_tokenizer(alphabet)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # instruct models ship one
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=128), seed=0,
                       tokenizer=tok)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_data=str(tmp_path / "data"), full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, n_eval=2,
                     max_completion=8)
    assert set(res) == {"base", "toolrl"}
    assert -3.0 <= res["toolrl"]["reward"] <= 4.0 and 0.0 <= res["toolrl"]["exact"] <= 1.0
