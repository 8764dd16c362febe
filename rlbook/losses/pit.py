r"""PIT: implicit self-improvement by maximising a quality *gap* over a reference response.

Wang, Hou, Lu, Wu, Li, Yu, Ji 2023/2024, "Enable Language Models to Implicitly Learn
Self-Improvement From Data" (arXiv 2310.00898), Sec. 3. RLHF maximises
:math:`\mathbb E_{y\sim\pi(\cdot|x)}[R(x,y)] - \beta\,\mathrm{KL}`; PIT conditions the policy on a
reference response and maximises the gap reward instead:

.. math:: \max_\pi\ \mathbb E_{y_{ref},\,y\sim\pi(\cdot|x,y_{ref})}\big[R_{PIT}(x,y,y_{ref})\big]
          - \beta\,\mathrm{KL}\big(\pi(\cdot|x,y_{ref})\,\|\,\pi_{SFT}(\cdot|x,y_{ref})\big)

Notation: ``r_ab`` is :math:`R_{PIT}(x, y_a, y_b)`, the gap of response ``a`` over the
reference ``b``; ``w`` the preferred and ``l`` the dispreferred response of a pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.policy_gradient import reinforce_loss


def pit_rm_loss(r_wl: Tensor, r_lw: Tensor, r_ww: Tensor, r_ll: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The gap reward model's loss on ordinary preference pairs (three ordered comparisons).

    .. math:: \mathcal L_{R_{PIT}} = -\log\sigma\big(r_{wl}-r_{lw}\big) - \log\sigma\big(r_{wl}-r_{ww}\big)
              - \log\sigma\big(r_{ll}-r_{lw}\big)

    "improving the loser into the winner beats degrading the winner into the loser; it beats
    not changing the winner; not changing the loser beats degrading the winner". This is the
    *reconstructed* form of the book's catalog: the paper (Sec. 3) trains :math:`R_{PIT}` on the
    same pairs as an ordinary reward model; we could not read its exact equation here (see the
    chapter). Shapes: every argument ``(N,)`` → ``(loss: (), diagnostics)``, the loss averaged
    over pairs. With a difference-form model :math:`r_{ab}=r(y_a)-r(y_b)` it is
    :math:`\mathcal L_{BT}(2\Delta)+2\,\mathcal L_{BT}(\Delta)` (a unit test checks it).
    """
    for name, t in dict(r_wl=r_wl, r_lw=r_lw, r_ww=r_ww, r_ll=r_ll).items():
        if t.dim() != 1 or t.shape != r_wl.shape:
            raise ValueError(f"{name} must be (N,) like r_wl {tuple(r_wl.shape)}, got {tuple(t.shape)}")
    t1 = -F.logsigmoid(r_wl - r_lw)
    t2 = -F.logsigmoid(r_wl - r_ww)
    t3 = -F.logsigmoid(r_ll - r_lw)
    loss = (t1 + t2 + t3).mean()
    acc = ((r_wl > r_lw).double().mean()).detach()
    return loss, {"improve_vs_degrade": t1.mean().detach(), "improve_vs_keep": t2.mean().detach(),
                  "keep_vs_degrade": t3.mean().detach(), "accuracy": acc}


def pit_rm_loss_ordered(r_wl: Tensor, r_lw: Tensor, r_ww: Tensor, r_ll: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The gap reward model's loss on *every* comparison implied by the order
    "improve the loser > no change > degrade the winner", :math:`r_{wl} > \{r_{ww}, r_{ll}\} > r_{lw}`:

    .. math:: \mathcal L = -\log\sigma(r_{wl}-r_{lw}) - \log\sigma(r_{wl}-r_{ww}) - \log\sigma(r_{wl}-r_{ll})
              - \log\sigma(r_{ww}-r_{lw}) - \log\sigma(r_{ll}-r_{lw})

    Two comparisons more than :func:`pit_rm_loss`: :math:`r_{wl}>r_{ll}` and :math:`r_{ww}>r_{lw}` share
    the *reference* and differ in the candidate, so they are the ones that teach the model to score
    the candidate (with only the three terms, the maximum-likelihood gap model of Bradley-Terry data
    scores the reference alone; ``tests/test_pit.py`` shows both). This is the book's construction
    from the order the paper describes, not an equation quoted from the paper.
    Shapes: every argument ``(N,)`` → ``(loss: (), diagnostics)``. With a difference-form model it is
    :math:`\mathcal L_{BT}(2\Delta)+4\,\mathcal L_{BT}(\Delta)`.
    """
    loss3, diag = pit_rm_loss(r_wl, r_lw, r_ww, r_ll)
    t4 = -F.logsigmoid(r_wl - r_ll)
    t5 = -F.logsigmoid(r_ww - r_lw)
    return loss3 + (t4 + t5).mean(), {**diag, "same_reference": (t4 + t5).mean().detach()}


def pit_policy_loss(logp: Tensor, gap: Tensor, kl: Tensor, beta: float) -> Tensor:
    r"""PIT's RL objective as a loss: REINFORCE on the gap reward with a group baseline, plus β·KL.

    .. math:: \mathcal L = -\frac{1}{BG}\sum_{b,g}\big(R_{PIT}(x_b,y_{b,g},y_{ref,b})-\bar R_b\big)\log\pi_\theta(y_{b,g}|x_b,y_{ref,b})
              + \beta\,\frac1B\sum_b \mathrm{KL}\big(\pi_\theta(\cdot|x_b,y_{ref,b})\,\|\,\pi_{SFT}(\cdot|x_b,y_{ref,b})\big)

    (:math:`\bar R_b` the mean over the ``G`` samples of the same ``(x, y_ref)``; the KL exact,
    computed by the caller). ``logp, gap: (B, G)`` (``gap`` treated as a constant), ``kl: (B,)``
    → ``()``. Built on :func:`rlbook.losses.reinforce_loss` (one "token" per response).
    """
    if logp.dim() != 2 or logp.shape != gap.shape or kl.shape != logp.shape[:1]:
        raise ValueError(f"need logp, gap (B, G) and kl (B,), got {tuple(logp.shape)}, {tuple(gap.shape)}, "
                         f"{tuple(kl.shape)}")
    B, G = logp.shape
    base = gap.mean(1, keepdim=True).expand(B, G)  # (B, G) group baseline
    pg = reinforce_loss(logp.reshape(-1, 1), torch.ones(B * G, 1, dtype=logp.dtype), gap.reshape(-1).detach(),
                        base.reshape(-1).detach())
    return pg + beta * kl.mean()
