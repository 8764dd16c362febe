"""The ExPO chapter: the ExP-GRPO loss and its family-tree edges, the tiny policy, the loop, the full-profile dry run."""

import numpy as np
import pytest
import torch

from rlbook import hub, math_data
from rlbook.config import from_params
from rlbook.experiments import expo_self_explanation as E
from rlbook.losses.common import grad_wrt, group_normalise
from rlbook.losses.expo import exp_grpo_loss, linear_anneal
from rlbook.losses.grpo import grpo_loss
from rlbook.losses.sft import sft_loss
from rlbook.tasks import explain as X


def _batch(seed=0, B=3, G=4, T=5, Tp=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B * G, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B * G, T, generator=g) > 0.2).double()
    mask[:, 0] = 1
    r = (torch.rand(B, G, generator=g) > 0.5).double()
    r[0] = 0.0  # an all-zero group
    logp_pos = -torch.rand(B, Tp, generator=g, dtype=torch.float64)
    mask_pos = torch.ones(B, Tp, dtype=torch.float64)
    return logp, mask, r, logp_pos, mask_pos


def _grad(fn, *xs):  # always a list, one gradient per input
    g = grad_wrt(fn, *xs)
    return list(g) if isinstance(g, tuple) else [g]


def test_edge_exp_grpo_beta0_is_grpo():
    """ExP-GRPO with beta = 0 is GRPO: same loss value and the same gradient (and no gradient to the positives)."""
    logp, mask, r, logp_pos, mask_pos = _batch()
    adv = group_normalise(r).flatten()
    ref, _ = grpo_loss(logp, logp.detach(), adv, mask)
    got, _ = exp_grpo_loss(logp, logp.detach(), adv, mask, logp_pos, mask_pos, beta=0.0)
    assert torch.equal(ref, got)
    g1 = _grad(lambda x: grpo_loss(x, x.detach(), adv, mask)[0], logp)[0]
    g2, gp = _grad(lambda x, y: exp_grpo_loss(x, x.detach(), adv, mask, y, mask_pos, beta=0.0)[0], logp, logp_pos)
    torch.testing.assert_close(g1, g2, atol=0, rtol=0)
    assert gp is None or torch.count_nonzero(gp) == 0


def test_edge_all_zero_group_grpo_zero_exp_grpo_is_sft():
    """On all-zero groups GRPO's gradient is exactly 0; ExP-GRPO's is beta times the SFT gradient of the self-explanation."""
    logp, mask, _, logp_pos, mask_pos = _batch(seed=1)
    r = torch.zeros(3, 4, dtype=torch.float64)  # every group all wrong: the hard-prompt regime
    adv = group_normalise(r).flatten()
    assert torch.count_nonzero(adv) == 0
    g_grpo = _grad(lambda x: grpo_loss(x, x.detach(), adv, mask)[0], logp)[0]
    assert torch.count_nonzero(g_grpo) == 0
    beta = 0.37
    g_x, g_pos = _grad(lambda x, y: exp_grpo_loss(x, x.detach(), adv, mask, y, mask_pos, beta=beta)[0], logp, logp_pos)
    assert torch.count_nonzero(g_x) == 0
    g_sft = _grad(lambda y: sft_loss(y, mask_pos), logp_pos)[0]
    torch.testing.assert_close(g_pos, beta * g_sft, atol=1e-15, rtol=0)


def test_exp_grpo_value_and_masked_positives():
    """loss = GRPO + beta * token-mean NLL over the kept positives; a row with mask 0 contributes nothing."""
    logp, mask, r, logp_pos, mask_pos = _batch(seed=2)
    adv = group_normalise(r).flatten()
    mask_pos[1] = 0.0
    loss, diag = exp_grpo_loss(logp, logp.detach(), adv, mask, logp_pos, mask_pos, beta=0.5)
    grpo, _ = grpo_loss(logp, logp.detach(), adv, mask)
    kept = logp_pos[[0, 2]]
    torch.testing.assert_close(loss, grpo - 0.5 * kept.mean(), atol=1e-12, rtol=0)
    torch.testing.assert_close(diag["nll_pos"], -kept.mean(), atol=1e-12, rtol=0)
    logp_pos2 = logp_pos.clone()
    logp_pos2[1] = -100.0  # the masked row's values do not matter
    loss2, _ = exp_grpo_loss(logp, logp.detach(), adv, mask, logp_pos2, mask_pos, beta=0.5)
    torch.testing.assert_close(loss, loss2, atol=0, rtol=0)
    with pytest.raises(ValueError):
        exp_grpo_loss(logp, logp.detach(), adv, mask, logp_pos, None, beta=0.5)


def test_linear_anneal():
    assert linear_anneal(0, 11, 0.5, 0.05) == 0.5
    assert abs(linear_anneal(10, 11, 0.5, 0.05) - 0.05) < 1e-12
    assert abs(linear_anneal(5, 11, 0.5, 0.05) - 0.275) < 1e-12
    assert linear_anneal(99, 11, 0.5, 0.05) == linear_anneal(10, 11, 0.5, 0.05)
    assert linear_anneal(0, 1, 0.3, 0.0) == 0.3


