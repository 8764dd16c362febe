r"""C3PO: DPO on in-scope feedback pairs, constrained by supervised context distillation elsewhere.

Stephan, Zhu, Khattab, Finn, Sharma et al. 2024, "RLVF: Learning from Verbal Feedback
without Overgeneralization" (arXiv 2402.10893), Sec. 4, and the official code
(github.com/austrian-code-wizard/c3po, ``src/lcdpo.py``, class ``LocallyConstrainedDPOTrainer``):

.. math::
   \mathcal{L}_{C3PO} = \mathcal{L}_{DPO}(\mathcal{D}_{in}) + \lambda_1\,\mathcal{L}_{SCD}(\mathcal{D}_{out})
                        + \lambda_2\,\mathcal{L}_{SCD}(\mathcal{D}_{near})

where :math:`\mathcal{L}_{SCD}` is a supervised loss on the *original* model's own responses
:math:`y\sim\pi_0(\cdot|x)` to out-of-scope and near-scope prompts. The official code writes it
as knowledge distillation (``compute_knowledge_distillation_loss``):

.. math::
   \mathcal{L}_{SCD} = (1-\kappa)\,\mathrm{NLL} + \kappa\,T^2\,\frac{1}{N}\sum_n\sum_t
   \mathrm{KL}\big(\pi_0^{T}(\cdot|x_n,y_{n,<t})\,\|\,\pi_\theta^{T}(\cdot|x_n,y_{n,<t})\big)

with ``NLL`` the token-averaged cross-entropy of the targets (Hugging Face's ``outputs.loss``)
and :math:`\pi^T = \mathrm{softmax}(z/T)`. Code names: ``kd_lambda`` = κ, ``kd_temperature`` = T,
``sigma_soft`` = λ1 (out-of-scope, "soft negatives", the general prompts), ``sigma_hard`` = λ2
(near-scope, "hard negatives"). The paper's configuration ``configs/config_lcdpo.json`` uses
``lcdpo_lambda = 0`` (pure NLL, the paper's SCD), ``lcdpo_temp = 1``,
``lcdpo_sigma_soft = 0.2``, ``lcdpo_sigma_hard = 0.1``, ``dpo_beta = 0.1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlbook.losses.common import _check_same_shape, masked_mean
from rlbook.losses.dpo import dpo_loss


def scd_loss(
    logits: Tensor, logits_ref: Tensor, target: Tensor, mask: Tensor, kappa: float = 0.0, temperature: float = 1.0
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Supervised context distillation to the frozen original model (C3PO's constraint).

    .. math:: \mathcal{L}_{SCD} = (1-\kappa)\Big(-\frac{\sum_{n,t}m_{n,t}\log\pi_\theta(y_{n,t}|\cdot)}{\sum_{n,t}m_{n,t}}\Big)
              + \kappa\,T^2\,\frac1N\sum_{n}\sum_t m_{n,t}\,\mathrm{KL}\big(\pi_0^T(\cdot|s_{n,t})\,\|\,\pi_\theta^T(\cdot|s_{n,t})\big)

    (official ``lcdpo.py``: ``(1 - kd_lambda) * outputs.loss + kd_lambda * T**2 * masked_dl_div``
    with ``use_avg_kl=False``, i.e. the KL summed over a sequence's tokens and averaged over
    sequences). ``kappa = 0`` is plain SFT on π_0's responses (:func:`rlbook.losses.sft_loss`),
    the paper's choice. The targets ``y`` are samples of the original model π_0.

    Shapes: ``logits, logits_ref: (N, T, V)`` next-token logits at each target position
    (already shifted), ``target: (N, T)`` token ids, ``mask: (N, T)`` → ``(loss: (), diagnostics)``.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, T, V), got shape {tuple(logits.shape)}")
    _check_same_shape(logits=logits, logits_ref=logits_ref)
    _check_same_shape(target=target, mask=mask)
    if target.shape != logits.shape[:2]:
        raise ValueError(f"target {tuple(target.shape)} must be (N, T) = {tuple(logits.shape[:2])}")
    if not 0.0 <= kappa <= 1.0 or temperature <= 0:
        raise ValueError(f"need 0 <= kappa <= 1 and temperature > 0, got {kappa}, {temperature}")
    logp = torch.log_softmax(logits, -1)  # (N, T, V)
    nll = -masked_mean(logp.gather(-1, target[..., None].long())[..., 0], mask)
    lp_t = torch.log_softmax(logits / temperature, -1)  # (N, T, V)
    lq_t = torch.log_softmax(logits_ref.detach() / temperature, -1)  # (N, T, V)
    kl_tok = (lq_t.exp() * (lq_t - lp_t)).sum(-1)  # (N, T)
    kl = (kl_tok * mask.to(kl_tok.dtype)).sum(-1).mean()  # per-sequence sum, mean over N
    loss = (1.0 - kappa) * nll + kappa * temperature**2 * kl
    return loss, {"nll": nll.detach(), "kl": kl.detach()}


def c3po_loss(
    logp_w: Tensor,
    logp_ref_w: Tensor,
    logp_l: Tensor,
    logp_ref_l: Tensor,
    beta: float,
    scd_out: Tensor,
    scd_near: Tensor,
    lam_out: float = 0.2,
    lam_near: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The C3PO objective (RLVF paper, Sec. 4; official ``LocallyConstrainedDPOTrainer.compute_loss``).

    .. math:: \mathcal{L}_{C3PO} = \mathcal{L}_{DPO}(\mathcal{D}_{in}) + \lambda_1\mathcal{L}_{SCD}(\mathcal{D}_{out})
              + \lambda_2\mathcal{L}_{SCD}(\mathcal{D}_{near})

    ``logp_w, logp_ref_w, logp_l, logp_ref_l: (N,)`` sequence log-probs of the in-scope pairs
    (chosen = the feedback-revised response, rejected = the original one), ``scd_out, scd_near: ()``
    the constraint losses of :func:`scd_loss` on out- and near-scope data. With
    ``lam_out = lam_near = 0`` this is exactly :func:`rlbook.losses.dpo_loss` (a unit test checks it).
    Defaults λ1 = 0.2, λ2 = 0.1: ``lcdpo_sigma_soft``, ``lcdpo_sigma_hard`` of ``configs/config_lcdpo.json``.
    Returns ``(loss: (), diagnostics)``.
    """
    if scd_out.dim() != 0 or scd_near.dim() != 0:
        raise ValueError("scd_out and scd_near must be scalar losses")
    if lam_out < 0 or lam_near < 0:
        raise ValueError(f"constraint weights must be >= 0, got {lam_out}, {lam_near}")
    dpo, diag = dpo_loss(logp_w, logp_ref_w, logp_l, logp_ref_l, beta)
    loss = dpo + lam_out * scd_out + lam_near * scd_near
    return loss, {**diag, "dpo": dpo.detach(), "scd_out": scd_out.detach(), "scd_near": scd_near.detach()}
