"""``edgekit optimize``: search for the smallest, fastest model within an accuracy budget.

The search, cheapest first:

1. **Reference**: the model converted unchanged to float32 TFLite. Every drop, size ratio and
   speed-up is measured against it, on the same data, runtime and device.
2. **Post-training quantization**: float16, dynamic range, int8 (per-channel weights, and
   per-tensor weights: a smaller file), int8 with int8 I/O, and int16x8.
3. **Per-layer error**: TensorFlow's QuantizationDebugger runs each int8 op against its float op
   (:mod:`edgekit.export.sensitivity`); layers are ranked by their per-channel SQNR.
4. **Equalized and mixed int8**: when int8 loses more than the budget, int8 after cross-layer
   equalization; if that misses too (or with ``effort="full"``), the 1, 2, ... most sensitive
   layers kept in float32, until a candidate fits the accuracy budget.
5. **Training** (needs labelled ``--data``): QAT when no int8 candidate fits the accuracy budget;
   pruning with fine-tuning when nothing meets the size or latency budget. ``--effort full``
   tries them all, ``quick`` none. ``--budget-minutes`` stops starting new candidates.

Every candidate is a list of recipe passes built by the pipeline
(:func:`edgekit.passes.pipeline.run_passes`) and measured by the one measuring path
(:class:`edgekit.measure.bench.Bench`): accuracy on the validation data, size, and latency in
interleaved rounds on the device. The recommendation is written as ``model.tflite`` and as
``recipe.yaml``, which ``edgekit run`` reruns; ``report.json``/``report.html`` say why each other
candidate was rejected.

Example:
    >>> result = optimize("model.keras", "calib.npz", val="val.npz", out_dir="out/opt", max_drop=1.0,
    ...                   preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.recommended.name  # doctest: +SKIP
    'int8 per-tensor'
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES, rows_of, sample_rows
from edgekit.core.datatypes import Preprocessing, QuantMode, Serializable
from edgekit.core.errors import DataError, EdgekitError, GateFailed, InputError
from edgekit.core.extras import EXTRAS, has_extra, import_extra
from edgekit.core.fsutil import write_bytes_atomic
from edgekit.core.manifest import command_line, versions, write_artifact
from edgekit.core.models import LoadedModel
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.export.convert import Conversion, convert_model
from edgekit.export.delegates import check_bytes
from edgekit.export.sensitivity import MixedInt8
from edgekit.export.standard import finalize
from edgekit.measure.bench import Bench, Candidate, MeasureSettings
from edgekit.passes.base import ModelState, PassContext
from edgekit.passes.pipeline import run_passes
from edgekit.passes.registry import build, pass_class
from edgekit.report.files import REPORT_JSON, write_reports
from edgekit.workflows import optuna_search
from edgekit.workflows.inputs import classes_of, describe_device, ensure_loss, load_search_inputs
from edgekit.workflows.optimize_recipe import write_recipe
from edgekit.workflows.outdir import prepare_out_dir, staged_dir
from edgekit.workflows.ray_builds import RayBuilds, RayDeviceRunner, device_resource
from edgekit.workflows.search import Budget, Trial, check_options, closest_per_limit, mark_pareto, recommend, why_not

CANDIDATES_DIR = "candidates"
MODEL_FILE = "model.tflite"
RECIPE_FILE = "recipe.yaml"
PTQ = (  # name, the quantize pass that builds it
    ("float16", {"mode": "float16"}),
    ("dynamic", {"mode": "dynamic"}),
    ("int8", {"mode": "int8"}),
    ("int8 per-tensor", {"mode": "int8", "per_channel": False}),
    ("int8 int8-I/O", {"mode": "int8", "io_type": "int8"}),
    ("int16x8", {"mode": "int16x8"}),
)
INT8_FAMILY = ("int8", "int8 per-tensor", "int8 int8-I/O")
INT8_IO_NOTE = ("inputs and outputs are int8: the app quantizes inputs with the model's input scale and zero point and "
                "dequantizes outputs (saves the QUANTIZE/DEQUANTIZE ops, a few hundred bytes)")

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class OptimizeResult(Serializable):
    """What :func:`optimize` found; ``report`` is ``report.json``."""

    out_dir: str
    candidates: tuple[Trial, ...]
    reference: Trial
    recommended: Trial | None
    report: dict[str, Any] = field(repr=False)

    @property
    def pareto(self) -> list[Trial]:
        return [c for c in self.candidates if c.pareto]

    def to_dict(self) -> dict[str, Any]:
        return self.report


def _quantize(**kw: Any) -> dict[str, Any]:
    return {"pass": "quantize", **kw}


class _Search:
    """The state of one search: trials so far, the bench, the deadline."""

    def __init__(self, bench: Bench, state: ModelState, ctx: PassContext, budget: Budget, say: ProgressFn,
                 deadline: float | None) -> None:
        self.bench, self.state, self.ctx, self.budget, self.say, self.deadline = bench, state, ctx, budget, say, deadline
        self.trials: list[Trial] = []
        self.planned = 0
        self.mixed: MixedInt8 | None = None  # the calibrated per-layer analysis, once made
        self.builds: Any = None  # a RayBuilds pool (optimize --ray): independent candidates are built on the cluster

    def add_many(self, trials: list[Trial]) -> list[Trial]:
        """Builds and scores independent trials: all submitted to the cluster at once with ``--ray``,
        measured here in order (so the trials are those of an in-process run); else one after the other."""
        if self.builds is None or self.over_budget():
            return [self.add(t) for t in trials]
        tickets = [self.builds.submit(t.passes) for t in trials]
        return [self.add(t, functools.partial(self.builds.result, ticket)) for t, ticket in zip(trials, tickets, strict=True)]

    def over_budget(self, estimate_s: float = 0.0) -> bool:
        return self.deadline is not None and time.perf_counter() + estimate_s > self.deadline

    def _build(self, passes: list[dict[str, Any]]) -> bytes:
        configs = []
        for spec in passes:
            extra = {"layer_stats": False} if spec["pass"] == "quantize" else {}  # per-layer errors are measured once, below
            configs.append(pass_class(spec["pass"]).config_type.model_validate({**spec, **extra}))
        result = run_passes([build(c) for c in configs], self.state, self.ctx)
        assert result.state.tflite is not None
        return result.state.tflite

    def add(self, trial: Trial, flatbuffer: Callable[[], bytes] | None = None) -> Trial:
        """Builds a trial (through the pipeline unless ``flatbuffer`` is given) and scores it; failures are recorded."""
        self.say(f"building {trial.name}", len(self.trials), max(self.planned, len(self.trials) + 1))
        started = time.perf_counter()
        if self.over_budget():
            trial = trial.with_(status="skipped", reasons=("not built: --budget-minutes was used up",))
        else:
            try:
                payload = flatbuffer() if flatbuffer is not None else self._build(trial.passes)
                trial = trial.with_(measurement=self.bench.add(Candidate(trial.name, tflite=payload)))
            except EdgekitError as exc:
                trial = trial.with_(status="failed", reasons=(exc.one_line(),))
        trial = trial.with_(seconds=time.perf_counter() - started)
        self.trials.append(trial)
        self.say(f"built {trial.name}", len(self.trials), max(self.planned, len(self.trials)))
        return trial

    def measured(self, families: tuple[str, ...] | None = None, names: tuple[str, ...] | None = None) -> list[Trial]:
        return [t for t in self.trials if t.measurement is not None and (families is None or t.family in families)
                and (names is None or t.name in names)]

    def accuracy_ok(self, ref: Trial, *, families: tuple[str, ...] | None = None, names: tuple[str, ...] | None = None) -> bool:
        return any(not self.budget.accuracy_reasons(ref.measurement, t.measurement)  # type: ignore[arg-type]
                   for t in self.measured(families, names))

    def feasible_now(self, ref: Trial, families: tuple[str, ...] | None = None) -> bool:
        """Whether a trial meets the budget, leaving aside "slower than float32" (latency is not final yet)."""
        return any(not [r for r in self.budget.reasons(ref.measurement, t.measurement) if not r.startswith("slower")]  # type: ignore[arg-type]
                   for t in self.measured(families))


def _ptq_and_mixed(search: _Search, ref: Trial, loaded: LoadedModel, calibration: Any, *, effort: str, try_equalize: bool,
                   max_float_layers: int, notes: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Steps 2-4: PTQ, per-layer errors, equalized and mixed int8. Returns (layer errors, ranked layers)."""
    search.planned = 7
    ptq = [Trial(name, "ptq", [_quantize(**spec)], details={"note": INT8_IO_NOTE} if name == "int8 int8-I/O" else {}) for name, spec in PTQ]
    if has_extra("quantizer"):  # int4 weights (litert-quantizer): a candidate when the extra is installed
        search.planned += 1
        ptq.append(Trial("int4", "ptq", [{"pass": "litert_quantize", "mode": "int4"}],
                         details={"note": "int4 weights, float activations (litert-quantizer)"}))
    search.add_many(ptq)
    if not has_extra("quantizer"):
        notes.append(f"int4 candidate not tried: {EXTRAS['quantizer'].purpose} needs {EXTRAS['quantizer'].install}")
    layer_errors: list[dict[str, Any]] = []
    ranked: list[str] = []
    mixed = None
    if loaded.keras_model is not None:
        search.say("per-layer int8 error (QuantizationDebugger)", len(search.trials), search.planned)
        try:
            mixed = search.mixed = MixedInt8(loaded, calibration)
            layer_errors = [e.to_dict() for e in mixed.layer_errors()]
            ranked = mixed.ranked_layers()
        except EdgekitError as exc:
            notes.append(f"per-layer int8 error not measured: {exc.one_line()}")
    if try_equalize and loaded.keras_model is not None and not search.accuracy_ok(ref, names=INT8_FAMILY):
        search.planned += 1
        search.add(Trial("int8 + equalization", "equalize", [_quantize(mode="int8", equalize=True)]))
    if mixed is not None and ranked and not search.accuracy_ok(ref, names=INT8_FAMILY) and (
            effort == "full" or not search.accuracy_ok(ref, names=("int8 + equalization",))):
        for k in range(1, min(max_float_layers, len(ranked)) + 1):
            chosen = ranked[:k]
            search.planned += 1
            # the debugger already ran: the float layers are chosen on it (what QuantizePass does with float_layers)
            trial = search.add(Trial(f"int8 + float {','.join(chosen)}", "mixed", [_quantize(mode="int8", float_layers=chosen)],
                                     details={"float_layers": chosen}), functools.partial(mixed.quantize, chosen))
            if trial.status == "skipped" or (trial.measurement is not None and not search.budget.accuracy_reasons(
                    ref.measurement, trial.measurement)):  # type: ignore[arg-type]
                break
    return layer_errors, ranked


