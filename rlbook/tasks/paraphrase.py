r"""Paired analogous questions with one answer, and a base policy whose mistakes depend on the wording.

The toy of the Co-Reward chapter (arXiv 2508.00410). A *pair* is two-digit addition shown in two
surface forms with the same answer: :math:`q=` ``"a+b="`` and its analogue :math:`q'=` ``"b+a="``.
:meth:`PairedAdditionTask.sample` returns the two views of each pair adjacently
(``[q_0, q'_0, q_1, q'_1, ...]``), so a reward function that sees a batch can cross-reference them
(:func:`pair_reward_fn`, usable as ``reward_fn=`` of :func:`rlbook.rl_lm.train`).

:class:`StrategyPolicy` is a small *shared-parameter* policy over solution strategies (a stand-in
for a chain of thought): for a displayed question :math:`x` it picks a strategy
:math:`s\sim\mathrm{softmax}(\theta_{c(x)}+u_x)` and answers with that strategy's output:

- ``correct``: :math:`a+b`;
- ``copy_first``: the first operand *as displayed* (a surface shortcut: :math:`a` for ``"a+b="``,
  :math:`b` for ``"b+a="``);
- ``no_carry``: digit-wise sum without the carry (the same for both views);
- ``guess``: a uniform integer in :math:`[0, 2M]`.

:math:`c(x)` is one of four *surface cells* (does the units column carry? is the displayed first
operand the larger?) and :math:`\theta\in\mathbb R^{4\times 4}` is all that training changes;
:math:`u_x` is a fixed per-question offset (the base's idiosyncrasies). The base (:data:`BASE_LOGITS`)
is partially competent, and where the first displayed operand is larger and the units carry it
prefers the shortcut: a wrong answer that is *consistent within a question* (so self-voting can lock
it in) but *differs between the two views* (so the cross-question vote does not reward it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rlbook.tasks import Problem

STRATEGIES = ("correct", "copy_first", "no_carry", "guess")
"""solution strategies of :class:`StrategyPolicy` (column order of the logits)"""

CELLS = ("no carry, first smaller", "no carry, first larger", "carry, first smaller", "carry, first larger")
"""surface cells c(x) = 2·carry + first_larger (row order of the logits)"""

BASE_LOGITS = (
    (1.2, 0.0, -0.5, -1.0),
    (0.8, 0.6, -0.5, -1.0),
    (0.6, 0.0, -0.3, -1.0),
    (0.0, 1.0, -0.3, -1.0),
)
"""the base policy's shared logits θ (4 cells x 4 strategies): the shortcut dominates in the last cell"""


class PairedAdditionTask:
    """Pairs ``"a+b="`` / ``"b+a="`` with ``a != b`` two-digit operands; train/test split by unordered pair."""

    alphabet = "0123456789+="

    def __init__(self, max_operand: int = 99, min_operand: int = 10, test_fraction: float = 0.2):
        if not 0 <= min_operand < max_operand:
            raise ValueError("need 0 <= min_operand < max_operand")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1)")
        self.max_operand, self.min_operand, self.test_fraction = max_operand, min_operand, test_fraction
        lo, hi = min_operand, max_operand
        pairs = [(a, b) for a in range(lo, hi + 1) for b in range(a + 1, hi + 1)]  # unordered, a < b
        rng = np.random.default_rng(12345)  # a fixed split, independent of the experiment's seed
        is_test = rng.random(len(pairs)) < test_fraction
        self._pairs = {"train": [p for p, t in zip(pairs, is_test) if not t],
                       "test": [p for p, t in zip(pairs, is_test) if t]}

    def pairs(self, split: str = "train") -> list[tuple[int, int]]:
        """All unordered pairs ``(a, b)``, ``a < b``, of a split."""
        if split not in self._pairs:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self._pairs[split]

    @staticmethod
    def views(a: int, b: int) -> tuple[Problem, Problem]:
        """The two surface forms ``(q, q')`` of one pair: ``"a+b="`` and ``"b+a="``."""
        return Problem(f"{a}+{b}=", (a, b), a + b), Problem(f"{b}+{a}=", (b, a), a + b)

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Problem]:
        """``n`` pairs → ``2n`` problems ``[q_0, q'_0, q_1, q'_1, ...]``; which order is ``q`` is random."""
        pool = self.pairs(split)
        out = []
        for i in rng.integers(0, len(pool), size=n):
            a, b = pool[i]
            if rng.random() < 0.5:
                a, b = b, a
            out.extend(self.views(a, b))
        return out

    def eval_problems(self, n_pairs: int, split: str = "test") -> list[Problem]:
        """The first ``n_pairs`` pairs of a split (deterministic), both views each, adjacent."""
        out = []
        for a, b in self.pairs(split)[:n_pairs]:
            out.extend(self.views(a, b))
        return out

    @staticmethod
    def verify(problem: Problem, answer: str) -> bool:
        """Exact match of the decimal sum."""
        return answer.strip() == str(problem.target)


# ---------------------------------------------------------------------------------
# the strategy policy
# ---------------------------------------------------------------------------------
def operands(problems: list[Problem]) -> tuple[np.ndarray, np.ndarray]:
    """Displayed first and second operands ``(x1, x2)``, each ``(N,)`` int."""
    x = np.array([p.numbers for p in problems], dtype=np.int64).reshape(-1, 2)
    return x[:, 0], x[:, 1]


