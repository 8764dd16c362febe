r"""Identity Preference Optimisation (Azar et al. 2023, "A General Theoretical Paradigm to
Understand Learning from Human Preferences", arXiv 2310.12036)."""

from __future__ import annotations

from torch import Tensor

from rlbook.losses.common import _check_same_shape


def ipo_loss(
    logp_w: Tensor, logp_ref_w: Tensor, logp_l: Tensor, logp_ref_l: Tensor, tau: float
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The sampled IPO loss (Azar et al. 2023, eq. 17).

    .. math:: \mathcal L_{IPO} = \mathbb E\Big[\Big(h_\pi(y_w,y_l) - \frac{1}{2\tau}\Big)^2\Big],\qquad
              h_\pi(y_w,y_l)=\log\frac{\pi(y_w|x)\,\pi_{ref}(y_l|x)}{\pi_{ref}(y_w|x)\,\pi(y_l|x)}

    ``logp_w, logp_ref_w, logp_l, logp_ref_l: (N,)`` sequence log-probs → ``(loss: (), {"h": (N,)})``.
    TRL 1.16 ``DPOTrainer(loss_type=["ipo"], beta=tau)`` computes this with every log-ratio
    divided by its completion's token count (a length normalisation the paper does not write;
    TRL's comment says the IPO authors confirmed it): pass per-token *mean* log-probs to get
    TRL's number (tests/test_losses_cpl_copg_ipo.py checks it against TRL's own code).
    """
    _check_same_shape(logp_w=logp_w, logp_ref_w=logp_ref_w, logp_l=logp_l, logp_ref_l=logp_ref_l)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    h = (logp_w - logp_ref_w) - (logp_l - logp_ref_l)
    loss = ((h - 1.0 / (2.0 * tau)) ** 2).mean()
    return loss, {"h": h.detach()}
