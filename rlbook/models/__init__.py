"""Tiny causal language models, a character tokenizer, and loading real ones.

- :func:`char_tokenizer` -- a real ``PreTrainedTokenizerFast`` over single characters
  (WordLevel model, one-character pre-tokenizer, left padding).
- :func:`tiny_llama` -- a Llama-architecture causal LM built offline from a config.
- :func:`load_pretrained` -- the same API for a Hub name (full profile) or a local folder.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")


def char_tokenizer(alphabet: str):
    """A ``PreTrainedTokenizerFast`` whose tokens are the characters of ``alphabet``.

    Ids: ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``, then the alphabet in order. Padding
    is on the left (as generation needs). ``save_pretrained``/``from_pretrained``
    round-trip (load it back with ``PreTrainedTokenizerFast.from_pretrained``).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    if len(chars) != len(alphabet):
        raise ValueError("alphabet has repeated characters")
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for c in chars:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
    return fast


@dataclass(frozen=True)
class TinyConfig:
    """Size of a tiny Llama (MEASURED.md: 2 layers x 128 hidden is ~0.33M parameters)."""

    hidden: int = 64
    """model width d_model"""
    layers: int = 2
    """transformer blocks"""
    heads: int = 4
    """attention heads"""
    intermediate: int = 256
    """MLP width"""
    max_len: int = 64
    """maximum positions"""


def tiny_llama(vocab_size: int, cfg: TinyConfig = TinyConfig(), seed: int = 0, tokenizer=None):
    """A freshly initialised Llama-architecture causal LM (deterministic given ``seed``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_len,
        tie_word_embeddings=True,
        pad_token_id=getattr(tokenizer, "pad_token_id", 0),
        bos_token_id=getattr(tokenizer, "bos_token_id", 1),
        eos_token_id=getattr(tokenizer, "eos_token_id", 2),
    )
    g = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(conf)
    torch.random.set_rng_state(g)
    model.generation_config.pad_token_id = conf.pad_token_id
    return model


def load_pretrained(name_or_path: str, device: str = "cpu", dtype=None):
    """Load ``(model, tokenizer)`` from a Hub name or a local folder (same API for both).

    The full profile passes a Hub name (downloads once); tests pass a locally saved tiny
    model. A folder saved from :func:`char_tokenizer` loads as ``PreTrainedTokenizerFast``
    (``AutoTokenizer`` would pick a slow class that drops spaces for some configs).
    """
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    if os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "tokenizer.json")):
        tok = PreTrainedTokenizerFast.from_pretrained(name_or_path)
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # batched generation needs left padding
    return model.to(device), tok


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)
"""a minimal chat template (``u:question`` / ``a:answer``) for tiny stand-ins of instruct models"""


def save_tiny_policy(folder, alphabet: str, max_len: int = 128, chat: bool = True, seed: int = 0):
    """Save a tiny causal LM and its character tokenizer to ``folder`` as a Hub checkpoint would be.

    The stand-in for a Hub model in the full profiles' dry runs: every loader that takes
    "a Hub name or a local folder" can be pointed at it. Returns the tokenizer.
    """
    tok = char_tokenizer(alphabet)
    if chat:
        tok.chat_template = TINY_CHAT_TEMPLATE
    cfg = TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=max_len)
    model = tiny_llama(len(tok), cfg, seed=seed, tokenizer=tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def save_tiny_reward_model(folder, tok, max_len: int = 256, seed: int = 0) -> None:
    """Save a tiny sequence-classification reward model (one score) sharing ``tok`` to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    rm = LlamaForSequenceClassification(
        LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=max_len, num_labels=1, pad_token_id=tok.pad_token_id)
    )
    torch.random.set_rng_state(state)
    rm.save_pretrained(folder)
    tok.save_pretrained(folder)
