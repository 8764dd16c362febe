"""rlbook's losses agree with TRL 1.16's own loss code on identical inputs.

Nothing of TRL's formulas is re-implemented here: each test builds the real TRL trainer
on a tiny local Llama (rlbook.models.tiny_llama + char_tokenizer, CPU config of
MEASURED.md), feeds a batch to the trainer's own ``compute_loss`` and compares the
result (loss, gradient on every parameter, logged metrics) with rlbook's loss on
per-token log-probs computed here from the same model's logits.

- DPO: ``trl/trainer/dpo_trainer.py``, ``DPOTrainer._compute_loss`` (``loss_type=["sigmoid"]``):
  sums per-token completion log-probs, then ``-logsigmoid(beta * (chosen_logratio -
  rejected_logratio)).mean()``.
- GRPO: ``trl/trainer/grpo_trainer.py``, ``GRPOTrainer._compute_loss`` (``loss_type="grpo"``,
  set explicitly: TRL 1.16's default is ``"dapo"``; ``use_bias_correction_kl=False``, set
  explicitly: TRL 1.16's default multiplies the k3 term by the ratio, which the GRPO paper
  does not) and the group advantage of ``GRPOTrainer._generate_and_score_completions``
  (``scale_rewards="group"``, ``trl.trainer.utils.nanstd``: Bessel-corrected, + 1e-4).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # also in conftest.py; kept for running this file alone

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import torch.nn.functional as F  # noqa: E402

from rlbook import losses as L  # noqa: E402
from rlbook.models import TinyConfig, char_tokenizer, load_pretrained, tiny_llama  # noqa: E402

ALPHABET = "abcdefghij +=0123456789"
CPU = dict(
    report_to="none",
    use_cpu=True,
    bf16=False,
    fp16=False,
    gradient_checkpointing=False,
    save_strategy="no",
    disable_tqdm=True,
    dataloader_num_workers=0,
    seed=0,
)


def token_logps(model, input_ids, attention_mask):
    """log pi(x_{t+1} | x_{<=t}) for every position: ``(N, T-1)``, computed from plain logits."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    return F.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a, b, tol=1e-6):
    assert a.keys() == b.keys() and len(a) > 0
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=tol, rtol=1e-4, msg=n)


# ----------------------------------------------------------------------------- DPO


@pytest.fixture(scope="module")
def dpo_trainer(tmp_path_factory):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok = char_tokenizer(ALPHABET)
    policy = tiny_llama(len(tok), TinyConfig(), seed=0, tokenizer=tok)
    ref = tiny_llama(len(tok), TinyConfig(), seed=1, tokenizer=tok)  # a different reference: nonzero ratios
    ds = Dataset.from_dict(
        {
            "prompt": ["1+2=", "3+4=", "ab", "9+9=", "c d"],
            "chosen": ["3", "7", "cd e", "18", "e"],
            "rejected": ["4", "77", "j", "1", "f g h"],
        }
    )
    args = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("dpo")),
        per_device_train_batch_size=5,
        beta=0.3,
        loss_type=["sigmoid"],
        **CPU,
    )
    return DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)


