"""rlbook.claims: the pass/fail logic, refusals, and the JSON-lines ledger file."""

from __future__ import annotations

import json
import math

import pytest

from rlbook import claims


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("RLBOOK_CLAIMS_FILE", raising=False)
    claims.reset()
    yield
    claims.reset()


def state(id="c", value=1.0, op=">=", threshold=0.5, **kw):
    return claims.claim(id, paper="the paper says", measured="x - y", value=value, op=op, threshold=threshold, **kw)


@pytest.mark.parametrize(
    "value, op, threshold, passed",
    [
        (1.0, ">=", 1.0, True),
        (0.99, ">=", 1.0, False),
        (1.0, ">", 1.0, False),
        (1.01, ">", 1.0, True),
        (1.0, "<=", 1.0, True),
        (1.01, "<=", 1.0, False),
        (1.0, "<", 1.0, False),
        (-3.0, "<", -2.0, True),
        (math.inf, ">=", 0.0, True),
    ],
)
def test_pass_fail(value, op, threshold, passed):
    c = state(value=value, op=op, threshold=threshold)
    assert c.passed is passed
    assert ("holds" if passed else "FAILS") in c._repr_markdown_()


@pytest.mark.parametrize("op", [">=", "<=", ">", "<"])
def test_nan_fails_whatever_the_comparison(op):
    assert state(value=float("nan"), op=op, threshold=0.0).passed is False


def test_numpy_and_torch_scalars_are_numbers():
    import numpy as np
    import torch

    a = state("a", value=np.float32(0.75))
    b = state("b", value=torch.tensor(0.25), op="<")
    assert a.passed and b.passed and isinstance(a.value, float) and isinstance(b.value, float)


def test_unknown_op_refused():
    with pytest.raises(ValueError, match="unknown comparison '=='"):
        state(op="==")
    assert claims.stated() == []


def test_bad_value_refused():
    with pytest.raises(TypeError, match="value and threshold must be numbers"):
        state(value="high")
    with pytest.raises(ValueError, match="non-empty"):
        state(id="")


def test_duplicate_id_refused_and_reset():
    state("dup")
    with pytest.raises(ValueError, match="stated twice"):
        state("dup", value=2.0)
    assert [c.id for c in claims.stated()] == ["dup"]
    claims.reset()
    state("dup")  # a fresh session may state it again


def test_table_and_condition():
    state("a", value=1.0, paper_value="+0.08 on MATH")
    state("b", value=0.0)
    df = claims.table()
    assert list(df["claim"]) == ["a", "b"]
    assert list(df["status"]) == ["holds", "FAILS"]
    assert df["condition"][0] == "x - y >= 0.5"
    assert df["paper"][0] == "+0.08 on MATH"


def test_no_file_without_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state()
    assert list(tmp_path.iterdir()) == []


def test_json_lines_file_when_env_set(tmp_path, monkeypatch):
    path = tmp_path / "claims.jsonl"
    monkeypatch.setenv("RLBOOK_CLAIMS_FILE", str(path))
    state("a", value=1.0, paper_value="0.9")
    state("b", value=0.1, op=">", threshold=0.2)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {
        "id": "a",
        "paper": "the paper says",
        "measured": "x - y",
        "value": 1.0,
        "op": ">=",
        "threshold": 0.5,
        "passed": True,
        "paper_value": "0.9",
    }
    rows = claims.read_file(path)
    assert [r["id"] for r in rows] == ["a", "b"] and [r["passed"] for r in rows] == [True, False]
    assert claims.read_file(tmp_path / "missing.jsonl") == []
