"""The full profile's plumbing, on local data (no network)."""

import pytest

from rlbook import hub


def test_load_dataset_from_a_local_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"a": 1}, {"a": 2}])}).save_to_disk(str(tmp_path / "dd"))
    Dataset.from_list([{"a": 3}]).save_to_disk(str(tmp_path / "d"))
    assert hub.load_dataset(str(tmp_path / "dd"), "train")["a"] == [1, 2]
    assert hub.load_dataset(str(tmp_path / "d"))["a"] == [3]  # a bare Dataset ignores the split


def test_user_text_takes_the_last_user_turn():
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "q?"}]
    assert hub.user_text({"prompt": conv}) == "q?"
    assert hub.user_text({"prompt": "plain"}) == "plain"


def test_trl_common_is_cpu_safe():
    kw = hub.trl_common("out", seed=3, cuda=False, max_steps=5)
    assert kw["use_cpu"] and not kw["bf16"] and kw["report_to"] == "none" and kw["save_strategy"] == "no"
    assert kw["seed"] == kw["data_seed"] == 3 and kw["logging_steps"] == 1
    assert hub.checkpointing_kw(False) in ({"activation_checkpointing": False}, {"gradient_checkpointing": False})
    gpu = hub.trl_common("out", seed=0, cuda=True)
    assert gpu["bf16"] and not gpu["use_cpu"] and gpu["max_steps"] == -1


def test_as_text_applies_trl_prompt_extraction():
    pytest.importorskip("trl")
    ex = {"chosen": "Q: 1+1? A: 2", "rejected": "Q: 1+1? A: 3"}
    out = hub.as_text(ex, tok=None)
    assert out["prompt"] + out["chosen"] == ex["chosen"] and out["prompt"] + out["rejected"] == ex["rejected"]
    assert out["prompt"].startswith("Q: 1+1? A:") and out["chosen"].strip() == "2"


def test_full_device_on_the_cpu_and_the_vllm_switch():
    import torch

    from rlbook import hub

    assert hub.full_device(cpu=True) == ("cpu", torch.float32, False)
    if not torch.cuda.is_available():
        assert hub.full_device() == ("cpu", torch.float32, False)
    assert hub.vllm_kw(False) == {"use_vllm": False}
    assert hub.vllm_kw(True)["vllm_mode"] == "colocate"
