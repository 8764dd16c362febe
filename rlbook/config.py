"""Turn a notebook's flat parameters into a checked experiment dataclass.

A notebook's ``parameters`` cell holds flat literals (``profile = "smoke"``,
``seed = 0``, knobs). The next cell calls ``from_params(Config, profile=..., ...)``:
every value is type-checked against the dataclass field, unknown names are refused,
and the dataclass's own ``__post_init__`` checks ranges. The runner checks the same
names and types before a notebook is executed (``rlbook.cli``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or str(origin) == "<class 'types.UnionType'>"


def _wants_float(tp: Any) -> bool:
    """``float`` or a union that holds ``float`` but not ``int`` (e.g. ``float | None``)."""
    options = typing.get_args(tp) if _is_union(tp) else (tp,)
    return float in options and int not in options


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if _is_union(tp):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, origin)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def from_params(cls: type[T], **params: Any) -> T:
    """Build ``cls`` from keyword parameters, refusing unknown names and wrong types.

    >>> @dataclasses.dataclass
    ... class C:
    ...     lr: float = 0.1
    >>> from_params(C, lr=1).lr
    1.0
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid: {', '.join(sorted(fields))}"
        )
    clean = {}
    for name, value in params.items():
        tp = hints[name]
        if not _type_ok(value, tp):
            tname = getattr(tp, "__name__", str(tp))
            raise TypeError(
                f"parameter {name!r} must be {tname}, got {type(value).__name__} {value!r}"
            )
        clean[name] = float(value) if (_wants_float(tp) and isinstance(value, int)) else value
    return cls(**clean)


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``: for ``__post_init__`` range checks."""
    if not condition:
        raise ValueError(message)
