"""rlbook.tasks.conv_search: BM25, ranks, the official rank-incentive reward and format check, conversations."""

import math

import numpy as np
import pytest

from rlbook.tasks import conv_search as cs


def _official_cal_reward(rank):  # verbatim logic of rewrite_r1.py cal_reward
    if 1 <= rank <= 10:
        return (-1 / 9) * rank + (19 / 9)
    elif 10 < rank <= 100:
        return (-1 / 90) * rank + (10 / 9)
    return 0.0


def test_rank_incentive_equals_the_official_function():
    ks = np.arange(-2, 130)
    np.testing.assert_allclose(cs.rank_incentive(ks), [_official_cal_reward(k) for k in ks], atol=0, rtol=0)
    assert cs.rank_incentive(1) == pytest.approx(2) and cs.rank_incentive(10) == pytest.approx(1)
    assert cs.rank_incentive(11) == pytest.approx(89 / 90) and cs.rank_incentive(100) == pytest.approx(0)
    assert cs.rank_incentive(101) == 0


def test_format_check_and_text_reward():
    good = "<think>the company is iron zorvat</think>\n<rewrite>who founded iron zorvat</rewrite>"
    assert cs.format_ok(good) and cs.parse_rewrite(good) == "who founded iron zorvat"
    for bad in ("<rewrite>x</rewrite>", "<think>a</think><rewrite>x</rewrite>", good + " trailing",
                "<think>a</think>\n<rewrite>x"):
        assert not cs.format_ok(bad)
        assert cs.text_reward(bad, 1) == -0.1
    assert cs.text_reward(good, 1) == pytest.approx(2.0) and cs.text_reward(good, 300) == 0.0
    assert cs.text_reward(good, None) == -0.1


def test_sparse_metrics():
    np.testing.assert_allclose(cs.recall_at([1, 2, 10, 11], 10), [1, 1, 1, 0])
    np.testing.assert_allclose(cs.mrr_at([1, 2, 3, 4], 3), [1, 0.5, 1 / 3, 0])


def test_bm25_by_hand():
    docs = [["a", "b"], ["a", "c", "c"], ["d"]]
    bm = cs.BM25(docs, k1=0.9, b=0.4)
    D, avg = 3, 2.0
    idf_c = math.log(1 + (D - 1 + 0.5) / (1 + 0.5))
    tf, dl = 2, 3
    expect = idf_c * tf * 1.9 / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / avg))
    assert bm.scores([["c"]])[0, 1] == pytest.approx(expect)
    assert bm.scores([["zzz"]]).sum() == 0
    # pessimistic ties: "a" ties docs 0 and 1 only through tf/length; unknown query -> rank D + 1
    assert bm.rank_of([["zzz"]], np.array([0]))[0] == 4
    assert bm.rank_of([["c"]], np.array([1]))[0] == 1


def test_ranks_narrow_with_the_entity_name():
    task = cs.ConvSearchTask(seed=0)
    assert len(task.passages) == 400 and len(task.entities) == 80
    convs = task.sample(30, np.random.default_rng(0))
    n1 = 0
    for c in convs:
        first, second = task.entities[c.entity].split()
        r = task.ranks([c.query, f"{c.query} {first}", f"{c.query} {first} {second}"], [c] * 3)
        # a rival passage of another company also names this one: the full name may tie a few of them
        assert r[0] >= 10 and r[2] <= min(r[1], 10) and r[1] < r[0], (c, r)
        n1 += int(r[2] == 1)
        assert any(task.entities[c.entity] in t for t in c.history)  # the history names the company
    assert n1 >= 20  # usually the full name finds the gold passage first


def test_split_is_disjoint_and_fixed():
    task = cs.ConvSearchTask(seed=0)
    tr = {tuple(x) for x in task._split["train"]}
    te = {tuple(x) for x in task._split["test"]}
    assert not tr & te and len(tr) + len(te) == 400 and 0.15 < len(te) / 400 < 0.25
    test_gold = {task._gold[(e, cs.ASPECTS[a])] for e, a in te}
    assert all(c.gold in test_gold for c in task.sample(50, np.random.default_rng(1), "test"))
