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

def _remember_resize(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.meta["edgekit.resize"] = value
    return value


preprocessing_options = _stack(
    click.option("--resize", type=click.Choice(["crop", "stretch", "pad"]), default=None, expose_value=False, callback=_remember_resize,
                 help="How an image folder's images are fitted to the model input: crop to its aspect ratio then resize "
                      "[default], stretch, or pad with black. Recorded in the manifest; validate re-applies it."),
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
    """A Preprocessing from the CLI strings (and ``--resize``), or None when none was given."""
    ctx = click.get_current_context(silent=True)
    resize = ctx.meta.get("edgekit.resize") if ctx is not None else None
    if scale is None and mean is None and std is None and resize is None:
        return None
    from edgekit.core.data import parse_preprocessing

    return parse_preprocessing(scale, mean, std, resize)


fleet_options = [
    click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False), default=None,
                 help="A YAML fleet file (devices: [NAME or PATH, ...], max_parallel: N): run on every device in parallel."),
    click.option("--max-parallel", type=int, default=None, help="With several devices: at most this many at once [default: all]."),
    click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
                 help="Measure on a Ray cluster: each device is the resource device:NAME of the node it is attached to "
                      "(ray start --resources '{\"device:NAME\": 1}'); auto: RAY_ADDRESS or the local cluster."),
]


def fleet_option_group(f):
    for option in reversed(fleet_options):
        f = option(f)
    return f


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


# One vocabulary: the canonical spelling of an option for every command, and the old spelling
# kept as a hidden alias for one release (it still parses, --help no longer shows it).
CANONICAL_FLAGS: dict[str, str] = {"--output": "--out", "--lr": "--learning-rate"}


class AliasedOption(click.Option):
    """An option whose ``hidden_aliases`` parse but are left out of ``--help``."""

    hidden_aliases: tuple[str, ...] = ()

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts = self.opts
        self.opts = [o for o in opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def visible_opts(option: click.Option) -> list[str]:
    """The spellings ``--help`` shows (hidden aliases left out)."""
    hidden = getattr(option, "hidden_aliases", ())
    return [o for o in option.opts if o not in hidden]


def harmonize(command: click.Command) -> click.Command:
    """Gives ``command`` (and a group's subcommands) the canonical flag spellings of
    :data:`CANONICAL_FLAGS`, keeping each old spelling as a hidden alias. Idempotent."""
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for old, new in CANONICAL_FLAGS.items():
            if old in param.opts and new not in param.opts:
                param.opts = [new if o == old else o for o in param.opts] + [old]
                if not isinstance(param, AliasedOption):
                    param.__class__ = AliasedOption
                param.hidden_aliases = (*getattr(param, "hidden_aliases", ()), old)  # type: ignore[attr-defined]
    command.context_class = EdgekitContext
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            harmonize(sub)
    return command


class WrappingFormatter(click.HelpFormatter):
    """Click's help formatter, but lines of verbatim (``\\b``) blocks wider than the terminal are
    word-wrapped too, indented under their first word, so ``--help`` fits 80 columns."""

    def getvalue(self) -> str:
        import textwrap

        lines = []
        for line in super().getvalue().split("\n"):
            if len(line) <= self.width:
                lines.append(line)
                continue
            indent = " " * (len(line) - len(line.lstrip()))
            lines += textwrap.wrap(line.strip(), self.width, initial_indent=indent, subsequent_indent=indent + "    ",
                                   break_long_words=False, break_on_hyphens=False)
        return "\n".join(lines)


class EdgekitContext(click.Context):
    formatter_class = WrappingFormatter


def strategy_option(f):
    """``--strategy auto|none|mirrored|multiworker`` for the training commands (qat, distill, prune, cluster)."""
    return click.option(
        "--strategy", type=click.Choice(["auto", "none", "mirrored", "multiworker"]), default="none", show_default=True,
        help="tf.distribute strategy for fine-tuning: mirrored (this host's GPUs), multiworker (every host in TF_CONFIG runs the "
             "same command; worker 0 writes the files), auto (mirrored with several GPUs). --batch-size is per replica.",
    )(f)
