r"""ExPO: Self-Explanation Policy Optimization (Zhou, Li, Zhang & Leqi 2025, arXiv 2507.02834).

A *self-explanation* is a chain of thought sampled with the ground-truth answer in the
prompt, :math:`\tilde c\sim\pi_\theta(\cdot\,|\,q,a^*)`, kept if it ends in :math:`a^*`.
ExP-GRPO adds its likelihood *without* the answer in the prompt (the "ExP-SFT" term) to
GRPO's objective (paper, the ExP-GRPO instantiation):

.. math::
   \mathcal J_{ExP\text{-}GRPO}(\theta) = \mathcal J_{GRPO}(\theta)
   + \beta\,\mathbb E_q\big[\log\pi_\theta(\tilde c, a^*\,|\,q)\big],

with :math:`\beta` optionally annealed over training, to rely less and less on imperfect
self-explanations. On a group whose samples are all wrong GRPO's advantages
are all 0, and the ExP-SFT term is the only gradient. Checked against the paper's text
(its ExP-GRPO instantiation, read through the arXiv abstract and a
summary of the NeurIPS 2025 version); the official repository
(HumainLab/ExPO_rl_reasoning_by_explanation) was not available to us, so the
aggregation (a per-token mean, as :func:`rlbook.losses.sft_loss`) and the linear
annealing are our choices.
"""

from __future__ import annotations

from torch import Tensor

from rlbook.losses.common import masked_mean
from rlbook.losses.grpo import grpo_loss


def exp_grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    logp_pos: Tensor | None = None,
    mask_pos: Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""ExP-GRPO's loss: GRPO's clipped surrogate plus :math:`\beta` times the NLL of the positives.

    .. math:: \mathcal L = \mathcal L_{GRPO}(\text{logp}, \text{logp\_old}, A, m)
              \;-\;\beta\,\frac{\sum_{b,t} m^{+}_{b,t}\,\log\pi_\theta(y^{+}_{b,t}|q_b,y^{+}_{b,<t})}{\sum_{b,t} m^{+}_{b,t}}

    where :math:`y^+_b=(\tilde c_b, a^*_b)` is the self-explanation of prompt :math:`b`
    scored under the plain prompt :math:`q_b` (the paper's ExP-SFT term; negative of
    the objective). ``logp, logp_old, mask: (N, T)`` and ``adv: (N,)`` as in
    :func:`rlbook.losses.grpo_loss` (``N = B*G``); ``logp_pos, mask_pos: (B, T')`` the
    positives' per-token log-probs (a row with ``mask_pos = 0`` -- no valid self-explanation
    -- adds nothing). ``beta = 0`` (or no positives) is exactly GRPO. The same function with
    expert solutions as the positives is the paper's "GRPO + SFT on expert CoT" baseline.

    Returns ``(loss: (), diagnostics)``: GRPO's (``clip_frac``) plus ``nll_pos``, the
    per-token NLL of the positives (detached).
    """
    loss, diag = grpo_loss(logp, logp_old, adv, mask, eps_low=eps_low, eps_high=eps_high)
    if logp_pos is None or beta == 0.0:
        return loss, diag
    if mask_pos is None:
        raise ValueError("logp_pos needs mask_pos")
    nll = -masked_mean(logp_pos, mask_pos)
    diag["nll_pos"] = nll.detach()
    return loss + beta * nll, diag


def linear_anneal(step: int, steps: int, start: float, end: float) -> float:
    r"""A linear schedule: :math:`\beta_t = \beta_0 + (\beta_{end}-\beta_0)\,t/\max(1, T-1)` for ``t = 0..T-1``."""
    if steps <= 1:
        return float(start)
    frac = min(max(step, 0), steps - 1) / (steps - 1)
    return float(start + (end - start) * frac)
