"""TensorFlow, Keras and LiteRT behind one door: quiet lazy imports and every private call edgekit makes.

Nothing at module level in edgekit imports TensorFlow; functions that need it call
:func:`tensorflow` or :func:`keras` so ``edgekit --help`` stays instant.

Private TensorFlow/Keras/LiteRT attributes (``converter._experimental_disable_per_channel``,
``Interpreter._get_ops_details``, ``mlir_quantize``, ``Conv1D._compute_causal_padding``, Keras'
node graph...) are used **only here**, each behind a small named function, so an upgrade that
removes one breaks one function, and ``tests/test_tfshim.py`` (which calls each on a tiny model)
says which. Every shim raises :class:`TfInternalsChanged` when the attribute it relies on is gone.

:func:`native_output_captured` is edgekit's one silencer for what these libraries print.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


def _quiet_env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def tensorflow():
    """Returns the ``tensorflow`` module, imported quietly."""
    _quiet_env()
    with native_output_captured(stdout=False):
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with tensorflow
        pass
    return tf


def keras():
    """Returns the Keras 3 module (after TensorFlow, so the TF backend is used)."""
    _quiet_env()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    tensorflow()
    import keras as k

    return k


@contextlib.contextmanager
def native_output_captured(keep: list[str] | None = None, *, stdout: bool = True, python_stderr: bool = False) -> Iterator[None]:
    """Silences what TensorFlow, Keras and LiteRT print while the block runs: edgekit's one silencer.

    - File descriptor 2 (C++ logging of the converter and the runtime) goes to a temporary file;
      with ``keep`` its lines are appended there afterwards, so an error message can quote them.
    - With ``stdout`` (the default), Python's ``sys.stdout`` goes to a buffer (Keras' export prints
      "Saved artifact at ...") and file descriptor 1 to a temporary file (the MLIR quantizer prints
      its settings from C++).
    - With ``python_stderr``, Python's ``sys.stderr`` goes to a buffer too (LiteRT's AOT compiler logs there).

    With ``EDGEKIT_VERBOSE`` set (``edgekit -v``) native output passes through, and Python's stdout
    is sent to stderr so that ``--json`` output stays clean. Native output is silenced at file
    descriptors 1 and 2 whatever Python's streams are (Click's test runner, pytest's capture).

    Example:
        >>> log: list[str] = []
        >>> with native_output_captured(log):  # doctest: +SKIP
        ...     flatbuffer = converter.convert()
    """
    with contextlib.ExitStack() as stack:
        verbose = bool(os.environ.get("EDGEKIT_VERBOSE"))
        if verbose:
            if stdout:
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            yield
            return
        stack.enter_context(_fd_captured(2, sys.stderr, keep))
        if stdout:
            stack.enter_context(_fd_captured(1, sys.stdout, None))
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if python_stderr:
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        yield


def native_stderr_captured(keep: list[str] | None = None) -> contextlib.AbstractContextManager[None]:
    """:func:`native_output_captured` for file descriptor 2 only (kept for callers not yet switched)."""
    return native_output_captured(keep, stdout=False)


@contextlib.contextmanager
def _fd_captured(fd: int, stream: Any, keep: list[str] | None) -> Iterator[None]:
    """Points file descriptor ``fd`` at a temporary file while the block runs (``stream``: the Python
    stream writing to it, flushed around the switch). A closed descriptor is left alone."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if keep is not None:
                sink.seek(0)
                keep.extend(sink.read().decode("utf-8", "replace").splitlines())


# ----------------------------------------------------------------------------------------------
# Private TensorFlow / Keras / LiteRT calls, one named function each
# ----------------------------------------------------------------------------------------------


