"""The exception hierarchy and the exit code each class maps to.

Every error edgekit raises on purpose is an :class:`EdgekitError`. Its message is one line that
says what was wrong, what was expected and how to fix it, in terms of settings (``epochs``), not
command-line flags: ``settings`` names them and the CLI adds its flag spelling; the CLI prints it without a traceback
(unless ``-v``) and exits with the class's ``exit_code``, so scripts can tell a bad model from a
failed accuracy gate from an unreachable device.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class: an error the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, settings: tuple[str, ...] = ()) -> None:
        self.message = message
        self.hint = hint
        #: the settings (config field names, e.g. ``epochs``) the message speaks of; the CLI shows
        #: them with its flag spelling (``--epochs``), a recipe user sees the recipe key
        self.settings = tuple(settings)
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message and the hint, as one line."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text.rstrip('.')}; {self.hint}"
        return text


class InputError(EdgekitError):
    """A path, option or value given by the user is wrong (missing file, bad option value...)."""

    exit_code = 2


class ModelError(EdgekitError):
    """A model file cannot be read, is unsafe to load, or does not fit the operation."""

    exit_code = 3


class DataError(EdgekitError):
    """A data file cannot be read or does not fit the model (shape, dtype, NaN, empty)."""

    exit_code = 4


class ConversionError(EdgekitError):
    """The TFLite converter failed or produced something unusable."""

    exit_code = 5


class RuntimeFailure(EdgekitError):
    """The LiteRT runtime failed or crashed while running an artifact."""

    exit_code = 6


class DeviceError(EdgekitError):
    """A target device is unreachable, misconfigured, or lacks what the run needs."""

    exit_code = 7


class GateFailed(EdgekitError):
    """A recipe's accuracy, latency or size gate was not met."""

    exit_code = 8


class RecipeError(EdgekitError):
    """A recipe or device profile is invalid."""

    exit_code = 9


class TimeLimit(EdgekitError):
    """A child process (the runner, a remote command) ran past its time limit and was killed."""

    exit_code = 10


class MemoryLimit(EdgekitError):
    """The runner child needed more memory than its limit (``EDGEKIT_MEMORY_LIMIT_MB``, default scaled by the work)."""

    exit_code = 11
