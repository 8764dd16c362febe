"""State a paper's claim and check it by machine.

A notebook states each claim once::

    claims.claim(
        "psr-sharpens",
        paper="PSR improves pass@1 but hurts large k (Fig. 2)",
        measured="pass@1(PSR) - pass@1(base)",
        value=psr_p1 - base_p1, op=">=", threshold=0.05,
        paper_value="+0.08 on MATH (Qwen2.5-Math-7B)",
    )

The condition is ``value <op> threshold``; the threshold carries the margin that
separates the method from its baseline. Each claim is displayed in the notebook,
and appended as one JSON line to ``$RLBOOK_CLAIMS_FILE`` when the runner set it:
that file feeds the claims ledger, and a failed claim makes the run exit non-zero.
A failed claim does not stop the notebook (the rest of the page still runs).
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import asdict, dataclass

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}

_REGISTRY: list["Claim"] = []


@dataclass(frozen=True)
class Claim:
    """One machine-checked claim of a paper."""

    id: str
    """short stable name, unique within the notebook"""
    paper: str
    """what the paper states (the claim in words)"""
    measured: str
    """what the notebook measures to test it (a formula in words)"""
    value: float
    """the measured value"""
    op: str
    """the comparison: one of >=, <=, >, <"""
    threshold: float
    """the bound, margin included"""
    passed: bool
    """``value <op> threshold``"""
    paper_value: str | None = None
    """the paper's own number, where the paper gives one"""

    @property
    def condition(self) -> str:
        return f"{self.measured} {self.op} {self.threshold:g}"

    def _repr_markdown_(self) -> str:
        mark = "✅ holds" if self.passed else "❌ FAILS"
        pv = f"; paper: {self.paper_value}" if self.paper_value else ""
        return (
            f"**Claim `{self.id}`** — {self.paper}\n\n"
            f"measured {self.measured} = **{self.value:.4g}**, "
            f"condition {self.op} {self.threshold:g}: {mark}{pv}"
        )


def claim(
    id: str,
    *,
    paper: str,
    measured: str,
    value: float,
    op: str,
    threshold: float,
    paper_value: str | None = None,
) -> Claim:
    """Record and check one claim; return it (it displays itself in a notebook)."""
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}: choose one of {', '.join(OPS)}")
    if not isinstance(id, str) or not id:
        raise ValueError("a claim needs a non-empty string id")
    if any(c.id == id for c in _REGISTRY):
        raise ValueError(f"claim {id!r} stated twice in this session")
    try:
        value = float(value)
        threshold = float(threshold)
    except (TypeError, ValueError) as e:
        raise TypeError(f"claim {id!r}: value and threshold must be numbers ({e})") from None
    passed = (not math.isnan(value)) and bool(OPS[op](value, threshold))
    c = Claim(id, paper, measured, value, op, threshold, passed, paper_value)
    _REGISTRY.append(c)
    path = os.environ.get("RLBOOK_CLAIMS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            rec = asdict(c)
            if math.isnan(rec["value"]):
                rec["value"] = None  # strict JSON has no NaN
            f.write(json.dumps(rec) + "\n")
    return c


def stated() -> list[Claim]:
    """The claims stated so far in this session, in order."""
    return list(_REGISTRY)


def reset() -> None:
    """Forget the claims stated so far (for tests)."""
    _REGISTRY.clear()


def table(claims: list[Claim] | None = None):
    """The claims as a pandas DataFrame (one row each), for the notebook's summary."""
    import pandas as pd

    rows = [
        {
            "claim": c.id,
            "condition": c.condition,
            "measured": round(c.value, 4),
            "paper": c.paper_value or "",
            "status": "holds" if c.passed else "FAILS",
        }
        for c in (claims if claims is not None else _REGISTRY)
    ]
    return pd.DataFrame(rows)


def read_file(path: str | os.PathLike) -> list[dict]:
    """Read a claims JSON-lines file written by ``claim`` (for the runner)."""
    out = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            out = [json.loads(line) for line in f if line.strip()]
    return out
