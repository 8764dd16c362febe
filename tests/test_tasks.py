"""rlbook.tasks: the verifier, the enumeration of answers, the constrained-decoding mask."""

import itertools

import numpy as np
import pytest

from rlbook.tasks import AdditionTask, CountdownTask, eval_expression


@pytest.fixture(scope="module")
def task():
    return CountdownTask()


def test_eval_expression_precedence():
    assert eval_expression("2+3*4") == 14
    assert eval_expression("9-2*3-1") == 2
    assert eval_expression("2*3*4-5") == 19
    assert eval_expression("7") == 7
    for bad in ["", "+1", "1+", "1++2", "1/2", "12"]:
        with pytest.raises(ValueError):
            eval_expression(bad)


def test_eval_expression_matches_python_eval():
    for digits in itertools.permutations(range(1, 10), 3):
        for ops in itertools.product("+-*", repeat=2):
            s = f"{digits[0]}{ops[0]}{digits[1]}{ops[1]}{digits[2]}"
            assert eval_expression(s) == eval(s)


def test_addition_verify():
    t = AdditionTask(max_operand=9)
    (p,) = t.sample(1, np.random.default_rng(0))
    assert t.verify(p, str(p.numbers[0] + p.numbers[1]))
    assert not t.verify(p, str(p.numbers[0] + p.numbers[1] + 1))
    assert p.prompt == f"{p.numbers[0]}+{p.numbers[1]}="


def test_countdown_problem_set(task):
    idx = task._index
    # every (ordered tuple of 4 distinct digits, reachable target in 1..99)
    assert len(idx) == 87_912
    test_frac = idx[:, 2].mean()
    assert 0.08 < test_frac < 0.12
    p = task.problems("test")[0]
    assert len(p.prompt) == 8 and p.prompt[4] == ">" and p.prompt[-1] == "="


def test_correct_answers_equal_brute_force(task):
    rng = np.random.default_rng(1)
    for p in task.sample(20, rng, split="test"):
        fast = set(task.correct_answers(p))
        brute = {a for a in task.candidate_answers(p) if task.verify(p, a)}
        assert fast == brute and len(fast) >= 1
        assert len(task.candidate_answers(p)) == 24 * 27


def test_random_correct_answer_is_correct(task):
    rng = np.random.default_rng(2)
    for p in task.sample(50, rng):
        assert task.verify(p, task.random_correct_answer(p, rng))


def test_verify_rejects_malformed(task):
    p = task.sample(1, np.random.default_rng(3))[0]
    good = task.correct_answers(p)[0]
    d = [str(x) for x in p.numbers]
    assert task.verify(p, good)
    assert not task.verify(p, good + "1")  # too long
    assert not task.verify(p, good.replace(good[1], "/"))  # bad operator
    other = next(str(x) for x in range(1, 10) if str(x) not in d)
    assert not task.verify(p, other + good[1:])  # a digit not in the prompt


def test_logits_mask_allows_exactly_the_well_formed_answers(task):
    torch = pytest.importorskip("torch")
    from rlbook.models import char_tokenizer
    from rlbook.rollout import encode_prompts

    tok = char_tokenizer(task.alphabet)
    mask_fn = task.logits_mask(tok)
    p = task.sample(1, np.random.default_rng(4))[0]
    ids, _ = encode_prompts(tok, [p.prompt])

    # walk the tree of allowed continuations: it must produce exactly the 648 candidates + EOS
    def walk(prefix):
        comp = torch.tensor([prefix], dtype=torch.long).view(1, -1)
        allowed = mask_fn(ids, comp)[0].nonzero().flatten().tolist()
        if allowed == [tok.eos_token_id]:
            return ["".join(tok.convert_ids_to_tokens(prefix))]
        return [s for a in allowed for s in walk(prefix + [a])]

    leaves = walk([])
    assert sorted(leaves) == sorted(task.candidate_answers(p))
