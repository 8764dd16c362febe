"""A small zoo of base policies: tiny LMs pre-trained by SFT to *partial* competence.

RL papers start from a base model that already solves some prompts some of the time.
Training one from scratch costs about a minute, too long for a notebook, so each base
policy is built once by a deterministic function and kept:

1. as package data in ``rlbook/zoo/NAME.pt`` + ``NAME.json`` (committed, ~0.5 MB), so
   that CI and the notebooks never retrain it;
2. else in the cache ``$RLBOOK_CACHE/zoo`` (default ``~/.cache/rlbook/zoo``);
3. else it is built (and written to the cache).

Rebuild the committed copy with ``python -m rlbook.models.zoo build NAME`` (it writes
``rlbook/zoo/``); ``python -m rlbook.models.zoo list`` shows the recipes. The JSON file
holds the recipe and the competence measured right after the build.

Zoo entries:

- ``countdown4``: :class:`rlbook.tasks.CountdownTask` with 4 digits; a 2-layer,
  d=64 Llama (132,608 parameters) trained by SFT on one uniformly random correct
  answer per prompt, 1000 steps x 256 prompts, Adam lr 3e-3, with the task's
  constrained decoding. Exact pass@1 ≈ 0.2 and pass@64 ≈ 0.99 on 200 test prompts:
  room to sharpen, and diversity to lose.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "zoo"
"""where the committed checkpoints live (package data)"""


@dataclass(frozen=True)
class Recipe:
    """How a zoo entry is built (everything that determines its weights)."""

    task: str = "countdown"
    """task class: ``"countdown"`` (:class:`rlbook.tasks.CountdownTask`)"""
    task_kwargs: dict = field(default_factory=lambda: {"n_digits": 4, "max_target": 99})
    """arguments of the task"""
    hidden: int = 64
    """model width"""
    layers: int = 2
    """transformer blocks"""
    heads: int = 4
    """attention heads"""
    intermediate: int = 256
    """MLP width"""
    steps: int = 1000
    """SFT steps"""
    batch: int = 256
    """prompts per SFT step (one random correct answer each)"""
    lr: float = 3e-3
    """Adam learning rate"""
    seed: int = 0
    """seed of the initialisation and of the data order"""
    eval_prompts: int = 200
    """test prompts for the competence recorded in the JSON"""


RECIPES: dict[str, Recipe] = {"countdown4": Recipe()}


def cache_dir() -> Path:
    """``$RLBOOK_CACHE/zoo`` or ``~/.cache/rlbook/zoo``."""
    root = os.environ.get("RLBOOK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rlbook")
    return Path(root) / "zoo"


def make_task(recipe: Recipe):
    from rlbook.tasks import CountdownTask

    if recipe.task != "countdown":
        raise ValueError(f"unknown task {recipe.task!r}")
    return CountdownTask(**recipe.task_kwargs)


def _fresh(recipe: Recipe):
    from rlbook.models import TinyConfig, char_tokenizer, tiny_llama

    task = make_task(recipe)
    tok = char_tokenizer(task.alphabet)
    cfg = TinyConfig(hidden=recipe.hidden, layers=recipe.layers, heads=recipe.heads,
                     intermediate=recipe.intermediate, max_len=32)
    model = tiny_llama(len(tok), cfg, seed=recipe.seed, tokenizer=tok)
    return model, tok, task


def sft_batch(task, tok, problems, rng: np.random.Generator):
    """Prompt ids ``(N, P)`` and completion ids ``(N, T)``: one uniformly random correct answer + EOS each."""
    import torch

    from rlbook.rollout import encode_prompts

    answers = [task.random_correct_answer(p, rng) for p in problems]
    ids, _ = encode_prompts(tok, [p.prompt for p in problems])
    comp = torch.tensor([tok.convert_tokens_to_ids(list(a)) + [tok.eos_token_id] for a in answers])
    return ids, comp


def train_sft(model, tok, task, recipe: Recipe, steps: int | None = None, log_every: int = 0):
    """SFT with the task's constrained softmax: minimise :func:`rlbook.losses.sft_loss` (deterministic)."""
    import torch

    from rlbook.losses import sft_loss
    from rlbook.rollout import token_logprobs

    mask_fn = task.logits_mask(tok)
    rng = np.random.default_rng([recipe.seed, 1])
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    for step in range(recipe.steps if steps is None else steps):
        ids, comp = sft_batch(task, tok, task.sample(recipe.batch, rng), rng)
        logp = token_logprobs(model, ids, comp, mask_fn)
        loss = sft_loss(logp, torch.ones_like(logp))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log_every and step % log_every == 0:
            print(f"step {step:5d}  sft loss {loss.item():.4f}", file=sys.stderr)
    model.eval()
    return model


def build(name: str, steps: int | None = None, out_dir: str | os.PathLike | None = None, log_every: int = 0,
          evaluate: bool = True):
    """Build zoo entry ``name`` from scratch; return ``(model, tok, task, info)``.

    Deterministic: the same recipe gives bit-identical weights on the CPU. ``steps``
    overrides the recipe (tests build a few steps). With ``out_dir`` the checkpoint
    (``NAME.pt``, ``NAME.json``) is written there. ``evaluate=False`` skips measuring the
    competence (``info["competence"]`` is then None).
    """
    from rlbook.runtime import seed_everything

    recipe = RECIPES[name]
    seed_everything(recipe.seed)
    model, tok, task = _fresh(recipe)
    train_sft(model, tok, task, recipe, steps=steps, log_every=log_every)
    info = {"name": name, "recipe": asdict(recipe), "steps_run": recipe.steps if steps is None else steps,
            "competence": competence(model, tok, task, recipe) if evaluate else None}
    if out_dir is not None:
        save_state(model, info, name, out_dir, skip=("lm_head.weight",))
    return model, tok, task, info


