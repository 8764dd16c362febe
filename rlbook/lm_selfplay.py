r"""Self-play with a pairwise judge on a real language model (the full profiles of Part 3).

The pieces DNO, INPO and SPO share at paper scale:

- :func:`load_prompts` -- prompt texts (chat template applied) from a preference data set
  (Hub name or local ``save_to_disk`` folder);
- :func:`generate` -- ``n`` sampled completions per prompt (temperature 1);
- :class:`PairwiseJudge` -- a sequence-classification reward model used as a pairwise judge,
  :math:`\mathcal P(y\succ y'|x)=\sigma(r(x,y)-r(x,y'))` (a Bradley-Terry proxy for the
  papers' GPT-4 / PairRM judges), with Bernoulli labels;
- :func:`completion_logprobs` -- differentiable sequence log-probs :math:`\log\pi(y|x)` of
  completions (the inputs of :mod:`rlbook.losses`);
- :func:`win_rate` -- the judge's expected win rate of one set of completions over another.
"""

from __future__ import annotations

import os

import numpy as np

from rlbook import hub


def load_prompts(name_or_path: str, n: int, seed: int, tok, offset: int = 0) -> tuple[list[str], list[str]]:
    """``n`` prompts (after ``offset`` in a seeded shuffle): ``(chat-templated prompts, raw user questions)``."""
    import datasets

    if os.path.isdir(name_or_path):
        ds = datasets.load_from_disk(name_or_path)
        ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(name_or_path, split="train")
    ds = ds.shuffle(seed=seed)
    if len(ds) < offset + n:
        raise ValueError(f"{name_or_path} has {len(ds)} rows, need {offset + n}")
    prompts, questions = [], []
    for ex in ds.select(range(offset, offset + n)):
        conv = ex.get("prompt") or ex["chosen"][:-1]
        if isinstance(conv, str):
            conv = [{"role": "user", "content": conv}]
        questions.append([m["content"] for m in conv if m["role"] == "user"][-1])
        prompts.append(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True))
    return prompts, questions


def generate(model, tok, prompts: list[str], n: int, max_new_tokens: int, device: str, batch: int = 32) -> list[list[str]]:
    """``n`` completions per prompt, sampled at temperature 1: ``[len(prompts)][n]`` strings."""
    import torch

    out = []
    model.eval()
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0,
                                 top_p=1.0, num_return_sequences=n, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out += [texts[j * n : (j + 1) * n] for j in range(len(texts) // n)]
    return out


class PairwiseJudge:
    r"""A reward model as a pairwise judge: :math:`\mathcal P(y\succ y'|x)=\sigma(r(x,y)-r(x,y'))`."""

    def __init__(self, name_or_path: str, device: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

        self.device = device
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(device).eval()
        if os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "tokenizer.json")):
            self.tok = PreTrainedTokenizerFast.from_pretrained(name_or_path)
        else:
            self.tok = AutoTokenizer.from_pretrained(name_or_path)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id

    def scores(self, questions: list[str], answers: list[str], batch: int = 16) -> np.ndarray:
        """Point-wise scores ``r(x, y)``: ``(n,)``."""
        import torch

        out = []
        for i in range(0, len(questions), batch):
            enc = self.tok(questions[i : i + batch], answers[i : i + batch], return_tensors="pt", padding=True,
                           truncation=True, max_length=1024).to(self.device)
            with torch.no_grad():
                out.append(self.model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @staticmethod
    def prob(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
        r""":math:`\sigma(r_a-r_b)`, elementwise (broadcasting)."""
        return 1.0 / (1.0 + np.exp(-(np.asarray(r_a) - np.asarray(r_b))))


def group_win_rates(r: np.ndarray) -> np.ndarray:
    r"""Expected win rate of each member of a group against the others: ``r: (n,)`` → ``(n,)``.

    :math:`\hat w_i=\frac{1}{n-1}\sum_{j\ne i}\sigma(r_i-r_j)` (DNO-Prct's ranking and SPO's
    win proportion in expectation).
    """
    p = PairwiseJudge.prob(r[:, None], r[None, :])
    n = len(r)
    return (p.sum(1) - 0.5) / max(n - 1, 1)


def completion_logprobs(model, tok, prompts: list[str], completions: list[str], device: str):
    r"""Differentiable :math:`\log\pi(y|x)=\sum_t\log\pi(y_t|x,y_{<t})` of each completion: ``(N,)``.

    Prompt and completion are tokenised separately and concatenated (right padding), so
    the completion's tokens are exactly the ones scored; an EOS token ends each completion.
    """
    import torch

    ids, starts = [], []
    for p, c in zip(prompts, completions):
        pi = tok(p, add_special_tokens=False)["input_ids"]
        ci = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids.append(pi + ci)
        starts.append(len(pi))
    L = max(len(x) for x in ids)
    inp = torch.full((len(ids), L), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros((len(ids), L), dtype=torch.long)
    for i, x in enumerate(ids):
        inp[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
    inp, att = inp.to(device), att.to(device)
    logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()  # (N, L-1, V)
    lp = torch.log_softmax(logits, -1).gather(-1, inp[:, 1:, None])[..., 0]  # (N, L-1)
    pos = torch.arange(1, L, device=device)[None, :]
    mask = (pos >= torch.tensor(starts, device=device)[:, None]) & (att[:, 1:] == 1)
    return (lp * mask).sum(-1)


def win_rate(judge: PairwiseJudge, questions: list[str], a: list[str], b: list[str]) -> float:
    r"""Mean over prompts of :math:`\sigma(r(x,a)-r(x,b))`: how often the judge prefers ``a`` to ``b``."""
    return float(judge.prob(judge.scores(questions, a), judge.scores(questions, b)).mean())


def trl_cpu_safe_kwargs(cuda: bool, seed: int, output_dir: str) -> dict:
    """The TRL arguments every full-profile trainer shares (CPU-safe when ``cuda`` is False; MEASURED.md)."""
    return dict(output_dir=output_dir, logging_steps=1, **hub.trl_offline(cuda, seed))
