r"""Sampling from a causal LM, per-token log-probs, groups, and pass@k.

Notation: ``B`` prompts, ``G`` samples per prompt, ``N`` sequences in a flat batch,
``P`` prompt tokens, ``T`` completion tokens, ``V`` vocabulary.

Constrained decoding: every function takes an optional ``mask_fn(prompt_ids: (N, P),
completion_ids: (N, t)) -> (N, V) bool`` that says which tokens may come at position
``t``. The *same* masked softmax

.. math:: \pi(y_t|x,y_{<t}) = \frac{m_{t,y_t}\,e^{z_{t,y_t}}}{\sum_v m_{t,v}\,e^{z_{t,v}}}

is used to sample, to score (log-probs for the loss) and to evaluate, so the policy
that is trained is the policy that is sampled.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1):
with ``n`` samples of which ``c`` are correct,

.. math:: \widehat{\text{pass@}k} = 1 - \binom{n-c}{k}\Big/\binom{n}{k}

is unbiased for :math:`1-(1-p)^k`, the exact pass@k of a prompt solved with probability
:math:`p` per sample (:func:`pass_at_k_exact`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MaskFn = Callable[[Tensor, Tensor], Tensor]


def encode_prompts(tok, prompts: list[str], bos: bool = True) -> tuple[Tensor, Tensor]:
    """Token ids of ``prompts`` (BOS first), left-padded: ``(ids: (N, P), attention_mask: (N, P))``."""
    vocab = tok.get_vocab()
    unk = tok.unk_token_id
    rows = [([tok.bos_token_id] if bos else []) + [vocab.get(c, unk) for c in p] for p in prompts]
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), tok.pad_token_id, dtype=torch.long)
    am = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r) :] = torch.tensor(r, dtype=torch.long)
        am[i, P - len(r) :] = 1
    return ids, am


def decode(tok, completion_ids: Tensor, mask: Tensor | None = None) -> list[str]:
    """Completions as strings, EOS and padding dropped (``completion_ids: (N, T)``)."""
    special = {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}
    out = []
    for i, row in enumerate(completion_ids.tolist()):
        keep = [t for j, t in enumerate(row) if t not in special and (mask is None or mask[i, j])]
        out.append("".join(tok.convert_ids_to_tokens(keep)))
    return out


def _masked_logits(logits: Tensor, allowed: Tensor | None) -> Tensor:
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed, float("-inf"))


@torch.no_grad()
def sample(
    model,
    prompt_ids: Tensor,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    mask_fn: MaskFn | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample completions token by token with a KV cache (ancestral sampling, temperature 1 by default).

    ``prompt_ids: (N, P)`` (left-padded if ``attention_mask: (N, P)`` is given).
    Returns ``completion_ids: (N, T)`` and ``mask: (N, T)``, where ``mask`` is 1 up to and
    including the first EOS and the ids after it are ``pad_id`` (``T <= max_new_tokens``).
    """
    N = prompt_ids.shape[0]
    dev = prompt_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    # transformers >= 5 names the KV cache ``cache``; older versions ``past_key_values``
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=prompt_ids, attention_mask=attention_mask, position_ids=pos, use_cache=True)
    past, logits = out.get(cache_kw), out.logits[:, -1]
    next_pos = pos[:, -1:] + 1
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    tokens: list[Tensor] = []
    pending: list[Tensor] = []  # sampled tokens not yet fed to the model
    for t in range(max_new_tokens):
        comp = torch.stack(tokens, 1) if tokens else prompt_ids.new_zeros(N, 0)
        allowed = mask_fn(prompt_ids, comp) if mask_fn is not None else None
        if allowed is not None and bool((allowed.sum(-1) == 1).all()):
            y = allowed.long().argmax(-1)  # a forced token (e.g. the last digit, EOS): no model call needed
        else:
            if pending:  # feed the tokens sampled since the last call, get the logits of position t
                feed = torch.stack(pending, 1)  # (N, len(pending))
                L = feed.shape[1]
                attention_mask = torch.cat([attention_mask, torch.ones_like(feed)], 1)
                out = model(input_ids=feed, attention_mask=attention_mask,
                            position_ids=next_pos + torch.arange(L, device=dev)[None], use_cache=True,
                            **{cache_kw: past})
                past, logits = out.get(cache_kw), out.logits[:, -1]
                next_pos = next_pos + L
                pending = []
            z = _masked_logits(logits.float() / temperature, allowed)
            y = torch.multinomial(torch.softmax(z, -1), 1, generator=generator).squeeze(1)  # (N,)
        y = torch.where(done, torch.full_like(y, pad_id), y)
        tokens.append(y)
        pending.append(y)
        done = done | (y == eos_id)
        if bool(done.all()):
            break
    comp = torch.stack(tokens, 1)  # (N, T)
    is_eos = (comp == eos_id).long()
    before_eos = (is_eos.cumsum(1) - is_eos) == 0  # positions up to and including the first EOS
    return comp, before_eos.long()


