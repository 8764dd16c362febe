"""The Co-Reward chapter: pseudo-label rewards, family-tree edges, the toy, the full-profile dry run."""

from collections import Counter

import pytest
import torch

from rlbook.config import from_params
from rlbook.experiments import co_reward_contrastive_agreement as E
from rlbook.losses import group_normalise, grpo_loss
from rlbook.losses.co_reward import (
    NO_ANSWER, agreement_reward, answer_ids, co_reward, ground_truth_reward, majority_label, self_voting_reward,
)


def _answers(seed, B=6, G=8, K=4):
    g = torch.Generator().manual_seed(seed)
    ans = torch.randint(0, K, (B, G), generator=g)
    ans[0, :3] = NO_ANSWER  # some rollouts without an answer
    ans[1] = NO_ANSWER  # a group without any answer
    return ans


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_majority_matches_counter_most_common(seed):
    """Ties go to the first-seen answer, empty answers do not vote (official ``majority_vote``)."""
    ans = _answers(seed)
    got = majority_label(ans)
    for b in range(ans.shape[0]):
        votes = [int(a) for a in ans[b] if a != NO_ANSWER]
        want = Counter(votes).most_common(1)[0][0] if votes else NO_ANSWER
        assert int(got[b]) == want


def test_rewards_hand_computed():
    q = torch.tensor([[5, 5, 7, NO_ANSWER]])
    q2 = torch.tensor([[7, 7, 5, 7]])
    assert majority_label(q).tolist() == [5] and majority_label(q2).tolist() == [7]
    assert self_voting_reward(q).tolist() == [[1, 1, 0, 0]]
    r_q, r_q2 = co_reward(q, q2)
    assert r_q.tolist() == [[0, 0, 1, 0]] and r_q2.tolist() == [[0, 0, 1, 0]]
    assert ground_truth_reward(q, torch.tensor([7])).tolist() == [[0, 0, 1, 0]]
    # no label -> no reward, even for a matching NO_ANSWER
    none = torch.full((1, 4), NO_ANSWER)
    assert co_reward(q, none)[0].tolist() == [[0, 0, 0, 0]]
    assert agreement_reward(none, torch.tensor([NO_ANSWER])).tolist() == [[0, 0, 0, 0]]
    assert answer_ids(["3", " 3", "", "x"]).tolist() == [0, 0, NO_ANSWER, 1]
    with pytest.raises(ValueError):
        co_reward(q, q2[:, :3])
    with pytest.raises(ValueError):
        majority_label(q.double())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_co_reward_equals_ground_truth_with_perfect_majority(seed):
    """If every rollout of q' states the truth (a perfect majority), Co-Reward on q *is* the GT reward,
    and so is GRPO's update (Co-Reward -> GRPO with a verifier)."""
    ans_q = _answers(seed)
    truth = torch.randint(0, 4, (ans_q.shape[0],), generator=torch.Generator().manual_seed(seed + 10))
    ans_q2 = truth[:, None].expand_as(ans_q).clone()
    r_cr, _ = co_reward(ans_q, ans_q2)
    torch.testing.assert_close(r_cr, ground_truth_reward(ans_q, truth))
    # both views perfect: Co-Reward, self-voting and the GT reward are all 1 everywhere
    r_a, r_b = co_reward(ans_q2, ans_q2.clone())
    assert r_a.min() == 1 and r_b.min() == 1 and self_voting_reward(ans_q2).min() == 1
    # and the GRPO loss (on-policy) is the same as with the GT reward
    logp = -torch.rand(ans_q.numel(), 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mask = torch.ones_like(logp)
    l_cr = grpo_loss(logp, logp.detach(), group_normalise(r_cr.double()).flatten(), mask)[0]
    l_gt = grpo_loss(logp, logp.detach(), group_normalise(ground_truth_reward(ans_q, truth).double()).flatten(), mask)[0]
    torch.testing.assert_close(l_cr, l_gt)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_co_reward_with_identical_views_is_self_voting(seed):
    """With q' = q (the same rollouts on both sides) Co-Reward reduces to self-voting (majority-vote reward)."""
    ans = _answers(seed)
    r_q, r_q2 = co_reward(ans, ans.clone())
    torch.testing.assert_close(r_q, self_voting_reward(ans))
    torch.testing.assert_close(r_q2, self_voting_reward(ans))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_self_voting_with_correct_majority_is_ground_truth(seed):
    """Self-voting equals the GT reward on every group whose majority is the truth (TTRL's premise)."""
    ans = _answers(seed)
    truth = majority_label(ans)
    ok = truth != NO_ANSWER
    torch.testing.assert_close(self_voting_reward(ans)[ok], ground_truth_reward(ans, truth)[ok])


def test_wording_dependent_shortcut_gets_no_co_reward_but_full_self_vote():
    """All rollouts copy the displayed first operand: 27 for '27+45=', 45 for '45+27='."""
    q = torch.full((1, 8), 27)
    q2 = torch.full((1, 8), 45)
    assert self_voting_reward(q).sum() == 8 and self_voting_reward(q2).sum() == 8
    r_q, r_q2 = co_reward(q, q2)
    assert r_q.sum() == 0 and r_q2.sum() == 0


def test_paired_rewards_interleaving():
    ans = torch.tensor([[1, 1, 2], [2, 2, 1], [3, 3, 3], [3, 4, 4]])  # pairs (0,1) and (2,3)
    truth = torch.tensor([2, 2, 3, 3])
    r = E.paired_rewards("co_reward", ans, truth)
    assert r.tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert E.paired_rewards("self_voting", ans, truth).tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]]
    with pytest.raises(ValueError):
        E.paired_rewards("entropy", ans, truth)


