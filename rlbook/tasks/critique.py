r"""Two-digit addition with a rule-based critic: the toy task of the Critique-GRPO chapter.

``"a+b="`` with :math:`a,b\in[10,99]` and a three-digit, zero-padded answer (``"47+38="`` → ``"085"``).
The *persistent-failure* subset is the carry chains: the units carry *and* the tens digits sum to 9,
so the carry runs on into the hundreds (``45+55=100``); dropping it gives ``"090"``.

The critic (:func:`critique`) has the three critique types of the paper (Sec. 2, "indicative",
"with ground truth", "chain-of-thought"):

- ``"indicative"``: only says the answer is wrong (``"wrong"``);
- ``"ground_truth"``: wrong, and the reference answer (``"wrong; the answer is 100"``);
- ``"cot"``: a step-by-step diagnosis from the units up: the first wrong digit, what it should be and,
  when the error is a dropped carry, that it is (``"wrong: digit 1 should be 0 (carry)"``).

Each critique also carries what it *tells* a reader: :func:`consistent` says whether a candidate
answer agrees with everything the critique says. :func:`refinement_prompt` is the text format
``q | y_wrong | critique >`` in which a policy is asked to refine (the paper's refinement prompt, in
miniature).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlbook.tasks import Problem

KINDS = ("indicative", "ground_truth", "cot")
"""the critique types (paper Sec. 2: indicative, critique with ground truth, chain-of-thought critique)"""


@dataclass(frozen=True)
class Critique:
    """A critique of one answer: the text shown to the policy and the facts it states."""

    kind: str
    """one of :data:`KINDS`"""
    answer: str
    """the answer criticised"""
    text: str
    """what the policy reads"""
    correct: bool
    """the verifier's verdict on ``answer``"""
    reveal: str | None = None
    """ground truth: the reference answer"""
    digit: int | None = None
    """chain of thought: position of the first wrong digit (0 = units)"""
    value: str | None = None
    """chain of thought: what that digit should be"""


def digits_of(s: str) -> list[str]:
    """The digits of a three-digit answer from the units up: ``"085"`` → ``["5", "8", "0"]``."""
    return list(reversed(s))


def fmt(v: int) -> str:
    """Three-digit, zero-padded answer string."""
    return f"{v:03d}"


class CritiqueAdditionTask:
    """``"a+b="`` → ``"%03d" % (a+b)``, :math:`a,b\\in[10,99]`; carry chains are the persistent failures."""

    alphabet = "0123456789+=|>:;() abcdefghilnorstuwy"
    answer_len = 3

    @staticmethod
    def problem(a: int, b: int) -> Problem:
        return Problem(f"{a}+{b}=", (int(a), int(b)), int(a + b))

    @staticmethod
    def is_persistent(p: Problem) -> bool:
        """Carry chain into the hundreds: units carry and the tens digits sum to 9."""
        a, b = p.numbers
        return (a % 10 + b % 10 >= 10) and (a // 10 + b // 10 == 9)

    def problems(self, persistent: bool | None = None) -> list[Problem]:
        """Every problem (8100), or only the persistent (``True``) / other (``False``) ones."""
        out = [self.problem(a, b) for a in range(10, 100) for b in range(10, 100)]
        if persistent is None:
            return out
        return [p for p in out if self.is_persistent(p) == persistent]

    def sample(self, n: int, rng: np.random.Generator, persistent: bool | None = None) -> list[Problem]:
        """``n`` distinct problems drawn uniformly (optionally from one subset)."""
        pool = self.problems(persistent)
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]

    @staticmethod
    def verify(p: Problem, answer: str) -> bool:
        """Exact match of the zero-padded sum."""
        return answer == fmt(p.target)

    @staticmethod
    def dropped_carry_answers(p: Problem) -> list[str]:
        """Wrong answers with carries dropped: all of them, the units carry only, the tens carry only."""
        a, b = p.numbers
        u, t = a % 10 + b % 10, a // 10 + b // 10
        no_carry = fmt((t % 10) * 10 + u % 10)
        drop_units = fmt(t * 10 + u % 10)  # tens computed without the units carry
        drop_tens = fmt(((t + u // 10) % 10) * 10 + u % 10)  # the carry into the hundreds lost
        return [y for y in dict.fromkeys([no_carry, drop_units, drop_tens]) if y != fmt(a + b)]

    def candidates(self, p: Problem, K: int = 12) -> list[str]:
        """``K`` distinct answer strings: the correct one first, then dropped-carry errors, one-digit
        slips (:math:`\\pm1, \\pm10, \\pm100`) and nearby values (a fixed order, no randomness)."""
        t = p.target
        out = [fmt(t)] + self.dropped_carry_answers(p)
        out += [fmt(t + d) for d in (-1, 1, -10, 10, -100, 100, -2, 2, -11, 11, -20, 20, -9, 9) if 0 <= t + d <= 999]
        out = list(dict.fromkeys(out))
        if len(out) < K:
            raise ValueError("K too large")
        return out[:K]


def critique(p: Problem, answer: str, kind: str) -> Critique:
    """The rule-based critic's critique of ``answer`` (:data:`KINDS`); see the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    ref = fmt(p.target)
    if answer == ref:
        return Critique(kind, answer, "correct", True)
    if kind == "indicative":
        return Critique(kind, answer, "wrong", False)
    if kind == "ground_truth":
        return Critique(kind, answer, f"wrong; the answer is {ref}", False, reveal=ref)
    got = digits_of(answer[-3:].rjust(3, "?"))
    want = digits_of(ref)
    k = next((i for i in range(3) if i >= len(got) or got[i] != want[i]), 0)
    carry = got[k].isdigit() and (int(got[k]) + 1) % 10 == int(want[k])
    text = f"wrong: digit {k} should be {want[k]}" + (" (carry)" if carry else "")
    return Critique(kind, answer, text, False, digit=k, value=want[k])


def consistent(c: Critique, candidate: str) -> bool:
    """Does ``candidate`` agree with everything the critique states?

    Indicative: it is not the criticised answer. Ground truth: it is the revealed answer. Chain of
    thought: the digits below the flagged one are those of the criticised answer (they were checked and
    found right), the flagged digit has the stated value.
    """
    if c.correct:
        return candidate == c.answer
    if c.kind == "indicative":
        return candidate != c.answer
    if c.kind == "ground_truth":
        return candidate == c.reveal
    got, cand = digits_of(c.answer), digits_of(candidate)
    return cand[: c.digit] == got[: c.digit] and cand[c.digit] == c.value


def refinement_prompt(p: Problem, answer: str, c: Critique) -> str:
    """The refinement prompt ``"a+b=|y_wrong|critique>"``: the policy continues with a new answer."""
    return f"{p.prompt}|{answer}|{c.text}>"
