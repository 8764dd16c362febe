"""Direct Nash Optimization (Rosset et al. 2024, arXiv 2404.03715)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.common import _check_same_shape


def dno_loss(
    logp_1: Tensor,
    logp_t_1: Tensor,
    logp_2: Tensor,
    logp_t_2: Tensor,
    target: Tensor,
    eta: float,
) -> Tensor:
    r"""DNO's regression (soft-label contrastive) loss of iteration ``t`` (DNO paper, Algorithm 1, the policy update).

    .. math:: m = \eta\log\frac{\pi(y_1|x)}{\pi_t(y_1|x)}-\eta\log\frac{\pi(y_2|x)}{\pi_t(y_2|x)},\qquad
              \mathcal L_t(\pi) = -\mathbb E\big[p\,\log\sigma(m) + (1-p)\log\sigma(-m)\big],

    with the soft label :math:`p=\sigma\big(r_t(x,y_1)-r_t(x,y_2)\big)` and
    :math:`r_t(x,y)=\mathbb E_{y'\sim\pi_t}[\mathcal P(y\succ y'|x)]` (the expected win rate
    against the current policy). The cross-entropy is minimised at :math:`\sigma(m)=p`,
    i.e. :math:`\eta\log\frac{\pi(y)}{\pi_t(y)}=r_t(x,y)+c(x)`: the soft policy-iteration step
    :math:`\pi_{t+1}\propto\pi_t e^{r_t/\eta}` (the soft policy-iteration target of Algorithm 1). The reference is the
    previous iterate ``π_t``, not a fixed ``π_ref``.

    With a hard label ``p = 1`` (``y_1`` the winner) this is exactly the DPO loss with
    reference ``π_t`` and ``β = η``: DNO-Prct (Algorithm 2), a unit test checks it.

    Args: sequence log-probs ``(N,)`` of ``y_1, y_2`` under the policy (``logp_*``) and under
    ``π_t`` (``logp_t_*``); ``target: (N,)`` the soft label ``p`` in [0, 1]. Returns ``()``.
    """
    _check_same_shape(logp_1=logp_1, logp_t_1=logp_t_1, logp_2=logp_2, logp_t_2=logp_t_2, target=target)
    if logp_1.dim() != 1:
        raise ValueError(f"dno_loss takes sequence log-probs (N,), got shape {tuple(logp_1.shape)}")
    m = eta * ((logp_1 - logp_t_1) - (logp_2 - logp_t_2))
    return -(target * F.logsigmoid(m) + (1 - target) * F.logsigmoid(-m)).mean()
