"""rlbook.rollout: sampling, log-probs under constrained decoding, groups, pass@k."""

import itertools
from math import comb

import numpy as np
import pytest
import torch

from rlbook import rollout
from rlbook.models import TinyConfig, char_tokenizer, tiny_llama
from rlbook.tasks import CountdownTask


@pytest.fixture(scope="module")
def setup():
    task = CountdownTask()
    tok = char_tokenizer(task.alphabet)
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=32), seed=0, tokenizer=tok)
    problems = task.sample(4, np.random.default_rng(0), split="test")
    ids, am = rollout.encode_prompts(tok, [p.prompt for p in problems])
    return task, tok, model, problems, ids


def brute_pass_at_k(n, c, k):
    """Fraction of the k-subsets of n samples (c correct) that contain a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_subset_enumeration():
    n = 10
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert rollout.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
            assert rollout.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_vectorised_and_checks():
    out = rollout.pass_at_k(np.array([10, 10, 5]), np.array([0, 10, 1]), 2)
    assert out.shape == (3,)
    assert out[0] == 0.0 and out[1] == 1.0 and out[2] == pytest.approx(1 - comb(4, 2) / comb(5, 2))
    with pytest.raises(ValueError):
        rollout.pass_at_k(3, 1, 4)


def test_pass_at_k_unbiased_for_exact():
    # E over Binomial(n, p) draws of the estimator equals 1-(1-p)^k exactly
    n, p, k = 12, 0.17, 5
    expect = sum(comb(n, c) * p**c * (1 - p) ** (n - c) * rollout.pass_at_k(n, c, k) for c in range(n + 1))
    assert expect == pytest.approx(float(rollout.pass_at_k_exact(p, k)), abs=1e-12)


def test_encode_decode_round_trip(setup):
    task, tok, model, problems, ids = setup
    assert ids.shape == (4, 9) and bool((ids[:, 0] == tok.bos_token_id).all())
    comp = torch.tensor([tok.convert_tokens_to_ids(list("1+2")) + [tok.eos_token_id, tok.pad_token_id]])
    assert rollout.decode(tok, comp) == ["1+2"]


def test_constrained_samples_are_well_formed(setup):
    task, tok, model, problems, ids = setup
    g = rollout.group_sample(model, ids, 5, task.answer_len + 1, tok.eos_token_id, tok.pad_token_id,
                             task.logits_mask(tok), generator=torch.Generator().manual_seed(0))
    assert g.completion_ids.shape == (20, task.answer_len + 1) and g.B == 4 and g.G == 5
    assert bool((g.completion_ids[:, -1] == tok.eos_token_id).all()) and bool(g.mask.all())
    answers = rollout.decode(tok, g.completion_ids, g.mask)
    for i, a in enumerate(answers):
        assert a in task.candidate_answers(problems[i // 5])


def test_sampling_is_deterministic_given_generator(setup):
    task, tok, model, problems, ids = setup
    mf = task.logits_mask(tok)
    a, _ = rollout.sample(model, ids, 8, tok.eos_token_id, tok.pad_token_id, mf, generator=torch.Generator().manual_seed(3))
    b, _ = rollout.sample(model, ids, 8, tok.eos_token_id, tok.pad_token_id, mf, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_constrained_probabilities_sum_to_one(setup):
    # the masked softmax defines a distribution over the 648 well-formed answers of a prompt
    task, tok, model, problems, ids = setup
    p = problems[0]
    cands = task.candidate_answers(p)
    comp = torch.tensor([tok.convert_tokens_to_ids(list(a)) + [tok.eos_token_id] for a in cands])
    logp = rollout.token_logprobs(model, ids[:1].expand(len(cands), -1), comp, task.logits_mask(tok))
    assert float(logp.detach().sum(-1).exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_token_logprobs_match_sampling_distribution(setup):
    # log-probs from one forward pass equal step-by-step log-softmax of the masked logits
    task, tok, model, problems, ids = setup
    mf = task.logits_mask(tok)
    comp, mask = rollout.sample(model, ids, 8, tok.eos_token_id, tok.pad_token_id, mf, generator=torch.Generator().manual_seed(1))
    logp, ent = rollout.token_logprobs(model, ids, comp, mf, with_entropy=True)
    with torch.no_grad():
        for t in range(comp.shape[1]):
            logits = model(input_ids=torch.cat([ids, comp[:, :t]], 1)).logits[:, -1]
            z = logits.masked_fill(~mf(ids, comp[:, :t]), float("-inf"))
            ref = torch.log_softmax(z, -1).gather(1, comp[:, t : t + 1]).squeeze(1)
            torch.testing.assert_close(logp[:, t].detach(), ref, atol=1e-5, rtol=1e-5)
    ent = ent.detach()
    assert bool((ent >= -1e-6).all()) and float(ent[:, -1].abs().max()) < 1e-6  # EOS slot is forced


def test_unconstrained_sampling_stops_at_eos(setup):
    task, tok, model, problems, ids = setup
    comp, mask = rollout.sample(model, ids, 12, tok.eos_token_id, tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    for row, m in zip(comp.tolist(), mask.tolist()):
        if tok.eos_token_id in row:
            j = row.index(tok.eos_token_id)
            assert m[: j + 1] == [1] * (j + 1) and all(x == 0 for x in m[j + 1 :])
            assert all(x == tok.pad_token_id for x in row[j + 1 :])
