"""The JSON Schemas shipped with edgekit (``edgekit/schemas/*.schema.json``) and a small validator.

The schemas are package data, read with :mod:`importlib.resources`, so they are there however
edgekit was installed. :func:`schema_problems` checks the subset of JSON Schema they use
(``type``, ``const``, ``enum``, ``required``, ``properties``, ``additionalProperties``,
``items``, ``pattern``, ``minimum``, local ``$ref``); with the ``jsonschema`` package installed,
use that for the full standard.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list, tuple), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}

SCHEMAS = ("manifest-v1", "report-v1")


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` (``manifest-v1``, ``report-v1``) from the package data."""
    text = resources.files("edgekit").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def schema_problems(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, where: str = "$") -> list[str]:
    """Every place where ``instance`` breaks ``schema``, as ``"$.path: what"`` lines (empty: valid)."""
    root = schema if root is None else root
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_problems(instance, target, root, where)
    problems: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(instance, n) for n in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        problems.append(f"{where}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        problems.append(f"{where}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str) and "pattern" in schema and not re.search(schema["pattern"], instance):
        problems.append(f"{where}: {instance!r} does not match {schema['pattern']}")
    if _is_type(instance, "number") and "minimum" in schema and instance < schema["minimum"]:
        problems.append(f"{where}: {instance} is below {schema['minimum']}")
    if isinstance(instance, dict):
        problems += [f"{where}: missing {key!r}" for key in schema.get("required", ()) if key not in instance]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if key in props:
                problems += schema_problems(value, props[key], root, f"{where}.{key}")
            elif isinstance(extra, dict):
                problems += schema_problems(value, extra, root, f"{where}.{key}")
            elif extra is False:
                problems.append(f"{where}: unexpected key {key!r}")
    if isinstance(instance, (list, tuple)) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            problems += schema_problems(item, schema["items"], root, f"{where}[{i}]")
    return problems
