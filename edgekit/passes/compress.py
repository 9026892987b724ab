"""What pruning and clustering share: layer discovery, cloning, fine-tuning, reports, export checks.

The passes in :mod:`edgekit.passes.prune` and :mod:`edgekit.passes.cluster` work on Keras 3 models directly
(no tf-keras, no tfmot). They all follow the same small interface (``check`` before any training,
``apply`` returning a new model, ``finalize`` returning a plain Keras model) and share what is
here:

- layers are addressed by *path*: ``conv1`` for a top-level layer, ``backbone/conv1`` for a layer
  inside a nested model; ``--layers``/``--skip`` regexes are searched in these paths;
- :func:`clone_model` rebuilds a model from its config and copies the weights, so the input model
  is never touched;
- :func:`fine_tune` trains with the model's own loss and optimizer (from its compile config) and a
  rich progress bar per epoch, re-applying constraints after every batch through callbacks;
- :func:`compare_exports` converts the original and the compressed model to int8 TFLite and
  measures size, gzip size, accuracy and latency side by side (runs interleaved).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset, LatencyStats, SizeInfo
from edgekit.core.errors import DataError, InputError, ModelError
from edgekit.passes.training import (  # noqa: F401 - re-exported until prune/cluster move
    TrainSettings,
    check_training_data,
    compile_for_training,
    fit,
    resolve_loss,
)
from edgekit.core.keras_graph import (  # noqa: F401 - re-exported until prune/cluster move
    clone_model,
    compile_regex,
    iter_layers,
    kernel_variable,
    layers_by_path,
    select_paths,
    unsupported_layers,
)

SPEEDUP_NOISE = 1.10  # a p50 ratio below this is reported as "not faster"


def strip_training_state(model: Any, source: Any = None) -> Any:
    """A plain copy of ``model`` compiled with its loss and a fresh optimizer like ``source``'s (no optimizer state)."""
    plain = clone_model(model)
    loss = getattr(model, "loss", None) or getattr(source, "loss", None)
    if loss is not None:
        compile_for_training(plain, source if source is not None else model, loss, None)
    return plain


def run_pass(compression: Any, source: Any, train: Dataset | None, settings: TrainSettings, val: Dataset | None,
             loss: str | None, what: str) -> Any:
    """Checks, applies (with fine-tuning) and finalizes a pass; returns the plain Keras result.

    Every check runs before training (the loss too); the input model's weights are compared
    before and after, so a pass that touched them fails loudly instead of corrupting the user's
    model in memory.
    """
    compression.check(source, train, settings)
    if settings.epochs > 0:
        resolve_loss(source, loss)  # fail now, not after the first epoch
    before = [np.array(w) for w in source.get_weights()]
    final = compression.finalize(compression.apply(source, train, settings, val))
    if any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, source.get_weights(), strict=True)):
        raise ModelError(f"internal error: the input model's weights changed during {what}", hint="report this to edgekit")
    return final


def keras_top1(model: Any, data: Dataset | None) -> float | None:
    """Top-1 accuracy (percent) of a Keras classifier on labelled data, else None."""
    if data is None or data.y is None:
        return None
    pred = model.predict(data.x, batch_size=256, verbose=0)
    pred = pred[0] if isinstance(pred, (list, tuple)) else pred
    pred = np.asarray(pred).reshape(len(data), -1)
    if pred.shape[1] < 2:
        return None
    return float((pred.argmax(axis=1) == data.y).mean() * 100.0)


# --- reports ------------------------------------------------------------------------------------

@dataclass
class LayerReport:
    """What a pass did to one layer."""

    path: str
    layer_class: str
    parameters: int
    status: str  # pruned, clustered, rewired, skipped, unsupported
    reason: str | None = None
    target_sparsity: float | None = None
    sparsity: float | None = None
    channels_before: int | None = None
    channels_after: int | None = None
    clusters: int | None = None
    distinct_values: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ModelExport:
    """One model converted to TFLite and measured."""

    mode: str
    size: SizeInfo
    latency: LatencyStats | None = None
    top1: float | None = None
    weights: str | None = None  # per-channel / per-tensor int8 weights (edgekit.export.convert.choose_weights)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "size": self.size.to_dict(), "latency": self.latency.to_dict() if self.latency else None, "top1": self.top1,
                "weights": self.weights}


@dataclass
class ExportComparison:
    """The original and the compressed model after export, measured side by side."""

    original_float32: ModelExport
    original: ModelExport
    compressed: ModelExport
    verdict: list[str] = field(default_factory=list)

    @property
    def gzip_ratio_vs_float32(self) -> float:
        return self.original_float32.size.gzip_bytes / self.compressed.size.gzip_bytes

    @property
    def gzip_ratio_vs_original(self) -> float:
        return self.original.size.gzip_bytes / self.compressed.size.gzip_bytes

    @property
    def speedup(self) -> float | None:
        if self.original.latency is None or self.compressed.latency is None:
            return None
        return self.original.latency.p50_ms / self.compressed.latency.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_float32": self.original_float32.to_dict(),
            "original": self.original.to_dict(),
            "compressed": self.compressed.to_dict(),
            "gzip_ratio_vs_float32": round(self.gzip_ratio_vs_float32, 3),
            "gzip_ratio_vs_original_same_mode": round(self.gzip_ratio_vs_original, 3),
            "p50_speedup": round(self.speedup, 3) if self.speedup is not None else None,
            "verdict": self.verdict,
        }