def test_trl_reward_matches_tensor_rewards():
    """The TRL reward function (strings, pair ids, views) equals the tensor rewards on the same batch."""
    boxed = lambda x: f"so \\boxed{{{x}}}" if x is not None else "no answer"
    G = 3
    table = [[1, 1, 2], [2, 2, 1], [3, 3, None], [None, 4, 4]]
    completions = [boxed(x) for row in table for x in row]
    pair_id = [0] * 6 + [1] * 6
    view = [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3
    answer = ["2"] * 6 + ["3"] * 6
    ans = torch.tensor([[NO_ANSWER if x is None else x for x in row] for row in table])
    for kind in E.REWARDS:
        got = E.trl_pair_reward(kind)(completions, pair_id=pair_id, view=view, answer=answer)
        want = E.paired_rewards(kind, ans, torch.tensor([2, 2, 3, 3])).flatten().tolist()
        assert got == want, kind
    # a partner view missing from the batch gives 0
    got = E.trl_pair_reward("co_reward")(completions[:3], pair_id=[0] * 3, view=[0] * 3, answer=["2"] * 3)
    assert got == [0.0] * G


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, group=1)
    with pytest.raises(ValueError):
        from_params(E.Config, full_methods="co_reward,entropy")
    with pytest.raises(ValueError):
        from_params(E.Config, eval_every=0)


def test_toy_short_run_separates_rewards():
    """A short toy run: Co-Reward ahead of self-voting, self-voting's shortcut cell collapses."""
    cfg = from_params(E.Config, steps=30, eval_pairs=100, eval_every=30)
    sv = E.train_toy("self_voting", cfg, seed=0)
    cr = E.train_toy("co_reward", cfg, seed=0)
    assert cr["final"]["accuracy"] > sv["final"]["accuracy"] + 0.05
    assert sv["final"]["cell_accuracy"][3] < 0.15
    assert len(cr["reward"]) == 30 and list(cr["eval_step"]) == [0, 30]


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end: tiny local model, tiny local paired data (2 pairs), 1 step per reward."""
    from datasets import Dataset, DatasetDict

    from rlbook import math_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = math_data.save_tiny_math(tmp_path)
    rows = [{"original_question": f"{a}+{b}=?", "rephrased_question": f"{b}+{a}=?", "solution": f"\\boxed{{{a + b}}}"}
            for a, b in [(1, 2), (2, 3), (0, 3), (1, 1)]]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "pairs"))
    ds = E.load_paired_math(str(tmp_path / "pairs"), "train", seed=0)
    assert ds["view"] == [0, 1] * 4 and ds["pair_id"] == [0, 0, 1, 1, 2, 2, 3, 3]
    cfg = from_params(E.Config, full_model=paths["model"], full_train_data=str(tmp_path / "pairs"),
                      full_eval_data=paths["eval"], full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, train_pairs=2,
                     eval_problems=2, eval_samples=2, max_completion=8, generation_batch=2)
    assert set(res) == {"base", *E.REWARDS}
    assert all(0.0 <= v <= 1.0 for v in res["co_reward"].values())
