"""rlbook.tasks.critique: the addition task, the persistent-failure subset and the rule-based critic."""

import numpy as np
import pytest

from rlbook.tasks.critique import KINDS, CritiqueAdditionTask, consistent, critique, refinement_prompt

T = CritiqueAdditionTask()


def test_problems_and_persistent_subset():
    assert len(T.problems()) == 90 * 90
    pers = T.problems(persistent=True)
    # units carry (45 of 100 digit pairs) and tens digits summing to 9 (8 of 81 pairs of 1..9)
    assert len(pers) == 8100 * 45 // 100 * 8 // 81 == 360
    assert all(p.target >= 100 and p.target % 100 < 10 for p in pers)
    assert T.is_persistent(T.problem(45, 55)) and not T.is_persistent(T.problem(47, 38))
    assert len(T.problems(persistent=False)) == 8100 - 360


def test_verify_and_sample():
    p = T.problem(47, 38)
    assert p.prompt == "47+38=" and T.verify(p, "085") and not T.verify(p, "85")
    s = T.sample(5, np.random.default_rng(0), persistent=True)
    assert len({q.prompt for q in s}) == 5 and all(T.is_persistent(q) for q in s)


def test_dropped_carries_and_candidates():
    p = T.problem(45, 55)
    assert T.dropped_carry_answers(p) == ["090", "000"]
    c = T.candidates(p, 12)
    assert c[0] == "100" and len(set(c)) == 12 and all(len(a) == 3 for a in c)
    assert T.dropped_carry_answers(T.problem(47, 38)) == ["075"]
    with pytest.raises(ValueError):
        T.candidates(p, 40)


def test_critique_texts():
    p = T.problem(45, 55)
    assert critique(p, "090", "indicative").text == "wrong"
    assert critique(p, "090", "ground_truth").text == "wrong; the answer is 100"
    cot = critique(p, "090", "cot")
    assert cot.text == "wrong: digit 1 should be 0 (carry)" and (cot.digit, cot.value) == (1, "0")
    assert critique(p, "101", "cot").text == "wrong: digit 0 should be 0"  # not a missed carry
    for kind in KINDS:
        c = critique(p, "100", kind)
        assert c.correct and c.text == "correct"
    with pytest.raises(ValueError):
        critique(p, "090", "hint")


def test_consistency_sets():
    p = T.problem(45, 55)
    cands = T.candidates(p)
    allowed = {k: [y for y in cands if consistent(critique(p, "090", k), y)] for k in KINDS}
    assert allowed["indicative"] == [y for y in cands if y != "090"]
    assert allowed["ground_truth"] == ["100"]
    assert allowed["cot"] == ["100", "000", "200"]
    # every informative critique of any wrong answer leaves the correct answer possible
    rng = np.random.default_rng(0)
    for q in T.sample(40, rng):
        for y in T.candidates(q)[1:]:
            for k in KINDS:
                assert consistent(critique(q, y, k), T.candidates(q)[0])
            assert not consistent(critique(q, y, "indicative"), y)


def test_refinement_prompt():
    p = T.problem(47, 38)
    c = critique(p, "075", "cot")
    s = refinement_prompt(p, "075", c)
    assert s == "47+38=|075|wrong: digit 1 should be 8 (carry)>"
    assert set(s) <= set(T.alphabet)
