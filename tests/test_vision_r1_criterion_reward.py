"""The Vision-R1 chapter: the policy, the rewards in the GRPO loop, family-tree edges, the full-profile dry run."""

import json

import numpy as np
import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import vision_r1_criterion_reward as E
from rlbook.losses import group_normalise, grpo_loss
from rlbook.tasks import grid_boxes as GB


@pytest.fixture(scope="module")
def tiny():
    policy = E.BoxPolicy(hidden=16, seed=0)
    scenes = GB.make_scenes(6, 1)
    return policy, scenes


def test_sample_respects_the_format_and_logprobs_agree(tiny):
    policy, scenes = tiny
    imgs, cols = E.batch(scenes)
    feat = policy.encode(imgs, cols)
    toks, mask = E.sample(policy, feat, torch.Generator().manual_seed(0))
    assert toks.shape == (6, E.T) and mask.shape == (6, E.T)
    for n in range(6):
        seq = toks[n][mask[n] > 0].tolist()
        assert seq[-1] == GB.EOS and (len(seq) - 1) % 4 == 0 and GB.EOS not in seq[:-1]
    lp = E.token_logprobs(policy, feat, toks).masked_fill(mask == 0, 0.0)
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    # greedy decoding picks the argmax of the teacher-forced logits
    g, gm = E.sample(policy, feat, None, greedy=True)
    lg = policy.logits(feat, g)
    assert torch.equal(lg.argmax(-1)[gm > 0], g[gm > 0])


