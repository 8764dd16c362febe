r"""Addition written digit by digit with carries, and a scripted noisy teacher (REDI chapter).

A problem is ``"47+38="``; its *trace* works the columns from the right, one column per
``;``-separated step, writing the carry-in as ``+1`` and the column sum::

    47+38=  ->  7+8=15;4+3+1=8

(units 7+8=15: write 5, carry 1; tens 4+3+1=8). As in written column addition, the answer is
read off the scratchpad: the last column's sum, then the last digit of every other column's sum
(here 85; :func:`answer_of`). The *verifier* checks only that answer, as an RLVR verifier
does; :func:`trace_ok` also checks every step.

:class:`NoisyTeacher` plays the reasoning teacher of the REDI paper (DeepSeek-R1 in
Open-R1): for every problem it yields one correct trace and one wrong trace, the wrong one
carrying one of the errors a student typically makes, propagated consistently to the
answer:

- ``"drop_carry"``: a carry-in is forgotten (``4+3=7`` instead of ``4+3+1=8``);
- ``"extra_carry"``: a carry is added where there is none (``2+3+1=6`` after ``1+4=5``);
- ``"slip"``: one column sum is off by one (``7+8=16``), and the later columns follow it.

All problems have ``n_digits``-digit operands (leading digit >= 1). A fixed hash of the
problem puts 20% of them in the ``"test"`` split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ERRORS = ("drop_carry", "extra_carry", "slip")
"""the noisy teacher's error types"""

ALPHABET = "0123456789+=;"
"""every character of prompts and traces"""


@dataclass(frozen=True)
class AddProblem:
    """``a + b`` with ``n_digits``-digit operands."""

    a: int
    """first operand"""
    b: int
    """second operand"""

    @property
    def prompt(self) -> str:
        """the text the model is conditioned on, e.g. ``"47+38="``"""
        return f"{self.a}+{self.b}="

    @property
    def target(self) -> int:
        """the correct sum"""
        return self.a + self.b


