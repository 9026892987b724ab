"""``edgekit run``: a recipe's passes through the pipeline, then the measurements and the gates.

``run_recipe(recipe, model, data, out_dir=...)`` checks everything first (the recipe, the model,
the data against the model, the labels the gates and training passes need, the device profile,
every pass's own ``check``), then:

1. converts the model unchanged to float32 TFLite: the reference every gate compares against;
2. runs the passes (:func:`edgekit.passes.pipeline.run_passes`), keeping the model after each
   step (``steps/NN-pass.keras`` or ``.tflite``) and the files a pass produced;
3. writes the final artifact ``model.tflite`` with its manifest ``model.json``;
4. measures the artifact and the reference side by side on the device profile
   (:class:`edgekit.measure.bench.Bench`: accuracy, then latency in interleaved rounds) and
   checks the gates;
5. writes ``recipe.yaml`` (the resolved recipe, rerunnable), ``report.json`` and ``report.html``.

The output folder is assembled beside ``-o`` and moved into place at the end
(:func:`edgekit.workflows.outdir.staged_dir`); a failed gate still leaves the full output and then
raises :class:`~edgekit.core.errors.GateFailed` (exit code 8).

Example:
    >>> result = run_recipe("int8-cpu", "model.keras", "calib.npz", val="val.npz", out_dir="out",
    ...                     preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.passed, result.final.accuracy.top1  # doctest: +SKIP
    (True, 89.6)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.datatypes import Preprocessing, QuantMode, Serializable
from edgekit.core.errors import DataError, GateFailed, InputError, ModelError, RecipeError
from edgekit.core.fsutil import write_bytes_atomic
from edgekit.core.manifest import command_line, versions, write_artifact
from edgekit.core.models import load_model
from edgekit.devices.profiles import load_profile
from edgekit.export.convert import Conversion, convert_model
from edgekit.export.delegates import check_bytes
from edgekit.export.mediapipe import check_mediapipe_file
from edgekit.export.standard import finalize
from edgekit.measure.bench import Bench, Candidate, Measurement, MeasureSettings
from edgekit.measure.gates import GateResult, check_gates, row
from edgekit.passes.base import ModelState, Pass, PassContext, PassOutput, TrainingConfig
from edgekit.passes.distribute import WorkerDone, resolve_strategy
from edgekit.passes.pipeline import StepRecord, check_passes, run_passes
from edgekit.passes.registry import build
from edgekit.report.files import REPORT_JSON, write_reports
from edgekit.workflows.inputs import describe_device, ensure_loss, load_training_inputs, save_keras
from edgekit.workflows.outdir import prepare_out_dir, staged_dir
from edgekit.workflows.recipes import Recipe, load_recipe, recipe_source

RECIPE_FILE = "recipe.yaml"
MODEL_FILE = "model.tflite"
STEPS_DIR = "steps"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunResult(Serializable):
    """What :func:`run_recipe` did and measured; ``to_dict`` is ``report.json``."""

    recipe: Recipe
    recipe_file: str | None
    out_dir: str
    model: dict[str, Any]
    data: dict[str, Any]
    val: dict[str, Any]
    preprocessing: Preprocessing
    artifact: dict[str, Any]
    steps: tuple[StepRecord, ...]
    reference: Measurement
    final: Measurement
    gates: tuple[GateResult, ...]
    layer_errors: tuple[dict[str, Any], ...]
    delegates: dict[str, Any] | None
    device: dict[str, Any] | None
    latency_conditions: dict[str, Any]
    warnings: tuple[str, ...]
    seconds: float
    command: str = field(default_factory=command_line)
    versions: dict[str, Any] = field(default_factory=versions)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "run",
            "title": f"edgekit run {self.recipe.name}",
            "recipe": self.recipe.to_dict(),
            "recipe_source": self.recipe_file,
            "model": self.model,
            "data": self.data,
            "val": self.val,
            "preprocessing": self.preprocessing.to_dict(),
            "artifact": self.artifact,
            "steps": [s.to_dict() for s in self.steps],
            "candidates": [row(self.reference, self.reference, "reference"), row(self.final, self.reference, "final")],
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "layer_errors": list(self.layer_errors),
            "delegates": self.delegates,
            "device": self.device,
            "latency_conditions": self.latency_conditions,
            "warnings": list(self.warnings),
            "versions": self.versions,
            "command": self.command,
            "seconds": round(self.seconds, 1),
        }


def preprocessing_of(recipe: Recipe, override: Preprocessing | None) -> Preprocessing:
    """The CLI's --scale/--mean/--std if given, else the recipe's ``data.preprocessing``."""
    if override is not None:
        return override
    spec = recipe.data.preprocessing
    return Preprocessing() if spec is None else spec.resolved()


def _check_data_needs(rec: Recipe, passes: list[Pass], train: Any, val: Any) -> None:
    if rec.gates.accuracy is not None and val.y is None:
        raise DataError(f"the recipe has an accuracy gate, but {val.source} has no labels", hint="pass --val with arrays x and y")
    for p in passes:
        if p.trains and getattr(p.config, "epochs", 0) > 0 and (train is None or train.y is None):
            raise DataError(f"the {p.name} pass fine-tunes the model and needs labelled training data",
                            hint="pass --data TRAIN.npz with arrays x and y")


def _step_writer(tmp: Path, files_written: list[str]) -> Callable[[int, Pass, PassOutput, ModelState], str | None]:
    """Keeps each step's model (``steps/NN-pass.keras`` or ``.tflite``) and the files a pass produced."""

    def on_step(index: int, p: Pass, output: PassOutput, state: ModelState) -> str | None:
        for name, payload in output.files.items():
            write_bytes_atomic(tmp / name, payload)
            files_written.append(name)
        stem = tmp / STEPS_DIR / f"{index:02d}-{p.name}"
        if state.tflite is not None:
            if p.name == "export":
                return MODEL_FILE  # the export step's model is the artifact itself
            path = stem.with_suffix(".tflite")
            write_bytes_atomic(path, state.tflite)
        elif state.keras is not None:
            path = stem.with_suffix(".keras")
            save_keras(state.keras, path)
        else:
            return None
        return str(path.relative_to(tmp))

    return on_step


