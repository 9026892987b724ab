"""Loads models safely: Keras 3 ``.keras``, legacy ``.h5``/``.hdf5``, TensorFlow SavedModel.

Safe by default: before Keras deserializes anything, the model's JSON config is read and walked.
A ``Lambda`` layer (Python bytecode) or a custom class is refused with a message naming the layer
and the opt-in: ``unsafe=True`` (``--unsafe``) for Lambda layers, ``custom_objects=`` (a Python
file given with ``--custom-objects``) for custom classes. Keras' own ``safe_mode`` stays on
unless ``unsafe`` is set.

Example:
    >>> loaded = load_model("examples/fashion_mnist/model.keras")  # doctest: +SKIP
    >>> loaded.input_shape  # doctest: +SKIP
    (None, 28, 28, 1)
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from edgekit.core.archive_guard import KERAS_LIMITS, read_member, scan_keras_archive
from edgekit.core.datatypes import InputSpec, OutputSpec, Signature
from edgekit.core.errors import InputError, ModelError
from edgekit.core.fsutil import require_file, sha256_file
from edgekit.core.keras_graph import CONTAINERS
from edgekit.core.tasks import parse_task_overrides
from edgekit.core.tfshim import keras, native_output_captured, tensorflow

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class UnsafeObject:
    """An object in a model config that loading would have to execute or import."""

    layer: str
    class_name: str
    reason: str  # "lambda" or "custom"


@dataclass
class LoadedModel:
    """A model ready to convert or run, with where it came from.

    ``keras_model`` is set for Keras files; ``saved_model_dir`` for SavedModel directories (which
    convert directly and run through their serving signature).
    """

    path: str
    format: str  # "keras", "h5", "savedmodel"
    sha256: str
    keras_model: Any = None
    saved_model_dir: str | None = None
    input_shape: tuple[int | None, ...] = ()
    input_dtype: str = "float32"
    output_shapes: list[tuple[int | None, ...]] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    parameter_count: int | None = None
    unsafe: bool = False
    #: every input (name, shape, dtype) in the model's order; empty: the single ``input_shape``/``input_dtype``
    inputs: tuple[InputSpec, ...] = ()
    #: the loss each output was compiled with (a name or a loss description), where the file says
    losses: tuple[Any, ...] = ()
    #: tasks chosen by the user (``--task output=task``), by output name; they win over detection
    task_overrides: dict[str, Any] = field(default_factory=dict)
    _serving: Any = None

    def choose_tasks(self, tasks: Any) -> None:
        """Records ``--task`` choices (``["box=regression"]``, or a task alone for one output); raises on unknown names."""
        self.task_overrides = parse_task_overrides(list(tasks or ()), list(self.output_names))

    @property
    def signature(self) -> Signature:
        """The model's inputs and outputs, in its own order."""
        ins = self.inputs or (InputSpec(_input_name(self), tuple(self.input_shape), self.input_dtype),)
        outs = tuple(OutputSpec(n, tuple(s)) for n, s in zip(self.output_names, self.output_shapes, strict=False))
        return Signature(inputs=ins, outputs=outs)

    def predict(self, x: Any, batch_size: int = 64) -> list[np.ndarray]:
        """Runs the float model on ``x`` (an array, or a list in the model's input order); one array per output."""
        if self.keras_model is not None:
            out = self.keras_model.predict(x, batch_size=batch_size, verbose=0)
            return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
        if self._serving is None:
            tf = tensorflow()
            loaded = tf.saved_model.load(self.saved_model_dir)
            self._serving = (loaded, loaded.signatures["serving_default"])
        _, fn = self._serving
        arg_names = [i.name for i in self.signature.inputs]
        arrays = list(x) if isinstance(x, (list, tuple)) else [x]
        outs: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(arrays[0]), batch_size):
            res = fn(**{n: a[start: start + batch_size] for n, a in zip(arg_names, arrays, strict=True)})
            for k, v in res.items():
                outs.setdefault(k, []).append(v.numpy())
        return [np.concatenate(outs[k]) for k in sorted(outs)]


def _input_name(model: LoadedModel) -> str:
    if model.keras_model is not None and getattr(model.keras_model, "inputs", None):
        return str(model.keras_model.inputs[0].name)
    return "x"


