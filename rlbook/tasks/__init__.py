r"""Synthetic verifiable tasks: a prompt, a ``verify(problem, answer)`` check.

Two text tasks live in this module; chapter-specific tasks are submodules
(``rlbook.tasks.<name>``), each with its verifier and tests.

- :class:`AdditionTask` -- ``"a+b="`` → the decimal sum; variable-length answers.
- :class:`CountdownTask` -- reach a target with ``n`` distinct digits, each used exactly
  once, and ``+ - *`` with the usual precedence. The answer has a fixed length
  ``2n-1`` (digit, operator, digit, ...), so a sampler can enforce the format with a
  logits mask (:meth:`CountdownTask.logits_mask`) and every answer string can be
  enumerated: a prompt has ``n!·3^(n-1)`` candidate answers (648 for ``n=4``), of
  which the correct ones are listed by :meth:`CountdownTask.correct_answers`.
  That makes pass@k *exact*: with :math:`p(x)=\sum_{y\ \mathrm{correct}}\pi(y|x)`,
  :math:`\text{pass@}k(x)=1-(1-p(x))^k` (:func:`rlbook.rollout.pass_at_k_exact`).
  ``CountdownTask(n_digits=3)`` is the "countdown-lite" of the catalog.

Prompts are character strings for :func:`rlbook.models.char_tokenizer` over
:attr:`alphabet`; every countdown prompt has the same length (no padding needed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np

OPS = "+-*"


def eval_expression(expr: str) -> int:
    """Value of ``expr`` made of single digits and ``+ - *`` with normal precedence.

    A tiny parser (no ``eval``): sum of products. ``"2+3*4"`` → 14, ``"9-2*3-1"`` → 2.
    Raises ``ValueError`` on anything else (empty, two operators in a row, other chars).
    """
    if not expr or expr[0] not in "0123456789" or expr[-1] not in "0123456789":
        raise ValueError(f"not an expression: {expr!r}")
    total, term, sign = 0, None, 1
    expect_digit = True
    for ch in expr:
        if expect_digit:
            if not ch.isdigit():
                raise ValueError(f"not an expression: {expr!r}")
            term = int(ch) if term is None else term * int(ch)
            expect_digit = False
        else:
            if ch == "*":
                pass
            elif ch in "+-":
                total += sign * term
                term, sign = None, (1 if ch == "+" else -1)
            else:
                raise ValueError(f"not an expression: {expr!r}")
            expect_digit = True
    return total + sign * term


@dataclass(frozen=True)
class Problem:
    """One prompt of a task: the string shown to the model and what the verifier needs."""

    prompt: str
    """the text the model is conditioned on (without BOS)"""
    numbers: tuple[int, ...]
    """the operands (addition: ``(a, b)``; countdown: the digits in prompt order)"""
    target: int
    """the value a correct answer must reach"""


class AdditionTask:
    """``"a+b="`` → ``str(a+b)``, operands uniform in ``[0, max_operand]``."""

    alphabet = "0123456789+="

    def __init__(self, max_operand: int = 99):
        if max_operand < 1:
            raise ValueError("max_operand must be >= 1")
        self.max_operand = max_operand

    def sample(self, n: int, rng: np.random.Generator) -> list[Problem]:
        """``n`` random problems."""
        ab = rng.integers(0, self.max_operand + 1, size=(n, 2))
        return [Problem(f"{a}+{b}=", (int(a), int(b)), int(a + b)) for a, b in ab]

    @staticmethod
    def verify(problem: Problem, answer: str) -> bool:
        """Exact match of the decimal sum (no leading zeros, nothing else)."""
        return answer == str(problem.target)


class CountdownTask:
    r"""Reach ``target`` using each of ``n_digits`` distinct digits 1-9 exactly once, ``+ - *``.

    Prompt (fixed length ``n_digits + 4``): the digits, ``>``, the target as two
    digits, ``=``; e.g. ``"3819>34="``. Answer (fixed length ``2n-1``): digits and
    operators alternating, e.g. ``"9*3+8-1"`` (27+8-1 = 34); the verifier evaluates
    with normal precedence. Prompts are every (ordered digit tuple,
    reachable target in ``[1, max_target]``) pair; a fixed 10% (hash of the prompt) is
    the ``"test"`` split.
    """

    alphabet = "0123456789+-*>="

    def __init__(self, n_digits: int = 4, max_target: int = 99):
        if not 2 <= n_digits <= 5:
            raise ValueError("n_digits must be in 2..5")
        if not 1 <= max_target <= 99:
            raise ValueError("max_target must be in 1..99 (two-digit targets)")
        self.n_digits = n_digits
        self.max_target = max_target
        self.answer_len = 2 * n_digits - 1
        """characters of an answer (EOS excluded)"""

    # ---- enumeration -------------------------------------------------------------
    @cached_property
    def _tables(self):
        n = self.n_digits
        tuples = np.array(list(itertools.permutations(range(1, 10), n)), dtype=np.int64)  # (U, n)
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)  # (n!, n)
        opcombos = ["".join(o) for o in itertools.product(OPS, repeat=n - 1)]  # (3^(n-1),)
        # values of every candidate answer of every tuple: (U, n!, 3^(n-1))
        digits = tuples[:, perms]  # (U, n!, n)
        vals = np.empty((len(tuples), len(perms), len(opcombos)), dtype=np.int64)
        for j, ops in enumerate(opcombos):
            vals[:, :, j] = _eval_columns(digits, ops)
        return tuples, perms, opcombos, vals.reshape(len(tuples), -1)

    @cached_property
    def _index(self) -> np.ndarray:
        """``(M, 3)`` int array: tuple index, target, is-test flag of every problem."""
        _, _, _, vals = self._tables
        reach = np.zeros((len(vals), self.max_target + 1), dtype=bool)  # (U, targets)
        ok = (vals >= 1) & (vals <= self.max_target)
        rows = np.repeat(np.arange(len(vals)), vals.shape[1]).reshape(vals.shape)
        reach[rows[ok], vals[ok]] = True
        i, t = np.nonzero(reach)
        return np.stack([i, t, _is_test(i, t)], axis=1)

    def _problem(self, i: int, t: int) -> Problem:
        digits = tuple(int(d) for d in self._tables[0][i])
        return Problem("".join(map(str, digits)) + f">{t:02d}=", digits, int(t))

    def _rows(self, split: str) -> np.ndarray:
        if split not in ("train", "test", "all"):
            raise ValueError(f"unknown split {split!r}")
        cache = self.__dict__.setdefault("_rows_cache", {})
        if split not in cache:
            idx = self._index
            cache[split] = idx if split == "all" else idx[idx[:, 2] == (split == "test")]
        return cache[split]

    def problems(self, split: str = "train") -> list[Problem]:
        """Every problem of ``split`` (``"train"`` ~90%, ``"test"`` ~10%, ``"all"``), in a fixed order."""
        return [self._problem(i, t) for i, t, _ in self._rows(split)]

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Problem]:
        """``n`` problems drawn uniformly (without replacement) from ``split``."""
        rows = self._rows(split)
        pick = rows[rng.choice(len(rows), size=n, replace=False)]
        return [self._problem(i, t) for i, t, _ in pick]

    def candidate_answers(self, problem: Problem) -> list[str]:
        """All ``n!·3^(n-1)`` well-formed answers of ``problem`` (correct or not)."""
        _, perms, opcombos, _ = self._tables
        d = np.array(problem.numbers)[perms]
        return [_join(row, ops) for row in d for ops in opcombos]

    def correct_answers(self, problem: Problem) -> list[str]:
        """Every correct answer string of ``problem`` (distinct digits make them distinct)."""
        tuples, perms, opcombos, vals = self._tables
        i = self._tuple_index(problem.numbers)
        hits = np.flatnonzero(vals[i] == problem.target)
        n_ops = len(opcombos)
        return [_join(tuples[i][perms[h // n_ops]], opcombos[h % n_ops]) for h in hits]

    def random_correct_answer(self, problem: Problem, rng: np.random.Generator) -> str:
        """One correct answer of ``problem``, uniformly at random (what SFT data is made of)."""
        tuples, perms, opcombos, vals = self._tables
        i = self._tuple_index(problem.numbers)
        hits = np.flatnonzero(vals[i] == problem.target)
        h = hits[rng.integers(len(hits))]
        return _join(tuples[i][perms[h // len(opcombos)]], opcombos[h % len(opcombos)])

    def _tuple_index(self, numbers: tuple[int, ...]) -> int:
        # index of an ordered tuple of distinct digits in itertools.permutations(1..9, n)
        idx, avail = 0, list(range(1, 10))
        for pos, d in enumerate(numbers):
            k = avail.index(d)
            rest = len(avail) - 1
            block = 1
            for j in range(self.n_digits - pos - 1):
                block *= rest - j
            idx += k * block
            avail.pop(k)
        return idx

    # ---- verification ------------------------------------------------------------
    def verify(self, problem: Problem, answer: str) -> bool:
        """True iff ``answer`` uses each prompt digit exactly once, only ``+ - *``, and hits the target."""
        if len(answer) != self.answer_len:
            return False
        digits, ops = answer[0::2], answer[1::2]
        if sorted(digits) != sorted(str(d) for d in problem.numbers):
            return False
        if any(o not in OPS for o in ops):
            return False
        return eval_expression(answer) == problem.target

    # ---- constrained decoding ----------------------------------------------------
    def logits_mask(self, tok):
        """A mask function for :mod:`rlbook.rollout`: which tokens may come next.

        Returns ``mask_fn(prompt_ids: (N, P), completion_ids: (N, t)) -> (N, V) bool``.
        Slot ``t`` even: an unused digit of the prompt; ``t`` odd: ``+ - *``; slot
        ``2n-1``: EOS; later slots: pad. The prompt's digits are read from its ids
        (the ``n`` tokens after BOS; a prompt without BOS has them first).
        """
        import torch

        vocab = len(tok)
        digit_ids = torch.tensor([tok.convert_tokens_to_ids(str(d)) for d in range(10)])
        op_ids = torch.tensor([tok.convert_tokens_to_ids(o) for o in OPS])
        eos, pad, bos = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
        n, L = self.n_digits, self.answer_len

        def mask_fn(prompt_ids, completion_ids):
            N, t = prompt_ids.shape[0], completion_ids.shape[1]
            m = torch.zeros(N, vocab, dtype=torch.bool, device=prompt_ids.device)
            if t < L and t % 2 == 0:
                start = 1 if bool((prompt_ids[:, 0] == bos).all()) else 0
                counts = torch.zeros(N, vocab, device=prompt_ids.device)
                counts.scatter_add_(1, prompt_ids[:, start : start + n], torch.ones(N, n, device=prompt_ids.device))
                if t > 0:
                    used = completion_ids[:, 0:t:2]
                    counts.scatter_add_(1, used, -torch.ones_like(used, dtype=counts.dtype))
                m[:, digit_ids.to(m.device)] = counts[:, digit_ids.to(m.device)] > 0
            elif t < L:
                m[:, op_ids.to(m.device)] = True
            elif t == L:
                m[:, eos] = True
            else:
                m[:, pad] = True
            return m

        return mask_fn


def _join(digits, ops: str) -> str:
    s = str(int(digits[0]))
    for o, d in zip(ops, digits[1:]):
        s += o + str(int(d))
    return s


def _eval_columns(digits: np.ndarray, ops: str) -> np.ndarray:
    """Vectorised :func:`eval_expression`: ``digits (..., n)`` with fixed operators ``ops``."""
    total = np.zeros(digits.shape[:-1], dtype=np.int64)
    term = digits[..., 0].copy()
    sign = 1
    for k, o in enumerate(ops):
        d = digits[..., k + 1]
        if o == "*":
            term = term * d
        else:
            total = total + sign * term
            term, sign = d.copy(), (1 if o == "+" else -1)
    return total + sign * term


def _is_test(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A fixed ~10% test split from (tuple index, target): a multiplicative hash mod 10."""
    h = (i.astype(np.int64) * 2654435761 + t.astype(np.int64) * 40503) % 1000003
    return (h % 10 == 0).astype(np.int64)
