"""Supervised fine-tuning: the negative log-likelihood of the target tokens."""

from __future__ import annotations

from torch import Tensor

from rlbook.losses.common import masked_mean


def sft_loss(logp: Tensor, mask: Tensor) -> Tensor:
    r"""Token-averaged negative log-likelihood.

    .. math:: \mathcal{L}_{SFT} = -\frac{\sum_{n,t} m_{n,t}\log\pi_\theta(y_{n,t}|x_n,y_{n,<t})}{\sum_{n,t} m_{n,t}}

    ``logp, mask: (N, T)`` → ``()``.
    """
    return -masked_mean(logp, mask)
