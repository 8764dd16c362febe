"""The TÜLU 3 chapter: length-normalised DPO, the RLVR objective, their family-tree edges, the
experiment's pieces, and the full-profile dry run."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlbook.config import from_params
from rlbook.experiments import tulu3_post_training as E
from rlbook.losses import dpo_loss, reinforce_loss, sequence_logprob
from rlbook.losses.tulu3 import dpo_norm_loss, rlvr_kl_loss, verifiable_reward
from rlbook.losses.common import grad_wrt as _grad  # d f(x) / dx


def _pairs(seed=0, N=6, Tc=5, Tr=7, equal=False):
    g = torch.Generator().manual_seed(seed)
    Tr = Tc if equal else Tr
    out = []
    for T in (Tc, Tr):
        lp = -torch.rand(N, T, generator=g, dtype=torch.float64)
        lr = -torch.rand(N, T, generator=g, dtype=torch.float64)
        if equal:
            m = torch.ones(N, T, dtype=torch.float64)
            m[:, T - 1] = 0.0
        else:
            m = (torch.rand(N, T, generator=g) > 0.3).double()
            m[:, 0] = 1.0
        out += [lp * m, lr * m, m]
    return out


def _batch(seed=0, B=4, G=5, T=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B * G, T, generator=g, dtype=torch.float64)
    ref = -torch.rand(B * G, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B * G, T, generator=g) > 0.25).double()
    mask[:, 0] = 1.0
    ok = torch.rand(B, G, generator=g) > 0.5
    return logp * mask, ref * mask, mask, ok


# ---------------------------------------------------------------------------------------------
# length-normalised DPO
# ---------------------------------------------------------------------------------------------
def test_dpo_norm_hand_value():
    lc = torch.tensor([[-1.0, -2.0, 0.0]])
    rc = torch.tensor([[-1.5, -1.5, 0.0]])
    mc = torch.tensor([[1.0, 1.0, 0.0]])
    lr = torch.tensor([[-1.0, -1.0, -1.0]])
    rr = torch.tensor([[-0.5, -0.5, -0.5]])
    mr = torch.ones(1, 3)
    # chosen: (-3 + 3)/2 = 0; rejected: (-3 + 1.5)/3 = -0.5 → margin = beta * 0.5
    loss, d = dpo_norm_loss(lc, rc, mc, lr, rr, mr, beta=2.0)
    assert d["margin"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-F.logsigmoid(torch.tensor(1.0)).item())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_dpo_norm_is_dpo_with_beta_over_length(seed):
    """DPO-norm = DPO with a per-response strength beta/|y| (here: DPO on average log-probs)."""
    lc, rc, mc, lr, rr, mr = _pairs(seed)
    beta = 5.0
    loss, _ = dpo_norm_loss(lc, rc, mc, lr, rr, mr, beta)
    nc, nr = mc.sum(1), mr.sum(1)
    ref_loss, _ = dpo_loss(sequence_logprob(lc, mc) / nc, sequence_logprob(rc, mc) / nc,
                           sequence_logprob(lr, mr) / nr, sequence_logprob(rr, mr) / nr, beta)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    # explicit per-response strengths beta/|y_c| and beta/|y_r|
    margin = beta / nc * (sequence_logprob(lc - rc, mc)) - beta / nr * sequence_logprob(lr - rr, mr)
    torch.testing.assert_close(loss, -F.logsigmoid(margin).mean(), atol=1e-12, rtol=0)
    assert not (nc == nr).all()  # lengths differ: it is *not* plain DPO with one beta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_dpo_norm_equal_lengths_is_dpo_rescaled(seed):
    """With |y_c| = |y_r| = L, DPO-norm(beta) = plain DPO(beta / L)."""
    lc, rc, mc, lr, rr, mr = _pairs(seed, equal=True)
    L = float(mc.sum(1)[0])
    beta = 5.0
    a, _ = dpo_norm_loss(lc, rc, mc, lr, rr, mr, beta)
    b, _ = dpo_loss(sequence_logprob(lc, mc), sequence_logprob(rc, mc), sequence_logprob(lr, mr),
                    sequence_logprob(rr, mr), beta / L)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_dpo_norm_equals_trl_sigmoid_norm_formula():
    """TRL 1.16 `sigmoid_norm`: scores divided by each completion's token count, then -logsigmoid(beta * delta)."""
    lc, rc, mc, lr, rr, mr = _pairs(3)
    beta = 0.7
    chosen_scores = ((lc - rc) * mc).sum(1)
    rejected_scores = ((lr - rr) * mr).sum(1)
    delta = chosen_scores / mc.sum(1).clamp(min=1.0) - rejected_scores / mr.sum(1).clamp(min=1.0)
    trl = -F.logsigmoid(beta * delta).mean()
    ours, _ = dpo_norm_loss(lc, rc, mc, lr, rr, mr, beta)
    torch.testing.assert_close(ours, trl, atol=1e-12, rtol=0)


