"""One small pure function per objective (see each module's docstrings for the math).

Notation (the book's notation page): ``B`` prompts, ``G`` samples per prompt, ``N``
sequences in a flat batch (often ``N = B*G``), ``T`` tokens; ``logp``/``logp_old``/
``logp_ref`` are per-token log-probs ``(N, T)``; ``mask`` marks valid tokens ``(N, T)``;
``r`` rewards, ``adv`` advantages, ``beta`` the KL (or DPO) strength.
"""

from rlbook.losses.common import group_normalise, kl_k3, masked_mean, sequence_logprob
from rlbook.losses.dpo import dpo_loss, dpo_token_loss, implicit_reward
from rlbook.losses.grpo import grpo_loss
from rlbook.losses.policy_gradient import (
    nsr_loss,
    psr_loss,
    reinforce_loss,
    w_reinforce_loss,
    weighted_logprob_loss,
)
from rlbook.losses.sft import sft_loss

__all__ = [
    "dpo_loss",
    "dpo_token_loss",
    "grpo_loss",
    "group_normalise",
    "implicit_reward",
    "kl_k3",
    "masked_mean",
    "nsr_loss",
    "psr_loss",
    "reinforce_loss",
    "sequence_logprob",
    "sft_loss",
    "w_reinforce_loss",
    "weighted_logprob_loss",
]
