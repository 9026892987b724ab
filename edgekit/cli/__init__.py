"""The ``edgekit`` command line: a thin layer over the library.

Commands live in their own modules and are imported only when run (or when ``--help`` lists
them); none of them imports TensorFlow at module level, so ``edgekit --help`` is instant.
Every :class:`~edgekit.core.errors.EdgekitError` becomes one ``error:`` line on stderr and the
class's exit code; ``-v`` shows tracebacks and the native (C++) logs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
import traceback
from importlib import import_module

import click

from edgekit import __version__
from edgekit.cli.options import EdgekitContext, harmonize, visible_opts
from edgekit.core import interrupts
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
    "docs": "edgekit.cli.cmd_docs:docs",
}


def _available(name: str) -> bool:
    """Whether a registered command's module is installed (found without importing it)."""
    return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None


def _fail(ctx: click.Context, message: str, code: int, *, as_json: bool = False, kind: str = "error",
          hint: str | None = None) -> None:
    """One ``error:`` line on stderr (and, with ``--json``, the error object on stdout), then exit ``code``."""
    click.echo(f"error: {message}", err=True)
    if as_json:
        error = {"code": code, "kind": kind, "message": message, "hint": hint}
        sys.stdout.write(json.dumps({"error": error}, indent=2) + "\n")
        sys.stdout.flush()
    ctx.exit(code)


def _wants_json(ctx: click.Context) -> bool:
    """Whether the command line asked for ``--json`` (seen before the subcommand parsed it)."""
    args = list(getattr(ctx, "protected_args", [])) + list(ctx.args)
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def with_flags(exc: EdgekitError, command: click.Command | None) -> str:
    """The error's line with each setting it names written as the command's flag (``epochs`` -> ``--epochs``).

    The mapping is the Click declaration itself: an option whose parameter name is the config
    field (``click.option("--lr", "learning_rate")`` maps ``learning_rate`` to ``--lr``).
    """
    text = exc.one_line()
    if command is None or not exc.settings:
        return text
    flags = {p.name: max(visible_opts(p), key=len) for p in command.params if isinstance(p, click.Option) and p.name}
    for setting in exc.settings:
        flag = flags.get(setting)
        if flag is not None:
            text = re.sub(rf"(?<![\w\-/.]){re.escape(setting)}(?![\w\-/])", flag, text)  # not inside a path or a word
    return text


