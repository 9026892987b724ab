"""``edgekit optimize``: search for the smallest, fastest model within an accuracy budget.

The search, cheapest first:

1. **Reference**: the model converted unchanged to float32 TFLite. Every drop, size ratio and
   speed-up is measured against it, on the same data, runtime and machine (or device).
2. **Post-training quantization**: float16, dynamic range, int8 (per-channel weights, and
   per-tensor weights: a smaller file), int8 with int8 I/O (the app quantizes inputs itself), and
   int16x8 (int16 activations).
3. **Per-layer error**: TensorFlow's QuantizationDebugger runs each int8 op against its float op
   on the same inputs (:mod:`edgekit.export.sensitivity`); layers are ranked by their per-channel SQNR.
4. **Equalized and mixed int8**: when int8 loses more than the budget, int8 after cross-layer
   equalization (:mod:`edgekit.passes.equalize`: float outputs unchanged, channel ranges evened out);
   if that misses too (or with ``effort="full"``), the 1, 2, ... most sensitive layers kept in
   float32 (``denylisted_nodes``), until a candidate fits the accuracy budget.
5. **Training** (needs labelled ``--data``): QAT when no int8 candidate fits the accuracy budget;
   pruning with fine-tuning (channel pruning removes filters: fewer bytes and FLOPs; magnitude
   pruning only helps compressed size) when nothing meets the size or latency budget. ``--effort
   full`` tries them all, ``quick`` none. ``--budget-minutes`` stops starting new candidates.

Every candidate is measured for accuracy on the validation data, size on disk (and gzip) and
latency (interleaved rounds, locally or on ``--device``). A candidate is feasible when it meets
the accuracy drop, the latency and size limits, and is not slower than float32 (unless
``allow_slower``). The Pareto front (size, latency, drop) is reported; the recommendation is the
smallest feasible candidate (``prefer="size"``, ties within 1% broken by latency) or the fastest
(``prefer="latency"``). It is written as ``model.tflite`` and as ``recipe.yaml``, a recipe that
``edgekit run`` reruns; ``report.json``/``report.html`` say why each other candidate was rejected.

Example:
    >>> result = optimize("model.keras", "calib.npz", val="val.npz", out_dir="out/opt", max_drop=1.0,
    ...                   preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.recommended.name  # doctest: +SKIP
    'int8 per-tensor'
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset, Preprocessing
from edgekit.core.errors import DataError, EdgekitError, GateFailed, InputError
from edgekit.core.fsutil import write_bytes_atomic, write_json_atomic
from edgekit.workflows.pipeline import (
    MODEL_FILE,
    RECIPE_FILE,
    REPORT_JSON,
    Measurement,
    _row,
    _write_reports,
    accuracy_drop,
    as_loaded,
    check_labels,
    classes_of,
    ensure_loss,
    local_device_report,
    measure_accuracy,
    measure_latency,
    measurement_of,
    prepare_out_dir,
    split_validation,
    staged_dir,
)

EFFORTS = ("quick", "auto", "full")
PREFERENCES = ("size", "latency")
SLOWER_TOLERANCE = 1.10  # "not slower than float32" allows 10% for timing noise
CANDIDATES_DIR = "candidates"

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Candidate:
    """One model the search built (or chose not to build)."""

    name: str
    family: str  # reference, ptq, mixed, qat, prune
    passes: list[dict[str, Any]]  # recipe passes that reproduce it
    measurement: Measurement | None = None
    status: str = "pending"  # reference, recommended, feasible, rejected, failed, skipped
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    pareto: bool = False

    def row(self, reference: Measurement) -> dict[str, Any]:
        base: dict[str, Any] = {"name": self.name, "family": self.family, "status": self.status, "reasons": self.reasons,
                                "passes": self.passes, "seconds": round(self.seconds, 2), "details": self.details,
                                "pareto": self.pareto}
        if self.measurement is not None:
            base = {**_row(self.measurement, reference, self.status), **base}
        return base


@dataclass
class OptimizeResult:
    """What :func:`optimize` found."""

    out_dir: str
    candidates: list[Candidate]
    reference: Candidate
    recommended: Candidate | None
    report: dict[str, Any]

    @property
    def pareto(self) -> list[Candidate]:
        return [c for c in self.candidates if c.pareto]

    def to_dict(self) -> dict[str, Any]:
        return self.report


@dataclass(frozen=True)
class Budget:
    """The limits a recommended model must meet."""

    max_drop: float
    relative: bool = False
    max_latency_ms: float | None = None
    percentile: str = "p50"
    max_size_bytes: int | None = None
    size_metric: str = "bytes"  # bytes or gzip
    allow_slower: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "drop_unit": "% of float32 top-1" if self.relative else "points",
                "max_latency_ms": self.max_latency_ms, "percentile": self.percentile, "max_size_bytes": self.max_size_bytes,
                "size_metric": self.size_metric, "allow_slower": self.allow_slower}

    def size_of(self, m: Measurement) -> int:
        return m.size.gzip_bytes if self.size_metric == "gzip" else m.size.bytes

    def accuracy_reasons(self, ref: Measurement, m: Measurement) -> list[str]:
        drop = accuracy_drop(ref, m, self.relative)
        if drop is None:
            return ["accuracy not measured (no labels)"]
        if drop > self.max_drop + 1e-9:
            unit = "% of the float32 top-1" if self.relative else "points"
            return [f"accuracy drop {drop:.2f} {unit} > {self.max_drop:g} (top-1 {m.accuracy.top1:.2f}% vs float32 "  # type: ignore[union-attr]
                    f"{ref.accuracy.top1:.2f}%)"]  # type: ignore[union-attr]
        return []

    def other_reasons(self, ref: Measurement, m: Measurement) -> list[str]:
        reasons = []
        if self.max_size_bytes is not None and self.size_of(m) > self.max_size_bytes:
            reasons.append(f"size {self.size_of(m):,} {self.size_metric} > {self.max_size_bytes:,}")
        value, ref_value = m.metric(self.percentile), ref.metric(self.percentile)
        if self.max_latency_ms is not None and value is not None and value > self.max_latency_ms:
            reasons.append(f"latency {self.percentile} {value:.4f} ms > {self.max_latency_ms:g} ms")
        if not self.allow_slower and value is not None and ref_value is not None and value > ref_value * SLOWER_TOLERANCE:
            reasons.append(f"slower than float32: {self.percentile} {value:.4f} ms vs {ref_value:.4f} ms")
        return reasons


def _check_options(max_drop: float, budget_minutes: float | None, effort: str, prefer: str, size_metric: str, percentile: str,
                   epochs: int, max_latency_ms: float | None, max_size_bytes: int | None) -> None:
    if not (max_drop >= 0 and math.isfinite(max_drop)):
        raise InputError(f"--max-drop must be a number >= 0, got {max_drop}", hint="e.g. --max-drop 1.0 (points of top-1)")
    if budget_minutes is not None and not budget_minutes > 0:
        raise InputError(f"--budget-minutes must be positive, got {budget_minutes}", hint="e.g. --budget-minutes 10")
    if effort not in EFFORTS:
        raise InputError(f"--effort must be one of {', '.join(EFFORTS)}, got '{effort}'", hint="e.g. --effort auto")
    if prefer not in PREFERENCES:
        raise InputError(f"--prefer must be size or latency, got '{prefer}'", hint="e.g. --prefer size")
    if size_metric not in ("bytes", "gzip"):
        raise InputError(f"--size-metric must be bytes or gzip, got '{size_metric}'", hint="e.g. --size-metric bytes")
    if percentile not in ("p50", "p90"):
        raise InputError(f"--percentile must be p50 or p90, got '{percentile}'", hint="e.g. --percentile p90")
    if epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {epochs}", hint="fine-tuning candidates train for this many epochs")
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise InputError(f"--max-latency-ms must be positive, got {max_latency_ms}", hint="e.g. --max-latency-ms 10")
    if max_size_bytes is not None and max_size_bytes < 1:
        raise InputError(f"--max-size must be positive, got {max_size_bytes}", hint="e.g. --max-kb 300")


class _Search:
    """The state of one optimize run (candidates, timing, where files go)."""

    def __init__(self, folder: Path, loaded: Any, calibration: np.ndarray, val: Dataset, reference_out: np.ndarray | None,
                 device: Any, threads: int, progress: ProgressFn, deadline: float | None) -> None:
        self.folder = folder
        self.loaded = loaded
        self.calibration = calibration
        self.val = val
        self.reference_out = reference_out
        self.device = device
        self.threads = threads
        self.progress = progress
        self.deadline = deadline
        self.candidates: list[Candidate] = []
        self.planned = 0

    def over_budget(self, estimate_s: float = 0.0) -> bool:
        return self.deadline is not None and time.perf_counter() + estimate_s > self.deadline

    def add(self, candidate: Candidate, build: Callable[[], bytes]) -> Candidate:
        """Builds a candidate, writes it, measures its accuracy; a failure is recorded, not raised."""
        self.candidates.append(candidate)
        self.progress(f"building {candidate.name}", len(self.candidates) - 1, max(self.planned, len(self.candidates)))
        started = time.perf_counter()
        if self.over_budget():
            candidate.status = "skipped"
            candidate.reasons.append("not built: --budget-minutes was used up")
            return candidate
        try:
            flatbuffer = build()
            slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in candidate.name).strip("-")
            path = self.folder / CANDIDATES_DIR / f"{len(self.candidates):02d}-{slug}.tflite"
            write_bytes_atomic(path, flatbuffer)
            candidate.measurement = measurement_of(candidate.name, path)
            measure_accuracy([candidate.measurement], self.val, reference=self.reference_out, device=self.device, threads=self.threads)
        except EdgekitError as exc:
            candidate.status = "failed"
            candidate.reasons.append(exc.one_line())
        candidate.seconds = time.perf_counter() - started
        self.progress(f"built {candidate.name}", len(self.candidates), max(self.planned, len(self.candidates)))
        return candidate

    def measured(self) -> list[Candidate]:
        return [c for c in self.candidates if c.measurement is not None]


def _ptq(loaded: Any, mode: str, calibration: np.ndarray, *, io_type: str = "float", per_channel: bool | None = None) -> Callable[[], bytes]:
    """Builds one PTQ candidate; ``per_channel`` None is ``--weights auto`` (what the written recipe,
    which leaves ``per_channel`` unset, reproduces)."""
    def build() -> bytes:
        from edgekit.core.datatypes import IOType, QuantMode
        from edgekit.export.convert import choose_weights, convert

        q = QuantMode(mode)
        weights = choose_weights(loaded, q)[0] if per_channel is None else ("per-channel" if per_channel else "per-tensor")
        return convert(loaded, q, calibration=calibration if q.needs_data else None, io_type=IOType(io_type), per_channel=weights != "per-tensor")

    return build


def _quantize_pass(mode: str, **extra: Any) -> dict[str, Any]:
    return {"pass": "quantize", "mode": mode, **extra}


def optimize(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    val: str | os.PathLike[str] | None = None,
    device: str | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
    max_drop: float = 1.0,
    relative: bool = False,
    max_latency_ms: float | None = None,
    percentile: str = "p50",
    max_size_bytes: int | None = None,
    size_metric: str = "bytes",
    allow_slower: bool = False,
    budget_minutes: float | None = None,
    effort: str = "auto",
    prefer: str = "size",
    epochs: int = 1,
    calibration_samples: int = 100,
    max_float_layers: int = 4,
    try_equalize: bool = True,
    runs: int = 50,
    warmup: int = 5,
    rounds: int = 3,
    threads: int | None = None,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    x_key: str = "x",
    y_key: str = "y",
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    training_progress: bool = False,
    html: bool = True,
) -> OptimizeResult:
    """Searches candidates for ``model`` and writes the recommendation to ``out_dir``; see the module docstring.

    Args:
        model: the Keras model (.keras/.h5).
        data: calibration data; with labels, also the training data of the QAT and pruning candidates.
        out_dir: the output folder (absent or empty unless ``force``).
        val: labelled validation data; default: 20% of ``data`` held out (seeded).
        device: a device profile: accuracy and latency are measured there.
        max_drop, relative: the accuracy budget in points of top-1 (or percent of the float32 top-1).
        max_latency_ms, percentile: optional latency limit (p50 or p90).
        max_size_bytes, size_metric: optional size limit on the bytes on disk or the gzip bytes.
        allow_slower: accept candidates slower than float32.
        budget_minutes: wall-clock budget; no new candidate starts after it.
        effort: ``quick`` (PTQ and mixed only), ``auto`` (training candidates when PTQ misses), ``full``.
        prefer: recommend the smallest (``size``) or the fastest (``latency``) feasible candidate.
        epochs: fine-tuning epochs of the QAT and pruning candidates.
        max_float_layers: at most this many layers are kept in float by the mixed candidates.
        try_equalize: try int8 after cross-layer equalization when plain int8 misses the drop.

    Raises:
        InputError, DataError, ModelError: before any work.
        GateFailed: when no candidate meets the budget (everything is still written).
    """
    from edgekit.core.data import calibration_sample, load_dataset
    from edgekit.core.datatypes import QuantMode
    from edgekit.core.manifest import Manifest, command_line, manifest_path_for, versions
    from edgekit.core.models import load_model
    from edgekit.export.convert import convert

    _check_options(max_drop, budget_minutes, effort, prefer, size_metric, percentile, epochs, max_latency_ms, max_size_bytes)
    say: ProgressFn = progress or (lambda _m, _d, _t: None)
    started = time.perf_counter()
    deadline = started + budget_minutes * 60 if budget_minutes is not None else None
    budget = Budget(max_drop=max_drop, relative=relative, max_latency_ms=max_latency_ms, percentile=percentile,
                    max_size_bytes=max_size_bytes, size_metric=size_metric, allow_slower=allow_slower)
    profile = None
    if device is not None:
        from edgekit.devices.profiles import load_profile

        profile = load_profile(device, devices_dir=devices_dir)
    out = prepare_out_dir(out_dir, force=force, inputs=[model, data, val])
    say("loading the model and data", 0, 1)
    loaded = load_model(model, unsafe=unsafe, custom_objects=custom_objects, compile=True)
    pre = preprocessing or Preprocessing()
    kw = {"input_shape": loaded.input_shape, "preprocessing": pre, "x_key": x_key, "y_key": y_key}
    train = load_dataset(data, seed=seed, **kw)
    notes: list[str] = []
    if val is not None:
        val_ds = load_dataset(val, seed=seed, **kw)
    elif len(train) >= 50:
        train, val_ds = split_validation(train, 0.2, seed)
        notes.append(f"no --val: accuracy is measured on {val_ds.source}")
    else:
        val_ds = train
        notes.append("no --val and fewer than 50 samples: accuracy is measured on the --data samples themselves")
    if val_ds.y is None:
        raise DataError(f"optimize needs labelled validation data to keep accuracy within --max-drop; {val_ds.source} has no labels",
                        hint="pass --val VAL.npz with arrays x and y")
    classes = classes_of(loaded.keras_model) if loaded.keras_model is not None else None
    check_labels(train, classes, "--data")
    check_labels(val_ds, classes, "--val")
    can_train = train.y is not None and loaded.keras_model is not None and classes is not None
    if not can_train and effort != "quick":
        notes.append("training candidates (QAT, pruning) need a Keras classifier and labelled --data: not tried")
    calibration = calibration_sample(train, calibration_samples, seed)
    threads = threads or (profile.threads if profile is not None else 1)
    from edgekit.workflows.pipeline import _device_or_none

    run_device = _device_or_none(profile) if profile is not None else None

    with staged_dir(out) as tmp:
        (tmp / CANDIDATES_DIR).mkdir()
        # 1. the reference
        ref = Candidate("float32", "reference", [_quantize_pass("float32")], status="reference")
        ref_path = tmp / CANDIDATES_DIR / "00-float32.tflite"
        t0 = time.perf_counter()
        write_bytes_atomic(ref_path, convert(loaded, QuantMode.FLOAT32))
        ref.measurement = measurement_of("float32", ref_path)
        ref_out = measure_accuracy([ref.measurement], val_ds, device=run_device, threads=threads)
        ref.seconds = time.perf_counter() - t0
        search = _Search(tmp, loaded, calibration, val_ds, ref_out, run_device, threads, say, deadline)
        search.planned = 7

        # 2. post-training quantization
        ptq = [
            ("float16", "float16", {}, {}),
            ("dynamic", "dynamic", {}, {}),
            ("int8", "int8", {}, {}),
            ("int8 per-tensor", "int8", {"per_channel": False}, {"per_channel": False}),
            ("int8 int8-I/O", "int8", {"io_type": "int8"}, {"io_type": "int8"}),
            ("int16x8", "int16x8", {}, {}),
        ]
        for name, mode, build_kw, pass_kw in ptq:
            cand = search.add(Candidate(name, "ptq", [_quantize_pass(mode, **pass_kw)]), _ptq(loaded, mode, calibration, **build_kw))
            if name == "int8 int8-I/O":
                cand.details["note"] = ("inputs and outputs are int8: the app quantizes inputs with the model's input scale and "
                                        "zero point and dequantizes outputs (saves the QUANTIZE/DEQUANTIZE ops, a few hundred bytes)")

        # 3. per-layer error, 4. mixed int8
        layer_errors: list[dict[str, Any]] = []
        ranked: list[str] = []
        mixed = None
        if loaded.keras_model is not None:
            say("per-layer int8 error (QuantizationDebugger)", len(search.candidates), search.planned)
            try:
                from edgekit.export.sensitivity import MixedInt8

                mixed = MixedInt8(loaded, calibration)
                layer_errors = [e.to_dict() for e in mixed.layer_errors()]
                ranked = mixed.ranked_layers()
            except EdgekitError as exc:
                notes.append(f"per-layer int8 error not measured: {exc.one_line()}")
        int8_family = ("int8", "int8 per-tensor", "int8 int8-I/O")

        def accuracy_ok(names: tuple[str, ...] | None = None, families: tuple[str, ...] | None = None) -> bool:
            for c in search.measured():
                if (names is None or c.name in names) and (families is None or c.family in families):
                    if not budget.accuracy_reasons(ref.measurement, c.measurement):  # type: ignore[arg-type]
                        return True
            return False

        if try_equalize and loaded.keras_model is not None and not accuracy_ok(int8_family):
            search.planned += 1
            search.add(Candidate("int8 + equalization", "equalize", [_quantize_pass("int8", equalize=True)]),
                       _equalized_int8(loaded, calibration))
        if mixed is not None and ranked and not accuracy_ok(int8_family) and (effort == "full" or not accuracy_ok(names=("int8 + equalization",))):
            for k in range(1, min(max_float_layers, len(ranked)) + 1):
                chosen = ranked[:k]
                search.planned += 1
                cand = search.add(Candidate(f"int8 + float {','.join(chosen)}", "mixed",
                                            [_quantize_pass("int8", float_layers=chosen)], details={"float_layers": chosen}),
                                  lambda chosen=chosen: mixed.quantize(chosen))
                if cand.status == "skipped" or (
                        cand.measurement is not None and not budget.accuracy_reasons(ref.measurement, cand.measurement)):  # type: ignore[arg-type]
                    break

        # preliminary latency of what exists, to decide on training candidates
        measured = [c for c in search.measured()]
        if measured and (budget.max_latency_ms is not None):
            say("preliminary latency", len(search.candidates), search.planned)
            measure_latency([ref.measurement, *[c.measurement for c in measured]], runs=max(5, runs // 5), warmup=warmup,  # type: ignore[list-item]
                            threads=threads, rounds=1, device=run_device)

        def feasible_now(families: tuple[str, ...] | None = None) -> bool:
            for c in search.measured():
                if families is not None and c.family not in families:
                    continue
                reasons = budget.accuracy_reasons(ref.measurement, c.measurement) + [  # type: ignore[arg-type]
                    r for r in budget.other_reasons(ref.measurement, c.measurement) if not r.startswith("slower")]  # type: ignore[arg-type]
                if not reasons:
                    return True
            return False

        # 5. training candidates
        if can_train and effort != "quick":
            want_qat = effort == "full" or not accuracy_ok(int8_family + ("int8 + equalization",))
            want_prune = effort == "full" or not feasible_now()
            if effort == "auto" and want_qat and accuracy_ok(families=("mixed",)) and feasible_now(("mixed",)):
                want_qat = False  # a mixed model already fits the budget: no training needed
            ensure_loss(loaded.keras_model, None)
            jobs: list[tuple[Candidate, Callable[[], bytes]]] = []
            if want_qat:
                jobs.append((Candidate("QAT int8", "qat", [{"pass": "qat", "epochs": epochs}], details={"epochs": epochs}),
                             _qat_builder(loaded, tmp, train, val_ds, pre, epochs, seed)))
            if want_prune:
                for structure, sparsity in (("channels", 0.25), ("channels", 0.5), ("unstructured", 0.5), ("unstructured", 0.8)):
                    if structure == "unstructured" and size_metric != "gzip" and effort != "full":
                        continue  # zeros do not shrink the file on disk
                    spec = {"pass": "prune", "structure": structure, "sparsity": sparsity, "epochs": epochs}
                    jobs.append((Candidate(f"prune {structure} {int(sparsity * 100)}% + int8", "prune",
                                           [spec, _quantize_pass("int8")], details={"structure": structure, "sparsity": sparsity}),
                                 _prune_builder(loaded, train, val_ds, calibration, structure, sparsity, epochs, seed, training_progress)))
            search.planned += len(jobs)
            last_cost = 0.0
            for cand, build in jobs:
                if search.over_budget(last_cost):
                    search.candidates.append(cand)
                    cand.status = "skipped"
                    cand.reasons.append(f"not built: --budget-minutes {budget_minutes:g} would be exceeded "
                                        f"(the last training candidate took {last_cost:.0f} s)")
                    continue
                search.add(cand, build)
                last_cost = cand.seconds
        elif effort == "quick":
            notes.append("--effort quick: no training candidates (QAT, pruning) were tried")

        # 6. final latency, interleaved, everything measured
        measured = search.measured()
        say("measuring latency (interleaved rounds)", len(search.candidates), search.planned)
        dev_report = measure_latency([ref.measurement, *[c.measurement for c in measured]], runs=runs, warmup=warmup,  # type: ignore[list-item]
                                     threads=threads, rounds=rounds, device=run_device)
        if dev_report is None:
            dev_report = local_device_report() if run_device is None else None

        # 7. verdicts, Pareto front, recommendation
        for c in measured:
            c.reasons = budget.accuracy_reasons(ref.measurement, c.measurement) + budget.other_reasons(ref.measurement, c.measurement)  # type: ignore[arg-type]
            c.status = "rejected" if c.reasons else "feasible"
        pool = [ref, *measured]
        drops = {id(c): max(0.0, accuracy_drop(ref.measurement, c.measurement, False) or 0.0) for c in pool}  # type: ignore[arg-type]
        lat = {id(c): c.measurement.metric(percentile) or math.inf for c in pool}  # type: ignore[union-attr]
        size = {id(c): budget.size_of(c.measurement) for c in pool}  # type: ignore[arg-type]
        for c in pool:
            dominated = any(
                size[id(o)] <= size[id(c)] and lat[id(o)] <= lat[id(c)] and drops[id(o)] <= drops[id(c)]
                and (size[id(o)] < size[id(c)] or lat[id(o)] < lat[id(c)] or drops[id(o)] < drops[id(c)])
                for o in pool if o is not c)
            c.pareto = not dominated
        feasible = [c for c in measured if c.status == "feasible"]
        recommended = None
        why = ""
        if feasible:
            if prefer == "size":
                smallest = min(size[id(c)] for c in feasible)
                near = [c for c in feasible if size[id(c)] <= smallest * 1.01]
                recommended = min(near, key=lambda c: (lat[id(c)], drops[id(c)]))
                why = (f"the smallest feasible candidate ({size[id(recommended)]:,} {size_metric})"
                       + (f"; {len(near) - 1} other(s) within 1% of its size were slower" if len(near) > 1 else ""))
            else:
                fastest = min(lat[id(c)] for c in feasible)
                near = [c for c in feasible if lat[id(c)] <= fastest * 1.03]
                recommended = min(near, key=lambda c: (size[id(c)], drops[id(c)]))
                why = (f"the fastest feasible candidate ({percentile} {lat[id(recommended)]:.4f} ms)"
                       + (f"; the smallest of {len(near)} within 3% of that latency" if len(near) > 1 else ""))
            recommended.status = "recommended"
            for c in feasible:
                if c is not recommended:
                    c.reasons.append(f"feasible, but {recommended.name} is " + (
                        f"smaller ({size[id(recommended)]:,} vs {size[id(c)]:,} {size_metric})" if size[id(recommended)] < size[id(c)]
                        else f"as small and faster ({lat[id(recommended)]:.4f} vs {lat[id(c)]:.4f} ms)") if prefer == "size" else
                        f"feasible, but {recommended.name} is faster or as fast and smaller")
        else:
            closest = min(measured, key=lambda c: len(c.reasons), default=None)
            why = "no candidate met every limit" + (f"; closest: {closest.name} ({'; '.join(closest.reasons)})" if closest else "")

        # 8. outputs
        recipe_text = None
        if recommended is not None:
            write_bytes_atomic(tmp / MODEL_FILE, Path(recommended.measurement.path).read_bytes())  # type: ignore[union-attr]
            from edgekit.core.tflite_file import read_tflite

            info = read_tflite(tmp / MODEL_FILE)
            m = recommended.measurement
            write_json_atomic(manifest_path_for(tmp / MODEL_FILE), Manifest(
                artifact={"file": MODEL_FILE, "sha256": m.sha256, "bytes": m.size.bytes, "gzip_bytes": m.size.gzip_bytes},  # type: ignore[union-attr]
                inputs=[t.to_dict() for t in info.inputs], outputs=[t.to_dict() for t in info.outputs], preprocessing=pre.to_dict(),
                labels=list(train.labels) if train.labels else None,
                source={"path": str(model), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
                data={"path": str(data), "sha256": train.sha256, "calibration_samples": int(len(calibration))},
                options={"optimize": recommended.name, "passes": recommended.passes},
                extra={"recipe": RECIPE_FILE, "report": REPORT_JSON}).to_dict())
            recipe_text = _write_recipe(tmp / RECIPE_FILE, recommended, budget, pre, device, model, data, val)
        for c in [ref, *search.candidates]:
            if c.measurement is not None:
                c.measurement.path = str(out / Path(c.measurement.path).relative_to(tmp))
        ref.pareto = ref.pareto
        rows = [ref.row(ref.measurement), *[c.row(ref.measurement) for c in search.candidates]]  # type: ignore[arg-type]
        from edgekit.workflows.check import check_artifact

        compat = None
        if recommended is not None:
            compat = check_artifact(tmp / MODEL_FILE, "cpu").to_dict()
        report = {
            "kind": "optimize",
            "title": f"edgekit optimize {Path(model).name}",
            "budget": {**budget.to_dict(), "effort": effort, "prefer": prefer, "budget_minutes": budget_minutes, "epochs": epochs},
            "model": {"path": str(model), "sha256": loaded.sha256, "format": loaded.format, "parameters": loaded.parameter_count},
            "data": {"path": str(data), "sha256": train.sha256, "samples": len(train), "calibration_samples": int(len(calibration))},
            "val": {"source": val_ds.source, "sha256": val_ds.sha256, "samples": len(val_ds)},
            "preprocessing": pre.to_dict(),
            "recommended": next((r for r in rows if r.get("status") == "recommended"), None),
            "why_recommended": why,
            "pareto_front": [r["name"] for r in rows if r.get("pareto")],
            "ranked_layers": ranked,
            "candidates": rows,
            "layer_errors": layer_errors,
            "delegates": compat,
            "device": dev_report,
            "latency_conditions": {"runs": runs, "warmup": warmup, "rounds": rounds, "threads": threads,
                                   "where": profile.name if profile is not None else "local"},
            "artifact": {"path": str(out / MODEL_FILE), "sha256": recommended.measurement.sha256} if recommended else None,  # type: ignore[union-attr]
            "recipe_yaml": recipe_text,
            "warnings": notes,
            "versions": versions(),
            "command": command_line(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        _write_reports(tmp, report, html)
        say("done", len(search.candidates), len(search.candidates))
        result = OptimizeResult(out_dir=str(out), candidates=search.candidates, reference=ref, recommended=recommended, report=report)
        if recommended is None:
            raise GateFailed(f"optimize: {why}", hint=f"the candidates and the report are in {out}; raise --max-drop or relax the limits")
    return result


def _equalized_int8(loaded: Any, calibration: np.ndarray) -> Callable[[], bytes]:
    def build() -> bytes:
        from edgekit.core.datatypes import QuantMode
        from edgekit.export.convert import convert
        from edgekit.passes.equalize import equalize

        equalized, _pairs = equalize(loaded.keras_model)
        return convert(as_loaded(equalized, f"{loaded.path} (equalized)"), QuantMode.INT8, calibration=calibration)

    return build


def _qat_builder(loaded: Any, folder: Path, train: Dataset, val: Dataset, pre: Preprocessing, epochs: int, seed: int) -> Callable[[], bytes]:
    def build() -> bytes:
        import tempfile

        from edgekit.workflows.qat import qat

        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            target = Path(scratch) / "qat.tflite"
            qat(as_loaded(loaded.keras_model, loaded.path), target, data=train, val=val, epochs=epochs, preprocessing=pre, seed=seed,
                compare_ptq=False)
            return target.read_bytes()

    return build


def _prune_builder(loaded: Any, train: Dataset, val: Dataset, calibration: np.ndarray, structure: str, sparsity: float, epochs: int,
                   seed: int, show: bool) -> Callable[[], bytes]:
    def build() -> bytes:
        from edgekit.core.datatypes import QuantMode
        from edgekit.export.convert import convert
        from edgekit.passes.base import ModelState, PassContext
        from edgekit.passes.prune import PruneConfig, PrunePass

        p = PrunePass(PruneConfig(sparsity=sparsity, structure=structure, epochs=epochs))
        ctx = PassContext(train=train, val=val, seed=seed, show_training=show)
        p.check(ModelState(keras=loaded.keras_model), ctx)
        pruned = p.finalize(p.apply(ModelState(keras=loaded.keras_model), ctx).state).keras
        return convert(as_loaded(pruned, f"{loaded.path} (pruned)"), QuantMode.INT8, calibration=calibration)

    return build


def _write_recipe(path: Path, cand: Candidate, budget: Budget, pre: Preprocessing, device: str | None, model: Any, data: Any,
                  val: Any) -> str:
    """The recommendation as a recipe ``edgekit run`` accepts (validated before it is written)."""
    from edgekit.workflows.recipes import TARGET_MODES, recipe_from_dict

    passes = [dict(p) for p in cand.passes]
    quant = next((p for p in passes if p["pass"] == "quantize"), None)
    if cand.family == "qat" or (quant is not None and quant["mode"] in TARGET_MODES["cpu"]):
        passes.append({"pass": "export", "target": "cpu"})
    gates: dict[str, Any] = {"accuracy": {"max_drop": budget.max_drop, "relative": budget.relative}}
    if budget.max_latency_ms is not None:
        gates["latency"] = {"max_ms": budget.max_latency_ms, "percentile": budget.percentile, **({"device": device} if device else {})}
    if budget.max_size_bytes is not None:
        gates["size"] = {"max_bytes": budget.max_size_bytes, "compressed": budget.size_metric == "gzip"}
    pre_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pre.to_dict().items() if v is not None}
    slug = "".join(ch if ch.isalnum() else "-" for ch in cand.name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    data_dict: dict[str, Any] = {"preprocessing": pre_dict or None}
    recipe = recipe_from_dict({
        "schema_version": 1, "name": f"optimized-{slug}"[:64].rstrip("-"),
        "description": f"Chosen by edgekit optimize for {Path(str(model)).name}: {cand.name}.",
        "data": data_dict, "passes": passes, "gates": gates,
    }, source=str(path))
    header = (f"Written by edgekit optimize: the recommended candidate '{cand.name}'.\n"
              f"Rerun: edgekit run {path.name} --model {model} --data {data}" + (f" --val {val}" if val else "") + " -o OUT")
    text = recipe.to_yaml(header=header)
    path.write_text(text, encoding="utf-8")
    return text