def save_state(model, info: dict, name: str, folder: str | os.PathLike = PACKAGE_DIR, half: bool = False,
               skip: tuple[str, ...] = ()) -> dict:
    """Write a checkpoint as the zoo keeps them: ``NAME.pt`` (the state dict, floating tensors in
    fp16 when ``half`` to stay under 1 MB, the keys in ``skip`` left out, e.g. a tied
    ``lm_head.weight``) and ``NAME.json`` (``info``: the recipe and the measured competence).

    Chapters with their own small policies (not the recipes of this module) use this and
    :func:`load_state` for their committed bases. Returns ``info``.
    """
    import torch

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach().clone())
             for k, v in model.state_dict().items() if k not in skip}
    torch.save(state, out / f"{name}.pt")
    (out / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_state(name: str, folder: str | os.PathLike = PACKAGE_DIR):
    """``(state, info)`` of the checkpoint ``NAME.pt`` + ``NAME.json`` in ``folder`` (floating
    tensors as float32), or ``None`` when either file is missing (the caller then builds it)."""
    import torch

    pt, js = Path(folder) / f"{name}.pt", Path(folder) / f"{name}.json"
    if not (pt.exists() and js.exists()):
        return None
    state = torch.load(pt, map_location="cpu", weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, json.loads(js.read_text())


def competence(model, tok, task, recipe: Recipe) -> dict:
    """Exact pass@1 / pass@64 and mean P(correct) on ``recipe.eval_prompts`` fixed test prompts."""
    from rlbook.rollout import pass_at_k_exact

    probs = prob_correct(model, tok, task, eval_problems(task, recipe.eval_prompts))
    return {
        "pass@1": float(pass_at_k_exact(probs, 1).mean()),
        "pass@64": float(pass_at_k_exact(probs, 64).mean()),
        "eval_prompts": len(probs),
    }


def eval_problems(task, n: int = 200):
    """The fixed evaluation prompts: ``n`` test-split problems drawn with seed 12345."""
    return task.sample(n, np.random.default_rng(12345), split="test")


def answer_probs(model, tok, task, problems, chunk: int = 4096):
    """Probability of every correct answer of every problem under the (constrained) policy.

    Returns a list (one entry per problem) of 1-D numpy arrays, :math:`\\pi(y|x)` for each
    correct ``y`` in :meth:`CountdownTask.correct_answers` order.
    """
    import torch

    from rlbook.rollout import encode_prompts, token_logprobs

    mask_fn = task.logits_mask(tok)
    prompts, answers, owner = [], [], []
    for i, p in enumerate(problems):
        for a in task.correct_answers(p):
            prompts.append(p.prompt)
            answers.append(tok.convert_tokens_to_ids(list(a)) + [tok.eos_token_id])
            owner.append(i)
    seq_logp = []
    with torch.no_grad():
        for s in range(0, len(prompts), chunk):
            ids, _ = encode_prompts(tok, prompts[s : s + chunk])
            comp = torch.tensor(answers[s : s + chunk])
            seq_logp.append(token_logprobs(model, ids, comp, mask_fn).sum(-1))
    lp = torch.cat(seq_logp).double().exp().numpy()
    owner = np.array(owner)
    return [lp[owner == i] for i in range(len(problems))]


def prob_correct(model, tok, task, problems) -> np.ndarray:
    """:math:`p(x)=\\sum_{y\\ correct}\\pi(y|x)` per problem ``(len(problems),)``."""
    return np.array([a.sum() for a in answer_probs(model, tok, task, problems)])


def load_tied(model, state: dict, where="checkpoint") -> None:
    """Load a state saved without the tied ``lm_head.weight``, re-tie, and set eval mode."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"{where} does not match its recipe: {missing} {unexpected}")
    model.tie_weights()
    model.eval()


def load(name: str, prefer: str = "package"):
    """Load zoo entry ``name``: ``(model, tok, task, info)``; build and cache it if absent.

    ``prefer="package"`` reads the committed copy first, then the cache; ``"cache"`` the reverse.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown zoo entry {name!r}: choose one of {', '.join(RECIPES)}")
    places = [PACKAGE_DIR, cache_dir()]
    if prefer == "cache":
        places.reverse()
    for d in places:
        found = load_state(name, d)
        if found is not None:
            state, info = found
            model, tok, task = _fresh(Recipe(**info["recipe"]))
            load_tied(model, state, d / f"{name}.pt")
            return model, tok, task, info
    model, tok, task, info = build(name, out_dir=cache_dir())
    return model, tok, task, info


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rlbook.models.zoo", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="rebuild a zoo entry (writes rlbook/zoo/ by default)")
    b.add_argument("name", choices=sorted(RECIPES))
    b.add_argument("--out", default=str(PACKAGE_DIR), help="output folder (default: the package's zoo/)")
    b.add_argument("--steps", type=int, default=None, help="override the recipe's SFT steps")
    sub.add_parser("list", help="list the recipes")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for n, r in RECIPES.items():
            print(n, asdict(r))
        return 0
    _, _, _, info = build(args.name, steps=args.steps, out_dir=args.out, log_every=100)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
