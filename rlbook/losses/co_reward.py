r"""Pseudo-label rewards of label-free RLVR: majority vote, self-voting, and Co-Reward's cross-question agreement.

Co-Reward (Zhang et al. 2025, "Co-Reward: Self-supervised Reinforcement Learning for Large Language
Model Reasoning via Contrastive Agreement", arXiv 2508.00410, Sec. 3; renamed "Co-rewarding-I" in
later versions). Each training question :math:`q` has an analogous (rephrased) question :math:`q'`
with the same answer. The policy samples :math:`G` rollouts for each; the majority answer of each
group is a pseudo label, and a rollout is rewarded when its answer agrees with the pseudo label of
the *other* question:

.. math::
   \hat y(q)=\operatorname{maj}\{\mathrm{ans}(o_i)\}_{i=1}^G,\qquad
   r(o_i)=\mathbb 1\big[\mathrm{ans}(o_i)=\hat y(q')\big],\qquad
   r(o'_i)=\mathbb 1\big[\mathrm{ans}(o'_i)=\hat y(q)\big]

against self-voting (TTRL-style majority reward on the same question),
:math:`r(o_i)=\mathbb 1[\mathrm{ans}(o_i)=\hat y(q)]`. Then GRPO's group advantage on the
:math:`q` group and on the :math:`q'` group separately.

Checked against the official code, ``coreward/verl/workers/reward_manager/co_reward.py``
(``CoRewardManager.__call__`` and ``majority_vote``) of github.com/resistzzz/Co-Reward (mirror of
tmlr-group/Co-Reward): empty answers do not vote; a group with no valid answer has no pseudo label
and gives reward 0; ties go to the answer seen first (``Counter.most_common(1)``);
``ori_uid2pseudo`` is built from the *augmented* group and vice versa; advantages are
``compute_grpo_outcome_advantage`` on each view (``ray_trainer.compute_advantage_contrastive``).

Answers are integer ids ``ans: (B, G)`` (``long``), with :data:`NO_ANSWER` (``-1``) for a rollout
without an extractable answer. Row ``b`` of ``ans_q`` and of ``ans_q2`` are the two views of pair ``b``.
"""

from __future__ import annotations

import torch
from torch import Tensor

NO_ANSWER = -1
"""answer id of a rollout whose answer could not be extracted (does not vote, never rewarded)"""


def _check(ans: Tensor) -> None:
    if ans.dim() != 2 or ans.dtype != torch.long:
        raise ValueError(f"answers must be a (B, G) long tensor, got {tuple(ans.shape)} {ans.dtype}")


