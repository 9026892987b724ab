"""``edgekit docs``: the guides, shipped inside the package (readable wherever edgekit is installed)."""

from __future__ import annotations

import click

from edgekit.cli.options import json_option


@click.command()
@click.argument("topic", required=False)
@json_option
def docs(topic: str | None, as_json: bool) -> None:
    """Print the guide on TOPIC (without TOPIC: list the guides).

    \b
    Example:
      edgekit docs prune
    """
    from edgekit.cli.render import print_json
    from edgekit.workflows.guides import guide_text, guides

    if topic is None:
        entries = guides()
        if as_json:
            print_json([{"topic": name, "title": title} for name, title in entries])
            return
        import shutil
        import textwrap

        columns = shutil.get_terminal_size((80, 24)).columns
        width = max(len(name) for name, _ in entries)
        for name, title in entries:
            click.echo(textwrap.fill(title, max(columns, 40), initial_indent=f"{name.ljust(width)}  ",
                                     subsequent_indent=" " * (width + 2), break_long_words=False))
        return
    text = guide_text(topic)
    if as_json:
        print_json({"topic": topic, "text": text})
    else:
        import shutil

        click.echo(for_terminal(text, max(40, shutil.get_terminal_size((80, 24)).columns)))


def for_terminal(markdown: str, width: int) -> str:
    """A guide's markdown reflowed to ``width`` columns: paragraphs and list items word-wrapped, table
    rows as wrapped lines of their cells, code lines wrapped with a hanging indent."""
    import re
    import textwrap

    def fill(text: str, first: str = "", rest: str = "") -> list[str]:
        return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest, break_long_words=True,
                             break_on_hyphens=False) or [first.rstrip()]

    out: list[str] = []
    para: list[str] = []
    item: tuple[str, list[str]] | None = None
    in_code = False

    def flush() -> None:
        nonlocal para, item
        if para:
            out.extend(fill(" ".join(para)))
            para = []
        if item is not None:
            marker, words = item
            out.extend(fill(" ".join(words), marker, " " * len(marker)))
            item = None

    for line in markdown.rstrip("\n").splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            in_code = not in_code
            out.append(stripped)
            continue
        if in_code:
            out.extend(fill(line.rstrip(), "", "    ") if len(line) > width else [line.rstrip()])
            continue
        if not stripped:
            flush()
            out.append("")
            continue
        if stripped.startswith("|"):
            flush()
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                continue
            out.extend(fill(" · ".join(c for c in cells if c), "", "    "))
            continue
        if stripped.startswith("#"):
            flush()
            out.extend(fill(stripped))
            continue
        marker = re.match(r"^(\s*(?:[-*]|\d+\.)\s+)", line)
        if marker:
            flush()
            item = (marker.group(1), [line[marker.end():].strip()])
            continue
        if item is not None and line.startswith(" "):
            item[1].append(stripped)
            continue
        flush()
        para.append(stripped)
    flush()
    return "\n".join(out)