def test_dpo_norm_shape_errors():
    lc, rc, mc, lr, rr, mr = _pairs(0)
    with pytest.raises(ValueError):
        dpo_norm_loss(lc.sum(1), rc, mc, lr, rr, mr)
    with pytest.raises(ValueError):
        dpo_norm_loss(lc, rc[:, :2], mc, lr, rr, mr)


# ---------------------------------------------------------------------------------------------
# RLVR objective
# ---------------------------------------------------------------------------------------------
def test_verifiable_reward():
    r = verifiable_reward(torch.tensor([[True, False], [False, True]]))
    assert r.tolist() == [[10.0, 0.0], [0.0, 10.0]]
    assert verifiable_reward(torch.tensor([1, 0]), alpha=3.0).tolist() == [3.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_rlvr_beta0_is_reinforce_group_mean_baseline(seed):
    """RLVR with KL coefficient 0 is REINFORCE with the group-mean baseline (same loss, same gradient)."""
    logp, ref, mask, ok = _batch(seed)
    v = verifiable_reward(ok).double()
    base = v.mean(1, keepdim=True).expand_as(v).flatten()
    a = rlvr_kl_loss(logp, mask, v, ref, beta=0.0)
    b = reinforce_loss(logp, mask, v.flatten(), baseline=base)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    ga = _grad(lambda x: rlvr_kl_loss(x, mask, v, ref, beta=0.0), logp)
    gb = _grad(lambda x: reinforce_loss(x, mask, v.flatten(), baseline=base), logp)
    torch.testing.assert_close(ga, gb, atol=1e-12, rtol=0)
    assert ga.abs().max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_rlvr_alpha_scaling(seed):
    """(alpha * v, beta) gives alpha times the loss of (v, beta / alpha): only beta/alpha shapes the direction."""
    logp, ref, mask, ok = _batch(seed)
    alpha, beta = 10.0, 0.05
    a = rlvr_kl_loss(logp, mask, verifiable_reward(ok, alpha).double(), ref, beta)
    b = rlvr_kl_loss(logp, mask, verifiable_reward(ok, 1.0).double(), ref, beta / alpha)
    torch.testing.assert_close(a, alpha * b, atol=1e-10, rtol=1e-10)


def test_rlvr_kl_term_and_uniform_groups():
    logp, ref, mask, ok = _batch(4)
    v = torch.ones(4, 5, dtype=torch.float64) * 10.0  # every sample verified: only the KL term is left
    g = _grad(lambda x: rlvr_kl_loss(x, mask, v, ref, beta=0.0), logp)
    assert g.abs().max() == 0.0
    g = _grad(lambda x: rlvr_kl_loss(x, mask, v, ref, beta=0.1), logp)
    # a sample with a larger log-ratio than its group gets a negative advantage: its log-prob is pushed down
    kl = sequence_logprob(logp - ref, mask).view(4, 5)
    worst = int((kl - kl.mean(1, keepdim=True)).flatten().argmax())
    assert (g[worst] * mask[worst]).sum() > 0  # dL/dlogp > 0 → gradient descent lowers it
    with pytest.raises(ValueError):
        rlvr_kl_loss(logp, mask, v[:3], ref)


def test_kl_regularised_gradient_is_unbiased_exact():
    """On a softmax over 5 answers: E_y[grad of the surrogate] = -grad(E[v] - beta KL(pi||ref)) (exact sums)."""
    torch.manual_seed(0)
    z = torch.randn(5, dtype=torch.float64, requires_grad=True)
    zr = torch.randn(5, dtype=torch.float64)
    v = torch.tensor([10.0, 0, 0, 10.0, 0], dtype=torch.float64)
    beta = 0.3
    pi, lref = torch.softmax(z, 0), torch.log_softmax(zr, 0)
    J = (pi * v).sum() - beta * (pi * (torch.log_softmax(z, 0) - lref)).sum()
    (gJ,) = torch.autograd.grad(J, z)
    # expected score-function estimator with a constant baseline: sum_y pi(y) (R(y) - b) grad log pi(y)
    lp = torch.log_softmax(z, 0)
    R = (v - beta * (lp - lref)).detach()
    b = (pi * R).sum().detach()
    surrogate = (pi.detach() * (R - b) * lp).sum()
    (gS,) = torch.autograd.grad(surrogate, z)
    torch.testing.assert_close(gS, gJ, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# experiment pieces
# ---------------------------------------------------------------------------------------------
def test_noisy_judge_rates():
    rng = np.random.default_rng(0)
    ok_a = np.array([True] * 20000 + [False] * 20000)
    ok_b = ~ok_a
    pick = E.noisy_judge(ok_a, ok_b, 0.8, rng)
    assert abs(np.mean(pick == ok_a) - 0.8) < 0.01
    same = E.noisy_judge(np.ones(20000, bool), np.ones(20000, bool), 0.8, rng)
    assert abs(same.mean() - 0.5) < 0.02
    assert E.noisy_judge(ok_a[:10], ok_b[:10], 1.0, rng).tolist() == ok_a[:10].tolist()


def test_noisy_answer_kinds_and_rates():
    from rlbook.tasks.precise_if import PreciseIFTask

    task = PreciseIFTask()
    rng = np.random.default_rng(0)
    m = task.make(17, 25)
    outs = [E.noisy_answer(m, rng, 0.4, 0.5) for _ in range(1500)]
    assert abs(np.mean([o == "42" for o in outs]) - 0.6) < 0.05
    assert set(outs) <= {"42", "41", "43", "32", "52"}  # slips of +-1, +-10
    r = task.make(17, 25, "R")
    outs = [E.noisy_answer(r, rng, 0.4, 0.5) for _ in range(1500)]
    assert set(outs) == {"24", "42"}  # right, or the instruction ignored
    assert abs(np.mean([o == "24" for o in outs]) - 0.5) < 0.05
    pal = task.make(5, 6, "R")  # 11 reversed is 11: the plain sum would satisfy it, so a slip instead
    assert all(E.noisy_answer(pal, rng, 0.0, 1.0) != "11" for _ in range(50))
    assert E.noisy_answer(task.make(0, 0), rng, 1.0, 0.0) in {"1", "10"}  # never negative
    from rlbook.models import char_tokenizer

    ids, mask = E.answers_to_ids(char_tokenizer(task.alphabet), ["7", "042"])
    assert ids.shape == (2, 4) and mask.sum(1).tolist() == [2, 4]


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        from_params(E.Config, rl_group=1)
    with pytest.raises(ValueError):
        from_params(E.Config, judge_accuracy=0.3)
    with pytest.raises((TypeError, ValueError)):
        from_params(E.Config, nope=1)


def test_gsm_reward_and_last_number():
    assert E.last_number("so 3 + 4 = 7. The answer is 1,234.") == "1234"
    assert E.last_number("x = 12.0") == "12"
    assert E.last_number("none") is None
    assert E.gsm_reward(["It is 42", "It is 41", [{"role": "assistant", "content": "42"}]], ["42"] * 3) == [10.0, 0.0, 10.0]


@pytest.mark.slow
def test_tiny_pipeline_pieces():
    """A few SFT steps, pairs, one DPO step, two RLVR steps, evaluation and KL (fast, tiny)."""
    model, tok, task, info = E.build_base(E.BaseRecipe(steps=3, batch=16), steps=3)
    assert set(info["heldout_accuracy"]) == {"math", "if"}
    cfg = from_params(E.Config, dpo_prompts=16, dpo_steps=1, dpo_batch=4, rl_steps=2, rl_prompts=2, rl_group=2,
                      eval_prompts=10, kl_eval_samples=1)
    pairs = E.make_pairs(model, tok, task, cfg, seed=0)
    assert pairs.prompt_ids.shape[0] >= 4
    assert not torch.equal(pairs.comp_c, pairs.comp_r)
    assert E.token_kl(model, model, tok, task, task.eval_problems(5, "math"), 2) == pytest.approx(0.0, abs=1e-6)
    out = E.run_smoke(cfg, seed=0, base=(model, tok, task, info))
    assert set(out["acc"]) == {"SFT", "DPO", "RLVR", "RLVR (math only)"}
    assert out["traces"]["RLVR"]["reward"].shape == (2,)
    assert all(k >= 0 for k in out["kl"].values())


def test_committed_base_loads():
    model, tok, task, info = E.load_base()
    acc = E.evaluate(model, tok, task, 50)
    assert 0.2 < acc["math"] < 0.9 and 0.2 < acc["if"] < 0.9  # partial competence
    assert info["recipe"] == __import__("dataclasses").asdict(E.BaseRecipe())  # committed file = current recipe


# ---------------------------------------------------------------------------------------------
# full profile dry run
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_profile_dry_run(tmp_path, monkeypatch):
    """run_full on a tiny local model and local data sets, 1 DPO step and 1 GRPO step, on the CPU."""
    from datasets import Dataset, DatasetDict

    from rlbook.models import save_tiny_policy

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_tiny_policy(tmp_path / "model", "0123456789+=?. #ThenswrIiad\n", max_len=256, chat=False)
    pref = [{"prompt": f"{a}+{b}=?", "chosen": f" {a + b}", "rejected": f" {a + b + 1}"} for a in range(3) for b in range(3)]
    DatasetDict({"train": Dataset.from_list(pref)}).save_to_disk(str(tmp_path / "pref"))
    gsm = [{"question": f"{a}+{b}=?", "answer": f"add #### {a + b}"} for a in range(3) for b in range(3)]
    DatasetDict({"train": Dataset.from_list(gsm), "test": Dataset.from_list(gsm[:4])}).save_to_disk(str(tmp_path / "gsm"))
    cfg = from_params(E.Config, full_model=str(tmp_path / "model"), full_pref_data=str(tmp_path / "pref"),
                      full_rl_data=str(tmp_path / "gsm"), full_eval_data=str(tmp_path / "gsm"), full_group=2)
    res = E.run_full(cfg, seed=0, output_dir=str(tmp_path / "out"), cpu=True, dpo_steps=1, rl_steps=1,
                     eval_problems=4, max_completion=4)
    assert set(res) == {"SFT", "DPO", "RLVR"}
    assert all(0.0 <= v <= 1.0 for v in res.values())


@pytest.mark.slow
def test_dpo_norm_equals_trl_sigmoid_norm_trainer(tmp_path, monkeypatch):
    """dpo_norm_loss = TRL 1.16 DPOTrainer(loss_type=["sigmoid_norm"]).compute_loss: loss and every gradient."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = char_tokenizer("abcdefghij +=0123456789")
    policy = tiny_llama(len(tok), TinyConfig(), seed=0, tokenizer=tok)
    ref = tiny_llama(len(tok), TinyConfig(), seed=1, tokenizer=tok)
    ds = Dataset.from_dict({"prompt": ["1+2=", "3+4=", "ab", "9+9=", "c d"],
                            "chosen": ["3", "7", "cd e", "18", "e"],
                            "rejected": ["4", "77", "j", "1", "f g h"]})  # ragged lengths
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=5, beta=5.0, loss_type=["sigmoid_norm"],
                     report_to="none", use_cpu=True, bf16=False, fp16=False, save_strategy="no", disable_tqdm=True,
                     dataloader_num_workers=0, seed=0)
    tr = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(tr.get_train_dataloader()))
    model = tr.model
    model.train()
    model.zero_grad()
    trl_loss = tr.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    def token_logps(m, ids, att):
        logits = m(input_ids=ids, attention_mask=att).logits[:, :-1]
        return F.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)

    ids, att = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"][:, 1:].float()
    logp = token_logps(model, ids, att) * mask
    with torch.no_grad():
        logp_ref = token_logps(tr.ref_model, ids, att) * mask
    lc, lr = logp.chunk(2)
    rc, rr = logp_ref.chunk(2)
    mc, mr = mask.chunk(2)
    assert not torch.equal(mc.sum(1), mr.sum(1))
    loss, _ = dpo_norm_loss(lc, rc, mc, lr, rr, mr, beta=5.0)
    loss.backward()
    torch.testing.assert_close(loss.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)
    ours = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == trl_grads.keys() and ours
    for n in ours:
        torch.testing.assert_close(ours[n], trl_grads[n], atol=1e-6, rtol=1e-4, msg=n)
