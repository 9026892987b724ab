"""The ``edgekit`` command line: a thin layer over the library.

Commands live in their own modules and are imported only when run (or when ``--help`` lists
them); none of them imports TensorFlow at module level, so ``edgekit --help`` is instant.
Every :class:`~edgekit.core.errors.EdgekitError` becomes one ``error:`` line on stderr and the
class's exit code; ``-v`` shows tracebacks and the native (C++) logs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import traceback
from importlib import import_module

import click

from edgekit import __version__
from edgekit.core.errors import EdgekitError

# command name -> "module:attribute"; registered explicitly, in the order --help shows them
COMMANDS: dict[str, str] = {
    "quantize": "edgekit.cli.cmd_quantize:quantize",
    "validate": "edgekit.cli.cmd_validate:validate",
    "inspect": "edgekit.cli.cmd_inspect:inspect",
    "benchmark": "edgekit.cli.cmd_benchmark:benchmark",
    "devices": "edgekit.cli.cmd_devices:devices",
    "export": "edgekit.cli.cmd_export:export",
    "check": "edgekit.cli.cmd_check:check",
    "qat": "edgekit.cli.cmd_qat:qat",
    "distill": "edgekit.cli.cmd_distill:distill",
    "prune": "edgekit.cli.cmd_prune:prune",
    "cluster": "edgekit.cli.cmd_cluster:cluster",
    "recipe": "edgekit.cli.cmd_recipe:recipe",
    "run": "edgekit.cli.cmd_run:run",
    "optimize": "edgekit.cli.cmd_optimize:optimize",
    "compare": "edgekit.cli.cmd_compare:compare",
}


def _available(name: str) -> bool:
    """Whether a registered command's module is installed (found without importing it)."""
    return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None


def _fail(ctx: click.Context, message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    ctx.exit(code)


def with_flags(exc: EdgekitError, command: click.Command | None) -> str:
    """The error's line with each setting it names written as the command's flag (``epochs`` -> ``--epochs``).

    The mapping is the Click declaration itself: an option whose parameter name is the config
    field (``click.option("--lr", "learning_rate")`` maps ``learning_rate`` to ``--lr``).
    """
    text = exc.one_line()
    if command is None or not exc.settings:
        return text
    flags = {p.name: max(p.opts, key=len) for p in command.params if isinstance(p, click.Option) and p.name}
    for setting in exc.settings:
        flag = flags.get(setting)
        if flag is not None:
            text = re.sub(rf"(?<![\w\-/.]){re.escape(setting)}(?![\w\-/])", flag, text)  # not inside a path or a word
    return text


class EdgekitGroup(click.Group):
    """A group that loads commands lazily and turns errors into one line and an exit code."""

    def _invoked(self, ctx: click.Context) -> click.Command | None:
        """The (sub)command that ran, for its flag spellings."""
        name = ctx.invoked_subcommand
        command = self.get_command(ctx, name) if name else None
        while isinstance(command, click.Group):  # a command of a subgroup (devices ..., recipe ...)
            args = [a for a in ctx.protected_args + ctx.args if not a.startswith("-")]
            sub = args[1] if len(args) > 1 else None
            nested = command.get_command(ctx, sub) if sub else None
            if nested is None:
                break
            command = nested
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(cmd_name):
            return None
        module, attr = target.split(":")
        return getattr(import_module(module), attr)

    def invoke(self, ctx: click.Context):  # noqa: D102 - click API
        verbose = bool(ctx.params.get("verbose"))
        before = os.environ.get("EDGEKIT_VERBOSE")
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            if verbose:
                traceback.print_exc()
            _fail(ctx, with_flags(exc, self._invoked(ctx)), exc.exit_code)
        except Terminated:
            _fail(ctx, "terminated (SIGTERM); no partial output was kept", 143)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted; no partial output was kept", 130)
        except MemoryError:
            _fail(ctx, "out of memory; use fewer --samples or a smaller dataset", 1)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # a bug or an unexpected library failure: still one line
            if isinstance(exc.__context__, KeyboardInterrupt):  # a signal that landed inside an import
                terminated = isinstance(exc.__context__, Terminated)
                _fail(ctx, ("terminated (SIGTERM)" if terminated else "interrupted") + "; no partial output was kept",
                      143 if terminated else 130)
            if verbose:
                traceback.print_exc()
            detail = " ".join(str(exc).split())[:300]
            _fail(ctx, f"unexpected {type(exc).__name__}: {detail} (rerun with -v for the traceback)", 1)
        finally:  # -v holds for this invocation only (library code reads it from the environment)
            if before is None:
                os.environ.pop("EDGEKIT_VERBOSE", None)
            else:
                os.environ["EDGEKIT_VERBOSE"] = before


@click.group(cls=EdgekitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and the converter/runtime logs.")
@click.version_option(__version__, prog_name="edgekit")
def cli(verbose: bool) -> None:
    """Take a trained Keras model to a small, fast, validated on-device artifact.

    \b
    Quick start (the bundled example):
      edgekit quantize examples/fashion_mnist/model.keras --mode int8 \\
          --data examples/fashion_mnist/calib.npz --scale 1/255 -o out/model_int8.tflite
      edgekit validate out/model_int8.tflite --data examples/fashion_mnist/val.npz \\
          --reference examples/fashion_mnist/model.keras
    """
    if verbose:
        os.environ["EDGEKIT_VERBOSE"] = "1"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is: it unwinds like Ctrl-C (exit 143 instead of 130)."""


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated  # unwinds through atomic writes, so their temporary files are removed


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    cli.main(prog_name="edgekit")


if __name__ == "__main__":  # pragma: no cover
    main()