def _training(search: _Search, ref: Trial, *, effort: str, epochs: int, size_metric: str, budget_minutes: float | None) -> None:
    """Step 5: QAT and pruning trials, when the cheaper ones miss the budget (or with effort full)."""
    want_qat = effort == "full" or not search.accuracy_ok(ref, names=(*INT8_FAMILY, "int8 + equalization"))
    want_prune = effort == "full" or not search.feasible_now(ref)
    if effort == "auto" and want_qat and search.accuracy_ok(ref, families=("mixed",)) and search.feasible_now(ref, ("mixed",)):
        want_qat = False  # a mixed model already fits the budget: no training needed
    jobs: list[Trial] = []
    if want_qat:
        jobs.append(Trial("QAT int8", "qat", [{"pass": "qat", "epochs": epochs}], details={"epochs": epochs}))
    if want_prune:
        for structure, sparsity in (("channels", 0.25), ("channels", 0.5), ("unstructured", 0.5), ("unstructured", 0.8)):
            if structure == "unstructured" and size_metric != "gzip" and effort != "full":
                continue  # zeros do not shrink the file on disk
            spec = {"pass": "prune", "structure": structure, "sparsity": sparsity, "epochs": epochs}
            jobs.append(Trial(f"prune {structure} {int(sparsity * 100)}% + int8", "prune", [spec, _quantize(mode="int8")],
                              details={"structure": structure, "sparsity": sparsity}))
    search.planned += len(jobs)
    if search.builds is not None and jobs and not search.over_budget():  # --ray: every training candidate at once
        search.add_many(jobs)
        return
    last_cost = 0.0
    for trial in jobs:
        if search.over_budget(last_cost):
            search.trials.append(trial.with_(status="skipped", reasons=(
                f"not built: --budget-minutes {budget_minutes:g} would be exceeded (the last training candidate took {last_cost:.0f} s)",)))
            continue
        last_cost = search.add(trial).seconds


