"""Iterative Nash Policy Optimization (Zhang et al. 2024, arXiv 2407.00617)."""

from __future__ import annotations

from torch import Tensor

from rlbook.losses.common import _check_same_shape


def inpo_loss(
    logp_w: Tensor,
    logp_l: Tensor,
    logp_ref_w: Tensor,
    logp_ref_l: Tensor,
    logp_t_w: Tensor,
    logp_t_l: Tensor,
    eta: float,
    tau: float,
) -> Tensor:
    r"""The INPO loss of iteration ``t`` (INPO paper, Sec. 3, the loss :math:`\mathcal L_t` of Algorithm 1).

    .. math:: h_t(\pi,y,y') = \log\frac{\pi(y|x)}{\pi(y'|x)} - \eta\tau\log\frac{\pi_{ref}(y|x)}{\pi_{ref}(y'|x)}
              - (1-\eta\tau)\log\frac{\pi_t(y|x)}{\pi_t(y'|x)},

    .. math:: \mathcal L_t(\pi)=\mathbb E_{y,y'\sim\pi_t,\ (y_w,y_l)\sim\lambda_{\mathcal P}(y,y')}
              \Big[\Big(h_t(\pi,y_w,y_l)-\frac{\eta}{2}\Big)^2\Big].

    Pairs are drawn from the current policy ``π_t`` and ordered by the preference oracle.
    Its population minimiser is the online-mirror-descent step
    :math:`\pi_{t+1}\propto\pi_t^{1-\eta\tau}\pi_{ref}^{\eta\tau}e^{\eta\mathcal P(y\succ\pi_t)}`
    (the paper's key lemma; a unit test checks it on a tabular policy), so no
    per-response win rate is ever estimated. With ``tau = 0`` it is exactly the IPO loss
    (Azar et al. 2023, eq. (17)) with reference ``π_t`` and IPO strength :math:`1/\eta`
    (:math:`(h-\tfrac{1}{2\tau_{IPO}})^2`); a unit test checks it.
    Notation: the paper's ``η`` is the OMD step size, ``τ`` the KL strength to ``π_ref``.

    Args: sequence log-probs ``(N,)`` of the winner ``y_w`` and loser ``y_l`` under the policy
    being trained (``logp_*``), the reference (``logp_ref_*``) and the previous iterate
    ``π_t`` (``logp_t_*``). Returns the mean squared loss ``()``.
    """
    _check_same_shape(logp_w=logp_w, logp_l=logp_l, logp_ref_w=logp_ref_w, logp_ref_l=logp_ref_l,
                      logp_t_w=logp_t_w, logp_t_l=logp_t_l)
    if logp_w.dim() != 1:
        raise ValueError(f"inpo_loss takes sequence log-probs (N,), got shape {tuple(logp_w.shape)}")
    if not 0 <= eta * tau <= 1:
        raise ValueError(f"need 0 <= eta*tau <= 1, got {eta * tau}")
    h = (logp_w - logp_l) - eta * tau * (logp_ref_w - logp_ref_l) - (1 - eta * tau) * (logp_t_w - logp_t_l)
    return ((h - eta / 2) ** 2).mean()
