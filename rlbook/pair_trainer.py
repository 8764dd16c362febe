r"""A TRL ``DPOTrainer`` whose loss is any pairwise objective from :mod:`rlbook.losses`.

TRL 1.16's ``DPOTrainer`` branches on ``loss_type`` inside one long ``_compute_loss`` and has
neither CPL (reference-free, with a conservative bias) nor CoPG (which needs a *reward* per
response, not a winner). :class:`PairLossTrainer` keeps everything else of TRL (tokenisation,
chat templates, the ``[chosen..., rejected...]`` collator, the reference model, logging) and
replaces only the loss: it computes per-token completion log-probs exactly as TRL does and
hands them to a small function. Extra per-pair columns ``reward_chosen`` / ``reward_rejected``
travel through the collator (:class:`RewardPairCollator`) for losses that need them.

Used by the full profiles of the CPL and CoPG chapters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from rlbook import hub

REWARD_COLUMNS = ("reward_chosen", "reward_rejected")


class RewardPairCollator(DataCollatorForPreference):
    """TRL's preference collator, plus the float columns ``reward_chosen, reward_rejected: (N,)`` when present."""

    def torch_call(self, examples):
        out = super().torch_call(examples)
        for k in REWARD_COLUMNS:
            if k in examples[0]:
                out[k] = torch.tensor([float(e[k]) for e in examples])
        return out


PairLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``pair_loss(logp_w, logp_ref_w, mask_w, logp_l, logp_ref_l, mask_l, inputs) -> (loss, metrics)``:
per-token log-probs and masks ``(N, T)`` of the chosen (w) and rejected (l) completions under the
policy and the reference (zeros when ``reference_free``), and the raw batch ``inputs`` (rewards)."""


class PairLossTrainer(DPOTrainer):
    """``DPOTrainer`` with ``pair_loss`` in place of TRL's loss (see the module docstring).

    ``reference_free=True`` skips the reference forward pass (CPL has no reference policy).
    Metrics returned by ``pair_loss`` (scalars) are logged like TRL's own.
    """

    def __init__(self, *args, pair_loss: PairLoss, reference_free: bool = False, **kwargs):
        self.pair_loss = pair_loss
        self.reference_free = reference_free
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + [
            c for c in REWARD_COLUMNS if c not in self._signature_columns
        ]

    def _token_logps(self, model, inputs) -> torch.Tensor:
        """Per-token completion log-probs ``(2N, T-1)``, computed as TRL 1.16's ``_compute_loss`` does."""
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        out = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
            use_cache=False, fused_lm_head=True,
        )
        return out.log_probs[:, -(completion_mask.size(1) - 1):]

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"][:, 1:]  # (2N, T-1)
        logp = self._token_logps(model, inputs) * mask
        if self.reference_free:
            logp_ref = torch.zeros_like(logp)
        else:
            with torch.no_grad():
                logp_ref = self._token_logps(self.ref_model, inputs) * mask
        lw, ll = logp.chunk(2)
        rw, rl = logp_ref.chunk(2)
        mw, ml = mask.chunk(2)
        loss, metrics = self.pair_loss(lw, rw, mw, ll, rl, ml, inputs)
        for k, v in metrics.items():
            v = self.accelerator.gather_for_metrics(v.detach().float().reshape(1)).mean().item()
            self._metrics[mode][k].append(v)
        return (loss, None) if return_outputs else loss


def train_with_pair_loss(
    model_name: str,
    train_ds,
    pair_loss: PairLoss,
    *,
    reference_free: bool,
    beta: float,
    lr: float,
    batch: int,
    per_device_batch: int,
    max_length: int,
    max_steps: int,
    seed: int,
    device: str,
    output_dir: str,
):
    """Train ``model_name`` (Hub name or local folder) for one epoch of ``train_ds`` with ``pair_loss``.

    The TRL configuration of the book's full profiles (bf16 and activation checkpointing on a GPU;
    the CPU settings of MEASURED.md otherwise; ``max_steps > 0`` caps the run, for dry runs).
    Returns ``(model, tokenizer, log_history, train_seconds)``.
    """
    import time

    from trl import DPOConfig

    from rlbook.models import load_pretrained

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model, tok = load_pretrained(model_name, device=device, dtype=dtype)
    ref_model = None
    if not reference_free:
        ref_model, _ = load_pretrained(model_name, device=device, dtype=dtype)
        ref_model.eval()
    args = DPOConfig(
        output_dir=output_dir,
        beta=beta,
        learning_rate=lr,
        num_train_epochs=1,
        max_steps=max_steps,
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=max(1, batch // per_device_batch),
        max_length=max_length,
        loss_type=["sigmoid"],  # unused: PairLossTrainer replaces the loss
        lr_scheduler_type="linear",
        warmup_steps=0.1,
        logging_steps=1 if max_steps > 0 else 10,
        **hub.trl_offline(cuda, seed),
    )
    trainer = PairLossTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=train_ds, processing_class=tok,
        data_collator=RewardPairCollator(pad_token_id=tok.pad_token_id),
        pair_loss=pair_loss, reference_free=reference_free,
    )
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "loss" in h]
    model = trainer.model.eval()
    del trainer, ref_model
    if cuda:
        torch.cuda.empty_cache()
    return model, tok, logs, seconds


def greedy_reward(models: dict, tok, held, reward_model: str, device: str, max_new_tokens: int) -> dict:
    """Greedy completions of the held-out prompts by each model in ``models`` (name → model), scored by
    ``reward_model``. Returns ``{"reward": {name: mean}, "reward_se": {name: s.e.}}``."""
    import numpy as np


    prompts = [hub.as_text(ex, tok)["prompt"] for ex in held]
    questions = [hub.user_text(ex) for ex in held]
    comps = {k: hub.generate(m, tok, prompts, device, max_new_tokens, 1, sample=False) for k, m in models.items()}
    rm, rm_tok = hub.load_reward_model(reward_model, device)
    reward, se = {}, {}
    for k, c in comps.items():
        sc = hub.score(rm, rm_tok, questions, c, device)
        reward[k] = float(sc.mean())
        se[k] = float(sc.std(ddof=1) / np.sqrt(len(sc))) if len(sc) > 1 else float("nan")
    return {"reward": reward, "reward_se": se}
