"""Options shared by several commands, defined once."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for deco in reversed(decorators):
            func = deco(func)
        return func

    return apply


model_loading_options = _stack(
    click.option("--unsafe", is_flag=True, help="Allow Lambda layers (runs Python code stored in the model file)."),
    click.option(
        "--custom-objects", type=click.Path(dir_okay=False), default=None,
        help="A .py file defining the custom classes the model uses (its code runs).",
    ),
)

data_key_options = _stack(
    click.option("--x-key", default="x", show_default=True,
                 help="Input array of a .npz file; name=array pairs (image=img,meta=m) for several inputs [arrays named after the inputs are found alone]."),
    click.option("--y-key", default="y", show_default=True,
                 help="Target array of a .npz file; output=array pairs for several outputs [default y, or y_<output>]."),
)

task_option = click.option("--task", "tasks", multiple=True, metavar="OUTPUT=TASK",
                           help="The task of an output (classification, binary, multilabel, regression, segmentation, embedding, none) "
                                "instead of the detected one; repeatable. TASK alone for a single-output model.")

preprocessing_options = _stack(
    click.option("--scale", default=None, help="Multiply raw inputs by this, e.g. 1/255."),
    click.option("--mean", default=None, help="Subtract after scaling; one value or one per channel (0.5,0.5,0.5)."),
    click.option("--std", default=None, help="Divide after subtracting the mean; one value or one per channel."),
)

run_options = _stack(
    click.option("--runs", default=50, show_default=True, type=int, help="Timed inference runs."),
    click.option("--warmup", default=5, show_default=True, type=int, help="Untimed warm-up runs before timing."),
    click.option("--threads", default=1, show_default=True, type=int, help="Interpreter threads."),
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
ignore_manifest_option = click.option("--ignore-manifest", is_flag=True,
                                      help="Run an edgekit artifact whose sha256 no longer matches its manifest (the manifest is then ignored).")
timeout_option = click.option("--timeout", type=float, default=None,
                              help="Time limit (s) of each run; past it the run is stopped, exit 10 [default: scaled by model size and work].")
force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")


def preprocessing_from_options(scale: str | None, mean: str | None, std: str | None):
    """A Preprocessing from the CLI strings, or None when none was given."""
    if scale is None and mean is None and std is None:
        return None
    from edgekit.core.data import parse_preprocessing

    return parse_preprocessing(scale, mean, std)


devices_dir_option = click.option(
    "--devices-dir", type=click.Path(file_okay=False), default=None,
    help="A folder of your own device profiles (NAME.yaml), searched before EDGEKIT_DEVICES and the bundled ones.",
)


def build_config(config_type: type[Any], values: dict[str, Any]) -> Any:
    """A pass config from a command's option values (parameter names are the config's field names).

    Options left unset (None) take the config's default, so every default is declared once, in
    the config. A value the config rejects becomes a one-line :class:`~edgekit.core.errors.InputError`
    naming the setting (shown with its flag by the CLI).
    """
    from pydantic import ValidationError

    from edgekit.core.errors import InputError

    given = {k: v for k, v in values.items() if v is not None and k in config_type.model_fields}
    try:
        return config_type(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else ""
        message = err["msg"].removeprefix("Value error, ")
        ctx = err.get("ctx") or {}
        if ctx.get("settings"):  # a message that names its settings itself (edgekit.passes.compression.setting_error)
            raise InputError(message, hint=ctx.get("hint") or "check the options", settings=tuple(ctx["settings"])) from None
        if field:  # a message that already names its setting is not prefixed with it again
            text = message if re.match(rf"{re.escape(field)}\b", message) else f"{field}: {message}"
            raise InputError(text, hint=f"fix {field}", settings=(field,)) from None
        # a rule across settings: every setting the message names gets its flag spelling
        named = tuple(f for f in config_type.model_fields if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", message))
        raise InputError(message, hint="check the options", settings=named) from None
