"""YAML loading with bounds: size, nesting depth, node count (aliases expanded), scalar length.

``yaml.safe_load`` constructs no Python objects beyond plain data, but it is not bounded: a
50,000-deep document ends in ``RecursionError``, a billion-laughs document (aliases of aliases)
is small as text and astronomically large once anything walks it (validation, JSON dumps), and
a 100,000-digit integer hits Python's int-conversion limit (``ValueError``). All of these ended
in exit code 1, "a bug".

Here the document is first read as a stream of parser events (PyYAML's parser is iterative: no
recursion), which gives the depth, the length of every scalar, and the *expanded* node count:
each alias counts the nodes of the collection it repeats, computed once per anchor. Only a
document within :class:`YamlLimits` is then composed and constructed, so the recursive composer
never sees more than ``max_depth`` levels.

Example:
    >>> load_bounded("a: [1, 2]", "recipe.yaml")
    {'a': [1, 2]}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from edgekit.core.errors import EdgekitError, InputError
from edgekit.core.fsutil import read_regular_bytes

_NUMBER = re.compile(r"[-+]?(\.inf|\.nan|[0-9][0-9_,:.xXoObBa-fA-FeE+-]*|\.[0-9][0-9_eE+-]*)", re.IGNORECASE)


@dataclass(frozen=True)
class YamlLimits:
    """Bounds for one YAML document.

    Attributes:
        max_bytes: size of the text (UTF-8).
        max_depth: nesting of mappings and sequences.
        max_nodes: nodes with every alias expanded (billion laughs stops here).
        max_scalar_chars: length of one scalar (string, key).
        max_number_chars: length of a plain scalar that reads as a number.
        max_aliases: alias references in the text.
    """

    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_nodes: int = 100_000
    max_scalar_chars: int = 100_000
    max_number_chars: int = 100
    max_aliases: int = 1_000


DEFAULT_LIMITS = YamlLimits()


def check_bounds(text: str, source: str, limits: YamlLimits = DEFAULT_LIMITS, *,
                 error: type[EdgekitError] = InputError) -> int:
    """Checks ``text`` against ``limits`` without composing it; returns the expanded node count.

    Raises:
        error: over a limit, or not valid YAML (with the line when known).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise error(f"{source} is {size:,} bytes, more than the {limits.max_bytes:,} allowed for YAML",
                    hint="a recipe or profile is a few KB; check the file")
    resolver = yaml.resolver.Resolver()
    sizes: dict[str, int] = {}  # anchor -> expanded node count of what it names
    stack: list[list[Any]] = [[None, 0]]  # [anchor, expanded count] of each open collection
    aliases = total = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([event.anchor, 1])
                total += 1
                if len(stack) - 1 > limits.max_depth:
                    raise _bound(error, source, event, f"is nested more than {limits.max_depth} levels deep")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, count = stack.pop()
                if anchor is not None:
                    sizes[anchor] = count
                stack[-1][1] += count
            elif isinstance(event, yaml.ScalarEvent):
                value = event.value
                if len(value) > limits.max_scalar_chars:
                    raise _bound(error, source, event, f"has a value of {len(value):,} characters, more than {limits.max_scalar_chars:,}")
                if (event.style is None and len(value) > limits.max_number_chars and _NUMBER.fullmatch(value)
                        and resolver.resolve(yaml.ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str"):
                    raise _bound(error, source, event, f"has a number of {len(value):,} characters, more than {limits.max_number_chars}")
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                stack[-1][1] += 1
                total += 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > limits.max_aliases:
                    raise _bound(error, source, event, f"uses more than {limits.max_aliases:,} aliases")
                if any(entry[0] == event.anchor for entry in stack):
                    raise _bound(error, source, event, f"refers to &{event.anchor} from inside itself (a recursive structure)")
                stack[-1][1] += sizes.get(event.anchor, 1)
                total += sizes.get(event.anchor, 1)
            if total > limits.max_nodes:
                raise _bound(error, source, event, f"expands to more than {limits.max_nodes:,} values (aliases of aliases?)")
    except EdgekitError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{source} is not valid YAML{where}: {exc.problem or exc.context}", hint="fix the syntax (indentation, quotes)") from None
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                    hint="fix the syntax (indentation, quotes)") from None
    return total


def _bound(error: type[EdgekitError], source: str, event: yaml.Event, what: str) -> EdgekitError:
    line = f" (line {event.start_mark.line + 1})" if event.start_mark is not None else ""
    return error(f"{source} {what}{line}", hint="this is not a recipe or profile edgekit writes; check where the file came from")


def compose_bounded(text: str, source: str, limits: YamlLimits = DEFAULT_LIMITS, *,
                    error: type[EdgekitError] = InputError) -> yaml.Node | None:
    """:func:`check_bounds`, then the node graph of the single document (None if empty).

    For callers that need line numbers (the recipe loader walks the nodes).
    """
    check_bounds(text, source, limits, error=error)
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {str(exc).splitlines()[0]}", hint="fix the syntax (indentation, quotes)") from None
    finally:
        loader.dispose()


def construct_bounded(node: yaml.Node | None, source: str, *, error: type[EdgekitError] = InputError) -> Any:
    """Plain Python data (``safe_load`` semantics) of a node from :func:`compose_bounded`.

    Raises:
        error: a value cannot be constructed (a malformed timestamp, a bad base64 binary...).
    """
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise error(f"{source}: a value cannot be read ({str(exc).splitlines()[0][:200]})", hint="fix the value") from None
    finally:
        loader.dispose()


def load_bounded(text: str, source: str, limits: YamlLimits = DEFAULT_LIMITS, *,
                 error: type[EdgekitError] = InputError) -> Any:
    """``yaml.safe_load`` within ``limits``.

    Raises:
        error: over a limit or not valid YAML (never RecursionError, MemoryError or ValueError).
    """
    return construct_bounded(compose_bounded(text, source, limits, error=error), source, error=error)


def load_bounded_file(path: str | os.PathLike[str], what: str, limits: YamlLimits = DEFAULT_LIMITS, *,
                      error: type[EdgekitError] = InputError) -> Any:
    """Reads a regular file of at most ``limits.max_bytes`` and :func:`load_bounded` it.

    Raises:
        InputError: not a regular file, or too large.
        error: over a limit, not UTF-8 or not valid YAML.
    """
    data = read_regular_bytes(path, what, max_bytes=limits.max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text", hint="save it as UTF-8") from None
    return load_bounded(text, f"{what} {path}", limits, error=error)
