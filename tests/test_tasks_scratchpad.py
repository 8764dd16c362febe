"""rlbook.tasks.scratchpad: column-addition traces, the verifier, the noisy teacher."""

import numpy as np
import pytest

from rlbook.tasks import scratchpad as sp


def test_gold_trace_by_hand():
    assert sp.gold_trace(sp.AddProblem(47, 38)) == "7+8=15;4+3+1=8"
    assert sp.gold_trace(sp.AddProblem(99, 99)) == "9+9=18;9+9+1=19"
    assert sp.gold_trace(sp.AddProblem(147, 258), 3) == "7+8=15;4+5+1=10;1+2+1=4"


def test_answer_of_reads_the_scratchpad():
    assert sp.answer_of("7+8=15;4+3+1=8") == "85"
    assert sp.answer_of("9+9=18;9+9+1=19") == "198"
    assert sp.answer_of("7+8=15;4+3+1=") == ""  # malformed: no sum
    assert sp.answer_of("garbage") == ""


@pytest.mark.parametrize("n", [1, 2, 3])
def test_gold_traces_verify_on_every_problem(n):
    task = sp.ScratchpadAddition(n)
    for split in ("train", "test"):
        k = min(200, len(task._split[split]))
        for p in task.sample(k, np.random.default_rng(0), split):
            assert task.verify(p, task.gold(p)) and sp.trace_ok(p, task.gold(p), n)


def test_wrong_traces_always_fail_the_verifier():
    task, rng = sp.ScratchpadAddition(3), np.random.default_rng(1)
    n_made = 0
    for p in task.sample(400, rng):
        for e in sp.ERRORS:
            try:
                w = sp.wrong_trace(p, e, rng, 3)
            except ValueError:
                continue
            n_made += 1
            assert not task.verify(p, w) and not sp.trace_ok(p, w, 3), (p, e, w)
            assert set(w) <= set(sp.ALPHABET) and len(w) <= task.max_trace_len
    assert n_made > 900


def test_error_types_by_hand():
    rng = np.random.default_rng(0)
    assert sp.wrong_trace(sp.AddProblem(47, 38), "drop_carry", rng) == "7+8=15;4+3=7"
    assert sp.wrong_trace(sp.AddProblem(41, 32), "extra_carry", rng) == "1+2=3;4+3+1=8"
    with pytest.raises(ValueError):
        sp.wrong_trace(sp.AddProblem(41, 32), "drop_carry", rng)
    with pytest.raises(ValueError):
        sp.wrong_trace(sp.AddProblem(41, 32), "nonsense", rng)


def test_splits_are_disjoint_fixed_and_sized():
    task = sp.ScratchpadAddition(2)
    tr = {tuple(x) for x in task._split["train"]}
    te = {tuple(x) for x in task._split["test"]}
    assert not tr & te and len(tr) + len(te) == 90 * 90
    assert 0.15 < len(te) / (len(tr) + len(te)) < 0.25
    with pytest.raises(ValueError):
        task.sample(len(te) + 1, np.random.default_rng(0), "test")


def test_teacher_pairs_have_one_positive_and_one_negative():
    task = sp.ScratchpadAddition(3)
    teacher = sp.NoisyTeacher(task, p_correct=0.6)
    rng = np.random.default_rng(3)
    pairs, drawn = teacher.pairs(task.sample(300, rng), rng)
    assert len(pairs) == 300 and drawn >= 600
    for pr in pairs:
        assert task.verify(pr.problem, pr.positive) and not task.verify(pr.problem, pr.negative)
        assert pr.error in sp.ERRORS
    # the teacher's accuracy over its samples is p_correct
    acc = np.mean([teacher.sample(p, rng)[1] is None for p in task.sample(2000, rng)])
    assert abs(acc - 0.6) < 0.04


def test_teacher_is_deterministic_given_the_seed():
    task = sp.ScratchpadAddition(2)
    t = sp.NoisyTeacher(task)
    a = t.pairs(task.sample(20, np.random.default_rng(5)), np.random.default_rng(6))
    b = t.pairs(task.sample(20, np.random.default_rng(5)), np.random.default_rng(6))
    assert a == b


def test_bad_arguments():
    with pytest.raises(ValueError):
        sp.ScratchpadAddition(0)
    with pytest.raises(ValueError):
        sp.NoisyTeacher(sp.ScratchpadAddition(2), p_correct=1.0)
