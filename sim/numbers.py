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
    if isinstance(value, bool):
        return "" if takes_number_not_bool(annotation) else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        # refused only if every member of the value's shape refuses it: `list[bool] | list[float]` takes [true]
        found = [bool_where_number(value, a) for a in args if _same_shape(value, a)]
        return found[0] if found and all(p is not None for p in found) else None
    if origin is typing.Annotated:
        return bool_where_number(value, args[0])
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return next((f".{k}{p}" for k, v in value.items() if (p := bool_where_number(v, args[1])) is not None), None)
    if origin in (list, tuple) and isinstance(value, (list, tuple)) and args:
        item_types = [args[0]] * len(value) if origin is list or args[-1] is Ellipsis else list(args)
        return next((f"[{i}]{p}" for i, (v, a) in enumerate(zip(value, item_types))
                     if (p := bool_where_number(v, a)) is not None), None)
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


def _item(value, where: str) -> str:
    """The YAML spelling of the boolean that `where` ('[1]', '.bf16', '[1][0]') points at."""
    import re

    for index, key in re.findall(r"\[(\d+)\]|\.([^.\[]+)", where):
        value = value[int(index)] if index else value[key]
    return str(value).lower()


class NumbersNotBools(BaseModel):
    """A base for schema models: `true` / `false` where a number belongs is an error naming the field."""

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_bool_as_number(cls, value, info: ValidationInfo):
        field = cls.model_fields.get(info.field_name)
        if field is not None and isinstance(value, (bool, list, tuple, dict)):
            where = bool_where_number(value, field.annotation)
            if where is not None:
                from sim.errors import _members

                what = "a number or a mapping" if _members(field.annotation) else "a number"
                if not where:  # sim.errors shows the value itself
                    raise ValueError(f"expected {what}, not a boolean")
                raise ValueError(f"expected a number at {where}, not a boolean (got {_item(value, where)})")
        return value
