"""Seeds, threads, device and determinism: ``setup(profile, seed)``.

Every notebook calls ``setup`` once, right after its parameters cell. The same
profile and seed give identical numbers on the CPU (tested in tests/test_runtime.py).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np

PROFILES = ("smoke", "full")
"""``smoke``: CPU, offline, <= 30 s. ``full``: one GPU, paper scale, Hub model and data."""


@dataclass(frozen=True)
class Runtime:
    """What ``setup`` decided: pass it around instead of re-reading globals."""

    profile: str
    """``"smoke"`` or ``"full"``"""
    seed: int
    """the seed of every random generator (python, numpy, torch)"""
    device: str
    """``"cpu"`` or ``"cuda"``"""
    threads: int
    """torch intra-op threads"""

    @property
    def smoke(self) -> bool:
        return self.profile == "smoke"

    def rng(self, offset: int = 0) -> np.random.Generator:
        """A numpy generator derived from the seed (``offset`` separates streams)."""
        return np.random.default_rng([self.seed, offset])


def check_profile(profile: str) -> str:
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(profile: str = "smoke", seed: int = 0, threads: int | None = None) -> Runtime:
    """Seed everything, pick the device and the threads, make the CPU deterministic.

    - ``profile="smoke"`` always runs on the CPU; ``"full"`` takes CUDA when present
      (and then asks for deterministic CUDA kernels).
    - ``threads``: default ``$OMP_NUM_THREADS`` or 1 when notebooks run in parallel
      (the runner sets ``OMP_NUM_THREADS``), else torch's default.
    """
    import torch

    check_profile(profile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() else torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    device = "cuda" if (profile == "full" and torch.cuda.is_available()) else "cpu"
    if device == "cuda":
        # CUDA kernels need asking; torch's CPU kernels used here are deterministic already
        # (tests/test_runtime.py checks it), and the call costs ~2 s of imports on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(seed)
    return Runtime(profile=profile, seed=seed, device=device, threads=torch.get_num_threads())