def token_logprobs(
    model,
    prompt_ids: Tensor,
    completion_ids: Tensor,
    mask_fn: MaskFn | None = None,
    attention_mask: Tensor | None = None,
    with_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Per-token log-probs :math:`\log\pi_\theta(y_t|x,y_{<t})` of given completions (differentiable).

    ``prompt_ids: (N, P)``, ``completion_ids: (N, T)`` → ``logp: (N, T)`` (and, with
    ``with_entropy``, the entropy of each next-token distribution ``(N, T)``). One
    forward pass over prompt + completion; the masked softmax of the module docstring.
    Positions whose token is not allowed get ``-inf`` (mask them out of a loss).
    """
    P, T = prompt_ids.shape[1], completion_ids.shape[1]
    ids = torch.cat([prompt_ids, completion_ids], 1)  # (N, P+T)
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    am = torch.cat([attention_mask, torch.ones_like(completion_ids)], 1)
    pos = (am.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=am, position_ids=pos).logits[:, P - 1 : P + T - 1].float()  # (N, T, V)
    if mask_fn is not None:
        allowed = torch.stack([mask_fn(prompt_ids, completion_ids[:, :t]) for t in range(T)], 1)  # (N, T, V)
        logits = _masked_logits(logits, allowed)
    logq = torch.log_softmax(logits, -1)  # (N, T, V)
    logp = logq.gather(-1, completion_ids[..., None]).squeeze(-1)  # (N, T)
    if not with_entropy:
        return logp
    q = logq.exp()
    ent = -(q * torch.where(q > 0, logq, torch.zeros_like(logq))).sum(-1)  # (N, T)
    return logp, ent


@dataclass
class Groups:
    """``G`` samples for each of ``B`` prompts (the unit of group-based RL)."""

    prompt_ids: Tensor
    """``(B*G, P)`` each prompt repeated ``G`` times (row ``b*G+g``)"""
    completion_ids: Tensor
    """``(B*G, T)`` sampled tokens"""
    mask: Tensor
    """``(B*G, T)`` 1 on valid completion tokens (up to and including EOS)"""
    B: int
    """prompts"""
    G: int
    """samples per prompt"""


def group_sample(
    model,
    prompt_ids: Tensor,
    G: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    mask_fn: MaskFn | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Groups:
    """Sample ``G`` completions for each of the ``B`` prompts ``prompt_ids: (B, P)``."""
    B = prompt_ids.shape[0]
    rep = prompt_ids.repeat_interleave(G, 0)  # (B*G, P)
    comp, mask = sample(model, rep, max_new_tokens, eos_id, pad_id, mask_fn, temperature, generator)
    return Groups(rep, comp, mask, B, G)


def pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> np.ndarray:
    r"""Unbiased pass@k from ``n`` samples with ``c`` correct: :math:`1-\binom{n-c}{k}/\binom{n}{k}`.

    Computed as :math:`1-\prod_{i=n-c+1}^{n}(1-k/i)` (numerically stable; Chen et al.
    2021). ``n, c``: ints or arrays of the same shape (one entry per prompt); ``k <= n``.
    Returns the estimate per prompt (average it over prompts yourself).
    """
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    if np.any(k > n):
        raise ValueError("k must be <= n")
    if np.any((c < 0) | (c > n)):
        raise ValueError("need 0 <= c <= n")
    out = np.empty(np.broadcast(n, c).shape, dtype=float)
    flat_n, flat_c = np.broadcast_to(n, out.shape).ravel(), np.broadcast_to(c, out.shape).ravel()
    res = out.ravel()
    for j, (nj, cj) in enumerate(zip(flat_n, flat_c)):
        if nj - cj < k:
            res[j] = 1.0
        else:
            res[j] = 1.0 - np.prod(1.0 - k / np.arange(nj - cj + 1, nj + 1))
    return res.reshape(out.shape)


def pass_at_k_exact(p: np.ndarray | float, k: int) -> np.ndarray:
    r"""Exact pass@k of prompts solved with probability ``p`` per sample: :math:`1-(1-p)^k`."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return 1.0 - (1.0 - p) ** k