def _digits(x: int, n: int) -> list[int]:
    """The ``n`` least significant digits of ``x``, units first."""
    return [(x // 10**i) % 10 for i in range(n)]


def _render(cols: list[tuple[int, int, int, int]]) -> str:
    """Trace text from columns ``(a_i, b_i, carry_in, column_sum)``, units first."""
    return ";".join(f"{a}+{b}{'+1' if c else ''}={s}" for a, b, c, s in cols)


def _columns(p: AddProblem, n: int, flip_at: int = -1, slip_at: int = -1, slip: int = 0):
    """Work the columns; optionally flip the carry-in of column ``flip_at`` or add ``slip`` to column ``slip_at``.

    Returns the columns ``(a_i, b_i, carry_in, column_sum)``; later columns take their
    carry from the (possibly erroneous) sum written before them.
    """
    da, db = _digits(p.a, n), _digits(p.b, n)
    cols, carry = [], 0
    for i in range(n):
        c = 1 - carry if i == flip_at else carry
        s = da[i] + db[i] + c + (slip if i == slip_at else 0)
        cols.append((da[i], db[i], c, s))
        carry = 1 if s >= 10 else 0
    return cols


def gold_trace(p: AddProblem, n_digits: int = 2) -> str:
    """The correct trace of ``p`` (``n_digits`` columns)."""
    return _render(_columns(p, n_digits))


def answer_of(trace: str) -> str:
    """The answer a trace implies: the last column's sum, then the last digit of each earlier sum.

    ``"7+8=15;4+3+1=8"`` → ``"85"``. A malformed trace gives ``""``.
    """
    sums = []
    for step in trace.split(";"):
        lhs, eq, rhs = step.partition("=")
        if not eq or not rhs.isdigit() or not lhs:
            return ""
        sums.append(rhs)
    return sums[-1] + "".join(s[-1] for s in reversed(sums[:-1]))


def verify(p: AddProblem, trace: str) -> bool:
    """RLVR verifier: the answer the trace implies (:func:`answer_of`) is the decimal sum exactly."""
    return answer_of(trace) == str(p.target)


def trace_ok(p: AddProblem, trace: str, n_digits: int = 2) -> bool:
    """Every step and the answer are right: the trace equals :func:`gold_trace`."""
    return trace == gold_trace(p, n_digits)


def carries(p: AddProblem, n_digits: int = 2) -> list[int]:
    """The carry-in of each column, units first (column 0 never has one)."""
    return [c for _, _, c, _ in _columns(p, n_digits)]


def wrong_trace(p: AddProblem, error: str, rng: np.random.Generator, n_digits: int = 2) -> str:
    """A trace of ``p`` carrying one ``error`` (one of :data:`ERRORS`), propagated consistently.

    ``"drop_carry"`` needs a column with a carry-in and ``"extra_carry"`` a column (after the
    first) without one (``ValueError`` otherwise). The result always fails :func:`verify`.
    """
    n = n_digits
    cin = carries(p, n)
    if error in ("drop_carry", "extra_carry"):
        want = 1 if error == "drop_carry" else 0
        cand = [i for i in range(1, n) if cin[i] == want]
        if not cand:
            raise ValueError(f"{p.prompt}: no column for {error}")
        cols = _columns(p, n, flip_at=int(rng.choice(cand)))
    elif error == "slip":
        i = int(rng.integers(n))
        d = 1 if rng.random() < 0.5 else -1
        da, db = _digits(p.a, n), _digits(p.b, n)
        if da[i] + db[i] + cin[i] + d < 0:
            d = 1
        cols = _columns(p, n, slip_at=i, slip=d)
    else:
        raise ValueError(f"error must be one of {ERRORS}, got {error!r}")
    return _render(cols)


def _is_test(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fixed 20% test split by a hash of ``(a, b)``."""
    return ((a * 7919 + b * 104729) % 10) < 2


class ScratchpadAddition:
    """The task: all ``n_digits``-digit problems, split 80/20 by a fixed hash."""

    alphabet = ALPHABET

    def __init__(self, n_digits: int = 2):
        if not 1 <= n_digits <= 4:
            raise ValueError("n_digits must be in 1..4")
        self.n_digits = n_digits
        lo = 10 ** (n_digits - 1) if n_digits > 1 else 0
        a, b = np.meshgrid(np.arange(lo, 10**n_digits), np.arange(lo, 10**n_digits), indexing="ij")
        a, b = a.ravel(), b.ravel()
        test = _is_test(a, b)
        self._split = {"train": np.stack([a[~test], b[~test]], 1), "test": np.stack([a[test], b[test]], 1)}

    @property
    def max_trace_len(self) -> int:
        """characters of the longest possible trace (a slip can add at most one digit)"""
        return self.n_digits * len("9+9+1=19;") - 1

    def sample(self, k: int, rng: np.random.Generator, split: str = "train") -> list[AddProblem]:
        """``k`` distinct problems of ``split`` (``"train"`` or ``"test"``), without replacement."""
        ab = self._split[split]
        if k > len(ab):
            raise ValueError(f"only {len(ab)} {split} problems, asked for {k}")
        idx = rng.choice(len(ab), size=k, replace=False)
        return [AddProblem(int(x), int(y)) for x, y in ab[idx]]

    def gold(self, p: AddProblem) -> str:
        """The correct trace."""
        return gold_trace(p, self.n_digits)

    def verify(self, p: AddProblem, trace: str) -> bool:
        """Final-answer check (:func:`verify`)."""
        return verify(p, trace)


@dataclass(frozen=True)
class TeacherPair:
    """One problem with a verified-correct and a verified-wrong teacher trace."""

    problem: AddProblem
    """the problem"""
    positive: str
    """a trace that passes the verifier"""
    negative: str
    """a trace that fails it"""
    error: str
    """the error type of the negative (one of :data:`ERRORS`)"""


class NoisyTeacher:
    r"""A scripted teacher: correct with probability ``p_correct``, else one error of :data:`ERRORS`.

    ``error_probs`` weights the error types (a carry error falls back to ``slip`` on a problem
    without a column for it). :meth:`pairs` samples the teacher until each problem has one positive
    and one negative, as the REDI data keeps problems with both a verified-correct and an
    incorrect R1 trace; it also reports how many samples that took (the teacher's accuracy).
    """

    def __init__(self, task: ScratchpadAddition, p_correct: float = 0.6,
                 error_probs: tuple[float, float, float] = (0.4, 0.3, 0.3)):
        if not 0.0 < p_correct < 1.0:
            raise ValueError("p_correct must be in (0, 1)")
        if len(error_probs) != len(ERRORS) or min(error_probs) < 0 or sum(error_probs) <= 0:
            raise ValueError(f"error_probs must be {len(ERRORS)} non-negative weights")
        self.task = task
        self.p_correct = p_correct
        self.error_probs = np.asarray(error_probs, dtype=float) / sum(error_probs)

    def sample(self, p: AddProblem, rng: np.random.Generator) -> tuple[str, str | None]:
        """One teacher trace of ``p`` and its error type (``None`` when correct)."""
        if rng.random() < self.p_correct:
            return self.task.gold(p), None
        err = ERRORS[int(rng.choice(len(ERRORS), p=self.error_probs))]
        cin = carries(p, self.task.n_digits)[1:]
        if (err == "drop_carry" and 1 not in cin) or (err == "extra_carry" and 0 not in cin):
            err = "slip"
        return wrong_trace(p, err, rng, self.task.n_digits), err

    def pairs(self, problems: list[AddProblem], rng: np.random.Generator, max_tries: int = 50) -> tuple[list[TeacherPair], int]:
        """One :class:`TeacherPair` per problem, and the number of teacher samples drawn."""
        out, drawn = [], 0
        for p in problems:
            pos = neg = err = None
            for _ in range(max_tries):
                t, e = self.sample(p, rng)
                drawn += 1
                if e is None and pos is None:
                    pos = t
                elif e is not None and neg is None:
                    neg, err = t, e
                if pos is not None and neg is not None:
                    break
            if pos is None or neg is None:
                raise RuntimeError(f"teacher gave no {'positive' if pos is None else 'negative'} for {p.prompt}")
            out.append(TeacherPair(p, pos, neg, err))
        return out, drawn