def no_carry_sum(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Digit-wise sum dropping the units carry: ``(x1 % 10 + x2 % 10) % 10 + 10 * (x1 // 10 + x2 // 10)``."""
    return (x1 % 10 + x2 % 10) % 10 + 10 * (x1 // 10 + x2 // 10)


def cells(problems: list[Problem]) -> np.ndarray:
    """Surface cell of each displayed question, ``2·carry + first_larger`` in ``0..3``, ``(N,)``."""
    x1, x2 = operands(problems)
    carry = (x1 % 10 + x2 % 10) >= 10
    return (2 * carry + (x1 > x2)).astype(np.int64)


def strategy_answers(problems: list[Problem]) -> np.ndarray:
    """Answers of the deterministic strategies ``correct, copy_first, no_carry``, ``(N, 3)`` int."""
    x1, x2 = operands(problems)
    return np.stack([x1 + x2, x1, no_carry_sum(x1, x2)], axis=1)


class StrategyPolicy(torch.nn.Module):
    r""":math:`\pi_\theta(s|x)=\mathrm{softmax}(\theta_{c(x)}+u_x)_s` over :data:`STRATEGIES`.

    ``theta: (4, 4)`` is trained; ``u_x ~ N(0, offset_std²)`` per strategy is fixed per question
    (drawn from a generator seeded by the displayed operands and ``offset_seed``).
    """

    def __init__(self, max_operand: int = 99, offset_std: float = 0.8, offset_seed: int = 0,
                 base_logits=BASE_LOGITS):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(base_logits, dtype=torch.float64))
        self.max_operand, self.offset_std, self.offset_seed = max_operand, offset_std, offset_seed
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def offsets(self, problems: list[Problem]) -> Tensor:
        """The fixed per-question offsets :math:`u_x`, ``(N, 4)``."""
        for p in problems:
            if p.numbers not in self._cache:
                rng = np.random.default_rng([self.offset_seed, *p.numbers])
                self._cache[p.numbers] = rng.normal(0.0, self.offset_std, len(STRATEGIES))
        return torch.tensor(np.array([self._cache[p.numbers] for p in problems]), dtype=torch.float64)

    def logits(self, problems: list[Problem]) -> Tensor:
        """Strategy logits ``(N, 4)``."""
        return self.theta[torch.as_tensor(cells(problems))] + self.offsets(problems)

    def sample(self, problems: list[Problem], G: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``G`` rollouts per question: strategies ``s: (N, G)`` and integer answers ``ans: (N, G)``."""
        with torch.no_grad():
            p = torch.softmax(self.logits(problems), -1)  # (N, 4)
        s = torch.multinomial(p, G, replacement=True, generator=gen)  # (N, G)
        det = torch.as_tensor(strategy_answers(problems))  # (N, 3)
        guess = torch.randint(0, 2 * self.max_operand + 1, s.shape, generator=gen)
        ans = torch.where(s < det.shape[1], det.gather(1, s.clamp(max=det.shape[1] - 1)), guess)
        return s, ans.long()

    def logprob(self, problems: list[Problem], s: Tensor) -> Tensor:
        """:math:`\\log\\pi_\\theta(s|x)` of sampled strategies ``s: (N, G)`` → ``(N, G)`` (with gradient)."""
        return torch.log_softmax(self.logits(problems), -1).gather(1, s)

    def answer_prob(self, problems: list[Problem], answer: np.ndarray) -> Tensor:
        """Exact :math:`\\pi(y|x)` of one integer answer per question, ``answer: (N,)`` → ``(N,)``.

        Sums the strategies that produce ``y`` (e.g. ``no_carry`` is correct without a carry) and
        the guess mass ``1/(2M+1)``.
        """
        with torch.no_grad():
            p = torch.softmax(self.logits(problems), -1)  # (N, 4)
        hit = torch.as_tensor(strategy_answers(problems) == np.asarray(answer)[:, None], dtype=p.dtype)  # (N, 3)
        return (p[:, :3] * hit).sum(-1) + p[:, 3] / (2 * self.max_operand + 1)

    def accuracy(self, problems: list[Problem]) -> Tensor:
        """Exact probability of a correct answer (pass@1) per question, ``(N,)``."""
        return self.answer_prob(problems, np.array([p.target for p in problems]))

    def shortcut_share(self, problems: list[Problem]) -> Tensor:
        """Probability of answering the displayed first operand (the surface shortcut), ``(N,)``."""
        return self.answer_prob(problems, operands(problems)[0])


def pair_reward_fn(kind: str):
    """A ``reward_fn(problems, answers, G) -> r: (B, G)`` for :func:`rlbook.rl_lm.train` on paired batches.

    ``problems`` come as adjacent views ``[q_0, q'_0, ...]`` (:meth:`PairedAdditionTask.sample`) and
    ``answers`` as the ``B·G`` decoded strings (row ``b·G + g``). ``kind``: ``"co_reward"``
    (cross-question majority), ``"self_voting"`` (same-question majority) or ``"ground_truth"``.
    """
    from rlbook.losses.co_reward import answer_ids, co_reward, ground_truth_reward, self_voting_reward

    if kind not in ("co_reward", "self_voting", "ground_truth"):
        raise ValueError(f"unknown reward kind {kind!r}")

    def reward_fn(problems, answers, G):
        B = len(problems)
        if B % 2:
            raise ValueError("paired rewards need an even number of problems (q, q' adjacent)")
        if kind == "ground_truth":
            ids = answer_ids(list(answers) + [str(p.target) for p in problems])
            return ground_truth_reward(ids[: B * G].view(B, G), ids[B * G :])
        ans = answer_ids(list(answers)).view(B, G)
        if kind == "self_voting":
            return self_voting_reward(ans)
        r_q, r_q2 = co_reward(ans[0::2], ans[1::2])
        r = torch.empty(B, G, dtype=r_q.dtype)
        r[0::2], r[1::2] = r_q, r_q2
        return r

    return reward_fn