def test_policy_sampling_matches_teacher_forced_logprobs():
    """The incremental sampler uses the same distribution as token_logprobs (greedy-free check via the running sums)."""
    torch.manual_seed(0)
    pol = E.PrefixPolicy(embed=16, hidden=32)
    probs = X.sample(5, np.random.default_rng(0), "all")
    q = E.questions(probs)
    comp = E.sample(pol, q, generator=torch.Generator().manual_seed(0))
    assert comp.shape == (5, X.COMPLETION_LEN)
    lp = E.token_logprobs(pol, q, comp)
    # recompute step by step with the sampler's running sums
    h = pol.summaries(q)[:, -1]
    for k in range(X.COMPLETION_LEN):
        z = pol._head(h[:, None], slice(k, k + 1))[:, 0]
        torch.testing.assert_close(torch.log_softmax(z, -1).gather(-1, comp[:, k : k + 1])[:, 0], lp[:, k],
                                   atol=1e-5, rtol=0)
        h = h + pol.emb((q.shape[1] + k) * pol.V + comp[:, k])
    assert E.decode(E.encode(["047+085|????="])) == ["047+085|????="]


def test_self_explanations_are_filtered_and_one_step_moves_the_policy():
    torch.manual_seed(0)
    pol = E.PrefixPolicy(embed=16, hidden=32)
    probs = X.sample(6, np.random.default_rng(0), "hard")
    kept, keep = E.self_explanations(pol, probs, 2, torch.Generator().manual_seed(0))
    assert kept.shape == (12, X.COMPLETION_LEN) and keep.shape == (12,)
    for i, (t, k) in enumerate(zip(E.decode(kept), keep.tolist())):
        assert X.verify(probs[i // 2], t) == bool(k)
    cfg = from_params(E.Config, steps=1, prompts=2, group=2, eval_prompts=4, explain_samples=2)
    before = [p.clone() for p in pol.parameters()]
    hist = E.train(pol, "GRPO+expert-SFT", cfg, seed=0, eval_problems=probs[:4])
    assert len(hist["zero_frac"]) == 1 and hist["step"].tolist() == [0, 1]
    assert any(not torch.equal(a, b) for a, b in zip(before, pol.parameters()))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, methods="GRPO,PPO")
    with pytest.raises(ValueError):
        from_params(E.Config, beta_final=2.0)
    with pytest.raises(ValueError):
        from_params(E.Config, group=1)


def test_committed_base_has_the_intended_competence():
    """The committed base rationalises hard problems but does not solve their questions (its JSON's recipe rebuilds it)."""
    pol, info = E.load_base()
    c = info["competence"]
    assert c["question_easy"] > 0.9 and c["rationalisation_hard"] > 0.9 and c["question_hard"] < 0.01
    assert c["pass@8_hard_upto_299"] < 0.02  # the chapter's hard subset: almost never solved, GRPO gets no signal
    assert info["recipe"] == E.asdict(E.BaseRecipe())
    assert sum(p.numel() for p in pol.parameters()) < 300_000


@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full end to end with a tiny local model and a tiny local MATH-like data set (1 step per method)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_data.save_tiny_math(tmp_path)
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_train_data=str(tmp_path / "train"),
                      full_eval_data=str(tmp_path / "eval"), full_group=2, full_explain_samples=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, max_steps=1, train_problems=4,
                     eval_problems=2, max_completion=8, generation_batch=4)
    assert set(res) == {"base", "kept", *E.METHODS}
    assert all(0.0 <= v <= 1.0 for v in res["ExP-GRPO"].values()) and 0.0 <= res["kept"] <= 1.0


@pytest.mark.slow
def test_trainer_subclass_adds_the_positive_nll(tmp_path):
    """The subclass's loss is TRL's GRPO loss plus beta times the per-token NLL of the positives."""
    from datasets import Dataset
    from trl import GRPOConfig

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    tok = char_tokenizer("0123456789+=")
    model = tiny_llama(len(tok), TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=64), seed=0, tokenizer=tok)
    ds = Dataset.from_list([{"prompt": f"{a}+{a}=", "positive": str(2 * a)} for a in range(8)])

    def reward(completions, **kw):  # all zero: every group is uninformative for GRPO
        return [0.0] * len(completions)

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                      max_steps=1, report_to="none", use_cpu=True, bf16=False, fp16=False, **hub.checkpointing_kw(False),
                      save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, beta=0.0, loss_type="grpo",
                      learning_rate=1e-4, logging_steps=1)
    Trainer = E.make_trainer_class()
    trainer = Trainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                      beta_sft=0.5, beta_sft_end=0.5)
    trainer.current_gradient_accumulation_steps = 1  # set by TRL's training_step; the loss divides by it
    out = trainer._generate_and_score_completions([ds[3]] * 4)
    assert out["advantages"].abs().sum() == 0
    assert out["positive_mask"].sum(1).tolist() == [2] * 4  # "6" + EOS
    with_term = trainer._compute_loss(model, out)
    trainer.beta_sft = trainer.beta_sft_end = 0.0
    without = trainer._compute_loss(model, out)
    ids = torch.cat([out["prompt_ids"], out["positive_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["positive_mask"]], 1)
    logp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, am, out["positive_ids"].size(1))
    nll = -(logp * out["positive_mask"]).sum() / out["positive_mask"].sum()
    torch.testing.assert_close(with_term - without, 0.5 * nll, atol=1e-5, rtol=1e-5)