def _pooled(runs: list[Any]) -> Any:
    from edgekit.runtime.local import latency_stats

    first = runs[0]
    pooled = dataclasses.replace(first, timings_ms=[t for r in runs for t in r.timings_ms])
    return latency_stats(pooled)


def compare_exports(
    original: Any,
    compressed: Any,
    calibration: np.ndarray,
    *,
    val: Dataset | None = None,
    mode: str = "int8",
    runs: int = 60,
    rounds: int = 5,
    threads: int = 1,
    structure: str | None = None,
) -> ExportComparison:
    """Converts both Keras models (float32 for the baseline, then ``mode``) and measures them.

    Latency runs alternate between the two models ``rounds`` times (``runs`` timed runs in all
    per model) so background load on a shared machine hits both alike. Each model's int8 weights
    are scaled as ``edgekit quantize --weights auto`` would (per-tensor for a model clustered with
    one codebook per layer), so the sizes are those the user gets.
    """
    from edgekit.core.fsutil import size_info
    from edgekit.measure.metrics import accuracy
    from edgekit.core.models import LoadedModel
    from edgekit.export.convert import choose_weights, convert
    from edgekit.runtime.local import run_local
    from edgekit.core.datatypes import QuantMode

    qmode = QuantMode(mode)

    def loaded(m: Any) -> LoadedModel:
        return LoadedModel(path="<memory>", format="keras", sha256="", keras_model=m, input_shape=tuple(m.inputs[0].shape))

    with tempfile.TemporaryDirectory(prefix="edgekit-compress-") as tmp:
        paths, weights = {}, {}
        for key, m, md in (("float32", original, QuantMode.FLOAT32), ("original", original, qmode), ("compressed", compressed, qmode)):
            weights[key], _ = choose_weights(loaded(m), md)
            flat = convert(loaded(m), md, calibration=calibration if md.needs_data else None, per_channel=weights[key] != "per-tensor")
            paths[key] = Path(tmp) / f"{key}.tflite"
            paths[key].write_bytes(flat)
        rounds = max(1, min(rounds, runs // 20))  # a few runs: one round (each round starts a runtime process)
        per_round = max(1, runs // rounds)
        timings: dict[str, list[Any]] = {"original": [], "compressed": []}
        for _ in range(rounds):
            for key in ("original", "compressed"):
                timings[key].append(run_local(paths[key], None, threads=threads, runs=per_round, warmup=3))
        top1: dict[str, float | None] = {"float32": None, "original": None, "compressed": None}
        if val is not None and val.y is not None:
            for key in top1:
                run = run_local(paths[key], val.x, threads=threads, runs=1, warmup=0)
                top1[key] = accuracy(run.outputs[0], val.y).top1
        result = ExportComparison(
            original_float32=ModelExport("float32", size_info(paths["float32"]), None, top1["float32"]),
            original=ModelExport(qmode.value, size_info(paths["original"]), _pooled(timings["original"]), top1["original"], weights["original"]),
            compressed=ModelExport(qmode.value, size_info(paths["compressed"]), _pooled(timings["compressed"]), top1["compressed"], weights["compressed"]),
        )
    result.verdict = verdict(result, structure)
    return result


def verdict(cmp: ExportComparison, structure: str | None) -> list[str]:
    """Plain sentences on what compression bought on disk and in latency."""
    lines = [
        f"size: {cmp.compressed.size.gzip_bytes:,} B gzipped vs {cmp.original.size.gzip_bytes:,} B for the uncompressed "
        f"{cmp.original.mode} model (x{cmp.gzip_ratio_vs_original:.2f}) and {cmp.original_float32.size.gzip_bytes:,} B for "
        f"float32 (x{cmp.gzip_ratio_vs_float32:.2f})"
    ]
    if cmp.compressed.weights == "per-tensor" and cmp.original.weights != "per-tensor":
        lines.append(
            "the clustered model was exported with per-tensor int8 weights (as `edgekit quantize` does for it by default): "
            "per-channel scales would give every channel its own codes for the shared values and lose part of the gain"
        )
    if cmp.original.size.bytes <= cmp.compressed.size.bytes * 1.02:
        lines.append(
            "on disk (uncompressed) the file is not smaller: zeros and shared values are still stored as full tensors; "
            "the saving appears only when the file is compressed (gzip, an app bundle, an OTA update)"
        )
    speed = cmp.speedup
    if speed is not None:
        o, c = cmp.original.latency, cmp.compressed.latency
        if speed < SPEEDUP_NOISE:
            why = (
                "LiteRT's CPU kernels multiply zeros and repeated values like any other weight"
                if structure != "channels" else "the removed channels did not shrink the work enough to show"
            )
            lines.append(
                f"NOT FASTER on this runtime: p50 {c.p50_ms:.3f} ms vs {o.p50_ms:.3f} ms (x{speed:.2f}, within noise); {why}"
                + ("; use --structure channels to remove filters and really cut the work" if structure != "channels" else "")
            )
        else:
            lines.append(f"faster: p50 {c.p50_ms:.3f} ms vs {o.p50_ms:.3f} ms (x{speed:.2f}, {o.runtime}, {o.threads} thread(s))")
    return lines
