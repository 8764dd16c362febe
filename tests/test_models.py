"""rlbook.models: the character tokenizer, tiny Llama, and loading from a path."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # also in conftest.py; kept for running this file alone

from rlbook.models import SPECIAL, TinyConfig, char_tokenizer, load_pretrained, tiny_llama  # noqa: E402

ALPHABET = "abc +=0123456789\n"
CFG = TinyConfig(hidden=32, layers=1, heads=2, intermediate=64, max_len=32)


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), CFG, seed=0, tokenizer=tok)  # ~5 s once: transformers' lazy imports


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tok, model):
    d = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def test_char_tokenizer_ids_and_round_trip(tok):
    assert [tok.convert_tokens_to_ids(s) for s in SPECIAL] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) == len(SPECIAL) + len(ALPHABET)
    text = "12 + 3 = 15\n a  b"
    ids = tok(text).input_ids
    assert len(ids) == len(text)  # one token per character, no special tokens added
    assert ids[:3] == [4 + ALPHABET.index("1"), 4 + ALPHABET.index("2"), 4 + ALPHABET.index(" ")]
    assert tok.decode(ids) == text  # spaces, repeated spaces and newlines survive
    assert tok.decode([1, *ids, 2], skip_special_tokens=True) == text
    assert tok("z!").input_ids == [3, 3]  # outside the alphabet -> <unk>


def test_char_tokenizer_left_padding(tok):
    enc = tok(["1", "a b"], padding=True, return_tensors="pt")

    def a(ch):
        return 4 + ALPHABET.index(ch)

    assert enc.input_ids.tolist() == [[0, 0, a("1")], [a("a"), a(" "), a("b")]]
    assert enc.attention_mask.tolist() == [[0, 0, 1], [1, 1, 1]]
    assert tok.padding_side == "left"


def test_char_tokenizer_refuses_repeats():
    with pytest.raises(ValueError, match="repeated"):
        char_tokenizer("abca")


def test_tiny_llama_deterministic_given_seed(tok, model):
    state = torch.random.get_rng_state()
    again = tiny_llama(len(tok), CFG, seed=0, tokenizer=tok)
    other = tiny_llama(len(tok), CFG, seed=1, tokenizer=tok)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    sa, sb, so = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], so[k]) for k in sa)


def test_tiny_llama_config(tok, model):
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.vocab_size) == (32, 1, 2, len(tok))
    assert c.tie_word_embeddings and c.pad_token_id == 0 and c.eos_token_id == 2
    assert model.generation_config.pad_token_id == 0
    ids = tok(["1+2=", "3"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**ids).logits
    assert out.shape == (2, 4, len(tok)) and torch.isfinite(out).all()


def test_save_load_round_trip_identical_logits(tok, model, saved):
    m2, t2 = load_pretrained(saved)  # the same call the full profile makes with a Hub name
    from transformers import PreTrainedTokenizerFast

    assert isinstance(t2, PreTrainedTokenizerFast)
    text = ["12 + 3 =", "a b\nc"]
    assert t2(text, padding=True).input_ids == tok(text, padding=True).input_ids
    assert t2.decode(t2("a  b\n1").input_ids) == "a  b\n1"
    assert t2.padding_side == "left" and t2.pad_token_id == 0
    enc = tok(text, padding=True, return_tensors="pt")
    model.eval()
    m2.eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, m2(**enc).logits)
    assert next(m2.parameters()).device.type == "cpu"


def test_load_pretrained_dtype_and_generate(saved):
    m, t = load_pretrained(saved, dtype=torch.float64)
    assert next(m.parameters()).dtype == torch.float64
    enc = t(["1+2="], return_tensors="pt")
    out = m.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)
    assert out[0, :4].tolist() == enc.input_ids[0].tolist()


def test_saved_tiny_stand_ins_load_like_hub_models(tmp_path):
    """The dry runs' stand-ins for Hub checkpoints load through the same API as a Hub name."""
    from rlbook import hub
    from rlbook.models import TINY_CHAT_TEMPLATE, load_pretrained, save_tiny_policy, save_tiny_reward_model

    tok = save_tiny_policy(tmp_path / "policy", "abc ?:\n", max_len=64)
    save_tiny_reward_model(tmp_path / "rm", tok, max_len=64)
    model, tok2 = load_pretrained(str(tmp_path / "policy"))
    assert tok2.chat_template == TINY_CHAT_TEMPLATE and tok2.padding_side == "left"
    rm, rm_tok = hub.load_reward_model(str(tmp_path / "rm"), "cpu")
    s = hub.score(rm, rm_tok, ["a?"], ["b"], "cpu")
    assert s.shape == (1,)
