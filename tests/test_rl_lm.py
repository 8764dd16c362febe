"""The shared RLVR loop: off-policy epochs (logp_old), reference log-probs, custom rewards."""

import copy

import numpy as np
import pytest
import torch

from rlbook import rl_lm
from rlbook.losses import masked_mean


@pytest.fixture(scope="module")
def tiny_lm():
    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama
    from rlbook.tasks import CountdownTask

    task = CountdownTask(n_digits=3)
    tok = char_tokenizer(task.alphabet)
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=32), seed=0, tokenizer=tok)
    return model, tok, task


def _cfg(task, **kw):
    return rl_lm.RLConfig(steps=2, prompts=3, group=4, lr=1e-2, max_new_tokens=task.answer_len + 1, seed=0, **kw)


def test_config_refuses_bad_values():
    for bad in ({"epochs": 0}, {"group": 0}, {"steps": 1.5}, {"lr": 0.0}):
        with pytest.raises(ValueError):
            rl_lm.RLConfig(**bad)


def test_logp_old_equals_logp_on_the_first_epoch_then_differs(tiny_lm):
    model, tok, task = tiny_lm
    gaps = []

    def objective(logp, mask, r, logp_old):
        assert not logp_old.requires_grad and logp_old.shape == logp.shape
        gaps.append((logp.detach() - logp_old).abs().max().item())
        adv = (r - r.mean(-1, keepdim=True)).flatten()[:, None]  # (N, 1)
        return -masked_mean(torch.exp(logp - logp_old) * adv, mask)

    def reward_fn(problems, answers, G):  # rewards that vary within a group, so the advantage is not 0
        return torch.arange(len(problems) * G, dtype=torch.float32).view(len(problems), G) % 2

    rl_lm.train(copy.deepcopy(model), tok, task, objective, _cfg(task, epochs=3), mask_fn=task.logits_mask(tok),
                reward_fn=reward_fn)
    assert len(gaps) == 6
    assert gaps[0] == 0.0 and gaps[3] == 0.0  # each fresh batch starts on-policy
    assert gaps[1] > 0.0 and gaps[2] > 0.0  # later epochs are off-policy


def test_on_policy_objective_gets_no_extras_and_epochs_one_is_the_old_loop(tiny_lm):
    model, tok, task = tiny_lm
    calls = []

    def objective(logp, mask, r):
        calls.append(1)
        return -(logp * mask).sum() * 0.0 - (logp * mask * (r.flatten()[:, None] - 0.5)).sum() / mask.sum()

    h = rl_lm.train(copy.deepcopy(model), tok, task, objective, _cfg(task), mask_fn=task.logits_mask(tok))
    assert len(calls) == 2 and len(h.reward) == len(h.loss) == len(h.entropy) == 2


def test_reference_log_probs_and_reward_fn(tiny_lm):
    model, tok, task = tiny_lm
    seen = []

    def objective(logp, mask, r, logp_ref):
        seen.append((logp.detach() - logp_ref).abs().max().item())
        assert torch.all(r == 7.0)
        return -masked_mean(logp, mask)

    def reward_fn(problems, answers, G):
        assert len(answers) == len(problems) * G
        return np.full((len(problems), G), 7.0)

    with pytest.raises(ValueError, match="ref_model"):
        rl_lm.train(copy.deepcopy(model), tok, task, objective, _cfg(task), mask_fn=task.logits_mask(tok))
    h = rl_lm.train(copy.deepcopy(model), tok, task, objective, _cfg(task), mask_fn=task.logits_mask(tok),
                    ref_model=copy.deepcopy(model), reward_fn=reward_fn)
    assert seen[0] == 0.0 and seen[1] > 0.0  # the policy moved away from the frozen reference
    assert h.reward == [7.0, 7.0]


def test_objective_must_be_callable(tiny_lm):
    model, tok, task = tiny_lm
    with pytest.raises(TypeError, match="callable"):
        rl_lm.train(model, tok, task, "grpo", _cfg(task))