def majority_label(ans: Tensor) -> Tensor:
    r"""The majority answer of each group, :math:`\hat y=\operatorname{maj}\{\mathrm{ans}(o_i)\}_{i=1}^G`.

    Ties go to the answer that appears first in the group (as ``Counter.most_common``);
    :data:`NO_ANSWER` does not vote, and a group without any answer gets :data:`NO_ANSWER`.
    ``ans: (B, G)`` long → ``(B,)`` long.
    """
    _check(ans)
    valid = ans != NO_ANSWER  # (B, G)
    same = (ans[:, :, None] == ans[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # (B, G, G)
    count = same.sum(-1)  # (B, G): votes of each rollout's answer (0 if no answer)
    first = count.argmax(-1)  # (B,): torch returns the first maximal index
    label = ans.gather(1, first[:, None]).squeeze(1)
    return torch.where(valid.any(-1), label, torch.full_like(label, NO_ANSWER))


def agreement_reward(ans: Tensor, label: Tensor) -> Tensor:
    r""":math:`r_{b,i}=\mathbb 1[\mathrm{ans}_{b,i}=\hat y_b]`, 0 when there is no label or no answer.

    ``ans: (B, G)`` long, ``label: (B,)`` long → ``r: (B, G)`` float.
    """
    _check(ans)
    if label.shape != ans.shape[:1]:
        raise ValueError(f"label must be (B,)={tuple(ans.shape[:1])}, got {tuple(label.shape)}")
    hit = (ans == label[:, None]) & (ans != NO_ANSWER) & (label[:, None] != NO_ANSWER)
    return hit.to(torch.get_default_dtype())


def self_voting_reward(ans: Tensor) -> Tensor:
    r"""Self-voting (majority-vote self-reward on the same question; the paper's main baseline):
    :math:`r(o_i)=\mathbb 1[\mathrm{ans}(o_i)=\hat y(q)]`. ``ans: (B, G)`` → ``r: (B, G)``."""
    return agreement_reward(ans, majority_label(ans))


def co_reward(ans_q: Tensor, ans_q2: Tensor) -> tuple[Tensor, Tensor]:
    r"""Co-Reward's cross-question agreement (paper Sec. 3; official ``CoRewardManager``):

    .. math:: r(o_i)=\mathbb 1\big[\mathrm{ans}(o_i)=\hat y(q')\big],\qquad
              r(o'_i)=\mathbb 1\big[\mathrm{ans}(o'_i)=\hat y(q)\big]

    ``ans_q, ans_q2: (B, G)`` long (row ``b``: the rollouts of question ``q_b`` and of its analogue
    ``q'_b``) → ``(r_q, r_q2)``, each ``(B, G)`` float.
    """
    _check(ans_q)
    _check(ans_q2)
    if ans_q.shape != ans_q2.shape:
        raise ValueError(f"the two views must have the same shape, got {tuple(ans_q.shape)} and {tuple(ans_q2.shape)}")
    return agreement_reward(ans_q, majority_label(ans_q2)), agreement_reward(ans_q2, majority_label(ans_q))


def ground_truth_reward(ans: Tensor, truth: Tensor) -> Tensor:
    r"""The verifiable reward :math:`\mathbb 1[\mathrm{ans}(o_i)=y^\star]`. ``ans: (B, G)``, ``truth: (B,)`` → ``(B, G)``."""
    return agreement_reward(ans, truth)


def majority_probs(p: Tensor, G: int, fixed: int | None = None) -> Tensor:
    r"""Exact distribution of the majority label of ``G`` i.i.d. votes with answer probabilities ``p``.

    .. math:: P(\hat y = k) = \sum_{n:\ \sum_j n_j = G} \mathrm{Mult}(n; G, p)\,
              \frac{\mathbb 1[k\in\arg\max_j n_j]}{|\arg\max_j n_j|}

    (ties split evenly: with first-seen tie-breaking every tied answer is equally likely to be seen
    first, by exchangeability). ``fixed=k`` adds one vote for ``k`` to ``G - 1`` random ones: the
    probability that a rollout answering ``k`` wins its *own* group's vote, i.e. its expected
    self-voting reward. ``p: (K,)`` (sums to 1) → ``(K,)``. Enumerates all count vectors (small K, G).
    """
    import itertools
    import math

    if p.dim() != 1:
        raise ValueError(f"p must be (K,), got {tuple(p.shape)}")
    K = p.shape[0]
    free = G - (fixed is not None)
    out = torch.zeros(K, dtype=torch.float64)
    pd = p.to(torch.float64)
    for cuts in itertools.combinations(range(free + K - 1), K - 1):  # stars and bars
        n = [b - a - 1 for a, b in zip((-1, *cuts), (*cuts, free + K - 1))]
        coef = math.factorial(free)
        for nj in n:
            coef //= math.factorial(nj)
        prob = coef * torch.prod(pd ** torch.tensor(n, dtype=torch.float64))
        votes = list(n)
        if fixed is not None:
            votes[fixed] += 1
        top = max(votes)
        winners = [j for j in range(K) if votes[j] == top]
        for j in winners:
            out[j] += prob / len(winners)
    return out


def answer_ids(answers: list[str], empty: tuple[str, ...] = ("",)) -> Tensor:
    """Map answer strings to integer ids (equal strings, equal ids); ``empty`` strings → :data:`NO_ANSWER`.

    ``answers``: a flat list → ``(len(answers),)`` long. Ids are only comparable within one call.
    """
    table: dict[str, int] = {}
    out = []
    for a in answers:
        a = a.strip() if isinstance(a, str) else a
        if a is None or a in empty:
            out.append(NO_ANSWER)
        else:
            out.append(table.setdefault(a, len(table)))
    return torch.tensor(out, dtype=torch.long)
