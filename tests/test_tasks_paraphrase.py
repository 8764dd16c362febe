"""rlbook.tasks.paraphrase: paired analogous questions and the surface-form strategy policy."""

import numpy as np
import pytest
import torch

from rlbook.tasks import paraphrase as P


def test_sample_returns_adjacent_views_with_one_answer():
    task = P.PairedAdditionTask()
    probs = task.sample(20, np.random.default_rng(0))
    assert len(probs) == 40
    for q, q2 in zip(probs[0::2], probs[1::2]):
        a, b = q.numbers
        assert q2.numbers == (b, a) and q.target == q2.target == a + b
        assert q.prompt == f"{a}+{b}=" and q2.prompt == f"{b}+{a}="
        assert task.verify(q, str(a + b)) and task.verify(q2, str(a + b)) and not task.verify(q, str(a))


def test_train_and_test_pairs_are_disjoint():
    task = P.PairedAdditionTask()
    tr, te = set(task.pairs("train")), set(task.pairs("test"))
    assert tr and te and not tr & te
    assert all(a < b for a, b in tr | te)
    with pytest.raises(ValueError):
        task.pairs("dev")


def test_strategies_hand_computed():
    q, q2 = P.PairedAdditionTask.views(27, 45)
    ans = P.strategy_answers([q, q2])
    # correct, copy_first (depends on the wording), no_carry (7+5=12 -> units 2, tens 2+4=6: 62)
    assert ans.tolist() == [[72, 27, 62], [72, 45, 62]]
    assert P.cells([q, q2]).tolist() == [2, 3]  # carry; first larger only in "45+27="
    assert P.no_carry_sum(np.array([13]), np.array([21])).tolist() == [34]  # no carry: equals the sum


def test_policy_exact_accuracy_matches_sampling():
    task = P.PairedAdditionTask()
    pol = P.StrategyPolicy()
    probs = task.eval_problems(50)
    exact = pol.accuracy(probs)
    s, ans = pol.sample(probs, 4000, torch.Generator().manual_seed(0))
    emp = (ans == torch.tensor([p.target for p in probs])[:, None]).double().mean(1)
    assert torch.allclose(exact, emp, atol=0.04)
    assert 0.35 < float(pol.accuracy(task.eval_problems(300)).mean()) < 0.6  # a partially competent base


def test_shortcut_depends_on_the_wording():
    """The base answers the displayed first operand mostly when it is the larger one and the units carry."""
    pol = P.StrategyPolicy(offset_std=0.0)
    q, q2 = P.PairedAdditionTask.views(27, 45)  # "27+45=" cell 2, "45+27=" cell 3
    sh = pol.shortcut_share([q, q2])
    assert sh[1] > 0.4 > sh[0]


def test_logprob_is_log_softmax_of_the_strategy():
    pol = P.StrategyPolicy()
    probs = P.PairedAdditionTask().eval_problems(3)
    s = torch.tensor([[0, 3], [1, 2], [2, 2], [3, 0], [0, 0], [1, 1]])
    lp = pol.logprob(probs, s)
    ref = torch.log_softmax(pol.logits(probs), -1).gather(1, s)
    torch.testing.assert_close(lp, ref)
    lp.sum().backward()
    assert pol.theta.grad is not None and pol.theta.grad.abs().sum() > 0


def test_pair_reward_fn_on_strings():
    task = P.PairedAdditionTask()
    probs = [*task.views(27, 45)]  # answer 72
    answers = ["72", "27", "27", "", "72", "45", "45", "72"]  # G = 4: q has majority 27 (tie 72/27 -> first, 72)
    r_cr = P.pair_reward_fn("co_reward")(probs, answers, 4)
    r_sv = P.pair_reward_fn("self_voting")(probs, answers, 4)
    r_gt = P.pair_reward_fn("ground_truth")(probs, answers, 4)
    # q: answers 72, 27, 27, '' -> majority 27; q': 72, 45, 45, 72 -> tie 72/45, first seen 72
    assert r_sv.tolist() == [[0, 1, 1, 0], [1, 0, 0, 1]]
    assert r_cr.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert r_gt.tolist() == [[1, 0, 0, 0], [1, 0, 0, 1]]
    with pytest.raises(ValueError):
        P.pair_reward_fn("entropy")


@pytest.mark.slow
def test_pair_reward_fn_runs_in_rl_lm_train():
    """The paired task + reward_fn plug into rlbook.rl_lm.train (a tiny untrained Llama, 1 step)."""
    from rlbook import rl_lm
    from rlbook.losses import group_normalise, grpo_loss
    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    task = P.PairedAdditionTask()
    tok = char_tokenizer(task.alphabet)
    model = tiny_llama(len(tok), TinyConfig(hidden=16, layers=1, heads=2, intermediate=32, max_len=16), seed=0)

    def objective(logp, mask, r):
        return grpo_loss(logp, logp.detach(), group_normalise(r).flatten(), mask)[0]

    cfg = rl_lm.RLConfig(steps=1, prompts=2, group=3, max_new_tokens=4)
    seen = []

    def reward_fn(problems, answers, G):
        seen.append(len(problems))
        return P.pair_reward_fn("co_reward")(problems, answers, G)

    hist = rl_lm.train(model, tok, task, objective, cfg, reward_fn=reward_fn)
    assert len(hist.reward) == 1 and seen == [4]  # 2 pairs -> 4 adjacent problems
