"""``edgekit quantize``: post-training quantization of a model to one .tflite file and its manifest.

A one-pass pipeline (:class:`~edgekit.passes.quantize.QuantizePass`); this module loads the model
and the calibration sample, runs the pass and writes the artifact and its manifest.

Example:
    >>> result = quantize("model.keras", "model_int8.tflite", mode="int8",
    ...                   data="calib.npz", preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.artifact.size.bytes  # doctest: +SKIP
    230512
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.data import calibration_sample, load_dataset
from edgekit.core.datatypes import Artifact, Dataset, IOType, Preprocessing, QuantMode
from edgekit.core.errors import InputError
from edgekit.core.fsutil import check_output_path
from edgekit.core.io_order import model_io_entry
from edgekit.core.manifest import manifest_path_for, write_artifact
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.export.convert import check_mode_options, check_weights_option
from edgekit.export.standard import finalize
from edgekit.passes.base import ModelState, PassContext
from edgekit.passes.pipeline import run_passes
from edgekit.passes.quantize import QuantizeConfig, QuantizePass


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` produced."""

    artifact: Artifact
    info: TfliteInfo
    mode: QuantMode
    io_type: IOType
    conversion_seconds: float
    calibration_samples: int
    warnings: list[str] = field(default_factory=list)
    weights: str | None = None  # per-channel / per-tensor (modes with int8 weights), None otherwise
    weights_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.to_dict(),
            "mode": self.mode.value,
            "io_type": self.io_type.value,
            "weights": self.weights,
            "weights_reason": self.weights_reason,
            "conversion_seconds": round(self.conversion_seconds, 3),
            "calibration_samples": self.calibration_samples,
            "inputs": [t.to_dict() for t in self.info.inputs],
            "outputs": [t.to_dict() for t in self.info.outputs],
            "ops": self.info.op_histogram(),
            "warnings": self.warnings,
        }


def quantize(
    model: str | os.PathLike[str] | LoadedModel,
    output: str | os.PathLike[str],
    *,
    config: QuantizeConfig | None = None,
    mode: QuantMode | str = QuantMode.INT8,
    data: str | os.PathLike[str] | Dataset | None = None,
    samples: int = 100,
    seed: int = 0,
    tasks: tuple[str, ...] | list[str] = (),
    io_type: IOType | str = IOType.FLOAT,
    preprocessing: Preprocessing | None = None,
    allow_select_tf_ops: bool = False,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    weights: str = "auto",
) -> QuantizeResult:
    """Quantizes a model and writes ``output`` (.tflite) and its manifest (``output`` with .json).

    A one-pass pipeline: :class:`~edgekit.passes.quantize.QuantizePass` with ``config`` (what
    ``edgekit quantize`` builds from its options), or with a config made from ``mode``,
    ``io_type``, ``samples``, ``weights`` and ``allow_select_tf_ops`` when ``config`` is None.
    ``weights`` (auto, per-channel, per-tensor) sets how int8 weights are scaled; ``auto`` is
    per-channel except for models clustered with one codebook per layer (:func:`choose_weights`).
    Every check (options, paths, model, data) runs before conversion; the files are written
    atomically, and an existing output is replaced only with ``force``.
    """
    if config is None:
        check_mode_options(QuantMode(mode), IOType(io_type), data is not None)
        check_weights_option(QuantMode(mode), weights)
        if samples < 1:
            raise InputError(f"--samples must be at least 1, got {samples}", hint="use e.g. --samples 100")
        config = QuantizeConfig.model_validate({"mode": QuantMode(mode).value, "io_type": IOType(io_type).value, "calibration_samples": samples,
                                                "weights": weights, "allow_select_tf_ops": allow_select_tf_ops, "layer_stats": False})
    chosen_mode, chosen_io = QuantMode(config.mode), IOType(config.io_type)
    check_mode_options(chosen_mode, chosen_io, data is not None)
    check_weights_option(chosen_mode, config.weights)
    samples = config.calibration_samples
    src_path = model.path if isinstance(model, LoadedModel) else model
    data_path = data.source if isinstance(data, Dataset) else data
    out = check_output_path(
        output, inputs=[src_path, data_path], force=force, suffixes=(".tflite",),
        sidecars=[manifest_path_for(Path(output))],
    )
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    if tasks:
        loaded.choose_tasks(tasks)
    pre = preprocessing or Preprocessing()
    dataset: Dataset | None = None
    calibration = None
    if data is not None:
        # read only the calibration sample: a memory-mapped .npy/.npz or an image folder far larger
        # than memory is never loaded whole (the same seeded draw as calibration_sample)
        dataset = data if isinstance(data, Dataset) else load_dataset(
            data, signature=loaded.signature, preprocessing=pre, x_key=x_key, y_key=y_key,
            limit=samples if chosen_mode.needs_data else None, seed=seed, need_labels=False,
        )
        pre = dataset.preprocessing
        calibration = calibration_sample(dataset, samples, seed)
    labels = list(dataset.labels) if dataset is not None and dataset.labels else None

    # a SavedModel travels as its LoadedModel (only the conversion passes take one)
    state = ModelState(keras=loaded.keras_model if loaded.keras_model is not None else loaded, source=str(src_path))
    ctx = PassContext(calibration=calibration, preprocessing=pre, labels=tuple(labels) if labels else None, seed=seed)
    done = run_passes([QuantizePass(config)], state, ctx)
    step = done.steps[0]
    flatbuffer = done.state.tflite
    assert flatbuffer is not None
    granularity, granularity_reason = step.details["weights"], step.details["weights_reason"]
    calibrated = int(step.details["calibration_samples"])
    final = finalize(flatbuffer, name=Path(str(src_path)).stem, description=f"{chosen_mode.value} of {Path(str(src_path)).name} (edgekit quantize)",
                     preprocessing=pre, labels=labels)
    flatbuffer = final.flatbuffer
    artifact = write_artifact(
        out, flatbuffer, preprocessing=pre, labels=labels, extra={"standard_metadata": final.manifest_entry(), "model_io": model_io_entry(loaded, calibration)},
        source={"path": str(src_path), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
        data=({"path": str(dataset.source), "sha256": dataset.sha256, "samples": len(dataset), "calibration_samples": calibrated}
              if dataset is not None else None),
        options={"mode": chosen_mode.value, "io_type": chosen_io.value, "samples": samples, "seed": seed,
                 "allow_select_tf_ops": config.allow_select_tf_ops, "weights": granularity, "weights_reason": granularity_reason},
        overwrite=force,  # without --force, "exists" is decided in one step with the final link: one racing writer wins
    )
    info = parse_tflite_bytes(flatbuffer, str(out))
    return QuantizeResult(
        artifact=artifact, info=info, mode=chosen_mode, io_type=chosen_io, conversion_seconds=step.seconds,
        calibration_samples=calibrated, warnings=[*done.warnings, *final.notes], weights=granularity, weights_reason=granularity_reason,
    )