def _verdicts(search: _Search, ref: Trial, budget: Budget, prefer: str, percentile: str) -> tuple[Trial, list[Trial], Trial | None, str]:
    """Step 7: rejected/feasible, the Pareto front, the recommendation and why."""
    trials = []
    for t in search.trials:
        if t.measurement is not None:
            reasons = budget.reasons(ref.measurement, t.measurement)  # type: ignore[arg-type]
            t = t.with_(reasons=tuple(reasons), status="rejected" if reasons else "feasible")
        trials.append(t)
    pool_idx = [i for i, t in enumerate(trials) if t.measurement is not None]
    marked = mark_pareto([ref, *[trials[i] for i in pool_idx]], budget, percentile)
    ref = marked[0]
    for i, t in zip(pool_idx, marked[1:], strict=True):
        trials[i] = t
    best, why = recommend([t for t in trials if t.status == "feasible"], budget, prefer, percentile)
    if best is not None:
        for i, t in enumerate(trials):
            if t is best:
                trials[i] = best = t.with_(status="recommended")
            elif t.status == "feasible":
                trials[i] = t.with_(reasons=(*t.reasons, why_not(t, best, budget, prefer, percentile)))
    else:
        measured = [t for t in trials if t.measurement is not None]
        closest = closest_per_limit(measured, ref.measurement, budget)  # type: ignore[arg-type]
        why = ("no candidate met every limit" + (f"; closest per limit: {'; '.join(closest)}" if closest else "")
               + "; next: a fuller search (effort full) or a looser limit")
    return ref, trials, best, why


