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
        click.echo(text.rstrip("\n"))