def recipe_strategy(name: str, passes: list[Pass]) -> str:
    """The one ``tf.distribute`` strategy of a recipe's training steps (their ``strategy`` keys; ``none`` when unset)."""
    chosen = {p.config.strategy for p in passes if isinstance(p.config, TrainingConfig) and p.config.strategy != "none"}
    if len(chosen) > 1:
        raise RecipeError(f"recipe {name}: training steps ask for different strategies ({', '.join(sorted(chosen))}); "
                          "one process trains under one strategy", hint="give every training step the same strategy key")
    return chosen.pop() if chosen else "none"


def run_recipe(
    recipe: str | os.PathLike[str] | Recipe,
    model: str | os.PathLike[str],
    data: str | os.PathLike[str] | None,
    *,
    out_dir: str | os.PathLike[str],
    val: str | os.PathLike[str] | None = None,
    device: str | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
    recipes_dir: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    training_progress: bool = False,
    html: bool = True,
) -> RunResult | WorkerDone:
    """Runs ``recipe`` on ``model``; see the module docstring.

    Args:
        recipe: a bundled recipe name, a .yaml path or a :class:`~edgekit.workflows.recipes.Recipe`.
        model: the Keras model (.keras/.h5) or SavedModel to optimize.
        data: training/calibration data (.npz x/y, .npy or an image folder).
        out_dir: the output folder (absent or empty unless ``force``).
        val: validation data; default: a held-out part of ``data`` when a pass trains, else ``data``.
        device: a device profile for latency and accuracy; overrides the recipe's ``gates.latency.device``;
            default: this machine (the ``local`` profile).
        preprocessing: overrides the recipe's ``data.preprocessing``.
        progress: called with a short message at each step (the CLI shows it).
        training_progress: show Keras training progress bars (on stderr).

    Raises:
        RecipeError, InputError, ModelError, DataError: before any work.
        GateFailed: after everything is written, when a gate fails.
    """
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    rec = load_recipe(recipe, recipes_dir=recipes_dir)
    source = recipe_source(rec)
    profile = load_profile(device or (rec.gates.latency.device if rec.gates.latency else None) or "local", devices_dir=devices_dir)
    out = prepare_out_dir(out_dir, force=force, inputs=[model, data, val])
    if data is None and rec.needs_data:
        raise InputError(f"recipe {rec.name} needs data (calibration or training): pass --data", hint="e.g. --data calib.npz")
    passes = [build(spec) for spec in rec.passes]
    dist = resolve_strategy(recipe_strategy(rec.name, passes))  # first: a multi-worker strategy configures TensorFlow's runtime
    say("loading the model and data")
    loaded = load_model(model, unsafe=unsafe, custom_objects=custom_objects, compile=rec.training)
    if loaded.keras_model is None and any(p.needs_keras for p in passes):
        raise ModelError(f"{loaded.path} is a SavedModel; training passes need the Keras model", hint="pass the .keras file")
    pre = preprocessing_of(rec, preprocessing)
    inputs = load_training_inputs(loaded, data, val, preprocessing=pre, x_key=rec.data.x_key, y_key=rec.data.y_key, seed=rec.data.seed,
                                  train_limit=rec.data.train_samples, val_limit=rec.data.val_samples, hold_out=rec.training,
                                  val_fraction=rec.data.val_fraction, min_hold_out=20)
    train, val_ds = inputs.train, inputs.val
    _check_data_needs(rec, passes, train, val_ds)
    if rec.training and loaded.keras_model is not None:
        ensure_loss(loaded.keras_model)
    state = ModelState(keras=loaded.keras_model if loaded.keras_model is not None else loaded, source=str(model))
    ctx = PassContext(train=train, val=val_ds, calibration=inputs.calibration,
                      preprocessing=pre, labels=train.labels if train is not None else None, seed=rec.data.seed,
                      teacher=loaded.keras_model, progress=say, show_training=training_progress,
                      on_epoch=lambda title, e, n, logs: say(f"{title} epoch {e}/{n}: " + _fmt_logs(logs)),
                      unsafe=unsafe, custom_objects=str(custom_objects) if custom_objects else None,
                      base_dir=Path(source).parent if source else None, distribution=dist)
    check_passes(passes, state, ctx)
    if not dist.is_chief:  # trains its share with the chief; the step files go to a private folder that is deleted
        with tempfile.TemporaryDirectory(prefix="edgekit-worker-") as scratch:
            (Path(scratch) / STEPS_DIR).mkdir()
            run_passes(passes, state, ctx, on_step=_step_writer(Path(scratch), []), checked=True)
        return WorkerDone("run", dist, str(out))
    settings = MeasureSettings(runs=rec.measure.runs, warmup=rec.measure.warmup, rounds=rec.measure.rounds, threads=rec.measure.threads)

    with staged_dir(out, force=force) as tmp:
        (tmp / STEPS_DIR).mkdir()
        say("converting the unchanged model to float32 (the reference)")
        ref_path = tmp / STEPS_DIR / "00-float32.tflite"
        write_bytes_atomic(ref_path, convert_model(loaded, Conversion(mode=QuantMode.FLOAT32)).flatbuffer)
        files: list[str] = []
        result = run_passes(passes, state, ctx, on_step=_step_writer(tmp, files), checked=True)
        final_state = result.state
        if final_state.tflite is None:
            raise ModelError(f"recipe {rec.name} produced no TFLite model", hint="add a quantize, qat or export pass")
        final_path = tmp / MODEL_FILE
        labels = list(ctx.labels) if ctx.labels else None
        finished = finalize(final_state.tflite, name=Path(str(model)).stem, description=f"edgekit recipe {rec.name} of {Path(str(model)).name}",
                            preprocessing=pre, labels=labels)
        artifact = write_artifact(
            final_path, finished.flatbuffer, preprocessing=pre, labels=labels,
            source={"path": str(model), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
            data={"path": str(data), "sha256": train.sha256 if train is not None else None} if data is not None else None,
            options={"recipe": rec.name, "passes": rec.pass_names(), "mode": final_state.kind},
            extra={"recipe": RECIPE_FILE, "report": REPORT_JSON, "standard_metadata": finished.manifest_entry()})
        if final_state.details.get("export_target") == "mediapipe":  # checked as MediaPipe checks it, with its metadata
            check = check_mediapipe_file(finished.flatbuffer)
            if check.errors:
                raise ModelError(f"MediaPipe would refuse the recipe's model: {check.errors[0].message}", hint=check.errors[0].hint)

        bench = Bench(tmp / STEPS_DIR, val=val_ds, calibration=None, device=profile, settings=settings, progress=say)
        say("measuring accuracy")
        reference = bench.add(Candidate("float32 (reference)", path=ref_path), reference=True)
        final = bench.add(Candidate(f"{rec.name} ({final_state.kind})", path=final_path))
        say("measuring latency")
        reference, final = bench.time([reference, final])
        gates = check_gates(rec.gates, reference, final, profile.name)
        reference, final = reference.moved(out / ref_path.relative_to(tmp)), final.moved(out / MODEL_FILE)

        compat = json.loads((tmp / "compatibility.json").read_text()) if "compatibility.json" in files else \
            check_bytes(final_state.tflite, "cpu").to_dict()
        header = (f"Resolved recipe '{rec.name}' as run by edgekit (every default filled in).\n"
                  f"Rerun: edgekit run {RECIPE_FILE} --model MODEL --data DATA [--val VAL] -o OUT\n"
                  f"Command: {command_line()}")
        (tmp / RECIPE_FILE).write_text(rec.to_yaml(header=header), encoding="utf-8")
        warnings = [*inputs.notes, *result.warnings]
        if "prune" in rec.pass_names() and not (rec.gates.size is not None and rec.gates.size.compressed):
            warnings.append("pruning zeros weights but the file on disk keeps them: compare gzip sizes "
                            "(size gate compressed: true) or use structure: channels to remove them")
        run = RunResult(
            recipe=rec, recipe_file=source, out_dir=str(out),
            model={"path": str(model), "sha256": loaded.sha256, "format": loaded.format, "parameters": loaded.parameter_count},
            data={"path": str(data) if data is not None else None, "sha256": train.sha256 if train is not None else None,
                  "samples": len(train) if train is not None else 0},
            val={"source": val_ds.source, "sha256": val_ds.sha256, "samples": len(val_ds), "labelled": val_ds.y is not None},
            preprocessing=pre,
            artifact={"path": str(out / MODEL_FILE), "sha256": artifact.sha256, "size": artifact.size.to_dict(), "mode": final_state.kind},
            steps=result.steps, reference=reference, final=final, gates=tuple(gates),
            layer_errors=tuple(e for s in result.steps for e in s.details.get("layer_errors", [])),
            delegates=compat, device=describe_device(profile, final.device),
            latency_conditions={"runs": settings.runs, "warmup": settings.warmup, "rounds": settings.rounds, "threads": bench.threads,
                                "where": profile.name},
            warnings=tuple(warnings), seconds=time.perf_counter() - started)
        write_reports(tmp, run.to_dict(), html=html)
        failed = [g for g in gates if not g.passed]
        if failed:
            raise GateFailed(f"recipe {rec.name}: {len(failed)} gate(s) failed: " + "; ".join(f"{g.gate}: {g.detail}" for g in failed),
                             hint=f"the artifact and the report are in {out}; relax the gate or change the recipe")
    return run


def _fmt_logs(logs: Any) -> str:
    return "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
