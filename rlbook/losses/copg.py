r"""Contrastive Policy Gradient (Flet-Berliac et al. 2024, "Contrastive Policy Gradient: Aligning
LLMs on sequence-level scores in a supervised-friendly fashion", arXiv 2406.19185).

For two responses :math:`y, y'` of the same prompt from *any* behaviour distribution, CoPG uses
the KL-regularised reward :math:`R^\beta_\pi(y)=R(y)-\beta\log\frac{\pi(y)}{\pi_{ref}(y)}` of each
response as the other one's baseline. Its update direction

.. math:: \hat g = \tfrac12\big(R^\beta_\pi(y)-R^\beta_\pi(y')\big)\big(\nabla\log\pi(y)-\nabla\log\pi(y')\big)

is minus the gradient of a least-squares objective (:func:`copg_loss`), whose minimiser for
any full-support sampling distribution is :math:`\pi^*\propto\pi_{ref}e^{R/\beta}`.
"""

from __future__ import annotations

from torch import Tensor

from rlbook.losses.common import _check_same_shape


def regularised_reward(r: Tensor, logp: Tensor, logp_ref: Tensor, beta: float) -> Tensor:
    r""":math:`R^\beta_\pi(x,y) = R(x,y) - \beta\log\frac{\pi(y|x)}{\pi_{ref}(y|x)}`, elementwise ``(N,)``."""
    return r - beta * (logp - logp_ref)


def copg_loss(
    logp_y: Tensor,
    logp_ref_y: Tensor,
    r_y: Tensor,
    logp_yp: Tensor,
    logp_ref_yp: Tensor,
    r_yp: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The CoPG objective as a loss to minimise (reconstructed; see below).

    .. math:: \mathcal L_{CoPG} = \frac{1}{4\beta}\,\mathbb E_{y,y'\sim\mu}\Big[\Big(R(y)-R(y')
              - \beta\log\frac{\pi(y)\,\pi_{ref}(y')}{\pi_{ref}(y)\,\pi(y')}\Big)^2\Big]
              = \frac{1}{4\beta}\,\mathbb E\big[\big(R^\beta_\pi(y)-R^\beta_\pi(y')\big)^2\big]

    Its negative gradient is exactly the paper's CoPG update :math:`\hat g` (the squared
    form and the factor :math:`1/(4\beta)` are our reconstruction from the paper's gradient;
    a unit test checks the identity with autograd). Symmetric in ``y, y'``: the pair needs
    no winner. With :math:`R(y)-R(y')=\tfrac12` for a preferred ``y`` and ``beta = tau`` it is
    :math:`\tfrac{\beta}{4}` times the IPO loss (:func:`rlbook.losses.ipo.ipo_loss`).

    Shapes: every argument ``(N,)`` (sequence log-probs and rewards) → ``(loss: (), diagnostics)``
    with ``adv = R^β(y) - R^β(y'): (N,)``.
    """
    _check_same_shape(logp_y=logp_y, logp_ref_y=logp_ref_y, r_y=r_y, logp_yp=logp_yp, logp_ref_yp=logp_ref_yp, r_yp=r_yp)
    if logp_y.dim() != 1:
        raise ValueError(f"CoPG takes (N,) sequence log-probs, got shape {tuple(logp_y.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    d = regularised_reward(r_y, logp_y, logp_ref_y, beta) - regularised_reward(r_yp, logp_yp, logp_ref_yp, beta)
    loss = (d**2).mean() / (4.0 * beta)
    return loss, {"adv": d.detach()}