def _loss_entry(value: Any) -> Any:
    """A serialized Keras loss (a name or ``{"class_name":..., "config":{...}}``) as a name or a small description."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, dict):
        raw_cfg = value.get("config")
        cfg: dict[str, Any] = raw_cfg if isinstance(raw_cfg, dict) else {}
        name = cfg.get("name") if isinstance(cfg.get("name"), str) else value.get("class_name")
        if value.get("class_name") == "function":
            name = value.get("config") if isinstance(value.get("config"), str) else name
        return SimpleNamespace(name=str(name), from_logits=cfg.get("from_logits") if isinstance(cfg.get("from_logits"), bool) else None)
    return None


def compiled_losses(config: dict[str, Any], output_names: list[str]) -> tuple[Any, ...]:
    """The loss of each output from a Keras config's ``compile_config`` (read as data, nothing deserialized)."""
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    loss = compile_config.get("loss") if isinstance(compile_config, dict) else None
    if loss is None or not output_names:
        return ()
    if isinstance(loss, dict) and "class_name" not in loss:
        return tuple(_loss_entry(loss.get(n)) for n in output_names)
    if isinstance(loss, (list, tuple)):
        return tuple(_loss_entry(v) for v in list(loss)[: len(output_names)])
    return tuple(_loss_entry(loss) for _ in output_names)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Returns "keras", "h5", "savedmodel" or "tflite" from the file's content, or raises."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model {p} does not exist", hint="check the path")
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise InputError(
            f"model {p} is a directory without saved_model.pb",
            hint="give a .keras or .h5 file, or a TensorFlow SavedModel directory",
        )
    require_file(p, "model")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head[:4] == ZIP_MAGIC:
        return "keras"
    if head == HDF5_MAGIC:
        return "h5"
    if head[4:8] == b"TFL3":
        return "tflite"
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        raise ModelError(f"{p} is not a TFLite model (no 'TFL3' file identifier; corrupt or not a flatbuffer)", hint="re-export it with the TFLite/LiteRT converter")
    if suffix in KERAS_SUFFIXES:
        raise ModelError(f"{p} is not a valid .keras archive (not a zip file; truncated or corrupt?)", hint="re-save the model with model.save('model.keras')")
    if suffix in H5_SUFFIXES:
        raise ModelError(f"{p} is not a valid HDF5 file (truncated or corrupt?)", hint="re-save the model with model.save('model.h5')")
    raise ModelError(
        f"{p} is not a model edgekit can read (expected .keras, .h5/.hdf5, a SavedModel directory or .tflite)",
        hint="pass the file your training code saved with model.save()",
    )


def read_keras_config(path: str | os.PathLike[str], fmt: str) -> dict[str, Any]:
    """Reads the JSON model config of a .keras or .h5 file without deserializing anything."""
    p = Path(path)
    try:
        if fmt == "keras":
            # declared sizes first (a zip bomb is refused before anything inflates), then config.json
            # read to at most its limit; Keras itself checks the weights' CRCs as it loads them
            scan_keras_archive(p)
            return json.loads(read_member(p, "config.json", KERAS_LIMITS.max_config_bytes))
        import h5py

        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelError(
                    f"{p} holds weights only, no model architecture (no model_config)",
                    hint="save the whole model with model.save(), not model.save_weights()",
                )
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ModelError:
        raise
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError, EOFError, KeyError, ValueError,
            RuntimeError, NotImplementedError, zlib.error, struct.error, TypeError) as exc:
        raise ModelError(
            f"{p} cannot be read as a {'.keras archive' if fmt == 'keras' else 'Keras HDF5 file'} ({type(exc).__name__}: truncated or corrupt?)",
            hint="re-save the model from your training code",
        ) from None


def _builtin_keras_names() -> set[str]:
    k = keras()
    names = set(CONTAINERS) | {"InputLayer", "DTypePolicy", "FloatDTypePolicy", "Policy"}
    for mod in (k.layers, k.initializers, k.regularizers, k.constraints, k.activations, k.losses, k.metrics, k.optimizers):
        names.update(n for n in dir(mod) if not n.startswith("_"))
    return names


_KERAS_MODULES = {"keras", "tf_keras"}
_UNSAFE_BUILTIN_CLASSES = {"Lambda", "TFSMLayer"}  # Python bytecode; a SavedModel loaded from elsewhere


