"""MATH problems for the RLVR chapters' full profiles: loading, the boxed-answer verifier, pass@k.

Shared by every Part 4 chapter that trains a math model with verifiable rewards
(TRL's ``GRPOTrainer`` with a chapter's change plugged in): the data set by Hub name or
``save_to_disk`` folder, the prompt of the Qwen2.5-Math papers, ``math_reward`` (the
verifier TRL calls), and ``evaluate_full`` (unbiased pass@k, vLLM on a GPU when installed).
"""

from __future__ import annotations

import numpy as np
import torch

from rlbook import rollout


def split_list(s: str) -> list[str]:
    """``"A, B,C"`` → ``["A", "B", "C"]`` (the comma-separated lists of notebook parameters)."""
    return [m.strip() for m in s.split(",") if m.strip()]


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` of ``text`` (braces balanced), or None."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k]
    return None


def normalise_answer(s: str) -> str:
    """A light string normalisation of a MATH answer (spaces, ``\\left/\\right``, ``\\!``, dfrac, $, trailing dot)."""
    s = s.strip().strip("$").rstrip(".")
    for a, b in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("dfrac", "frac"), ("tfrac", "frac"),
                 ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), (" ", "")):
        s = s.replace(a, b)
    return s


def math_reward(completions, answer, **kwargs) -> list[float]:
    """Verifiable reward for MATH: 1.0 if the last ``\\boxed{}`` equals the reference answer, else 0.0.

    Uses ``math_verify`` when it is installed (symbolic equivalence), else the string
    normalisation :func:`normalise_answer`. ``completions``: strings or chat messages.
    """
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - depends on the environment
        parse = verify = None
    out = []
    for c, a in zip(completions, answer):
        text = c if isinstance(c, str) else c[-1]["content"]
        got = last_boxed(text)
        if got is None:
            out.append(0.0)
        elif parse is not None:
            out.append(float(verify(parse("$" + a + "$"), parse("$" + got + "$"))))
        else:
            out.append(float(normalise_answer(got) == normalise_answer(a)))
    return out


PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n"
"""the instruction of the paper's (Qwen2.5-Math) prompt, as plain text"""


def load_math(name_or_path: str, split: str, n: int | None = None, levels: list[str] | None = None):
    """A MATH-style data set with ``prompt`` and ``answer`` columns, from the Hub or a ``save_to_disk`` folder."""
    import os

    from datasets import load_dataset, load_from_disk

    if os.path.isdir(name_or_path):
        ds = load_from_disk(name_or_path)
        if hasattr(ds, "keys"):
            ds = ds[split]
    else:
        ds = load_dataset(name_or_path, split=split)
    if levels and "level" in ds.column_names:
        ds = ds.filter(lambda e: e["level"] in levels)
    if "answer" not in ds.column_names:
        ds = ds.map(lambda e: {"answer": last_boxed(e["solution"]) or ""})
    ds = ds.map(lambda e: {"prompt": PROMPT.format(problem=e["problem"])})
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return ds


@torch.no_grad()
def evaluate_full(model, tok, evalset, n_samples: int, max_new_tokens: int, batch: int = 64,
                  use_vllm: bool | None = None) -> dict:
    """Unbiased pass@k (k = 1, 2, 4, ..., n_samples) with ``n_samples`` samples per problem (temperature 1).

    Samples with vLLM when it is installed and a GPU is present (``use_vllm=None``), else
    with ``model.generate`` in batches of ``batch`` (the path the CPU dry run tests).
    """
    import importlib.util

    if use_vllm is None:
        use_vllm = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    prompts, answers = list(evalset["prompt"]), list(evalset["answer"])
    if use_vllm:
        texts = _sample_vllm(model, tok, prompts, n_samples, max_new_tokens)
    else:
        texts = _sample_hf(model, tok, prompts, n_samples, max_new_tokens, batch)
    c = np.array([int(sum(math_reward(t, [a] * len(t)))) for t, a in zip(texts, answers)])
    ks = [2**i for i in range(int(np.log2(n_samples)) + 1)]
    return {k: float(rollout.pass_at_k(np.full_like(c, n_samples), c, k).mean()) for k in ks}


def _sample_hf(model, tok, prompts, n_samples, max_new_tokens, batch) -> list[list[str]]:
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for prompt in prompts:
        enc = tok([prompt], return_tensors="pt").to(dev)
        texts: list[str] = []
        for s in range(0, n_samples, batch):
            nb = min(batch, n_samples - s)
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=nb,
                                 pad_token_id=tok.pad_token_id)
            texts += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out.append(texts)
    return out


def _sample_vllm(model, tok, prompts, n_samples, max_new_tokens) -> list[list[str]]:  # pragma: no cover - GPU only
    import tempfile

    from vllm import LLM, SamplingParams

    with tempfile.TemporaryDirectory() as path:
        model.save_pretrained(path)
        tok.save_pretrained(path)
        llm = LLM(path, dtype="bfloat16", gpu_memory_utilization=0.35, seed=0)
        params = SamplingParams(n=n_samples, temperature=1.0, top_p=1.0, max_tokens=max_new_tokens, seed=0)
        outs = llm.generate(prompts, params)
        del llm
    torch.cuda.empty_cache()
    return [[o.text for o in r.outputs] for r in outs]


def save_tiny_math(folder) -> dict[str, str]:
    """A tiny stand-in for the full profiles' Hub assets, saved under ``folder``: a tiny model that
    can write ``\\boxed{}`` answers (``model``), MATH-like train and test splits of 16 sums
    (``train``, ``eval``). Returns the three paths, for the full profiles' dry-run tests."""
    from pathlib import Path

    from datasets import Dataset, DatasetDict

    from rlbook.models import save_tiny_policy

    folder = Path(folder)
    save_tiny_policy(folder / "model", "0123456789+-=?\\{}boxed \nPlasrtpyuhfwinc.", max_len=256, chat=False)
    rows = [{"problem": f"{a}+{b}=?", "solution": f"\\boxed{{{a + b}}}", "level": "Level 3"}
            for a in range(4) for b in range(4)]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(folder / "train"))
    DatasetDict({"test": Dataset.from_list([{"problem": r["problem"], "answer": str(int(r["problem"][0]) + int(r["problem"][2]))}
                                            for r in rows])}).save_to_disk(str(folder / "eval"))
    return {k: str(folder / k) for k in ("model", "train", "eval")}
