"""rlbook.models.zoo: deterministic builds, the committed checkpoint and its competence."""

import json

import numpy as np
import pytest
import torch

from rlbook.models import zoo


def test_build_is_deterministic():
    a, _, _, ia = zoo.build("countdown4", steps=2, evaluate=False)
    b, _, _, ib = zoo.build("countdown4", steps=2, evaluate=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert ia == ib


def test_build_writes_a_loadable_checkpoint(tmp_path, monkeypatch):
    model, _, _, info = zoo.build("countdown4", steps=1, out_dir=tmp_path, evaluate=False)
    assert (tmp_path / "countdown4.pt").exists() and json.loads((tmp_path / "countdown4.json").read_text())["steps_run"] == 1
    monkeypatch.setattr(zoo, "PACKAGE_DIR", tmp_path)
    loaded, tok, task, info2 = zoo.load("countdown4")
    for (k, v), (_, w) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(v, w), k
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # tied


def test_committed_checkpoint_is_package_data():
    assert (zoo.PACKAGE_DIR / "countdown4.pt").exists()
    size = (zoo.PACKAGE_DIR / "countdown4.pt").stat().st_size
    assert 100_000 < size < 1_500_000


def test_committed_checkpoint_has_documented_competence():
    """Partial competence: room to improve pass@1 and diversity to lose at large k."""
    model, tok, task, info = zoo.load("countdown4")
    assert info["steps_run"] == zoo.RECIPES["countdown4"].steps
    c = zoo.competence(model, tok, task, zoo.Recipe(**info["recipe"]))
    assert c["pass@1"] == pytest.approx(info["competence"]["pass@1"], abs=1e-5)
    assert c["pass@64"] == pytest.approx(info["competence"]["pass@64"], abs=1e-5)
    assert 0.12 < c["pass@1"] < 0.35
    assert c["pass@64"] > 0.95


def test_unknown_entry_is_refused():
    with pytest.raises(ValueError, match="unknown zoo entry"):
        zoo.load("nope")


def test_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RLBOOK_CACHE", str(tmp_path))
    assert zoo.cache_dir() == tmp_path / "zoo"


def test_eval_problems_are_fixed_test_prompts():
    task = zoo.make_task(zoo.RECIPES["countdown4"])
    a = zoo.eval_problems(task, 5)
    b = zoo.eval_problems(task, 5)
    assert a == b
    test_prompts = {p.prompt for p in task.problems("test")}
    assert all(p.prompt in test_prompts for p in a)
    assert np.all([task.verify(p, task.correct_answers(p)[0]) for p in a])