def scan_config(config: Any, builtin_names: set[str] | None = None, *, skip_keys: tuple[str, ...] = ()) -> list[UnsafeObject]:
    """Finds Lambda layers, Python lambdas/functions and custom classes anywhere in a Keras config.

    Keras 3 configs mark each object with ``module`` and ``registered_name``; legacy (Keras 2)
    configs have only ``class_name``, which is then checked against Keras' built-in names. Keys in
    ``skip_keys`` (e.g. ``compile_config`` when not compiling) are not visited.
    """
    found: list[UnsafeObject] = []
    names = builtin_names

    def layer_name(obj: dict[str, Any], parent: str) -> str:
        cfg = obj.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            return cfg["name"]
        return obj.get("name") or parent

    def visit(obj: Any, parent: str) -> None:
        nonlocal names
        if isinstance(obj, list):
            for item in obj:
                visit(item, parent)
            return
        if not isinstance(obj, dict):
            return
        cls = obj.get("class_name")
        if isinstance(cls, str) and cls != "__keras_tensor__" and cls != "__tuple__":
            name = layer_name(obj, parent)
            module = obj.get("module")
            registered = obj.get("registered_name")
            top_module = str(module).split(".")[0] if module is not None else None
            if cls in _UNSAFE_BUILTIN_CLASSES or cls == "__lambda__":
                found.append(UnsafeObject(name, cls, "lambda"))
            elif cls == "function" and top_module not in _KERAS_MODULES:
                # a plain Python function (activation, loss...): its name is the config
                fn = obj.get("config")
                found.append(UnsafeObject(parent, str(fn if isinstance(fn, str) else registered or "function"), "custom"))
            elif registered and not str(registered).startswith("keras") and str(registered) != cls:
                found.append(UnsafeObject(name, str(registered), "custom"))
            elif top_module is not None and top_module not in _KERAS_MODULES:
                found.append(UnsafeObject(name, cls, "custom"))
            elif module is None:
                if names is None:
                    names = _builtin_keras_names()
                if cls not in names and not cls.startswith("__"):
                    found.append(UnsafeObject(name, cls, "custom"))
            parent = name
        for key, value in obj.items():
            if key not in skip_keys:
                visit(value, parent)

    visit(config, "model")
    return found


