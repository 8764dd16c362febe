"""Benchmark: rlbook's RLVR loop against TRL's GRPOTrainer, same tiny model, same task.

``python -m rlbook.bench [--steps N] [--out book/benchmarks.md]`` runs both for the same number
of GRPO steps (B prompts x G samples, on-policy, no KL, ``loss_type="grpo"``) from the committed
``countdown4`` base, each in a subprocess of its own (so peak memory is per side), and writes a
Markdown table that the run-statistics page includes. Sampling is unconstrained on both sides
(TRL has no hook for the task's decoding mask). Speed is measured here and reported, never
asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path


def _our_loop(steps: int, B: int, G: int, seed: int, q) -> None:
    import torch

    from rlbook import rl_lm
    from rlbook.losses import grpo_loss, group_normalise
    from rlbook.models import zoo

    torch.set_num_threads(1)
    model, tok, task, _ = zoo.load("countdown4")
    model.train()
    stamps: list[float] = []

    def objective(logp, mask, r):  # GRPO on-policy: ratio 1, group-normalised advantages
        adv = group_normalise(r).flatten()
        return grpo_loss(logp, logp.detach(), adv, mask)[0]

    cfg = rl_lm.RLConfig(steps=steps, prompts=B, group=G, lr=1e-4, max_new_tokens=task.answer_len + 1, seed=seed)
    t0 = time.perf_counter()
    hist = rl_lm.train(model, tok, task, objective, cfg, callback=lambda s, h: stamps.append(time.perf_counter()))
    q.put({"step_times": [b - a for a, b in zip([t0] + stamps[:-1], stamps)], "reward": hist.reward,
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _trl(steps: int, B: int, G: int, seed: int, q) -> None:
    import tempfile

    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlbook import hub
    from rlbook.models import zoo

    torch.set_num_threads(1)
    model, tok, task, _ = zoo.load("countdown4")
    problems = task.sample(steps * B, np.random.default_rng([seed, 2]), split="train")
    ds = Dataset.from_list([{"prompt": p.prompt, "idx": i} for i, p in enumerate(problems)])

    def reward(completions, idx, **kw):
        return [float(task.verify(problems[i], c)) for c, i in zip(completions, idx)]

    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            per_device_train_batch_size=B * G, num_generations=G, max_completion_length=task.answer_len + 1,
            loss_type="grpo", beta=0.0, learning_rate=1e-4, temperature=1.0, num_iterations=1,
            max_grad_norm=1.0, lr_scheduler_type="constant", **hub.trl_common(out, seed, cuda=False, max_steps=steps),
        )
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                              callbacks=[Timer()])
        t0 = time.perf_counter()
        trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    q.put({"step_times": [b - a for a, b in zip([t0] + stamps[:-1], stamps)], "reward": rewards,
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _in_subprocess(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def run(steps: int = 30, B: int = 8, G: int = 8, seed: int = 0, warmup: int = 3) -> dict:
    """Both sides, one after the other; per-step seconds after ``warmup`` steps, and peak memory."""
    out = {}
    for name, fn in (("rlbook.rl_lm", _our_loop), ("trl.GRPOTrainer", _trl)):
        res = _in_subprocess(fn, steps, B, G, seed)
        st = sorted(res["step_times"][warmup:])
        out[name] = {"median_s": st[len(st) // 2], "mean_s": sum(st) / len(st), "peak_mb": res["peak_mb"],
                     "first_reward": res["reward"][0] if res["reward"] else float("nan"),
                     "last_reward": sum(res["reward"][-5:]) / max(1, len(res["reward"][-5:]))}
    out["ratio"] = out["trl.GRPOTrainer"]["median_s"] / out["rlbook.rl_lm"]["median_s"]
    import os

    out["setup"] = {"steps": steps, "B": B, "G": G, "seed": seed, "warmup": warmup, "python": platform.python_version(),
                    "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    return out


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [
        "## RLVR loop against TRL's GRPOTrainer",
        "",
        f"Same tiny model (the committed `countdown4` base), same task, {s['steps']} GRPO steps of "
        f"{s['B']} prompts x {s['G']} samples, on-policy, no KL, one thread, unconstrained sampling; "
        f"median seconds per step after {s['warmup']} warm-up steps (`python -m rlbook.bench`; "
        f"{s.get('cpus', '?')}-core CPU, {s.get('date', '')}).",
        "",
        "| loop | s / step (median) | s / step (mean) | peak MB |",
        "|---|---|---|---|",
    ]
    for name in ("rlbook.rl_lm", "trl.GRPOTrainer"):
        r = res[name]
        lines.append(f"| `{name}` | {r['median_s']:.3f} | {r['mean_s']:.3f} | {r['peak_mb']:.0f} |")
    lines += ["", f"TRL / rlbook time per step: **{res['ratio']:.2f}x**. Learning is not compared here: "
              "without the task's decoding mask (which TRL cannot take) the base rarely writes a well-formed "
              "answer, so both sides see near-zero rewards; the chapters compare learning with the mask.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rlbook.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here (e.g. book/benchmarks.md)")
    a = ap.parse_args(argv)
    res = run(steps=a.steps)
    print(json.dumps(res, indent=1))
    if a.out:
        a.out.write_text(markdown(res), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
