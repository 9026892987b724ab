"""``edgekit quantize --mode int4|int8-selective``: weights below 8 bits and per-layer precision (litert-quantizer).

The model is converted to float32 TFLite first (edgekit's one converter setup), then rewritten by
litert-quantizer (:mod:`edgekit.export.quantizer`, ``pip install 'edgekit[quantizer]'``):

- ``int4``: int4 weights, float activations; ``granularity`` ``channel`` or ``block32/64/128``;
- ``int8-selective``: a rule file (``rules``) choosing int8 or int16 activations, float, int4 or
  dynamic int8 weights per layer; static precisions calibrate on the same seeded sample as int8.

The artifact gets standard metadata and a manifest (the recipe litert-quantizer ran, the per-layer
precision), like every artifact; ``edgekit validate`` measures it like any other.

Example:
    >>> result = quantize_mixed("model.keras", "model_int4.tflite", mode="int4")  # doctest: +SKIP
    >>> result.to_dict()["weights"]  # doctest: +SKIP
    {'INT4': 243600, 'FLOAT32': 442}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES, load_dataset
from edgekit.core.datatypes import Artifact, Preprocessing
from edgekit.core.errors import InputError
from edgekit.core.extras import import_extra
from edgekit.core.fsutil import check_output_path
from edgekit.core.manifest import manifest_path_for, write_artifact
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.export.quantizer import INT4_GRANULARITIES, QUANTIZER_MODES, load_rules
from edgekit.export.standard import finalize
from edgekit.passes.base import ModelState, PassContext
from edgekit.passes.litert_quantize import LitertQuantizeConfig, LitertQuantizePass
from edgekit.passes.pipeline import run_passes


@dataclass(frozen=True)
class MixedQuantizeResult:
    """What :func:`quantize_mixed` wrote."""

    artifact: Artifact
    info: TfliteInfo
    mode: str
    details: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.to_dict(), "mode": self.mode, "weights": self.info.weight_dtypes(),
                "inputs": [t.to_dict() for t in self.info.inputs], "outputs": [t.to_dict() for t in self.info.outputs],
                "ops": self.info.op_histogram(), "quantizer": self.details, "warnings": self.warnings}


def quantize_mixed(
    model: str | os.PathLike[str] | LoadedModel,
    output: str | os.PathLike[str],
    *,
    mode: str = "int4",
    rules: str | os.PathLike[str] | None = None,
    granularity: str = "channel",
    data: str | os.PathLike[str] | None = None,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
) -> MixedQuantizeResult:
    """Quantizes ``model`` with litert-quantizer and writes ``output`` and its manifest.

    Raises:
        InputError: a bad mode/granularity/rule file, calibration data missing for static
            precisions, or the ``quantizer`` extra missing (with its ``pip install``).
        ConversionError: the converter or litert-quantizer failed.
    """
    if mode not in QUANTIZER_MODES:
        raise InputError(f"mode {mode!r} is not a litert-quantizer mode", hint=f"use one of {', '.join(QUANTIZER_MODES)}", settings=("mode",))
    if granularity not in INT4_GRANULARITIES:
        raise InputError(f"granularity {granularity!r} is unknown", hint=f"use one of {', '.join(INT4_GRANULARITIES)}", settings=("granularity",))
    if mode == "int4" and rules is not None:
        raise InputError("a rule file is for mode int8-selective", hint="drop the rules, or use mode int8-selective", settings=("rules",))
    if mode == "int8-selective" and rules is None:
        raise InputError("mode int8-selective needs a rule file (per-layer precision)", hint="give rules rules.yaml (see docs)",
                         settings=("rules",))
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}", hint="e.g. samples 100", settings=("samples",))
    import_extra("quantizer")
    parsed = load_rules(rules) if rules is not None else None
    if parsed is not None and parsed.needs_calibration and data is None:
        raise InputError("int8/int16 activations in the rule file need calibration data", hint="give data calib.npz", settings=("data",))
    src_path = model.path if isinstance(model, LoadedModel) else model
    out = check_output_path(output, inputs=[src_path, data], force=force, suffixes=(".tflite",), sidecars=[manifest_path_for(Path(output))])
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    pre = preprocessing or Preprocessing()
    dataset = load_dataset(data, signature=loaded.signature, preprocessing=pre, x_key=x_key, y_key=y_key) if data is not None else None
    labels = list(dataset.labels) if dataset is not None and dataset.labels else None
    config = LitertQuantizeConfig.model_validate({"pass": "litert_quantize", "mode": mode, "granularity": granularity,
                                                  "rules": parsed.model_dump() if parsed is not None else None, "calibration_samples": samples})
    state = ModelState(keras=loaded.keras_model if loaded.keras_model is not None else loaded, source=str(src_path))
    ctx = PassContext(calibration=dataset.x if dataset is not None else None, preprocessing=pre, labels=tuple(labels) if labels else None,
                      seed=seed)
    done = run_passes([LitertQuantizePass(config)], state, ctx)
    details = done.steps[0].details
    flatbuffer = done.state.tflite
    assert flatbuffer is not None
    description = f"{mode}{f' ({granularity})' if mode == 'int4' else ''} of {Path(str(src_path)).name} (edgekit quantize, litert-quantizer)"
    finished = finalize(flatbuffer, name=Path(str(src_path)).stem, description=description, preprocessing=pre, labels=labels)
    artifact = write_artifact(
        out, finished.flatbuffer, preprocessing=pre, labels=labels,
        source={"path": str(src_path), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
        data=({"path": str(dataset.source), "sha256": dataset.sha256, "samples": len(dataset),
               "calibration_samples": details["calibration_samples"]} if dataset is not None else None),
        options={"mode": mode, "granularity": granularity if mode == "int4" else None, "rules": str(rules) if rules else None,
                 "samples": samples, "seed": seed},
        extra={"quantizer": {"recipe": details["recipe"], "layers": details["layers"]}, "standard_metadata": finished.manifest_entry()},
        overwrite=force,
    )
    return MixedQuantizeResult(artifact=artifact, info=parse_tflite_bytes(finished.flatbuffer, str(out)), mode=mode,
                               details={k: v for k, v in details.items() if k not in ("recipe",)}, warnings=list(finished.notes))
