"""Reading recipe YAML: parsed safely, every problem reported with its line and a suggestion.

The YAML is read with ``safe_load`` semantics (duplicate keys refused), then validated against the
schema (:mod:`edgekit.workflows.recipe_schema`); pydantic's errors become :class:`Problem` lines
such as ``r.yaml:6: unknown key 'mod' in the quantize pass (pass 2); did you mean 'mode'?``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from edgekit.core.errors import RecipeError
from edgekit.core.safe_yaml import check_bounds
from edgekit.workflows.recipe_schema import PASS_NAMES, PASS_SPECS, Recipe, pass_tag


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, at a line of its file."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


class RecipeProblems(RecipeError):
    """A recipe failed validation; ``problems`` lists every problem found (the message shows the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more problem(s); run `edgekit recipe check` to see all)" if len(problems) > 1 else ""
        super().__init__(f"invalid recipe {problems[0]}{more}", hint=None)


def _load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """Parses YAML safely and records the line (1-based) of every mapping key and list item.

    Returns ``(data, lines)`` where ``lines`` maps a path such as ``("passes", 0, "sparsity")``
    to the line it is on. Duplicate keys are refused (plain ``safe_load`` silently keeps the last).
    """
    try:  # depth, size, aliases, scalar length: before the parser builds anything
        check_bounds(text, source, error=RecipeError)
    except RecipeError as exc:
        if "not valid YAML" not in exc.message:
            raise  # a syntax error is reported below, with its line, like every recipe problem
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeProblems([Problem(source, None, "the file is empty; a recipe needs schema_version, name and passes")])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RecipeProblems([Problem(source, line, f"not valid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeProblems([Problem(source, None, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()

    lines: dict[tuple, int] = {(): node.start_mark.line + 1}
    problems: list[Problem] = []

    def walk(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in n.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    problems.append(Problem(source, line, f"duplicate key '{key}' (first at line {seen[key]})"))
                    continue
                seen[key] = line
                lines[(*path, key)] = line
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for index, item in enumerate(n.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    walk(node, ())
    if problems:
        raise RecipeProblems(problems)
    return data, lines


# ----------------------------------------------------------------------------------------------
# Validation with line numbers and suggestions
# ----------------------------------------------------------------------------------------------


def _model_at(path: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``path`` of ``data`` (None if not a model)."""
    current: Any = Recipe
    value = data
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
            value = value[part]
            if current == "passes":
                current = PASS_SPECS.get(pass_tag(value) or "")
            elif isinstance(current, tuple) and current[0] == "list":
                current = current[1]
            else:
                return None
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or not isinstance(value, dict):
            return None
        field = _field_by_key(current, part)
        if field is None:
            return None
        value = value.get(part)
        if current is Recipe and part == "passes":
            current = "passes"
            continue
        current = _model_of(current.model_fields[field].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_by_key(model: type[BaseModel], key: Any) -> str | None:
    for name, info in model.model_fields.items():
        if key == (info.alias or name):
            return name
    return None


def _model_of(annotation: Any) -> Any:
    """The BaseModel class inside an annotation (Optional[X], list[X] -> ("list", X))."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    if origin is list:
        inner = _model_of(typing.get_args(annotation)[0])
        return ("list", inner) if inner is not None else None
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _line_for(path: tuple, lines: dict[tuple, int]) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _data_path(loc: tuple, data: Any) -> tuple:
    """Drops the parts of a pydantic error location that are not in the data (union tags, 'function-after')."""
    out: list[Any] = []
    value = data
    for part in loc:
        if isinstance(value, dict) and part in value:
            out.append(part)
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            out.append(part)
            value = value[part]
    return tuple(out)


def _where(path: tuple, data: Any) -> str:
    """A readable name for the place: 'the prune pass (pass 2)', 'gates.latency', 'the recipe'."""
    if len(path) >= 2 and path[0] == "passes" and isinstance(path[1], int):
        tag = pass_tag(data["passes"][path[1]]) if isinstance(data.get("passes"), list) else None
        return f"the {tag} pass (pass {path[1] + 1})" if tag else f"pass {path[1] + 1}"
    keys = [str(p) for p in path if not isinstance(p, int)]
    return ".".join(keys) if keys else "the recipe"


def _precheck_passes(data: dict[str, Any], lines: dict[tuple, int], source: str) -> list[Problem]:
    """Unknown or missing pass names, with suggestions (before pydantic, whose union errors are vague)."""
    problems: list[Problem] = []
    passes = data.get("passes")
    if not isinstance(passes, list):
        return problems
    for index, item in enumerate(passes):
        if not isinstance(item, dict):
            problems.append(Problem(source, _line_for(("passes", index), lines),
                                    f"pass {index + 1} should be a mapping like '- pass: quantize', got {type(item).__name__}"))
            continue
        name = item.get("pass")
        if name is None:
            problems.append(Problem(source, _line_for(("passes", index), lines),
                                    f"pass {index + 1} has no 'pass:' key (one of: {', '.join(PASS_NAMES)})"))
        elif name not in PASS_NAMES:
            problems.append(Problem(source, _line_for(("passes", index, "pass"), lines),
                                    f"unknown pass '{name}'{suggest(str(name), PASS_NAMES)} (passes: {', '.join(PASS_NAMES)})"))
    return problems


def _problems_from(exc: Any, data: Any, lines: dict[tuple, int], source: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "recipe_rule":
            path = tuple(ctx.get("path", ()))
            problems.append(Problem(source, _line_for(path, lines), f"{_where(path, data)}: {ctx.get('message', err['msg'])}"))
            continue
        path = _data_path(tuple(err["loc"]), data)
        line = _line_for(path, lines)
        if kind == "extra_forbidden":
            key = err["loc"][-1]
            parent = _data_path(tuple(err["loc"][:-1]), data)
            model = _model_at(parent, data)
            valid = _keys_of(model) if model is not None else []
            listing = f" (valid: {', '.join(valid)})" if valid else ""
            problems.append(Problem(source, line, f"unknown key '{key}' in {_where(parent, data)}{suggest(str(key), valid)}{listing}"))
        elif kind == "missing":
            key = err["loc"][-1]
            problems.append(Problem(source, _line_for(path, lines), f"{_where(path, data)} needs '{key}'"))
        elif kind == "literal_error":
            expected = str(ctx.get("expected", ""))
            choices = re.findall(r"'([^']*)'", expected)
            got = err.get("input")
            problems.append(Problem(source, line, f"{'.'.join(str(p) for p in path[-1:]) or 'value'} '{got}' in "
                                                  f"{_where(path[:-1], data)} is not one of {expected}{suggest(str(got), choices)}"))
        else:
            message = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or kind == "value_error" else f" (got {got!r})"
            last = path[-1] if path else None
            if isinstance(last, str) and len(path) == len(_data_path(tuple(err["loc"]), data)) and _model_at(path, data) is None:
                problems.append(Problem(source, line, f"{last} in {_where(path[:-1], data)}: {message}{shown}"))
            else:
                problems.append(Problem(source, line, f"{_where(path, data)}: {message}{shown}"))
    return problems


class _Relocated:
    """A ValidationError of one pass, with its locations moved under ``passes[index]``."""

    def __init__(self, exc: ValidationError, index: int) -> None:
        self._errors = [{**err, "loc": ("passes", index, *err["loc"])} for err in exc.errors()]

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


def parse_recipe(text: str, *, source: str = "<recipe>") -> Recipe:
    """Parses and validates recipe text.

    Raises:
        RecipeProblems: (a RecipeError, exit code 9) listing every problem with its line.
    """
    data, lines = _load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise RecipeProblems([Problem(source, lines.get(()), f"a recipe is a mapping (schema_version, name, passes...), got {type(data).__name__}")])
    problems = _precheck_passes(data, lines, source)
    if problems:
        # still check the passes that are known, so one run reports every problem
        for index, item in enumerate(data.get("passes") or []):
            spec = PASS_SPECS.get(pass_tag(item) or "") if isinstance(item, dict) else None
            if spec is None:
                continue
            try:
                spec.model_validate(item)
            except ValidationError as exc:
                problems.extend(_problems_from(_Relocated(exc, index), data, lines, source))
        raise RecipeProblems(sorted(problems, key=lambda p: p.line or 0))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeProblems(_problems_from(exc, data, lines, source) or [Problem(source, None, str(exc))]) from None