def _import_custom_objects(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Imports a user's Python file and returns its classes and functions by name.

    A ``CUSTOM_OBJECTS`` dict in the file, if present, is used as is.
    """
    p = require_file(path, "custom objects file")
    if p.suffix != ".py":
        raise InputError(f"custom objects file {p} should be a .py file", hint="pass --custom-objects my_layers.py")
    spec = importlib.util.spec_from_file_location(f"edgekit_custom_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {p}", hint="check it is a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's own code: report whatever it raised
        raise InputError(f"importing custom objects file {p} failed: {type(exc).__name__}: {exc}", hint="fix the file") from exc
    if isinstance(getattr(module, "CUSTOM_OBJECTS", None), dict):
        return dict(module.CUSTOM_OBJECTS)
    return {
        name: obj for name, obj in vars(module).items()
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__ and not name.startswith("_")
    }


def refuse_unsafe(path: Path, found: list[UnsafeObject], *, unsafe: bool, custom_objects: dict[str, Any]) -> None:
    """Raises ModelError for the first object the user has not opted in to."""
    for obj in found:
        if obj.reason == "lambda" and not unsafe:
            raise ModelError(
                f"{path} contains a Lambda layer '{obj.layer}' whose Python code would run on load",
                hint="if you trust the file, pass --unsafe (library: unsafe=True)",
            )
        short = obj.class_name.split(">")[-1]
        if obj.reason == "custom" and obj.class_name not in custom_objects and short not in custom_objects:
            raise ModelError(
                f"{path} uses custom class '{obj.class_name}' (layer '{obj.layer}') that edgekit does not know",
                hint="pass --custom-objects FILE.py with the class defined in it (library: custom_objects=)",
            )


def load_model(
    path: str | os.PathLike[str],
    *,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | dict[str, Any] | None = None,
    compile: bool = False,
) -> LoadedModel:
    """Loads a Keras 3 ``.keras``, a legacy ``.h5``/``.hdf5`` or a SavedModel directory.

    Args:
        path: the model file or SavedModel directory.
        unsafe: allow Lambda layers (their Python bytecode runs) and turn off Keras' safe mode.
        custom_objects: a ``.py`` file (or a dict) providing custom classes the model uses.
        compile: also restore the training configuration (loss, optimizer) when present.

    Raises:
        InputError, ModelError: with a one-line message saying what to do.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "tflite":
        raise ModelError(
            f"{p} is already a TFLite model; this step needs the Keras model (or SavedModel) it came from",
            hint="pass the .keras/.h5 file; use `edgekit inspect` or `edgekit validate` for .tflite files",
        )
    digest = sha256_file(p)
    if fmt == "savedmodel":
        return _load_saved_model(p, digest)

    config = read_keras_config(p, fmt)
    objects: dict[str, Any] = (
        _import_custom_objects(custom_objects) if isinstance(custom_objects, (str, os.PathLike))
        else dict(custom_objects or {})
    )
    found = scan_config(config, skip_keys=() if compile else ("compile_config",))
    refuse_unsafe(p, found, unsafe=unsafe, custom_objects=objects)

    k = keras()
    log: list[str] = []
    try:
        with native_output_captured(log, stdout=False):
            model = k.saving.load_model(p, custom_objects=objects or None, compile=compile, safe_mode=not unsafe)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not unsafe and "safe_mode" in str(exc):
            raise ModelError(
                f"{p} stores Python code (a lambda) that Keras refuses to load in safe mode",
                hint="if you trust the file, pass --unsafe (library: unsafe=True)",
            ) from exc
        raise ModelError(
            f"Keras could not load {p}: {first[:300]}",
            hint="check the file was saved by Keras 2.x/3.x with model.save() and is complete",
        ) from exc
    loaded = _describe_keras(model, p, fmt, digest, unsafe)
    loaded.losses = compiled_losses(config, loaded.output_names)
    return loaded


def _describe_keras(model: Any, p: Path, fmt: str, digest: str, unsafe: bool) -> LoadedModel:
    inputs = getattr(model, "inputs", None) or []
    if not inputs:
        raise ModelError(f"{p} has no defined inputs (a subclassed model that was never built?)", hint="save a Functional or Sequential model")
    outputs = model.outputs or []
    return LoadedModel(
        path=str(p),
        format=fmt,
        sha256=digest,
        keras_model=model,
        input_shape=tuple(inputs[0].shape),
        input_dtype=str(inputs[0].dtype),
        output_shapes=[tuple(o.shape) for o in outputs],
        output_names=list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(outputs))]),
        parameter_count=int(model.count_params()),
        unsafe=unsafe,
        inputs=tuple(InputSpec(str(t.name), tuple(t.shape), str(t.dtype)) for t in inputs),
    )


def _load_saved_model(p: Path, digest: str) -> LoadedModel:
    tf = tensorflow()
    try:
        with native_output_captured(stdout=False):
            loaded = tf.saved_model.load(str(p))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"TensorFlow could not load the SavedModel {p}: {first[:300]}", hint="check the directory is a complete SavedModel") from exc
    sig = getattr(loaded, "signatures", {}).get("serving_default")
    if sig is None:
        raise ModelError(f"SavedModel {p} has no 'serving_default' signature", hint="export it with a serving signature (model.export())")
    in_items = list(sig.structured_input_signature[1].items())
    if not in_items:
        raise ModelError(f"SavedModel {p} has a serving signature without inputs", hint="export it with its inputs (model.export())")
    in_specs = [spec for _, spec in in_items]
    out_specs = sig.structured_outputs
    keys = sorted(out_specs)
    params = sum(int(np.prod(v.shape)) for v in getattr(loaded, "trainable_variables", []) + list(getattr(loaded, "non_trainable_variables", [])))
    model = LoadedModel(
        path=str(p),
        format="savedmodel",
        sha256=digest,
        saved_model_dir=str(p),
        input_shape=tuple(in_specs[0].shape),
        input_dtype=in_specs[0].dtype.name,
        output_shapes=[tuple(out_specs[k].shape) for k in keys],
        output_names=keys,
        parameter_count=params or None,
        inputs=tuple(InputSpec(str(name), tuple(spec.shape), spec.dtype.name) for name, spec in in_items),
    )
    model._serving = (loaded, sig)
    return model


def keras_layer_names(keras_model: Any) -> dict[str, str]:
    """Layer name -> class name, nested models included (the model itself excluded)."""
    out: dict[str, str] = {}

    def visit(model: Any) -> None:
        for layer in getattr(model, "layers", []):
            out.setdefault(layer.name, type(layer).__name__)
            if hasattr(layer, "layers"):
                visit(layer)

    visit(keras_model)
    out.pop(getattr(keras_model, "name", ""), None)
    return out
