"""``edgekit recipe list|show|check``: bundled and user recipes, validated without TensorFlow."""

from __future__ import annotations

import click

from edgekit.cli.options import json_option
from edgekit.cli.render import console, print_json

recipes_dir_option = click.option(
    "--recipes-dir", type=click.Path(file_okay=False), default=None,
    help="A folder of your own recipes (NAME.yaml), searched before EDGEKIT_RECIPES and the bundled ones.",
)


@click.group(short_help="List, show and check recipes (pass chains with gates).")
def recipe() -> None:
    """A recipe is a YAML file: an ordered list of passes (prune, cluster, distill, qat or quantize,
    export), the data settings, and gates on accuracy drop, latency and size. Run one with
    `edgekit run RECIPE --model M --data D -o OUT`. Bundled recipes: int8-cpu, fp16-gpu,
    prune80-int8, prune-qat-int8, distill-int8, npu-int8, cluster16-int8 (see `edgekit docs
    recipes`).
    """


@recipe.command("list", short_help="List the recipes edgekit can find.")
@recipes_dir_option
@json_option
def list_cmd(recipes_dir, as_json):
    """List bundled and user recipes (a user recipe shadows a bundled one of the same name)."""
    from rich.table import Table

    from edgekit.workflows.recipes import list_recipes

    entries = list_recipes(recipes_dir)
    if as_json:
        print_json([{"name": e.name, "origin": e.origin, "path": str(e.path), "description": e.description} for e in entries])
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "origin", "description"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.name, e.origin, e.description)
    console.print(table)


@recipe.command("show", short_help="Print a recipe (as written, or resolved with defaults).")
@click.argument("name")
@click.option("--resolved", is_flag=True, help="Print the validated recipe with every default filled in.")
@recipes_dir_option
@json_option
def show_cmd(name, resolved, recipes_dir, as_json):
    """Print recipe NAME (a name or a .yaml path). It is validated first."""
    from edgekit.workflows.recipes import find_recipe, load_recipe

    path = find_recipe(name, recipes_dir=recipes_dir)
    loaded = load_recipe(path)
    if as_json:
        print_json({**loaded.to_dict(), "path": str(path)})
        return
    if resolved:
        click.echo(loaded.to_yaml(header=f"{path}\nresolved: every default filled in"), nl=False)
    else:
        click.echo(f"# {path}")
        click.echo(path.read_text(encoding="utf-8"), nl=False)


@recipe.command("check", short_help="Validate recipes; every problem with its line.")
@click.argument("recipes", nargs=-1, required=True)
@recipes_dir_option
@json_option
def check_cmd(recipes, recipes_dir, as_json):
    """Validate each RECIPE (a name or a .yaml path): keys, values and the rules across passes.
    Prints every problem as FILE:LINE: message and exits 9 if any recipe is invalid.
    """
    from edgekit.core.errors import EdgekitError, RecipeError
    from edgekit.workflows.recipes import RecipeProblems, find_recipe, load_recipe

    results = []
    failed: EdgekitError | None = None
    for name in recipes:
        try:
            path = find_recipe(name, recipes_dir=recipes_dir)
            loaded = load_recipe(path)
        except RecipeProblems as exc:
            results.append({"recipe": name, "ok": False, "problems": [str(p) for p in exc.problems]})
            failed = failed or exc
            continue
        except EdgekitError as exc:
            results.append({"recipe": name, "ok": False, "problems": [exc.one_line()]})
            failed = failed or exc
            continue
        results.append({"recipe": name, "ok": True, "path": str(path), "name": loaded.name, "passes": loaded.pass_names(),
                        "gates": [g for g in ("accuracy", "latency", "size") if getattr(loaded.gates, g) is not None]})
    if as_json:
        print_json(results)
    else:
        for res in results:
            if res["ok"]:
                console.print(f"ok  {res['path']}: {' -> '.join(res['passes'])}"
                              + (f"; gates: {', '.join(res['gates'])}" if res["gates"] else ""))
            else:
                for problem in res["problems"]:
                    click.echo(f"error: {problem}", err=True)
    if failed is not None:
        bad = sum(not r["ok"] for r in results)
        code = failed.exit_code if bad == 1 and not isinstance(failed, RecipeError) else RecipeError.exit_code
        raise click.exceptions.Exit(code)
