"""The full profile's plumbing: Hub (or local) data sets and models, chat text, decoding,
reward-model scores and the TRL arguments every trainer shares.

Everything takes "a Hub name or a local folder", so the same code runs at paper scale on a
GPU and, in the tests, on a tiny model and data set saved to a temporary folder.
"""

from __future__ import annotations

import numpy as np


def load_dataset(name_or_path: str, split: str = "train", config: str | None = None):
    """A data set split from the Hub or from a local ``Dataset.save_to_disk`` folder."""
    import os

    import datasets

    if os.path.isdir(name_or_path):
        ds = datasets.load_from_disk(name_or_path)
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    return datasets.load_dataset(name_or_path, config, split=split)


def load_reward_model(name_or_path: str, device: str, dtype=None):
    """``(model, tokenizer)`` of a sequence-classification reward model (Hub name or local folder)."""
    import os

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

    rm = AutoModelForSequenceClassification.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    if os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "tokenizer.json")):
        tok = PreTrainedTokenizerFast.from_pretrained(name_or_path)
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if rm.config.pad_token_id is None:
        rm.config.pad_token_id = tok.pad_token_id
    return rm, tok



def as_text(example: dict, tok) -> dict:
    """``{"prompt", "chosen", "rejected"}`` as plain text (chat template applied if conversational).

    Uses TRL's own ``extract_prompt`` / ``apply_chat_template``, so the text is the one
    ``DPOTrainer`` trains on.
    """
    from trl.data_utils import apply_chat_template, extract_prompt, is_conversational

    ex = {k: example[k] for k in ("prompt", "chosen", "rejected") if k in example}
    if "prompt" not in ex:
        ex = extract_prompt(ex)
    if is_conversational(ex):
        ex = apply_chat_template(ex, tok)
    return ex



def user_text(example: dict) -> str:
    """The last user turn (what a pairwise reward model is shown as the question)."""
    pr = example.get("prompt", example.get("chosen"))
    if isinstance(pr, str):
        return pr
    users = [m["content"] for m in pr if m.get("role") == "user"]
    return users[-1] if users else pr[0]["content"]



def generate(
    model, tok, prompts: list[str], device: str, max_new_tokens: int, num_beams: int, sample: bool, batch: int = 64
):
    """Decode ``prompts`` (text) with sampling at temperature 1 or beam search; returns the completions as text."""
    import torch

    outs = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                num_beams=1 if sample else num_beams,
                pad_token_id=tok.pad_token_id,
            )
        outs += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs



def score(rm, rm_tok, questions: list[str], answers: list[str], device: str, batch: int = 16) -> np.ndarray:
    """Reward-model scores of (question, answer) pairs: ``(n,)``."""
    import torch

    scores = []
    for i in range(0, len(questions), batch):
        enc = rm_tok(
            questions[i : i + batch], answers[i : i + batch],
            return_tensors="pt", padding=True, truncation=True, max_length=1024,
        ).to(device)
        with torch.no_grad():
            scores.append(rm(**enc).logits[:, 0].float().cpu().numpy())
    return np.concatenate(scores)


def checkpointing_kw(on: bool) -> dict:
    """``activation_checkpointing=on`` (transformers >= 5 / TRL 1.16) or ``gradient_checkpointing=on`` (older)."""
    import dataclasses

    from trl import GRPOConfig

    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def trl_offline(cuda: bool, seed: int, checkpointing: bool | None = None) -> dict:
    """The arguments every TRL config of the book shares (MEASURED.md): no reporting or saving,
    no progress bars or dataloader workers, bf16 only on a GPU (TRL defaults bf16 on, an error on
    the CPU), seeded model and data order, activation checkpointing on a GPU unless told."""
    return dict(
        report_to="none", save_strategy="no", use_cpu=not cuda, bf16=cuda, fp16=False, disable_tqdm=True,
        dataloader_num_workers=0, seed=seed, data_seed=seed,
        **checkpointing_kw(cuda if checkpointing is None else checkpointing),
    )


def full_device(cpu: bool = False) -> tuple:
    """Where a full profile runs: ``("cuda", torch.bfloat16, vllm_installed)`` on a GPU, else
    ``("cpu", torch.float32, False)`` (``cpu=True`` forces the CPU, as the dry-run tests do)."""
    import importlib.util

    import torch

    if cpu or not torch.cuda.is_available():
        return "cpu", torch.float32, False
    return "cuda", torch.bfloat16, importlib.util.find_spec("vllm") is not None


def vllm_kw(use_vllm: bool) -> dict:
    """TRL's vLLM switch as the book's full profiles use it: generation in the training
    process (``colocate``) with 30% of the GPU's memory, or plain ``model.generate``."""
    return {"use_vllm": use_vllm, **({"vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3} if use_vllm else {})}


def trl_common(output_dir: str, seed: int, cuda: bool, max_steps: int = -1) -> dict:
    """:func:`trl_offline` plus the output folder, the step budget and a logging interval."""
    return dict(
        output_dir=output_dir, max_steps=max_steps, logging_steps=1 if 0 < max_steps < 20 else 10,
        **trl_offline(cuda, seed),
    )
