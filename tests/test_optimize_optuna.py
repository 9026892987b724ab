"""Issue 19: `optimize --search optuna` — a multi-objective Optuna study over the candidates, resumable
after an interruption without rebuilding finished trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_fixtures import write_fixture

from conftest import default_sigint
from edgekit.core.extras import missing_extra_reason

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing_extra_reason("distributed") is not None,
                                                   reason=str(missing_extra_reason("distributed")))]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("tiny-optuna"))


def _command(tiny, out: Path, trials: int) -> list[str]:
    return [sys.executable, "-m", "edgekit", "optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]),
            "--search", "optuna", "--trials", str(trials), "--runs", "5", "--rounds", "1", "--allow-slower", "--no-equalize",
            "--seed", "3", "-o", str(out), "--quiet"]


def _complete(db: Path) -> int:
    import optuna

    if not db.is_file():
        return 0
    try:
        study = optuna.load_study(study_name="edgekit-optimize", storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - the study is being created
        return 0
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def test_an_interrupted_search_resumes_without_rebuilding_finished_trials(tiny, tmp_path):
    out = tmp_path / "opt"
    work = tmp_path / "opt.optuna"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(_command(tiny, out, 10), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 400
    while _complete(work / "study.db") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the search
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not out.exists()  # nothing half-written
    kept = sorted(work.glob("trial-*.tflite"))
    done_before = _complete(work / "study.db")
    assert done_before >= 3 and kept

    again = subprocess.run(_command(tiny, out, 10), env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "report.json").read_text())
    search = report["search"]
    assert search["sampler"] == "NSGA-II" and search["finished"] == 10
    assert search["resumed_from_study"] == len(kept)  # every finished trial measured again from its file
    assert search["built_now"] <= 10 - done_before  # and only the remaining trials were built
    resumed = [r for r in report["candidates"] if r.get("details", {}).get("resumed")]
    assert len(resumed) == len(kept)
    assert (out / "study.db").is_file() and not work.exists()
    assert report["recommended"] is not None and report["pareto_front"]


def test_a_study_of_another_search_is_refused_and_study_needs_optuna(tiny, tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import cli

    db = tmp_path / "s.db"
    first = CliRunner().invoke(cli, _command(tiny, tmp_path / "a", 2)[3:] + ["--study", f"sqlite:///{db}"])
    assert first.exit_code == 0, first.output
    other = CliRunner().invoke(cli, _command(tiny, tmp_path / "b", 2)[3:] + ["--study", f"sqlite:///{db}", "--max-drop", "3"])
    assert other.exit_code == 2 and "made for another search (different budget)" in other.output
    assert not (tmp_path / "b").exists()
    plain = CliRunner().invoke(cli, ["optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--study", "sqlite:///x.db",
                                     "-o", str(tmp_path / "c")])
    assert plain.exit_code == 2 and "--study needs --search optuna" in plain.output
