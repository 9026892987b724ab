"""Recipes: a YAML file that chains edgekit's passes, names the data they use and sets gates.

A recipe is a flat, ordered list of passes with their options, plus the data settings and the
gates the final artifact must pass::

    schema_version: 1
    name: prune80-int8
    description: 80% magnitude pruning with fine-tuning, then full-int8 PTQ for XNNPACK.
    data:
      preprocessing: {scale: 1/255}
    passes:
      - pass: prune
        sparsity: 0.8
        epochs: 2
      - pass: quantize
        mode: int8
      - pass: export
        target: cpu
    gates:
      accuracy: {max_drop: 1.0}           # points of top-1 against the float32 model
      latency: {max_ms: 5, percentile: p90}
      size: {max_kb: 300}

Each pass step validates into that pass's own config (the same class its command builds from
its options); the schema is :mod:`edgekit.workflows.recipe_schema`, the YAML reading with lines
and suggestions :mod:`edgekit.workflows.recipe_parse`. This module finds, loads and lists
recipes: by name (``int8-cpu``, bundled or in ``$EDGEKIT_RECIPES``) or by path.

Example:
    >>> recipe = load_recipe("int8-cpu")
    >>> [p.name for p in recipe.passes]
    ['quantize', 'export']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edgekit.core.errors import InputError, RecipeError
from edgekit.workflows.recipe_parse import Problem, RecipeProblems, parse_recipe, suggest
from edgekit.workflows.recipe_schema import PASS_NAMES, Recipe

__all__ = ["PASS_NAMES", "Problem", "Recipe", "RecipeEntry", "RecipeProblems", "find_recipe", "list_recipes", "load_recipe",
           "parse_recipe", "recipe_from_dict", "recipe_source"]

ENV_VAR = "EDGEKIT_RECIPES"


def bundled_dirs() -> list[Path]:
    """Where bundled recipes are: ``edgekit/recipes/``, package data read through
    :mod:`importlib.resources` (so a checkout, ``pip install`` and ``pip install --target`` all find them)."""
    return [Path(str(resources.files("edgekit").joinpath("recipes")))]


def search_dirs(recipes_dir: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """Folders searched for a recipe name: ``recipes_dir``, then ``$EDGEKIT_RECIPES`` (os.pathsep list), then bundled."""
    dirs: list[tuple[Path, str]] = []
    if recipes_dir is not None:
        dirs.append((Path(recipes_dir), "--recipes-dir"))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part), ENV_VAR))
    dirs.extend((d, "bundled") for d in bundled_dirs())
    return dirs


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    path: Path
    origin: str
    description: str


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith((".yaml", ".yml"))


def find_recipe(name_or_path: str | os.PathLike[str], *, recipes_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file of a recipe given by name (searched in :func:`search_dirs`) or by path."""
    name = str(name_or_path)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InputError(f"recipe file {path} does not exist", hint="give a bundled recipe name (edgekit recipe list) or an existing .yaml file")
        return path
    for folder, _origin in search_dirs(recipes_dir):
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    known = [e.name for e in list_recipes(recipes_dir)]
    raise InputError(f"unknown recipe '{name}'{suggest(name, known)} (known: {', '.join(known) or 'none'})",
                     hint="see `edgekit recipe list`, or pass the path of a .yaml file")


def load_recipe(recipe: str | os.PathLike[str] | Recipe, *, recipes_dir: str | os.PathLike[str] | None = None) -> Recipe:
    """A validated :class:`Recipe` from a name, a path or a Recipe (returned as is)."""
    if isinstance(recipe, Recipe):
        return recipe
    path = find_recipe(recipe, recipes_dir=recipes_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read recipe {path}: {getattr(exc, 'strerror', None) or exc}", hint="check the file") from None
    loaded = parse_recipe(text, source=str(path))
    object.__setattr__(loaded, "__source__", str(path))
    return loaded


def recipe_source(recipe: Recipe) -> str | None:
    """The file a recipe was loaded from (None when built in code)."""
    return getattr(recipe, "__source__", None)


def list_recipes(recipes_dir: str | os.PathLike[str] | None = None) -> list[RecipeEntry]:
    """Every recipe found, earlier folders shadowing later ones of the same name, sorted by name.

    Invalid files are listed with their first problem as the description.
    """
    seen: dict[str, RecipeEntry] = {}
    for folder, origin in search_dirs(recipes_dir):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
            name = path.stem
            if name in seen:
                continue
            try:
                description = parse_recipe(path.read_text(encoding="utf-8"), source=str(path)).description
            except (RecipeError, OSError, UnicodeDecodeError) as exc:
                description = f"INVALID: {exc}"
            seen[name] = RecipeEntry(name, path, origin, description)
    return [seen[n] for n in sorted(seen)]


def recipe_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Recipe:
    """Validates a recipe given as Python data (round-trips through YAML so errors carry lines)."""
    return parse_recipe(yaml.safe_dump(data, sort_keys=False), source=source)
