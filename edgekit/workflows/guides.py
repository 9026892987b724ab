"""The guides (``edgekit/docs/*.md``) and the rule tables' sources, read as package data."""

from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable

from edgekit.core.errors import InputError

#: topics that are not in edgekit/docs/: topic -> path inside the package
EXTRA_TOPICS = {"rules": ("export", "rules", "SOURCES.md"), "recipe-list": ("recipes", "README.md")}


def _topics() -> dict[str, Traversable]:
    root = resources.files("edgekit")
    found = {item.name.removesuffix(".md"): item for item in root.joinpath("docs").iterdir() if item.name.endswith(".md")}
    for topic, parts in EXTRA_TOPICS.items():
        found[topic] = root.joinpath(*parts)
    return dict(sorted(found.items()))


def _title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def guides() -> list[tuple[str, str]]:
    """(topic, title) of every guide."""
    return [(name, _title(item.read_text(encoding="utf-8"))) for name, item in _topics().items()]


def guide_text(topic: str) -> str:
    """The Markdown text of the guide on ``topic``; an unknown topic is an InputError with a suggestion."""
    topics = _topics()
    item = topics.get(topic)
    if item is None:
        close = difflib.get_close_matches(topic, list(topics), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "see `edgekit docs` for the list"
        raise InputError(f"no guide on '{topic}' (topics: {', '.join(topics)})", hint=hint)
    return item.read_text(encoding="utf-8")
