"""rlbook.tasks.precise_if: the math + precise-IF mixture and its verifier."""

import numpy as np
import pytest
import torch

from rlbook.tasks.precise_if import PreciseIFTask, format_answer


def test_format_answer():
    assert format_answer(42) == "42"
    assert format_answer(42, "R") == "24"
    assert format_answer(7, "R") == "7"
    assert format_answer(40, "R") == "04"
    assert format_answer(42, "P") == "042"
    assert format_answer(7, "P") == "007"
    with pytest.raises(ValueError):
        format_answer(3, "X")


def test_problems_and_verifier():
    t = PreciseIFTask()
    p = t.make(17, 25)
    assert (p.prompt, p.skill, p.answer) == ("M17+25=", "math", "42")
    q = t.make(7, 5, "R")
    assert (q.prompt, q.skill, q.answer) == ("R07+05=", "if", "21")
    assert t.verify(q, "21") and not t.verify(q, "12")  # the unreversed sum fails the instruction
    r = t.make(3, 4, "P")
    assert t.verify(r, "007") and not t.verify(r, "7")
    assert t.follows_format(r, "123") and not t.follows_format(r, "12")
    assert t.follows_format(q, "99") and not t.follows_format(q, "9")


def test_sampling_mixture_and_split():
    t = PreciseIFTask(if_fraction=0.5)
    ps = t.sample(2000, np.random.default_rng(0))
    assert all(len(p.prompt) == 7 for p in ps)
    share = np.mean([p.skill == "if" for p in ps])
    assert 0.45 < share < 0.55
    train = {tuple(x) for x in t.pairs("train")}
    test = {tuple(x) for x in t.pairs("test")}
    assert not train & test and len(train) + len(test) == 50 * 50
    assert 0.15 < len(test) / 2500 < 0.25
    ev = t.eval_problems(30, "if")
    assert all(p.skill == "if" and p.numbers in test for p in ev)
    assert ev == t.eval_problems(30, "if")  # fixed
    with pytest.raises(ValueError):
        PreciseIFTask(max_operand=100)


def test_answer_ids_and_mask():
    from rlbook.models import char_tokenizer
    from rlbook.rollout import encode_prompts

    t = PreciseIFTask()
    tok = char_tokenizer(t.alphabet)
    ps = [t.make(3, 4), t.make(50 - 1, 49, "P")]
    ids, m = t.answer_ids(tok, ps)
    assert ids.shape == (2, 4) and m.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ids[0, 1] == tok.eos_token_id and ids[0, 2] == tok.pad_token_id
    mask_fn = t.logits_mask(tok)
    prompt, _ = encode_prompts(tok, [p.prompt for p in ps])
    digit = tok.convert_tokens_to_ids("5")
    m0 = mask_fn(prompt, ids[:, :0])
    assert m0[:, digit].all() and not m0[:, tok.eos_token_id].any()  # no empty answer
    m1 = mask_fn(prompt, ids[:, :1])
    assert m1[:, digit].all() and m1[:, tok.eos_token_id].all()
    m2 = mask_fn(prompt, ids[:, :2])  # row 0 ended with EOS: only pad
    assert m2[0].sum() == 1 and m2[0, tok.pad_token_id]
    m3 = mask_fn(prompt, ids[:, :3])
    assert m3[1].sum() == 1 and m3[1, tok.eos_token_id]  # three digits: EOS forced
    assert m3.sum(1).min() >= 1 and torch.is_tensor(m3)
