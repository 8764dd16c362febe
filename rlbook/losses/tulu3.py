r"""TÜLU 3's two post-training objectives after SFT (Lambert et al. 2024, arXiv 2411.15124).

**Length-normalised DPO** (paper Sec. 5, the length-normalised DPO objective; open-instruct ``dpo_utils.py``: loss type
``dpo_norm`` = ``dpo_loss`` applied to *average* per-token log-probs, ``average_log_prob=True``):

.. math::
   \mathcal L_{DPO\text{-}norm} = -\log\sigma\Big(\frac{\beta}{|y_c|}\log\frac{\pi_\theta(y_c|x)}{\pi_{ref}(y_c|x)}
   - \frac{\beta}{|y_r|}\log\frac{\pi_\theta(y_r|x)}{\pi_{ref}(y_r|x)}\Big)

(TRL 1.16 ``DPOTrainer`` ``loss_type="sigmoid_norm"``: the same formula.) TÜLU 3 8B uses
:math:`\beta=5` (the paper's DPO hyper-parameters; open-instruct ``scripts/train/tulu3/dpo_8b.sh``:
``--dpo_loss_type dpo_norm --dpo_beta 5``).

**RLVR** (paper Sec. 6, the RLVR objective): maximise
:math:`\mathbb E_{y\sim\pi_\theta}[v(x,y)] - \beta\,\mathrm{KL}(\pi_\theta\|\pi_{ref})` with
:math:`v(x,y)=\alpha\cdot\mathbb 1[\text{verified}]`, :math:`\alpha=10`
(open-instruct ``verification_reward: float = 10.0``), :math:`\pi_{ref}` the DPO model. The
official PPO script (``ppo_vllm_thread_ray_gtrl.py``) puts the KL into the reward, token by
token: ``kl = logprobs - ref_logprobs``; ``non_score_reward = -args.beta * kl``; the verifier
score is added at the last token; ``rlhf_reward = scores + non_score_reward.sum(1)``. PPO then
learns a value function; :func:`rlvr_kl_loss` replaces the value function by the group-mean
baseline (a simplification the chapter names).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rlbook.losses.common import _check_same_shape, sequence_logprob
from rlbook.losses.policy_gradient import weighted_logprob_loss


def dpo_norm_loss(
    logp_c: Tensor,
    logp_ref_c: Tensor,
    mask_c: Tensor,
    logp_r: Tensor,
    logp_ref_r: Tensor,
    mask_r: Tensor,
    beta: float = 5.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Length-normalised DPO (TÜLU 3 Sec. 5, open-instruct ``dpo_norm``) from per-token log-probs.

    .. math:: \mathcal L = -\operatorname{mean}_n\log\sigma\Big(\frac{\beta}{|y_c|}\sum_t m^c_t
              (\log\pi_\theta-\log\pi_{ref})(y^c_t) - \frac{\beta}{|y_r|}\sum_t m^r_t(\log\pi_\theta-\log\pi_{ref})(y^r_t)\Big)

    ``logp_c, logp_ref_c, mask_c: (N, Tc)`` (chosen), ``logp_r, logp_ref_r, mask_r: (N, Tr)``
    (rejected); :math:`|y| = \sum_t m_t` (EOS included when the mask includes it). Returns
    ``(loss: (), diagnostics)`` with the per-token implicit rewards ``reward_c, reward_r: (N,)``
    and ``margin: (N,)``. It is DPO with a per-response strength :math:`\beta/|y|`, and plain DPO
    with :math:`\beta/L` when both responses have length :math:`L` (tests: ``test_edge_*``).
    """
    for name, t in dict(logp_c=logp_c, logp_r=logp_r).items():
        if t.dim() != 2:
            raise ValueError(f"{name} must be (N, T) per-token log-probs, got shape {tuple(t.shape)}")
    _check_same_shape(logp_c=logp_c, logp_ref_c=logp_ref_c, mask_c=mask_c)
    _check_same_shape(logp_r=logp_r, logp_ref_r=logp_ref_r, mask_r=mask_r)
    len_c = mask_c.to(logp_c.dtype).sum(1).clamp(min=1.0)  # (N,)
    len_r = mask_r.to(logp_r.dtype).sum(1).clamp(min=1.0)
    reward_c = beta * (sequence_logprob(logp_c, mask_c) - sequence_logprob(logp_ref_c, mask_c)) / len_c
    reward_r = beta * (sequence_logprob(logp_r, mask_r) - sequence_logprob(logp_ref_r, mask_r)) / len_r
    margin = reward_c - reward_r
    loss = -F.logsigmoid(margin).mean()
    return loss, {"reward_c": reward_c.detach(), "reward_r": reward_r.detach(), "margin": margin.detach()}


def verifiable_reward(correct: Tensor, alpha: float = 10.0) -> Tensor:
    r""":math:`v(x,y)=\alpha\cdot\mathbb 1[\text{verifier}(x,y)]` (TÜLU 3 Sec. 6; open-instruct ``verification_reward=10.0``).

    ``correct``: any shape, bool or 0/1 → float tensor of the same shape.
    """
    return alpha * correct.float()


def rlvr_kl_loss(logp: Tensor, mask: Tensor, v: Tensor, logp_ref: Tensor, beta: float = 0.05) -> Tensor:
    r"""RLVR with a KL penalty in the reward, group-mean baseline (TÜLU 3 Sec. 6 objective, REINFORCE form).

    .. math::
       R_n = v_n - \beta\sum_t m_{n,t}\big(\log\pi_\theta(y_{n,t}) - \log\pi_{ref}(y_{n,t})\big),\qquad
       A_n = R_n - \frac1G\sum_{g} R_{b,g},\qquad
       \mathcal L = -\frac{\sum_{n,t} A_n\, m_{n,t}\log\pi_\theta(y_{n,t})}{\sum_{n,t} m_{n,t}}

    The KL term is the official PPO script's ``kl1`` estimator summed over the response
    (``rlhf_reward = scores + non_score_reward.sum(1)``); :math:`R` and :math:`A` are
    constants (no gradient). Because :math:`\mathbb E_{y\sim\pi}[\nabla\log\pi(y)]=0`, the
    gradient of :math:`\mathcal L` is an unbiased estimate of
    :math:`-\nabla\big(\mathbb E[v]-\beta\,\mathrm{KL}(\pi_\theta\|\pi_{ref})\big)` (up to the
    positive token-count normalisation). With ``beta=0`` it is
    :func:`rlbook.losses.reinforce_loss` with the group-mean baseline; scaling
    :math:`(v,\beta)\to(\alpha v,\alpha\beta)` scales the loss by :math:`\alpha`.

    Shapes: ``logp, logp_ref, mask: (N, T)`` with ``N = B*G`` (row ``b*G + g``),
    ``v: (B, G)`` verifiable rewards → ``()``.
    """
    if logp.dim() != 2 or v.dim() != 2:
        raise ValueError("logp must be (N, T) and v (B, G)")
    _check_same_shape(logp=logp, logp_ref=logp_ref, mask=mask)
    B, G = v.shape
    if B * G != logp.shape[0]:
        raise ValueError(f"v is ({B}, {G}) but logp has {logp.shape[0]} rows")
    kl_seq = sequence_logprob((logp - logp_ref).detach(), mask).view(B, G)  # (B, G)
    R = v.to(logp.dtype) - beta * kl_seq
    A = R - R.mean(1, keepdim=True)  # (B, G)
    return weighted_logprob_loss(logp, mask, A.flatten())