def optimize(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    val: str | os.PathLike[str] | None = None,
    device: str | DeviceProfile | None = None,
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
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    max_float_layers: int = 4,
    try_equalize: bool = True,
    tasks: tuple[str, ...] = (),
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
    search: str = "enumerate",
    n_trials: int = 24,
    study: str | None = None,
    ray_address: str | None = None,
    max_parallel: int | None = None,
) -> OptimizeResult:
    """Searches candidates for ``model`` and writes the recommendation to ``out_dir``; see the module docstring.

    Args:
        model: the Keras model (.keras/.h5).
        data: calibration data; with labels, also the training data of the QAT and pruning candidates.
        out_dir: the output folder (absent or empty unless ``force``).
        val: labelled validation data; default: 20% of ``data`` held out (seeded).
        device: a device profile (default: this machine): accuracy and latency are measured there.
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
        search: ``enumerate`` (the fixed steps above) or ``optuna``: after the PTQ and per-layer steps,
            ``n_trials`` trials of Optuna's NSGA-II over PTQ modes, float layers, pruning sparsity and
            QAT epochs, resumable from ``study`` (:mod:`edgekit.workflows.optuna_search`).
        ray_address: build independent candidates as Ray tasks on this cluster (``auto``: the local
            or ``RAY_ADDRESS`` one), at most ``max_parallel`` at once; measured here
            (:mod:`edgekit.workflows.ray_builds`). None: everything in this process.

    Raises:
        InputError, DataError, ModelError: before any work.
        GateFailed: when no candidate meets the budget (everything is still written).
    """
    check_options(max_drop, budget_minutes, effort, prefer, size_metric, percentile, epochs, max_latency_ms, max_size_bytes)
    if search not in ("enumerate", "optuna"):
        raise InputError(f"search must be enumerate or optuna, got {search!r}", hint="--search enumerate (default) or --search optuna",
                         settings=("search",))
    if search == "optuna":
        import_extra("distributed", "optuna")  # a missing extra fails before any work
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise InputError(f"--trials must be at least 1, got {n_trials!r}", hint="e.g. --trials 24", settings=("trials",))
    elif study is not None:
        raise InputError("--study needs --search optuna", hint="add --search optuna", settings=("study",))
    if max_parallel is not None and (isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1):
        raise InputError(f"--max-parallel must be at least 1, got {max_parallel!r}", hint="e.g. --max-parallel 4", settings=("max_parallel",))
    if ray_address is not None:
        import_extra("distributed", "ray")  # a missing extra fails before any work
    say: ProgressFn = progress or (lambda _m, _d, _t: None)
    started = time.perf_counter()
    deadline = started + budget_minutes * 60 if budget_minutes is not None else None
    budget = Budget(max_drop=max_drop, relative=relative, max_latency_ms=max_latency_ms, percentile=percentile,
                    max_size_bytes=max_size_bytes, size_metric=size_metric, allow_slower=allow_slower)
    profile = load_profile(device or "local", devices_dir=devices_dir)
    settings = MeasureSettings(runs=runs, warmup=warmup, rounds=rounds, threads=threads)
    out = prepare_out_dir(out_dir, force=force, inputs=[model, data, val])
    say("loading the model and data", 0, 1)
    pre = preprocessing or Preprocessing()
    found = load_search_inputs(model, data, val, preprocessing=pre, seed=seed, unsafe=unsafe, custom_objects=custom_objects, tasks=tasks,
                               x_key=x_key, y_key=y_key, show_training=training_progress)
    loaded, inputs, state, ctx = found.loaded, found.inputs, found.state, found.ctx
    train, val_ds, notes = inputs.train, inputs.val, list(inputs.notes)
    assert train is not None
    if val_ds.y is None:
        raise DataError(f"optimize needs labelled validation data to keep accuracy within --max-drop; {val_ds.source} has no labels",
                        hint="pass --val VAL.npz with arrays x and y")
    can_train = train.y is not None and loaded.keras_model is not None and classes_of(loaded.keras_model) is not None
    if not can_train and effort != "quick":
        notes.append("training candidates (QAT, pruning) need a Keras classifier and labelled --data: not tried")
    assert inputs.calibration is not None
    # the same seeded draw from the whole --data as `quantize` (before any hold-out): same model, same bytes
    calibration = sample_rows(inputs.calibration, calibration_samples, seed)

    with staged_dir(out, force=force) as tmp, contextlib.ExitStack() as stack:
        (tmp / CANDIDATES_DIR).mkdir()
        bench = Bench(tmp / CANDIDATES_DIR, val=val_ds, calibration=calibration, device=profile, settings=settings)
        builds = device_runner = None
        if ray_address is not None:
            say(f"connecting to the Ray cluster at {ray_address}", 0, 1)
            job = {"key": f"{loaded.sha256}-{train.sha256}-{seed}", "model": str(Path(model).resolve()),
                   "data": str(Path(data).resolve()), "val": str(Path(val).resolve()) if val is not None else None,
                   "unsafe": unsafe, "custom_objects": str(Path(custom_objects).resolve()) if custom_objects else None,
                   "tasks": list(tasks), "preprocessing": pre.to_dict(), "x_key": x_key, "y_key": y_key, "seed": seed}
            builds = RayBuilds.connect(ray_address, job, max_parallel=max_parallel)
            stack.callback(builds.close)
            device_runner = RayDeviceRunner.offered(builds.ray, profile.name, ray_address)  # the device is a node's resource
            if device_runner is not None:
                bench.runner = device_runner
        t0 = time.perf_counter()
        ref_path = tmp / CANDIDATES_DIR / "00-float32.tflite"
        write_bytes_atomic(ref_path, convert_model(loaded, Conversion(mode=QuantMode.FLOAT32)).flatbuffer)
        ref = Trial("float32", "reference", [_quantize(mode="float32")], status="reference",
                    measurement=bench.add(Candidate("float32", path=ref_path), reference=True))
        ref = ref.with_(seconds=time.perf_counter() - t0)
        searcher = _Search(bench, state, ctx, budget, say, deadline)
        searcher.builds = builds
        layer_errors, ranked = _ptq_and_mixed(searcher, ref, loaded, calibration, effort=effort, try_equalize=try_equalize,
                                              max_float_layers=max_float_layers, notes=notes)
        if searcher.measured() and max_latency_ms is not None:  # a preliminary latency, to decide on training candidates
            say("preliminary latency", len(searcher.trials), searcher.planned)
            quick = MeasureSettings(runs=max(5, runs // 5), warmup=warmup, rounds=1, threads=threads)
            timed = bench.time([ref.measurement, *[t.measurement for t in searcher.measured()]], settings=quick)  # type: ignore[list-item]
            ref = ref.with_(measurement=timed[0])
            searcher.trials = _with_measurements(searcher.trials, timed[1:])
        optuna_report = None
        if search == "optuna":
            if can_train:
                ensure_loss(loaded.keras_model)
            work = optuna_search.work_dir_for(out)
            fingerprint = {"model": loaded.sha256, "data": train.sha256, "val": val_ds.sha256, "budget": budget.to_dict(), "epochs": epochs,
                           "seed": seed, "device": profile.name, "max_float_layers": max_float_layers, "ranked_layers": ranked,
                           "space": optuna_search.SPACE_VERSION}
            handle = optuna_search.open_study(study, work, fingerprint, seed)
            mixed = searcher.mixed
            optuna_report = optuna_search.run_optuna(
                searcher, ref, study=handle, work=work, trials=n_trials, ranked=ranked, max_float_layers=max_float_layers,
                can_train=can_train, epochs=epochs, percentile=percentile, relative=relative,
                mixed_quantize=mixed.quantize if mixed is not None else None, notes=notes)
            optuna_report["study"] = study or "study.db"
        elif can_train and effort != "quick":
            ensure_loss(loaded.keras_model)
            _training(searcher, ref, effort=effort, epochs=epochs, size_metric=size_metric, budget_minutes=budget_minutes)
        elif effort == "quick":
            notes.append("--effort quick: no training candidates (QAT, pruning) were tried")

        say("measuring latency (interleaved rounds)", len(searcher.trials), searcher.planned)
        timed = bench.time([ref.measurement, *[t.measurement for t in searcher.measured()]])  # type: ignore[list-item]
        ref = ref.with_(measurement=timed[0])
        searcher.trials = _with_measurements(searcher.trials, timed[1:])
        ref, trials, best, why = _verdicts(searcher, ref, budget, prefer, percentile)

        recipe_text, compat, artifact = None, None, None
        if best is not None and best.measurement is not None:
            labels = list(train.labels) if train.labels else None
            finished = finalize(Path(best.measurement.path).read_bytes(), name=Path(str(model)).stem,
                                description=f"edgekit optimize: {best.name} of {Path(str(model)).name}", preprocessing=pre, labels=labels)
            flatbuffer = finished.flatbuffer
            artifact = write_artifact(
                tmp / MODEL_FILE, flatbuffer, preprocessing=pre, labels=labels,
                source={"path": str(model), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
                data={"path": str(data), "sha256": train.sha256, "calibration_samples": rows_of(calibration)},
                options={"optimize": best.name, "passes": [dict(p) for p in best.passes]},
                extra={"recipe": RECIPE_FILE, "report": REPORT_JSON, "standard_metadata": finished.manifest_entry()})
            recipe_text = write_recipe(tmp / RECIPE_FILE, best, budget, pre, device if isinstance(device, str) else None, model, data, val)
            compat = check_bytes(flatbuffer, "cpu").to_dict()
        ref = ref.with_(measurement=ref.measurement.moved(out / Path(ref.measurement.path).relative_to(tmp)))  # type: ignore[union-attr]
        trials = [t.with_(measurement=t.measurement.moved(out / Path(t.measurement.path).relative_to(tmp))) if t.measurement else t
                  for t in trials]
        best = next((t for t in trials if t.status == "recommended"), None)
        rows = [ref.row(ref.measurement), *[t.row(ref.measurement) for t in trials]]  # type: ignore[arg-type]
        report = {
            "kind": "optimize",
            "title": f"edgekit optimize {Path(model).name}",
            "budget": {**budget.to_dict(), "effort": effort, "prefer": prefer, "budget_minutes": budget_minutes, "epochs": epochs},
            "model": {"path": str(model), "sha256": loaded.sha256, "format": loaded.format, "parameters": loaded.parameter_count},
            "data": {"path": str(data), "sha256": train.sha256, "samples": len(train), "calibration_samples": rows_of(calibration)},
            "val": {"source": val_ds.source, "sha256": val_ds.sha256, "samples": len(val_ds)},
            "preprocessing": pre.to_dict(),
            "recommended": next((r for r in rows if r.get("status") == "recommended"), None),
            "why_recommended": why,
            "pareto_front": [r["name"] for r in rows if r.get("pareto")],
            "ranked_layers": ranked,
            "candidates": rows,
            "layer_errors": layer_errors,
            "search": {**(optuna_report or {"sampler": "enumeration"}),
                       "builds": ({"where": f"Ray cluster at {ray_address}", "max_parallel": searcher.builds.max_parallel}
                                  if searcher.builds is not None else {"where": "this process"}),
                       "measured": ({"where": f"Ray node offering {device_resource(profile.name)}"} if device_runner is not None
                                    else {"where": "this process"})},
            "delegates": compat,
            "device": describe_device(profile, ref.measurement.device),  # type: ignore[union-attr]
            "latency_conditions": {"runs": runs, "warmup": warmup, "rounds": rounds, "threads": bench.threads, "where": profile.name},
            "artifact": {"path": str(out / MODEL_FILE), "sha256": artifact.sha256} if artifact else None,
            "recipe_yaml": recipe_text,
            "warnings": notes,
            "versions": versions(),
            "command": command_line(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        if search == "optuna":
            optuna_search.keep_study(optuna_search.work_dir_for(out), tmp, explicit=study is not None)
        write_reports(tmp, report, html=html)
        say("done", len(trials), len(trials))
        result = OptimizeResult(out_dir=str(out), candidates=tuple(trials), reference=ref, recommended=best, report=report)
        if best is None:
            raise GateFailed(f"optimize: {why}", hint=f"the candidates and the report are in {out}; raise --max-drop or relax the limits")
    return result


def _with_measurements(trials: list[Trial], timed: list[Any]) -> list[Trial]:
    """The trials with their measurements replaced by the timed ones (same order as the measured trials)."""
    it = iter(timed)
    return [t.with_(measurement=next(it)) if t.measurement is not None else t for t in trials]
