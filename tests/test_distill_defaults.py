"""Issue #14's must-hold: `distill --width 0.5 --baseline` on the bundled example with default settings —
the distilled student is not below the labels-only student at 3 and at 10 epochs (same seed).

4,000 Fashion-MNIST training images (Debian ``dataset-fashion-mnist``, installed by ``make system-deps``),
validated on the 10,000 test images, as bench/bench_distill_defaults.py records in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="needs Debian dataset-fashion-mnist (make system-deps installs it)")
@pytest.mark.parametrize("epochs", [3, 10])
def test_distilled_student_not_below_labels_only(runner, cli, tmp_path, epochs):
    sys.path.insert(0, str(REPO / "examples" / "fashion_mnist"))
    from train import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(DATA)
    idx = np.sort(np.random.default_rng(0).choice(len(x_train), size=4000, replace=False))
    np.savez(tmp_path / "train.npz", x=x_train[idx], y=y_train[idx])
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    out = tmp_path / "student.keras"
    result = runner.invoke(cli, ["distill", "--teacher", str(REPO / "examples" / "fashion_mnist" / "model.keras"), "--width", "0.5",
                                 "--baseline", "--epochs", str(epochs), "--data", str(tmp_path / "train.npz"), "--val",
                                 str(tmp_path / "test.npz"), "--scale", "1/255", "--no-export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    models = json.loads((tmp_path / "student.distill.report.json").read_text())["models"]
    assert models["distilled"]["top1"] >= models["baseline"]["top1"], (models["distilled"]["top1"], models["baseline"]["top1"])
