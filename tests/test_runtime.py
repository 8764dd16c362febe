"""rlbook.runtime: setup(profile, seed) makes runs repeatable and refuses bad arguments."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import rlbook
from rlbook.runtime import PROFILES, Runtime, check_profile, setup


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """setup() sets process-wide torch state: put it back for the other test modules."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def draw(rt: Runtime):
    """A few numbers from every generator that setup seeds."""
    return (
        torch.randn(5).tolist(),
        torch.randint(0, 1000, (3,)).tolist(),
        np.random.rand(4).tolist(),
        random.random(),
        rt.rng(0).random(3).tolist(),
        rt.rng(7).integers(0, 10**9, 3).tolist(),
    )


def test_same_seed_same_numbers():
    a = draw(setup("smoke", 3))
    torch.randn(100)  # disturb the global state in between
    np.random.rand(10)
    b = draw(setup("smoke", 3))
    assert a == b


def test_different_seeds_and_offsets_differ():
    a = draw(setup("smoke", 0))
    b = draw(setup("smoke", 1))
    for x, y in zip(a, b):
        assert x != y
    rt = setup("smoke", 0)
    assert rt.rng(0).random(3).tolist() != rt.rng(1).random(3).tolist()


def test_same_seed_same_model_and_gradients():
    def run():
        setup("smoke", 11)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        x = torch.randn(16, 4)
        net(x).pow(2).mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    for g1, g2 in zip(run(), run()):
        assert torch.equal(g1, g2)


def test_runtime_fields():
    rt = setup("smoke", 5, threads=1)
    assert (rt.profile, rt.seed, rt.device, rt.threads) == ("smoke", 5, "cpu", 1)
    assert rt.smoke
    assert rlbook.setup is setup and set(rlbook.PROFILES) == set(PROFILES) == {"smoke", "full"}
    with pytest.raises(Exception):
        rt.seed = 6  # frozen


def test_full_profile_device():
    rt = setup("full", 0, threads=1)
    assert rt.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not rt.smoke


@pytest.mark.parametrize("bad", ["fast", "Smoke", "", None, 1])
def test_unknown_profile_names_the_choices(bad):
    with pytest.raises(ValueError, match="smoke, full"):
        setup(bad, 0)
    with pytest.raises(ValueError, match="unknown profile"):
        check_profile(bad)


@pytest.mark.parametrize("bad", [1.0, "0", True, None, -1, np.float64(2.0)])
def test_bad_seed_type(bad):
    with pytest.raises(TypeError, match="seed"):
        setup("smoke", bad)
