"""One small pure function per objective (see each module's docstrings for the math).

Notation (the book's notation page): ``B`` prompts, ``G`` samples per prompt, ``N``
sequences in a flat batch (often ``N = B*G``), ``T`` tokens; ``logp``/``logp_old``/
``logp_ref`` are per-token log-probs ``(N, T)``; ``mask`` marks valid tokens ``(N, T)``;
``r`` rewards, ``adv`` advantages, ``beta`` the KL (or DPO) strength.
"""

from rlbook.losses.bnpo import bnpo_advantage, bnpo_decomposed_advantage
from rlbook.losses.c3po import c3po_loss, scd_loss
from rlbook.losses.common import group_normalise, kl_k3, masked_mean, sequence_logprob
from rlbook.losses.copg import copg_loss, regularised_reward
from rlbook.losses.cpl import cpl_loss, segment_score
from rlbook.losses.critique_grpo import critique_group_advantage, critique_grpo_loss
from rlbook.losses.dapo_direct import dapo_direct_loss, dapo_pairwise_loss
from rlbook.losses.dno import dno_loss
from rlbook.losses.dpo import dpo_loss, dpo_token_loss, implicit_reward
from rlbook.losses.expo import exp_grpo_loss
from rlbook.losses.grpo import grpo_loss
from rlbook.losses.implicit_reward_sft import (
    chi2_sft_loss,
    fdiv_kl_sft_loss,
    hellinger_sft_loss,
    implicit_reward_sft_loss,
)
from rlbook.losses.inpo import inpo_loss
from rlbook.losses.ipo import ipo_loss
from rlbook.losses.lite_ppo import clipped_pg_loss, lite_ppo_advantage, normalise_advantages
from rlbook.losses.nft import nft_loss, nft_sample_loss
from rlbook.losses.pit import pit_policy_loss, pit_rm_loss, pit_rm_loss_ordered
from rlbook.losses.policy_gradient import (
    nsr_loss,
    psr_loss,
    reinforce_loss,
    w_reinforce_loss,
    weighted_logprob_loss,
)
from rlbook.losses.ppo import ppo_clip_loss, value_loss
from rlbook.losses.redi import redi_loss, simpo_loss
from rlbook.losses.rso import hinge_norm_loss, sigmoid_norm_loss, slic_hinge_loss
from rlbook.losses.sft import sft_loss
from rlbook.losses.topr import offpolicy_reinforce_loss, topr_loss, truncated_is_loss
from rlbook.losses.tulu3 import dpo_norm_loss, rlvr_kl_loss

__all__ = [
    "bnpo_advantage",
    "bnpo_decomposed_advantage",
    "c3po_loss",
    "chi2_sft_loss",
    "clipped_pg_loss",
    "copg_loss",
    "cpl_loss",
    "critique_group_advantage",
    "critique_grpo_loss",
    "dapo_direct_loss",
    "dapo_pairwise_loss",
    "dno_loss",
    "dpo_loss",
    "dpo_norm_loss",
    "dpo_token_loss",
    "exp_grpo_loss",
    "fdiv_kl_sft_loss",
    "group_normalise",
    "grpo_loss",
    "hellinger_sft_loss",
    "hinge_norm_loss",
    "implicit_reward",
    "implicit_reward_sft_loss",
    "inpo_loss",
    "ipo_loss",
    "kl_k3",
    "lite_ppo_advantage",
    "masked_mean",
    "nft_loss",
    "nft_sample_loss",
    "normalise_advantages",
    "nsr_loss",
    "offpolicy_reinforce_loss",
    "pit_policy_loss",
    "pit_rm_loss",
    "pit_rm_loss_ordered",
    "ppo_clip_loss",
    "psr_loss",
    "redi_loss",
    "regularised_reward",
    "reinforce_loss",
    "rlvr_kl_loss",
    "scd_loss",
    "segment_score",
    "sequence_logprob",
    "sft_loss",
    "sigmoid_norm_loss",
    "simpo_loss",
    "slic_hinge_loss",
    "topr_loss",
    "truncated_is_loss",
    "value_loss",
    "w_reinforce_loss",
    "weighted_logprob_loss",
]
