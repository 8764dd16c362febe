"""rlbook.tasks.explain: prompts, chains of thought in two notations, the verifier, the splits."""

import numpy as np
import pytest

from rlbook.tasks import explain as X


def test_formats_and_lengths():
    p = X.Problem(47, 85)
    assert p.answer == "0132" and not p.hard and X.Problem(100, 0).hard
    assert p.question() == "047+085|????=" and p.rationalisation() == "047+085|0132="
    assert len(p.question()) == len(p.rationalisation()) == X.PROMPT_LEN
    assert X.column_sums(p) == [12, 13, 1]
    assert X.solution(p) == "12,13,01,>0132" and X.solution(p, "expert") == "21;31;10;>0132"
    assert len(X.solution(p)) == len(X.solution(p, "expert")) == X.COMPLETION_LEN
    with pytest.raises(ValueError):
        X.cot(p, "latex")


def test_column_sums_reconstruct_the_answer():
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, 1000, size=(200, 2)):
        p = X.Problem(int(a), int(b))
        s = X.column_sums(p)
        digits = [x % 10 for x in s]
        assert int(str(s[-1] // 10) + "".join(map(str, digits[::-1]))) == a + b


def test_verifier_checks_only_the_answer():
    p = X.Problem(999, 999)
    assert p.answer == "1998"
    assert X.verify(p, X.solution(p)) and X.verify(p, X.solution(p, "expert"))
    assert X.verify(p, "00,00,00,>1998")  # a wrong chain of thought, right answer: reward 1 (outcome reward)
    assert not X.cot_is_correct(p, "00,00,00,>1998") and X.cot_is_correct(p, X.solution(p))
    assert not X.verify(p, "18,19,19,>1997") and not X.verify(p, "18,19,19,1998")
    assert X.answer_of("abc") is None


def test_sample_levels_and_splits():
    rng = np.random.default_rng(1)
    assert all(p.hard for p in X.sample(50, rng, "hard"))
    assert not any(p.hard for p in X.sample(50, rng, "easy"))
    assert all(X.is_test(p) for p in X.sample(30, rng, "all", "test"))
    assert not any(X.is_test(p) for p in X.sample(30, rng, "all", "train"))
    frac = np.mean([X.is_test(X.Problem(a, b)) for a in range(0, 1000, 7) for b in range(0, 1000, 3)])
    assert abs(frac - 0.2) < 0.01
    with pytest.raises(ValueError):
        X.sample(3, rng, "medium")
