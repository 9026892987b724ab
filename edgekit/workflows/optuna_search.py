"""``optimize --search optuna``: a multi-objective search over continuous knobs, resumable from its study.

After the fixed candidates (the reference, post-training quantization, per-layer errors), Optuna's
NSGA-II sampler proposes trials over a wider space than the enumeration: the PTQ modes, int8 with
the 1..N most sensitive layers kept in float, and when the model can be trained pruning (structure
and a continuous sparsity), weight clustering (4..64 clusters per channel), distillation into a
narrower student (width 0.25..0.75 of the model's, its epochs) and QAT (its epochs). Each trial is built through the same pipeline and
measured by the same bench as the enumeration (with ``--ray``, a batch of ``--max-parallel`` trials
is asked at once and built on the cluster); its objectives are the accuracy drop against float32,
the latency (a short timing, final numbers come from the interleaved rounds at the end) and the
size, all minimized. The verdicts, the Pareto front and the recommendation are then made over every
candidate exactly as without Optuna.

The study lives in an Optuna storage (SQLite by default: ``OUT.optuna/study.db`` beside the output
folder, or ``--study URL``, any RDB URL Optuna takes) and every finished trial's ``.tflite`` is kept
beside it (``OUT.optuna/trial-N.tflite``). An interrupted search (Ctrl-C, a crash, a killed job)
resumes when the same command runs again: finished trials are measured again from their kept files,
never rebuilt, and only the remaining trials are built. A study made for another model, data or
budget is refused. After a successful run the study is copied into ``OUT/study.db`` and the working
folder is removed (an explicit ``--study`` URL is left where it is; trials it holds without a kept
file here are rebuilt from their recorded passes).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.core.errors import InputError
from edgekit.core.extras import import_extra
from edgekit.measure.bench import MeasureSettings
from edgekit.measure.gates import accuracy_drop
from edgekit.workflows.search import Trial

PTQ_MODES = ("float16", "dynamic", "int8", "int8 per-tensor", "int16x8")
STUDY_NAME = "edgekit-optimize"


#: the search space's version, part of a study's fingerprint (a study of another space is refused, not mixed)
SPACE_VERSION = 2

def work_dir_for(out: Path) -> Path:
    """Where the default study and the kept trial files live: ``OUT.optuna`` beside ``OUT``."""
    return out.with_name(out.name + ".optuna")


def _storage_url(study: str | None, work: Path) -> str:
    if study is None:
        return f"sqlite:///{(work / 'study.db').resolve()}"
    if "://" not in study:
        raise InputError(f"--study {study!r} is not a storage URL", hint="e.g. --study sqlite:///run.db (or postgresql://...)")
    return study


def open_study(study: str | None, work: Path, fingerprint: dict[str, Any], seed: int) -> Any:
    """Creates or loads the study; refuses one made for another model, data or budget.

    Raises:
        InputError: optuna is missing, the URL is bad, or the study belongs to another search.
    """
    optuna = import_extra("distributed", "optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work.mkdir(parents=True, exist_ok=True)
    url = _storage_url(study, work)
    try:
        handle = optuna.create_study(study_name=STUDY_NAME, storage=url, directions=["minimize", "minimize", "minimize"],
                                     sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=8), load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - a storage Optuna cannot open: one line
        raise InputError(f"cannot open the Optuna study at {url}: {' '.join(str(exc).split())[:200]}",
                         hint="give a writable sqlite:///PATH.db or a reachable database URL with --study") from None
    recorded = handle.user_attrs.get("fingerprint")
    if recorded is None:
        handle.set_user_attr("fingerprint", fingerprint)
    elif recorded != fingerprint:
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        raise InputError(f"the study at {url} was made for another search (different {', '.join(changed)})",
                         hint="use another --study, or delete it to start over")
    return handle


def _suggest(trial: Any, *, ranked: list[str], max_float_layers: int, can_train: bool, epochs: int) -> tuple[str, str, list[dict[str, Any]]]:
    """One point of the search space: ``(name, family, passes)``."""
    families = ["ptq", *(["mixed"] if ranked else []), *(["prune", "cluster", "distill", "qat"] if can_train else [])]
    family = trial.suggest_categorical("family", families)
    if family == "ptq":
        mode = trial.suggest_categorical("mode", list(PTQ_MODES))
        spec = {"pass": "quantize", "mode": "int8", "per_channel": False} if mode == "int8 per-tensor" else {"pass": "quantize", "mode": mode}
        return mode, "ptq", [spec]
    if family == "mixed":
        k = trial.suggest_int("float_layers", 1, max(1, min(max_float_layers, len(ranked))))
        chosen = ranked[:k]
        return f"int8 + float {','.join(chosen)}", "mixed", [{"pass": "quantize", "mode": "int8", "float_layers": chosen}]
    if family == "prune":
        structure = trial.suggest_categorical("structure", ["channels", "unstructured"])
        sparsity = round(trial.suggest_float("sparsity", 0.2, 0.85, step=0.05), 2)
        spec = {"pass": "prune", "structure": structure, "sparsity": sparsity, "epochs": epochs}
        return f"prune {structure} {int(round(sparsity * 100))}% + int8", "prune", [spec, {"pass": "quantize", "mode": "int8"}]
    if family == "cluster":
        clusters = trial.suggest_int("clusters", 4, 64, log=True)
        spec = {"pass": "cluster", "clusters": clusters, "per_channel": True, "epochs": epochs}
        return f"cluster {clusters} per channel + int8", "cluster", [spec, {"pass": "quantize", "mode": "int8"}]
    if family == "distill":  # a student of the teacher's architecture at this width, distilled from it
        width = round(trial.suggest_float("width", 0.25, 0.75, step=0.05), 2)
        distill_epochs = trial.suggest_int("distill_epochs", 1, max(1, 3 * epochs))
        spec = {"pass": "distill", "width": width, "epochs": distill_epochs}
        return f"distill width {width:g} ({distill_epochs} epoch{'s' if distill_epochs > 1 else ''}) + int8", "distill", [spec, {"pass": "quantize", "mode": "int8"}]
    qat_epochs = trial.suggest_int("qat_epochs", 1, max(1, 3 * epochs))
    return f"QAT int8 {qat_epochs} epoch{'s' if qat_epochs > 1 else ''}", "qat", [{"pass": "qat", "epochs": qat_epochs}]


def run_optuna(search: Any, ref: Trial, *, study: Any, work: Path, trials: int, ranked: list[str], max_float_layers: int,
               can_train: bool, epochs: int, percentile: str, relative: bool, mixed_quantize: Callable[[list[str]], bytes] | None,
               notes: list[str]) -> dict[str, Any]:
    """Runs the study up to ``trials`` finished trials (resuming); returns what the report says of it."""
    optuna = import_extra("distributed", "optuna")
    state = optuna.trial.TrialState
    resumed = 0
    seen: dict[str, Trial] = {t.name: t for t in search.trials}
    for old in study.get_trials(deepcopy=False, states=(state.COMPLETE,)):
        kept = work / f"trial-{old.number}.tflite"
        name = old.user_attrs.get("name")
        if name is None or name in seen:
            continue
        passes = json.loads(old.user_attrs.get("passes", "[]"))
        if kept.is_file():  # measured again from its file, never rebuilt
            data = kept.read_bytes()
            added = search.add(Trial(name, old.user_attrs.get("family", "optuna"), passes,
                                     details={"optuna_trial": old.number, "resumed": True}), lambda data=data: data)
            resumed += 1
        else:  # a study shared from elsewhere (--study URL) without its files here: rebuilt from its passes
            added = search.add(Trial(name, old.user_attrs.get("family", "optuna"), passes, details={"optuna_trial": old.number, "rebuilt": True}))
        seen[name] = added
    finished = len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.FAIL, state.PRUNED)))
    built = 0
    quick = MeasureSettings(runs=max(5, search.bench.settings.runs // 5), warmup=search.bench.settings.warmup, rounds=1,
                            threads=search.bench.settings.threads)
    search.planned += max(0, trials - finished)
    pool: Any = getattr(search, "builds", None)  # optimize --ray: a batch of trials is built on the cluster at once
    batch = pool.max_parallel if pool is not None else 1
    while finished < trials and not search.over_budget():
        asked: list[tuple[Any, str, str, list[dict[str, Any]], int | None]] = []
        for _ in range(min(batch, trials - finished)):
            trial = study.ask()
            name, family, passes = _suggest(trial, ranked=ranked, max_float_layers=max_float_layers, can_train=can_train, epochs=epochs)
            trial.set_user_attr("name", name)
            trial.set_user_attr("family", family)
            trial.set_user_attr("passes", json.dumps(passes))
            ticket = None
            if pool is not None and name not in seen and family != "mixed" and name not in [a[1] for a in asked]:
                ticket = pool.submit(passes)
            asked.append((trial, name, family, passes, ticket))
        for trial, name, family, passes, ticket in asked:
            done = seen.get(name)
            if done is None:  # a new point: build and measure it (a point proposed again is answered from the first)
                build: Callable[[], bytes] | None = None
                if ticket is not None:
                    build = functools.partial(pool.result, ticket)
                elif family == "mixed" and mixed_quantize is not None:
                    build = functools.partial(mixed_quantize, passes[0]["float_layers"])
                done = search.add(Trial(name, family, passes, details={"optuna_trial": trial.number}), build)
                seen[name] = done
                built += 1
                if done.measurement is not None:
                    timed = search.bench.time([done.measurement], settings=quick)[0]
                    done = done.with_(measurement=timed)
                    search.trials[-1] = done
                    seen[name] = done
                    shutil.copyfile(done.measurement.path, work / f"trial-{trial.number}.tflite")
            if done.measurement is None:
                study.tell(trial, state=state.FAIL)
            else:
                m = done.measurement
                drop = accuracy_drop(ref.measurement, m, relative) if ref.measurement is not None else None
                latency = m.metric(percentile)
                study.tell(trial, [drop if drop is not None else math.inf, latency if latency is not None else math.inf,
                                   float(search.budget.size_of(m))])
            finished += 1
    if finished < trials:
        notes.append(f"Optuna search stopped at {finished} of {trials} trials: --budget-minutes was used up")
    return {"sampler": "NSGA-II", "trials": trials, "finished": finished, "built_now": built, "resumed_from_study": resumed}


def keep_study(work: Path, out_tmp: Path, explicit: bool) -> None:
    """After a successful search: the default study goes into the output folder (an explicit ``--study``
    stays where it is); the working folder with the kept trial files is removed (OUT/candidates has them)."""
    db = work / "study.db"
    if not explicit and db.is_file():
        shutil.copyfile(db, out_tmp / "study.db")
    shutil.rmtree(work, ignore_errors=True)
