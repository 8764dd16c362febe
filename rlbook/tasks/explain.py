r"""Scratchpad addition with an answer-conditioned (rationalisation) prompt: the ExPO chapter's task.

Two 3-digit operands (zero-padded, so every prompt and completion has the same length).
The *question* shows the answer slot masked, the *rationalisation* prompt shows the
ground-truth answer :math:`a^*` in it -- the two prompts differ in four characters only,
as the paper's self-explanation prompt differs from its plain prompt by a hint::

    question         "047+085|????="
    rationalisation  "047+085|0132="

A completion is a chain of thought :math:`c` (the column sums, least significant column
first, two digits each) followed by ``">"`` and the 4-digit answer :math:`a`::

    notation "self" (the base's own)   "12,13,01,>0132"     (7+5=12, 4+8+1=13, 0+0+1=01)
    notation "expert" (unfamiliar)     "21;31;10;>0132"     (the same sums, digits reversed, ';')

Both notations carry the same information; the expert one is rare in the base's corpus
(the paper's expert CoTs are correct but unlikely under the policy). The verifier looks
only at the answer after ``">"`` (an outcome reward, as the paper's math verifier).

*Difficulty*: a problem is **easy** when both operands are below 100 (the third column
is ``0+0+carry``) and **hard** otherwise (the "level-5" subset of the chapter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHABET = "0123456789+|?=,;>"
"""every character of the task (a BOS token is added by the tokenizer)"""
DIGITS = 3
"""digits per operand (zero-padded)"""
PROMPT_LEN = 2 * DIGITS + 1 + 1 + (DIGITS + 1) + 1
"""characters of a prompt: ``"047+085|????="`` (13)"""
COT_LEN = 3 * DIGITS
"""characters of a chain of thought: three per column (9)"""
ANSWER_LEN = DIGITS + 1
"""characters of an answer, zero-padded (4)"""
COMPLETION_LEN = COT_LEN + 1 + ANSWER_LEN
"""characters of a completion: CoT, ``">"``, answer (14)"""
NOTATIONS = ("self", "expert")
"""CoT notations: the base's own, and the unfamiliar expert one"""


@dataclass(frozen=True)
class Problem:
    """One addition problem ``a + b``."""

    a: int
    """first operand, 0..999"""
    b: int
    """second operand, 0..999"""

    @property
    def answer(self) -> str:
        """The ground-truth answer :math:`a^*`, zero-padded to 4 digits."""
        return f"{self.a + self.b:0{ANSWER_LEN}d}"

    @property
    def hard(self) -> bool:
        """True unless both operands are below 100 (the chapter's hard subset)."""
        return max(self.a, self.b) >= 100

    def question(self) -> str:
        """The plain prompt :math:`q`: ``"047+085|????="``."""
        return f"{self.a:0{DIGITS}d}+{self.b:0{DIGITS}d}|{'?' * ANSWER_LEN}="

    def rationalisation(self) -> str:
        """The answer-conditioned prompt :math:`(q, a^*)`: ``"047+085|0132="``."""
        return f"{self.a:0{DIGITS}d}+{self.b:0{DIGITS}d}|{self.answer}="


def column_sums(p: Problem) -> list[int]:
    """The column sums ``a_i + b_i + carry_in``, least significant column first (each 0..19)."""
    out, carry = [], 0
    for i in range(DIGITS):
        s = (p.a // 10**i) % 10 + (p.b // 10**i) % 10 + carry
        out.append(s)
        carry = s // 10
    return out


def cot(p: Problem, notation: str = "self") -> str:
    """The correct chain of thought of ``p`` in ``notation`` (``"self"`` or ``"expert"``), 9 characters."""
    if notation == "self":
        return "".join(f"{s:02d}," for s in column_sums(p))
    if notation == "expert":
        return "".join(f"{s:02d}"[::-1] + ";" for s in column_sums(p))
    raise ValueError(f"unknown notation {notation!r}; choose from {', '.join(NOTATIONS)}")


def solution(p: Problem, notation: str = "self") -> str:
    """The full correct completion: CoT, ``">"``, answer (14 characters)."""
    return cot(p, notation) + ">" + p.answer


def answer_of(completion: str) -> str | None:
    """The answer a completion states: the characters after its last ``">"`` (None if there is none)."""
    i = completion.rfind(">")
    return None if i < 0 else completion[i + 1 :]


def verify(p: Problem, completion: str) -> bool:
    """Outcome reward: the stated answer equals :math:`a^*` exactly (the CoT is not checked)."""
    return answer_of(completion) == p.answer


def cot_is_correct(p: Problem, completion: str) -> bool:
    """Whether the completion's CoT is the correct one in either notation (a process check, for diagnostics)."""
    c = completion[:COT_LEN]
    return c == cot(p, "self") or c == cot(p, "expert")


def sample(n: int, rng: np.random.Generator, level: str = "hard", split: str = "train",
           max_operand: int = 999) -> list[Problem]:
    """``n`` random problems of ``level`` (``"easy"``, ``"hard"`` or ``"all"``) from ``split``, operands ``<= max_operand``.

    Splits: a fixed 20% of all ``(a, b)`` pairs (:func:`is_test`) is ``"test"``, the rest ``"train"``.
    """
    if level not in ("easy", "hard", "all"):
        raise ValueError(f"unknown level {level!r}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}")
    if not (100 if level == "hard" else 0) <= max_operand <= 999:
        raise ValueError("max_operand must be in 0..999 (at least 100 for the hard level)")
    out: list[Problem] = []
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        hi = min(100, max_operand + 1) if level == "easy" else max_operand + 1
        ab = rng.integers(0, hi, size=(m, 2))
        for a, b in ab:
            p = Problem(int(a), int(b))
            if level == "hard" and not p.hard:
                continue
            if is_test(p) != (split == "test"):
                continue
            out.append(p)
            if len(out) == n:
                break
    return out


def is_test(p: Problem) -> bool:
    """The fixed test split, 20% of all pairs by a multiplicative hash of ``1000 a + b`` (unrelated to the digits)."""
    h = ((1000 * p.a + p.b) * 2654435761) % 2**32
    return (h >> 13) % 5 == 0
