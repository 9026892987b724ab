"""Imports TensorFlow and Keras quietly, on first use only.

Nothing at module level in edgekit imports TensorFlow; functions that need it call
:func:`tensorflow` or :func:`keras` so ``edgekit --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


def _quiet_env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def tensorflow():
    """Returns the ``tensorflow`` module, imported quietly."""
    _quiet_env()
    with native_stderr_captured():
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
def native_stderr_captured(keep: list[str] | None = None) -> Iterator[None]:
    """Redirects the process's stderr file descriptor (C++ logging) to a temp file.

    The converter and the runtime log from C++ straight to fd 2. With ``EDGEKIT_VERBOSE`` set
    the output passes through; otherwise it is captured and, if ``keep`` is given, its lines are
    appended there so an error message can quote them.
    """
    if os.environ.get("EDGEKIT_VERBOSE") or not hasattr(sys.stderr, "fileno"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (OSError, ValueError):  # pytest capture or a non-file stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if keep is not None:
                sink.seek(0)
                keep.extend(sink.read().decode("utf-8", "replace").splitlines())


# --- Keras graph internals (Keras 3 has no public node API) -------------------------------------
# Used by edgekit.core.keras_graph (channel groups) and edgekit.passes.equalize.


def functional_graph(model: Any) -> Any:
    """The Functional graph of a Functional or Sequential model (None: subclassed or not built)."""
    k = keras()
    if isinstance(model, k.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def graph_nodes(graph: Any) -> list[Any]:
    """The nodes (layer calls) of a Functional graph in topological order, inputs first."""
    by_depth = graph._nodes_by_depth  # noqa: SLF001 - Keras keeps the call graph only here
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def inbound_nodes(layer: Any) -> list[Any]:
    """The calls of ``layer`` (one per time it was called in a graph)."""
    return list(getattr(layer, "_inbound_nodes", []))


def outbound_nodes(layer: Any) -> list[Any]:
    """The calls that consume ``layer``'s outputs."""
    return list(getattr(layer, "_outbound_nodes", []))


def producing_layer(tensor: Any) -> Any:
    """The layer whose call produced a symbolic Keras tensor (an InputLayer for a model input)."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None) if history is not None else None
