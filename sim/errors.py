"""Errors a user can cause, and how they read.

`UserError` carries one sentence meant for the person at the keyboard (the CLI prints it and exits 2); anything else
that escapes is a bug and keeps its traceback. `explain_validation_error` turns pydantic's report into that one
sentence: the dotted path of the first bad field and the constraint it broke, or the valid keys for an unknown key.
"""

from __future__ import annotations

import typing

from difflib import get_close_matches
from typing import Iterable

from pydantic import BaseModel, ValidationError


class UserError(Exception):
    """A mistake in the user's input, explained in one sentence."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """An error for a name that is not in a catalog, listing the known names (closest first)."""
    known = sorted(known)
    close = get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return UserError(f"unknown {kind} '{name}'{hint}; known: {', '.join(known)}")


def _members(ann) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (through Union, Annotated and Optional)."""
    found: list[type[BaseModel]] = []
    stack = [ann]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            found.append(a)
        stack.extend(getattr(a, "__args__", ()) or ())
    return found


def _is_dict(annotation) -> bool:
    """Whether a field holds a dict (through Optional): its error locations carry the key next."""
    if typing.get_origin(annotation) is dict:
        return True
    return any(typing.get_origin(a) is dict for a in typing.get_args(annotation))


def _walk(model: type[BaseModel] | None, loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """Follow an error location through nested models: the field names on the way (union tags and pydantic's
    type labels such as 'constrained-int' dropped) and the model that holds the last field."""
    names: list[str] = []
    current = model
    pending: list[type[BaseModel]] = []
    key_next = False  # the last field was a dict: this part is one of its keys
    for part in loc:
        if isinstance(part, int) or key_next:
            names.append(str(part))
            key_next = False
            continue
        if current is None and not pending:
            if model is None:
                names.append(str(part))
            continue
        if pending:  # we are at a union: `part` is a tag naming one member
            match = [m for m in pending if part in (getattr(m.model_fields.get("kind"), "default", None),
                                                      getattr(m.model_fields.get("dist"), "default", None))]
            if match:
                current, pending = match[0], []
                continue
            current, pending = (pending[0] if len(pending) == 1 else None), []
            if current is None:
                continue
        field = current.model_fields.get(part) if current is not None else None
        if field is None:
            continue  # a type label such as 'constrained-int'
        names.append(part)
        key_next = _is_dict(field.annotation)
        members = _members(field.annotation)
        if len(members) > 1:
            current, pending = None, members
        elif members:
            current = members[0]
        else:
            current = None
    return names, (current if not pending else (pending[0] if len(pending) == 1 else None))


def explain_validation_error(err: ValidationError, where: str = "", model: type[BaseModel] | None = None) -> str:
    """One sentence for the first problem pydantic found: field path, constraint, and the valid keys if unknown."""
    first = err.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    names, _ = _walk(model, loc)
    path = ".".join(names) if model is not None else ".".join(str(p) for p in loc)
    prefix = f"{where}: " if where else ""
    if first["type"] == "extra_forbidden":
        parent, holder = _walk(model, loc[:-1])
        path = ".".join([*parent, str(loc[-1])]) if model is not None else path
        valid = sorted(holder.model_fields) if holder is not None else []
        keys = f"; valid keys: {', '.join(valid)}" if valid else ""
        return f"{prefix}unknown key '{path}'{keys}"
    if first["type"] == "union_tag_invalid":
        ctx = first.get("ctx", {})
        return f"{prefix}{path or 'kind'}: unknown kind {ctx.get('tag')}; allowed: {ctx.get('expected_tags')}"
    got = first.get("input")
    if first["type"] in ("model_type", "dict_type") and isinstance(got, str) and path in ("strategy", "batching",
                                                                                        "workload"):
        # a tagged section given as a bare word: `--set strategy=speculative`
        return (f"{prefix}{path}: expected a mapping with a kind, e.g. --set {path}.kind={got} (in YAML "
                f"{path}: {{kind: {got}}}), got {got!r}")
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's label for a validator's own sentence
    errors = err.errors(include_url=False)
    # a union (int | 'auto'): pydantic reports each member under the field's path plus the member's name
    union = bool(loc) and bool(names) and str(loc[-1]) != names[-1]
    alternatives = [e for e in errors if tuple(e["loc"][:-1]) == loc[:-1]] if union else []
    if len(alternatives) > 1 and msg.startswith("Input should be "):  # every member's wish
        wishes = [e["msg"].removeprefix("Input should be ").split(", unable")[0] for e in alternatives]
        msg = "Input should be " + " or ".join(dict.fromkeys(wishes))
    if isinstance(got, bool):  # as the YAML or JSON that held it said it
        shown = f" (got {str(got).lower()})"
    else:
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{prefix}{path}: {msg}{shown}" if path else f"{prefix}{msg}"
