"""Reading the project's YAML files (scenarios, profiles, sweeps, plans, cited data): one mapping per file, and every
problem in it one sentence with file, line and column (sim.errors.UserError)."""

from __future__ import annotations

import collections.abc
from pathlib import Path

import yaml

from sim.errors import UserError


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently, so a
    scenario's second `batching:` would quietly replace its first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges a mapping in; SafeLoader resolves it (explicit keys win)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, collections.abc.Hashable):
                continue  # SafeLoader names an unhashable key itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping, turning a syntax error into one sentence with file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; expected YAML") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise UserError(f"{where}: malformed YAML: {problem}") from None
    if data is None:  # an empty file is more likely a mistake than a wish for every default
        raise UserError(f"{path}: the file is empty; expected a mapping of keys to values")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values at the top level")
    if _loops(data):
        raise UserError(f"{path}: an alias (*name) sits inside the node it names; anchors must not loop")
    return data


def _loops(obj, inside: tuple[int, ...] = ()) -> bool:
    """Whether a loaded document contains itself (`a: &a [*a]` loads as a list that holds itself)."""
    if not isinstance(obj, (dict, list)):
        return False
    if id(obj) in inside:
        return True
    return any(_loops(v, (*inside, id(obj))) for v in (obj.values() if isinstance(obj, dict) else obj))