class TfInternalsChanged(RuntimeError):
    """A private TensorFlow/Keras/LiteRT attribute edgekit relies on is gone (an upgrade changed it)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is no longer available in this TensorFlow/Keras/LiteRT; edgekit needs an update "
                         "(tests/test_tfshim.py names the shim)")


def _require(obj: Any, attribute: str, what: str) -> Any:
    try:
        return getattr(obj, attribute)
    except AttributeError:
        raise TfInternalsChanged(f"{what} ({type(obj).__name__}.{attribute})") from None


# --- converter ----------------------------------------------------------------------------------


def disable_per_channel(converter: Any) -> None:
    """One int8 scale per weight tensor instead of per output channel.

    The converter's only switch for it is the private ``_experimental_disable_per_channel``.
    """
    _require(converter, "_experimental_disable_per_channel", "the converter's per-tensor weight switch")
    converter._experimental_disable_per_channel = True


def per_channel_disabled(converter: Any) -> bool:
    """Whether :func:`disable_per_channel` was applied to ``converter``."""
    return bool(_require(converter, "_experimental_disable_per_channel", "the converter's per-tensor weight switch"))


@dataclass(frozen=True)
class CalibratedInt8:
    """A model calibrated once for int8 (``calibrated``) and its int8 version instrumented with
    NumericVerify ops (``debug``: each quantized op also computed in float from the same inputs)."""

    calibrated: bytes
    debug: bytes


def calibrate_with_debugger(converter: Any, debug_dataset: Callable[[], Iterable[Any]]) -> CalibratedInt8:
    """Calibrates through ``tf.lite.experimental.QuantizationDebugger`` and returns its two models.

    The debugger is public, but the models it builds are kept in undocumented attributes
    (``calibrated_model``, ``quant_model``).
    """
    tf = tensorflow()
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_dataset)
    calibrated = _require(debugger, "calibrated_model", "QuantizationDebugger's calibrated model")
    debug = _require(debugger, "quant_model", "QuantizationDebugger's instrumented model")
    return CalibratedInt8(calibrated=bytes(calibrated), debug=bytes(debug))


def requantize(calibrated_model: bytes, *, per_channel: bool = True, denylisted_nodes: list[str] | None = None) -> bytes:
    """Quantizes a calibrated model to int8 (float I/O), keeping ``denylisted_nodes`` in float.

    The private ``tensorflow.lite.python.convert.mlir_quantize`` is the only way to re-quantize
    without calibrating again.
    """
    tensorflow()
    try:
        from tensorflow.lite.python import convert as tf_convert
    except ImportError:  # pragma: no cover - depends on the TensorFlow release
        raise TfInternalsChanged("tensorflow.lite.python.convert") from None
    mlir_quantize = _require(tf_convert, "mlir_quantize", "the MLIR quantizer")
    return bytes(mlir_quantize(calibrated_model, disable_per_channel=not per_channel, fully_quantize=False,
                               denylisted_nodes=denylisted_nodes or None))


# --- interpreter --------------------------------------------------------------------------------


def interpreter_ops(interpreter: Any) -> list[dict[str, Any]]:
    """Every op of a ``tf.lite.Interpreter``: ``{"index", "op_name", "inputs", "outputs"}`` dicts.

    Op details are only exposed through the private ``_get_ops_details``.
    """
    ops = _require(interpreter, "_get_ops_details", "the interpreter's op details")()
    return [{"index": int(op["index"]), "op_name": str(op["op_name"]), "inputs": [int(i) for i in op["inputs"]],
             "outputs": [int(o) for o in op["outputs"]]} for op in ops]


# --- Keras layers and graphs ----------------------------------------------------------------------


def causal_padding(layer: Any) -> list[list[int]]:
    """The ``[[0, 0], [left, 0], [0, 0]]`` padding a causal Conv1D applies (Keras' ``_compute_causal_padding``)."""
    return [list(map(int, pair)) for pair in _require(layer, "_compute_causal_padding", "Conv1D causal padding")()]


def inbound_nodes(layer: Any) -> list[Any]:
    """The graph nodes where ``layer`` is called (Keras' ``_inbound_nodes``)."""
    return list(_require(layer, "_inbound_nodes", "a layer's inbound nodes"))


def outbound_nodes(layer: Any) -> list[Any]:
    """The graph nodes that consume ``layer``'s outputs (Keras' ``_outbound_nodes``)."""
    return list(_require(layer, "_outbound_nodes", "a layer's outbound nodes"))


def producing_layer(tensor: Any) -> Any | None:
    """The layer whose call produced a symbolic Keras tensor (``_keras_history.operation``; an InputLayer for a model input), or None.

    None for anything without that history (an upgrade that renames it shows in tests/test_tfshim.py).
    """
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None) if history is not None else None


def functional_graph(model: Any) -> Any | None:
    """The Functional graph of a Functional or Sequential model (None: subclassed or not built).

    A Sequential model keeps its graph in the private ``_functional``.
    """
    k = keras()
    if isinstance(model, k.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def graph_nodes(graph: Any) -> list[Any]:
    """The nodes of a Functional graph in execution order (deepest depth first; Keras' ``_nodes_by_depth``)."""
    by_depth = _require(graph, "_nodes_by_depth", "a Functional model's nodes by depth")
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def nested_models(model: Any) -> list[Any]:
    """The Keras models nested anywhere inside ``model`` (Keras' private ``_flatten_layers``)."""
    model_type = keras().Model
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, model_type)]


def forget_distribution(model: Any) -> None:
    """Makes a Keras model built under a ``tf.distribute`` strategy run (predict, evaluate) without it.

    Keras 3 keeps the strategy of the scope a model was made in (private ``_distribute_strategy``)
    and runs ``predict`` through it, and caches the compiled step functions that use it.
    """
    model._distribute_strategy = None
    for name in ("predict_function", "test_function", "train_function"):
        if hasattr(model, name):
            setattr(model, name, None)
