"""rlbook.config: from_params type-checks a notebook's flat parameters against a dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from rlbook.config import check, from_params


@dataclasses.dataclass
class Cfg:
    profile: str = "smoke"
    """smoke or full"""
    seed: int = 0
    """the seed"""
    lr: float = 1e-3
    """learning rate"""
    use_kl: bool = False
    """add the KL term"""
    model: str | None = None
    """Hub name or local path"""
    max_steps: int | None = None
    """optional step cap"""
    clip: float | None = 0.2
    """optional clip"""
    sizes: tuple = (1, 2)
    """a tuple knob"""

    def __post_init__(self):
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")


def test_defaults_and_values():
    c = from_params(Cfg)
    assert c == Cfg()
    c = from_params(Cfg, profile="full", seed=2, lr=0.5, use_kl=True, model="x/y", max_steps=3, sizes=(4,))
    assert (c.profile, c.seed, c.lr, c.use_kl, c.model, c.max_steps, c.sizes) == ("full", 2, 0.5, True, "x/y", 3, (4,))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        from_params(Cfg, lr=0.1, lrr=0.2, zzz=1)
    msg = str(e.value)
    assert "lrr" in msg and "zzz" in msg and "Cfg" in msg
    for name in ("clip", "lr", "max_steps", "model", "profile", "seed", "sizes", "use_kl"):
        assert name in msg.split("valid:")[1]


def test_int_accepted_for_float_and_converted():
    c = from_params(Cfg, lr=1)
    assert c.lr == 1.0 and type(c.lr) is float


def test_int_for_optional_float_is_converted():
    c = from_params(Cfg, clip=1)
    assert type(c.clip) is float


@pytest.mark.parametrize(
    "name, value",
    [
        ("seed", 1.0),  # float for int
        ("seed", "1"),  # str for int (what papermill makes of a mistyped -p)
        ("seed", True),  # bool is not an int
        ("lr", True),  # nor a float
        ("lr", "0.1"),
        ("use_kl", 1),  # int is not a bool
        ("profile", 1),
        ("model", 3),  # str | None
        ("max_steps", 2.5),  # int | None
        ("sizes", [1, 2]),  # list is not a tuple
    ],
)
def test_wrong_types_refused(name, value):
    with pytest.raises(TypeError, match=name):
        from_params(Cfg, **{name: value})


def test_none_accepted_for_optional_fields():
    c = from_params(Cfg, model=None, max_steps=None, clip=None)
    assert c.model is None and c.max_steps is None and c.clip is None
    with pytest.raises(TypeError, match="seed"):
        from_params(Cfg, seed=None)


def test_post_init_range_check():
    with pytest.raises(ValueError, match="lr must be > 0"):
        from_params(Cfg, lr=-1.0)


def test_check_and_non_dataclass():
    check(True, "never")
    with pytest.raises(ValueError, match="boom"):
        check(False, "boom")
    with pytest.raises(TypeError, match="not a dataclass"):
        from_params(dict, a=1)


def test_non_init_fields_are_not_parameters():
    @dataclasses.dataclass
    class C:
        a: int = 1
        derived: int = dataclasses.field(init=False, default=0)

    with pytest.raises(ValueError, match="valid: a$"):
        from_params(C, derived=3)