def test_dpo_loss_equals_trl_sigmoid(dpo_trainer):
    tr = dpo_trainer
    assert tr.loss_types == ["sigmoid"] and tr.beta == 0.3 and tr.ld_alpha is None
    assert tr.f_divergence_type == "reverse_kl" and not tr.use_weighting and not tr.precompute_ref_logps
    batch = next(iter(tr.get_train_dataloader()))  # TRL's collator: rows [chosen..., rejected...]
    model = tr.model
    model.train()
    model.zero_grad()
    trl_loss = tr.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = grads(model)

    model.zero_grad()
    ids, att = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"][:, 1:]  # (2N, T-1): completion tokens only
    logp = token_logps(model, ids, att)
    with torch.no_grad():
        logp_ref = token_logps(tr.ref_model, ids, att)
    lw, ll = logp.chunk(2)
    rw, rl = logp_ref.chunk(2)
    mw, ml = mask.chunk(2)
    loss, diag = L.dpo_token_loss(lw, rw, mw, ll, rl, ml, beta=tr.beta)
    loss.backward()

    torch.testing.assert_close(loss.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)
    assert abs(loss.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3  # not the trivial value
    assert_same_grads(grads(model), trl_grads)
    # the diagnostics are what TRL logs
    m = tr._metrics["train"]
    assert abs(diag["margin"].mean().item() - m["rewards/margins"][-1]) < 1e-5
    assert abs(diag["reward_w"].mean().item() - m["rewards/chosen"][-1]) < 1e-5
    assert abs(diag["reward_l"].mean().item() - m["rewards/rejected"][-1]) < 1e-5
    # and the same numbers from the sequence-level form
    seq, _ = L.dpo_loss(
        L.sequence_logprob(lw, mw), L.sequence_logprob(rw, mw), L.sequence_logprob(ll, ml), L.sequence_logprob(rl, ml), tr.beta
    )
    torch.testing.assert_close(seq.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- GRPO

G = 4
PROMPTS = ["1+2=", "3+4=", "ab"]
REWARDS = [0.0, 1.0, 1.0, 0.5, 2.0, 2.0, 3.0, -1.0, 1.0, 0.0, 0.0, 0.0]  # (B*G,), grouped by prompt


def reward_from_column(prompts, completions, r, **kwargs):
    """A reward function that returns the crafted reward stored in the dataset column ``r``."""
    return [float(x) for x in r]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    # GRPOTrainer with beta > 0 rebuilds its reference from the policy's config path: save one
    d = tmp_path_factory.mktemp("tiny")
    tok = char_tokenizer(ALPHABET)
    tiny_llama(len(tok), TinyConfig(), seed=0, tokenizer=tok).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


_GRPO = {}


def grpo_trainer(tiny_path, beta):
    key = (tiny_path, beta)
    if key not in _GRPO:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        model, tok = load_pretrained(tiny_path)
        args = GRPOConfig(
            output_dir=os.path.join(tiny_path, f"grpo{beta}"),
            per_device_train_batch_size=len(REWARDS),
            num_generations=G,
            max_completion_length=5,
            loss_type="grpo",  # TRL 1.16 defaults to "dapo"
            scale_rewards="group",
            beta=beta,
            epsilon=0.2,
            epsilon_high=0.28,  # asymmetric clip (DAPO's values) to check eps_low / eps_high are not swapped
            temperature=1.0,
            # TRL 1.16 defaults to True: the k3 term is multiplied by the ratio pi/pi_old (DeepSeek-V3.2's
            # unbiased-KL correction). The GRPO paper (DeepSeekMath eq. 3) and rlbook use the plain k3.
            use_bias_correction_kl=False,
            **CPU,
        )
        ds = Dataset.from_dict({"prompt": PROMPTS, "r": [0.0] * len(PROMPTS)})
        _GRPO[key] = GRPOTrainer(
            model=model, reward_funcs=reward_from_column, args=args, train_dataset=ds, processing_class=tok
        )
    return _GRPO[key]


def trl_rollout(tr):
    """TRL's own generation + scoring of one batch (each prompt repeated G times, as its sampler does)."""
    rows = [{"prompt": p, "r": r} for p, r in zip([p for p in PROMPTS for _ in range(G)], REWARDS)]
    torch.manual_seed(0)
    with torch.no_grad():
        return tr._generate_and_score_completions(rows)


def test_group_normalise_equals_trl_advantages(tiny_path):
    tr = grpo_trainer(tiny_path, 0.0)
    out = trl_rollout(tr)
    r = torch.tensor(REWARDS).view(len(PROMPTS), G)  # (B, G)
    torch.testing.assert_close(out["advantages"], L.group_normalise(r).reshape(-1), atol=1e-6, rtol=1e-5)
    assert out["advantages"].abs().max() > 1.0  # scaled by the group std, not only centred


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_equals_trl_grpo(tiny_path, beta):
    tr = grpo_trainer(tiny_path, beta)
    assert tr.loss_type == "grpo" and tr.beta == beta and tr.importance_sampling_level == "token"
    assert (tr.epsilon_low, tr.epsilon_high) == (0.2, 0.28)
    out = trl_rollout(tr)
    model = tr.model
    model.eval()  # mode "eval": TRL's loss has no gradient-accumulation normaliser; dropout is 0 anyway

    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    tc = out["completion_ids"].shape[1]
    # crafted: unequal completion lengths (trailing tokens masked, as after an EOS) ...
    lens = torch.tensor([tc, 1, 3, tc, 2, tc, 4, 1, tc, 3, 2, 5]).clamp(max=tc)
    mask = (torch.arange(tc)[None] < lens[:, None]).long()
    att = torch.cat([out["prompt_mask"], mask], 1)
    with torch.no_grad():
        logp0 = token_logps(model, ids, att)[:, -tc:]
    # ... an old policy far enough from the current one that both clip sides are active ...
    gen = torch.Generator().manual_seed(1)
    logp_old = logp0 + 0.5 * torch.randn(logp0.shape, generator=gen)
    # ... and a reference different from the policy, so that the k3 term is not 0
    logp_ref = logp0 + 0.5 * torch.randn(logp0.shape, generator=gen)
    inputs = {
        "prompt_ids": out["prompt_ids"],
        "prompt_mask": out["prompt_mask"],
        "completion_ids": out["completion_ids"],
        "completion_mask": mask,
        "advantages": out["advantages"],
        "old_per_token_logps": logp_old,
        "num_items_in_batch": mask.sum(),
    }
    if beta:
        inputs["ref_per_token_logps"] = logp_ref

    model.zero_grad()
    trl_loss = tr.compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = grads(model)

    model.zero_grad()
    logp = token_logps(model, ids, att)[:, -tc:]  # (N, T) completion tokens
    loss, diag = L.grpo_loss(
        logp, logp_old, out["advantages"], mask, eps_low=0.2, eps_high=0.28, beta=beta, logp_ref=logp_ref
    )
    loss.backward()

    torch.testing.assert_close(loss.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)
    assert_same_grads(grads(model), trl_grads)
    m = tr._metrics["eval"]
    assert 0.05 < diag["clip_frac"].item() < 0.95  # clipping is active, not everywhere
    assert abs(diag["clip_frac"].item() - m["clip_ratio/region_mean"][-1]) < 1e-6
    assert m["clip_ratio/low_mean"][-1] > 0 and m["clip_ratio/high_mean"][-1] > 0  # both sides clip
    if beta:
        assert diag["kl"].item() > 1e-3
        assert abs(diag["kl"].item() - m["kl"][-1]) < 1e-6
    # the aggregation matters: TRL's default "dapo"/"bnpo" token mean gives another number here
    bnpo = -(torch.min(torch.exp(logp - logp_old) * out["advantages"][:, None],
                       torch.clamp(torch.exp(logp - logp_old), 0.8, 1.28) * out["advantages"][:, None]))
    if beta:
        bnpo = bnpo + beta * L.kl_k3(logp, logp_ref)
    assert abs(L.masked_mean(bnpo, mask).item() - loss.item()) > 1e-4
    if beta:
        # and TRL's default KL (ratio-corrected, use_bias_correction_kl=True) is not the paper's
        tr.args.use_bias_correction_kl = True
        try:
            with torch.no_grad():
                trl_default = tr.compute_loss(model, inputs)
        finally:
            tr.args.use_bias_correction_kl = False
        assert abs(trl_default.item() - loss.item()) > 1e-4