def test_rules_schedule():
    cfg = from_params(E.Config, steps=10, prr_switch=0.4)
    assert E.rules_at("criterion", 9, cfg) == GB.PLAIN
    assert [E.rules_at("criterion_prr", s, cfg) for s in (0, 3, 4, 9)] == [GB.STAGE1, GB.STAGE1, GB.STAGE2, GB.STAGE2]
    with pytest.raises(ValueError):
        E.reward("iou", np.zeros((0, 4)), np.zeros((1, 4)), True)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, group=1)
    with pytest.raises(ValueError):
        from_params(E.Config, prr_switch=1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_criterion_reward_is_affine_in_binary_on_exact_or_empty_answers(seed):
    """Answers that are either exact (one box per target, equal to it) or empty: the criterion reward is
    1/3 + 2/3 * binary, at every stage; GRPO's std-normalised advantages are scale-free, so Vision-R1's update equals
    GRPO's with the binary verifier (Vision-R1 -> GRPO with a 0/1 verifier)."""
    rng = np.random.default_rng(seed)
    scenes = [GB.make_scene(rng) for _ in range(5)]
    G = 6
    r_bin, r_crit = torch.zeros(5, G, dtype=torch.float64), torch.zeros(5, G, dtype=torch.float64)
    for i, s in enumerate(scenes):
        for g in range(G):
            pred = s.boxes if rng.random() < 0.5 else np.zeros((0, 4), dtype=np.int64)
            r_bin[i, g] = GB.binary_reward(pred, s.boxes, True)
            for rules in (GB.PLAIN, GB.STAGE1, GB.STAGE2):
                assert GB.criterion_reward(pred, s.boxes, True, rules)["reward"] == pytest.approx(1 / 3 + 2 / 3 * r_bin[i, g].item())
            r_crit[i, g] = GB.criterion_reward(pred, s.boxes, True, GB.STAGE2)["reward"]
    torch.testing.assert_close(group_normalise(r_crit), group_normalise(r_bin), atol=2e-3, rtol=0)


def test_edge_vision_r1_update_is_grpo(tiny):
    """The chapter's training step is GRPO's loss on the criterion reward's group advantages; on-policy it is
    REINFORCE with those advantages and a per-sequence token mean."""
    policy, scenes = tiny
    imgs, cols = E.batch(scenes[:2])
    rep = torch.arange(2).repeat_interleave(3)
    feat = policy.encode(imgs, cols)[rep]
    toks, mask = E.sample(policy, feat.detach(), torch.Generator().manual_seed(1))
    r = []
    for n in range(6):
        pred, ok = GB.parse(toks[n][mask[n] > 0].tolist())
        r.append(E.reward("criterion", pred, scenes[int(rep[n])].boxes, ok))
    r = torch.tensor(r).view(2, 3)
    logp = E.token_logprobs(policy, feat, toks).masked_fill(mask == 0, 0.0).detach()
    adv = group_normalise(r).flatten()

    def grad(f):
        x = logp.clone().requires_grad_(True)
        f(x).backward()
        return x.grad

    g_grpo = grad(lambda x: grpo_loss(x, x.detach(), adv, mask)[0])
    g_pg = grad(lambda x: -((adv[:, None] * x * mask).sum(1) / mask.sum(1)).mean())
    torch.testing.assert_close(g_grpo, g_pg)


def test_train_grpo_short_run_from_the_committed_base():
    """A 3-step GRPO run from the committed base (its recorded competence is partial: AP@0.5 >= 0.4)."""
    base, info = E.load_base()
    assert info["competence"]["AP@0.5"] >= 0.4
    cfg = from_params(E.Config, steps=3, images=4, group=4, eval_images=10)
    out = E.train_grpo(base, "criterion", cfg, 0, E.eval_scenes(10))
    assert len(out["reward"]) == 3 and 0 <= out["final"]["AP@0.5"] <= 1


def test_parse_completion_and_trl_reward():
    gt = [[10.0, 10.0, 50.0, 50.0]]
    good = '```json\n[{"bbox_2d": [10, 10, 50, 50], "label": "cat"}]\n```'
    spray = json.dumps([{"bbox_2d": [10, 10, 50, 50], "label": "cat"}, {"bbox_2d": [60, 60, 90, 90], "label": "cat"}])
    bad = "the cat is at the top left"
    boxes, ok = E.parse_completion(good)
    assert ok and boxes.tolist() == gt
    assert E.parse_completion(bad)[1] is False
    f = E.trl_criterion_reward()
    r = f([good, spray, bad], boxes=[gt, gt, gt])
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx((1 + 1 + 0.5) / 3) and r[2] == pytest.approx(0.0)
    # progressive: a box at IoU 0.8 gets full precision credit in stage 1, 0.8 in stage 2
    near = json.dumps([{"bbox_2d": [10, 10, 50, 42], "label": "cat"}])
    state = type("S", (), {"global_step": 0})()
    s1 = E.trl_criterion_reward(prr_step=5)([near], boxes=[gt], trainer_state=state)[0]
    state.global_step = 5
    s2 = E.trl_criterion_reward(prr_step=5)([near], boxes=[gt], trainer_state=state)[0]
    assert s1 == pytest.approx(1.0) and s2 == pytest.approx((1 + 1 + 0.8) / 3)


@pytest.mark.slow
def test_full_profile_dry_run_without_the_model(tmp_path, monkeypatch):
    """Everything of run_full except the VLM (no tiny VLM stand-in offline): the data set, the chat rows with an
    image, the GRPOConfig, and the reward function on model-like completions, via a local grounding data set."""
    from datasets import Dataset, DatasetDict
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"image": Image.new("RGB", (64, 64), (i * 40, 0, 0)), "expression": f"red box {i}",
             "boxes": [[4.0 * i, 4.0, 4.0 * i + 20, 30.0]]} for i in range(4)]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ground"))
    cfg = from_params(E.Config, full_data=str(tmp_path / "ground"), full_group=2)
    ds = E.grounding_dataset(cfg.full_data, "train", n=3)
    assert len(ds) == 3 and ds[0]["prompt"][0]["content"][0]["type"] == "image"
    assert "red box 0" in ds[0]["prompt"][0]["content"][1]["text"]
    args = E.grpo_config(cfg, "criterion_prr", 0, str(tmp_path / "out"), cuda=False, max_steps=1)
    assert args.num_generations == 2 and args.beta == cfg.full_beta and args.loss_type == "grpo"
    completions = [[{"role": "assistant", "content": json.dumps([{"bbox_2d": b, "label": "x"} for b in ex["boxes"]])}]
                   for ex in ds]
    r = E.trl_criterion_reward(cfg.full_prr_step)(completions, boxes=ds["boxes"], trainer_state=None)
    assert r == pytest.approx([1.0, 1.0, 1.0])
