"""Numbers are not booleans: a schema base that refuses `true` / `false` where a count or a rate is expected.

Pydantic's lax mode reads `batch_size: true` as 1 and `rate_qps: false` as 0.0, which hides a slip in a scenario
file (a flag pasted under the wrong key) behind a plausible number. Strict ints everywhere would also refuse `8.0`
and `"8"`, which a scenario written by a script may well hold, so only booleans are refused, and only where the
field's type takes a number and not a boolean: the field itself, or an item of its list, tuple or mapping
(`alpha: [true, 0.5]`, `peak_tflops: {bf16: true}`).
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ValidationInfo, field_validator


def takes_number_not_bool(annotation) -> bool:
    """Whether a type accepts an int or a float as a value but not a bool (through Optional, Union, Annotated)."""
    if annotation in (bool, typing.Any):
        return False
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        return not any(a in (bool, typing.Any) for a in members) and any(takes_number_not_bool(a) for a in members)
    if origin is typing.Annotated:
        return takes_number_not_bool(typing.get_args(annotation)[0])
    return False


def bool_where_number(value, annotation) -> str | None:
    """Where in `value` a boolean stands for a number of `annotation`: '' for the value itself, '[i]' or '.key'
    (and deeper) for an item; None when there is none."""
    found = _find(value, annotation)
    return None if found is None else found[0]


def _find(value, annotation) -> tuple[str, bool] | None:
    """(where, the boolean) of bool_where_number; the boolean is carried up rather than looked up again by path,
    since a mapping's key may hold '.' or '['."""
    if isinstance(value, bool):
        return ("", value) if takes_number_not_bool(annotation) else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        # refused only if every member of the value's shape refuses it: `list[bool] | list[float]` takes [true]
        found = [_find(value, a) for a in args if _same_shape(value, a)]
        return found[0] if found and all(f is not None for f in found) else None
    if origin is typing.Annotated:
        return _find(value, args[0])
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return next(((f".{k}{f[0]}", f[1]) for k, v in value.items() if (f := _find(v, args[1])) is not None), None)
    if origin in (list, tuple) and isinstance(value, (list, tuple)) and args:
        item_types = [args[0]] * len(value) if origin is list or args[-1] is Ellipsis else list(args)
        return next(((f"[{i}]{f[0]}", f[1]) for i, (v, a) in enumerate(zip(value, item_types))
                     if (f := _find(v, a)) is not None), None)
    return None


def _same_shape(value, annotation) -> bool:
    """Whether `annotation` could hold `value` as far as containers go (a mapping, a sequence or a scalar)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _same_shape(value, typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_same_shape(value, a) for a in typing.get_args(annotation))
    if isinstance(value, dict):
        return origin is dict
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple)
    return origin not in (dict, list, tuple)


class NumbersNotBools(BaseModel):
    """A base for schema models: `true` / `false` where a number belongs is an error naming the field."""

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_bool_as_number(cls, value, info: ValidationInfo):
        field = cls.model_fields.get(info.field_name)
        if field is not None and isinstance(value, (bool, list, tuple, dict)):
            found = _find(value, field.annotation)
            if found is not None:
                from sim.errors import _members

                where, flag = found
                what = "a number or a mapping" if _members(field.annotation) else "a number"
                if not where:  # sim.errors shows the value itself
                    raise ValueError(f"expected {what}, not a boolean")
                raise ValueError(f"expected a number at {where}, not a boolean (got {str(flag).lower()})")
        return value
