r"""A two-skill task mixture for the TÜLU 3 chapter: a *math* skill and a *precise instruction-following* skill.

TÜLU 3 (Lambert et al. 2024, arXiv 2411.15124) targets core skills with verifiable
answers: math (GSM8K/MATH answer match) and precise instruction following (IFEval-style
constraints checked by code). This module is the toy version of that mixture, on
character prompts for :func:`rlbook.models.char_tokenizer`:

- **math** ``"Ma+b="`` → the decimal sum, e.g. ``"M17+25="`` → ``"42"``;
- **precise IF** (an output-format constraint given by an instruction letter in front):
  ``"R17+25="`` → the sum with its digits *reversed* (``"24"``), ``"P17+25="`` → the sum
  *zero-padded* to three digits (``"042"``).

Operands are written with two digits (``"M07+05="``), so every prompt has 7 characters
and a batch needs no padding.

Each prompt has exactly one accepted answer string, so the probability that a policy
answers a prompt correctly is the probability of one string, computed exactly by one
teacher-forced forward pass (:meth:`PreciseIFTask.answer_ids`) -- no sampling noise in
the held-out accuracy.

The verifier (:meth:`PreciseIFTask.verify`) checks the instruction as well as the sum:
an unreversed correct sum fails an ``R`` prompt. (IFEval's verifiers check the format
only; here the format *is* applied to a computed value, so the check needs both.)

Held-out split: a fixed 20% of the operand pairs ``(a, b)`` (a multiplicative hash) is
the ``"test"`` split *for every skill*, so no test pair is seen in training by any skill.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

SKILLS = ("math", "if")
"""the two skills of the mixture"""

CONSTRAINTS = ("R", "P")
"""instruction letters of the precise-IF skill: R = reverse the digits, P = zero-pad to 3 digits"""


@dataclass(frozen=True)
class IFProblem:
    """One prompt of :class:`PreciseIFTask`."""

    prompt: str
    """the text the model is conditioned on (without BOS), e.g. ``"R17+25="``"""
    numbers: tuple[int, ...]
    """the operands ``(a, b)``"""
    target: int
    """``a + b``"""
    skill: str
    """``"math"`` or ``"if"``"""
    constraint: str
    """``""`` for math, else the instruction letter (``"R"`` or ``"P"``)"""

    @property
    def answer(self) -> str:
        """The one accepted answer string (:func:`format_answer`)."""
        return format_answer(self.target, self.constraint)


def format_answer(target: int, constraint: str = "") -> str:
    """The answer of a sum under an instruction: ``""`` → ``"42"``, ``"R"`` → ``"24"``, ``"P"`` → ``"042"``."""
    s = str(int(target))
    if constraint == "":
        return s
    if constraint == "R":
        return s[::-1]
    if constraint == "P":
        return s.zfill(3)
    raise ValueError(f"unknown constraint {constraint!r}; choose from {CONSTRAINTS}")


class PreciseIFTask:
    r"""Mixture of math (``"Ma+b="``) and precise-IF (``"Ra+b="``, ``"Pa+b="``) prompts, operands in ``[0, max_operand]``.

    ``if_fraction``: the share of precise-IF prompts in :meth:`sample` (TÜLU's RLVR mixes
    GSM8K, MATH and IFEval prompts). Answers are at most ``answer_len = 3`` characters
    (+ EOS); :meth:`logits_mask` enforces digits, then EOS.
    """

    alphabet = "0123456789+=MRP"
    answer_len = 3
    """longest answer (characters, EOS excluded)"""

    def __init__(self, max_operand: int = 49, if_fraction: float = 0.5, test_fraction: float = 0.2):
        if not 1 <= max_operand <= 99:
            raise ValueError("max_operand must be in 1..99 (two-digit operands)")
        if not 0.0 <= if_fraction <= 1.0:
            raise ValueError("if_fraction must be in [0, 1]")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1)")
        self.max_operand = max_operand
        self.if_fraction = if_fraction
        self.test_fraction = test_fraction

    # ---- problems ------------------------------------------------------------------
    @staticmethod
    def make(a: int, b: int, constraint: str = "") -> IFProblem:
        """The problem ``a+b`` under ``constraint`` (``""`` = math)."""
        if constraint not in ("",) + CONSTRAINTS:
            raise ValueError(f"unknown constraint {constraint!r}")
        return IFProblem(f"{constraint or 'M'}{a:02d}+{b:02d}=", (int(a), int(b)), int(a + b), "if" if constraint else "math", constraint)

    @cached_property
    def _pairs(self) -> dict[str, np.ndarray]:
        n = self.max_operand + 1
        a, b = np.divmod(np.arange(n * n), n)
        h = (a * 2654435761 + b * 40503 + 12345) % 1000003
        test = (h % 1000) < int(round(1000 * self.test_fraction))
        ab = np.stack([a, b], 1)
        return {"train": ab[~test], "test": ab[test], "all": ab}

    def pairs(self, split: str = "train") -> np.ndarray:
        """Operand pairs ``(M, 2)`` of ``split`` (``"train"``, ``"test"``, ``"all"``)."""
        if split not in self._pairs:
            raise ValueError(f"unknown split {split!r}")
        return self._pairs[split]

    def sample(self, n: int, rng: np.random.Generator, split: str = "train", skill: str | None = None) -> list[IFProblem]:
        """``n`` random problems of ``split``: each precise-IF with probability ``if_fraction`` (or all of ``skill``)."""
        ab = self.pairs(split)
        rows = ab[rng.integers(len(ab), size=n)]
        if skill is None:
            is_if = rng.random(n) < self.if_fraction
        elif skill in SKILLS:
            is_if = np.full(n, skill == "if")
        else:
            raise ValueError(f"skill must be one of {SKILLS} or None")
        letters = rng.integers(len(CONSTRAINTS), size=n)
        return [self.make(a, b, CONSTRAINTS[k] if f else "") for (a, b), f, k in zip(rows, is_if, letters)]

    def eval_problems(self, n: int, skill: str, seed: int = 12345) -> list[IFProblem]:
        """A fixed set of ``n`` held-out (test-split) problems of one skill."""
        return self.sample(n, np.random.default_rng([seed, SKILLS.index(skill)]), split="test", skill=skill)

    # ---- verification --------------------------------------------------------------
    @staticmethod
    def verify(problem: IFProblem, answer: str) -> bool:
        """True iff ``answer`` is exactly the sum written as the instruction demands."""
        return answer == problem.answer

    @staticmethod
    def follows_format(problem: IFProblem, answer: str) -> bool:
        """The format part alone (a diagnostic, not the reward): digits only, and P → three digits;
        R → as many digits as the sum; math → no leading zero."""
        if not answer.isdigit():
            return False
        if problem.constraint == "P":
            return len(answer) == 3
        if problem.constraint == "R":
            return len(answer) == len(str(problem.target))
        return answer == "0" or answer[0] != "0"

    # ---- tokens --------------------------------------------------------------------
    def answer_ids(self, tok, problems: list[IFProblem]):
        """Completion ids ``(N, T)`` of the accepted answers + EOS, right-padded with pad, and their mask."""
        import torch

        rows = [tok.convert_tokens_to_ids(list(p.answer)) + [tok.eos_token_id] for p in problems]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask

    def logits_mask(self, tok):
        """Constrained decoding: position 0 a digit; 1..answer_len-1 a digit or EOS; then EOS; after EOS pad.

        Returns ``mask_fn(prompt_ids: (N, P), completion_ids: (N, t)) -> (N, V) bool``.
        """
        import torch

        vocab = len(tok)
        digits = torch.tensor([tok.convert_tokens_to_ids(str(d)) for d in range(10)])
        eos, pad = tok.eos_token_id, tok.pad_token_id
        L = self.answer_len

        def mask_fn(prompt_ids, completion_ids):
            N, t = prompt_ids.shape[0], completion_ids.shape[1]
            m = torch.zeros(N, vocab, dtype=torch.bool, device=prompt_ids.device)
            if t > 0:
                ended = ((completion_ids == eos) | (completion_ids == pad)).any(1)  # (N,)
            else:
                ended = torch.zeros(N, dtype=torch.bool, device=prompt_ids.device)
            if t < L:
                m[:, digits.to(m.device)] = True
            if 0 < t <= L:
                m[:, eos] = True
            m[ended] = False
            m[ended, pad] = True
            if t > L:
                m[:, :] = False
                m[:, pad] = True
            return m

        return mask_fn