class EdgekitGroup(click.Group):
    """A group that loads commands lazily and turns errors into one line and an exit code."""

    context_class = EdgekitContext  # --help word-wraps to the terminal (80 columns when piped)

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
        return harmonize(getattr(import_module(module), attr))

    def invoke(self, ctx: click.Context):  # noqa: D102 - click API
        verbose = bool(ctx.params.get("verbose"))
        before = os.environ.get("EDGEKIT_VERBOSE")
        trust_before = os.environ.get("EDGEKIT_TRUST_PROFILE")
        as_json = _wants_json(ctx)
        try:
            result = super().invoke(ctx)
            interrupts.check()  # an interrupt swallowed on the way (third-party code) still ends the run as interrupted
            return result
        except EdgekitError as exc:
            if verbose:
                traceback.print_exc()
            _fail(ctx, with_flags(exc, self._invoked(ctx)), exc.exit_code, as_json=as_json, kind=type(exc).__name__,
                  hint=exc.hint)
        except Terminated:
            _fail(ctx, "terminated (SIGTERM); no partial output was kept", 143, as_json=as_json, kind="Terminated")
        except KeyboardInterrupt:
            if interrupts.pending() == signal.SIGTERM:  # a SIGTERM whose first exception was swallowed, raised again
                _fail(ctx, "terminated (SIGTERM); no partial output was kept", 143, as_json=as_json, kind="Terminated")
            _fail(ctx, "interrupted; no partial output was kept", 130, as_json=as_json, kind="Interrupted")
        except MemoryError:
            _fail(ctx, "out of memory; use fewer --samples or a smaller dataset", 1, as_json=as_json, kind="MemoryError")
        except BrokenPipeError:
            _quiet_closed_pipe()
        except click.ClickException as exc:  # a usage error (unknown option, bad value): exit 2
            if not as_json:
                raise
            click.echo(f"error: {exc.format_message()}", err=True)
            _fail_json_only(exc.exit_code, "UsageError", exc.format_message(), "see --help")
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug or an unexpected library failure: still one line
            if isinstance(exc.__context__, KeyboardInterrupt):  # a signal that landed inside an import
                terminated = isinstance(exc.__context__, Terminated)
                _fail(ctx, ("terminated (SIGTERM)" if terminated else "interrupted") + "; no partial output was kept",
                      143 if terminated else 130, as_json=as_json, kind="Terminated" if terminated else "Interrupted")
            if verbose:
                traceback.print_exc()
            detail = " ".join(str(exc).split())[:300]
            _fail(ctx, f"unexpected {type(exc).__name__}: {detail} (rerun with -v for the traceback)", 1,
                  as_json=as_json, kind="InternalError", hint="rerun with -v for the traceback")
        finally:  # -v and --trust-profile hold for this invocation only (library code reads them from the environment)
            for key, value in (("EDGEKIT_VERBOSE", before), ("EDGEKIT_TRUST_PROFILE", trust_before)):
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@click.group(cls=EdgekitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and the converter/runtime logs.")
@click.option("--trust-profile", is_flag=True,
              help="Let a device profile from --devices-dir or a path run the programs it names (ssh ProxyCommand, runner.python, "
                   "runner.env, an adb client); see edgekit devices show.")
@click.version_option(__version__, prog_name="edgekit")
def cli(verbose: bool, trust_profile: bool) -> None:
    """Take a trained Keras model to a small, fast, validated on-device artifact.

    \b
    Quick start (the bundled example):
      edgekit quantize examples/fashion_mnist/model.keras --mode int8 \\
          --data examples/fashion_mnist/calib.npz --scale 1/255 \\
          -o out/model_int8.tflite
      edgekit validate out/model_int8.tflite \\
          --data examples/fashion_mnist/val.npz \\
          --reference examples/fashion_mnist/model.keras
    """
    if verbose:
        os.environ["EDGEKIT_VERBOSE"] = "1"
    if trust_profile:
        os.environ["EDGEKIT_TRUST_PROFILE"] = "1"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is: it unwinds like Ctrl-C (exit 143 instead of 130)."""


def _fail_json_only(code: int, kind: str, message: str, hint: str | None) -> None:
    sys.stdout.write(json.dumps({"error": {"code": code, "kind": kind, "message": message, "hint": hint}}, indent=2) + "\n")
    sys.stdout.flush()


def _quiet_closed_pipe() -> None:
    """The reader of stdout went away (``edgekit ... | head``): end quietly with exit 0.

    As the Python docs recommend (signal module, "Note on SIGPIPE"): point stdout at devnull so
    the interpreter's final flush does not raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    interrupts.mark(signum)
    raise Terminated  # unwinds through atomic writes, so their temporary files are removed


def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    interrupts.mark(signum)  # checked again before outputs are put in place, should this one be swallowed
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored (nohup, &)
        signal.signal(signal.SIGINT, _interrupt)
    try:
        cli.main(prog_name="edgekit")
    except SystemExit as exit_:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_closed_pipe()
        if exit_.code == 1 and _pipe_closed():
            _quiet_closed_pipe()
        raise
    except BrokenPipeError:
        _quiet_closed_pipe()


def _pipe_closed() -> bool:
    """Whether stdout was replaced by Click's EPIPE wrapper (it exits 1 on a closed pipe)."""
    return type(sys.stdout).__name__ == "_PacifyFlushWrapper"


if __name__ == "__main__":  # pragma: no cover
    main()
