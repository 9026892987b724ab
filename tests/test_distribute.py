"""Issue 19: the training passes under tf.distribute — one training step for every pass and strategy.

- the distributed step computes what ``fit`` computes (2 mirrored CPU replicas vs one process);
- ``prune``, ``cluster``, ``distill`` (with a hint: the distilling model's own step) and ``qat`` from
  the CLI under ``--strategy mirrored`` on 2 CPU replicas keep their constraints and write the
  same kind of model;
- ``qat --strategy multiworker`` with two worker processes on 127.0.0.1, inside a private network
  namespace: the int8 model's accuracy is within 1 point of a single-process run (same seed and
  epochs), only the chief writes files;
- bad strategy input is a one-line error with exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fashion_mnist"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "EDGEKIT_CPU_REPLICAS")}
    return {**env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _edgekit(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, env=env or _env(), timeout=timeout)


EQUIVALENCE = textwrap.dedent("""
    import json, os
    os.environ["EDGEKIT_CPU_REPLICAS"] = "2"
    import numpy as np
    from edgekit.passes import distribute
    dist = distribute.resolve_strategy("mirrored")
    import keras
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")

    def make():
        keras.utils.set_random_seed(3)
        m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        m.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    plain = make()
    fitted = plain.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0).history["loss"]
    with distribute.scope(dist):
        mirrored = make()
        history = distribute.train(mirrored, x, y, batch_size=32, epochs=3, shuffle=False).history["loss"]
    distribute.release(mirrored)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(plain.get_weights(), mirrored.get_weights()))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(make().get_weights(), mirrored.get_weights()))
    print(json.dumps({"diff": diff, "moved": moved, "loss": history, "fit_loss": fitted, "replicas": dist.replicas,
                      "predicts": mirrored.predict(x[:5], verbose=0).shape[0]}))
""")


def test_the_distributed_step_computes_what_fit_computes(tmp_path):
    """2 replicas x 32 samples per step = fit's batch of 64: the same weights after 3 epochs (gradients are
    averaged over the global batch, not summed over replicas)."""
    done = subprocess.run([sys.executable, "-c", EQUIVALENCE], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["moved"] > 0.05  # it trained
    assert out["diff"] < 1e-4, out  # summed gradients would double every step
    assert np.allclose(out["loss"], out["fit_loss"], atol=1e-4), out
    assert out["predicts"] == 5  # the released model predicts without the strategy


def _sparsity(path: Path, layer: str) -> float:
    import keras

    kernel = keras.saving.load_model(path).get_layer(layer).get_weights()[0]
    return float(np.mean(kernel == 0))


@pytest.mark.slow
def test_every_training_command_under_mirrored_replicas(tiny, tmp_path):
    """prune, cluster, distill (with a hint: its own train step) and qat on 2 mirrored CPU replicas."""
    env = _env(EDGEKIT_CPU_REPLICAS="2")
    common = ["--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255", "--strategy", "mirrored", "--json"]
    runs = {
        "prune": ["prune", str(tiny["model"]), "--sparsity", "0.5", "--epochs", "2", "--batch-size", "16", "--no-export",
                  "-o", str(tmp_path / "pruned.keras"), *common],
        "cluster": ["cluster", str(tiny["model"]), "--clusters", "4", "--epochs", "1", "--batch-size", "32", "--no-export",
                    "-o", str(tmp_path / "clustered.keras"), *common],
        "distill": ["distill", "--teacher", str(tiny["model"]), "--width", "0.5", "--hint", "conv:conv", "--epochs", "3",
                    "--batch-size", "32", "--no-export", "-o", str(tmp_path / "student.keras"), *common],
        "qat": ["qat", str(tiny["model"]), "--epochs", "1", "--batch-size", "32", "--no-ptq", "-o", str(tmp_path / "qat.tflite"),
                *common],
    }
    results = {}
    for name, args in runs.items():
        done = _edgekit(*args, env=env)
        assert done.returncode == 0, (name, done.stderr[-3000:])
        results[name] = json.loads(done.stdout)
    prune = results["prune"]
    assert prune["config"]["strategy"] == "mirrored"
    assert _sparsity(tmp_path / "pruned.keras", "fc") == pytest.approx(0.5, abs=0.01)  # masks held through the distributed step
    assert prune["top1"]["after"] >= 75.0  # 2 x 16 per step, as one process with --batch-size 32 (84.5 there)
    import keras

    clustered = keras.saving.load_model(tmp_path / "clustered.keras")
    assert len(np.unique(clustered.get_layer("fc").get_weights()[0])) <= 4  # cluster constraints held
    distill = results["distill"]
    history = distill["history"]["distilled"]["loss"]
    assert len(history) == 3 and history[-1] < history[0]
    assert distill["settings"]["strategy"] == "mirrored"
    qat = results["qat"]
    assert qat["training"]["distribution"] == {"strategy": "mirrored", "replicas": 2, "workers": 1, "task_index": 0}
    assert next(r for r in qat["comparison"] if r["variant"] == "qat-int8")["top1"] >= 80.0
    assert json.loads((tmp_path / "qat.json").read_text())["options"]["strategy"] == "mirrored"


def _why_no_namespace() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed for a private network namespace"
    if os.geteuid() != 0:
        return "a private network namespace needs root (.ci/run runs as root)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare --net is not allowed here: {probe.stderr.decode().strip()[:200]}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_why_no_namespace() is not None, reason=str(_why_no_namespace()))
def test_multiworker_qat_matches_a_single_process_run(tmp_path):
    """Must hold: qat under MultiWorkerMirroredStrategy, two workers on 127.0.0.1 in a private network
    namespace; the int8 accuracy is within 1 point of one process with the same seed and epochs."""
    qat = (f"{sys.executable} -m edgekit qat {EXAMPLE}/model.keras --data {EXAMPLE}/calib.npz --val {EXAMPLE}/val.npz "
           "--scale 1/255 --epochs 2 --seed 0 --no-ptq --json")
    workers = ", ".join(f'\\"127.0.0.1:{port}\\"' for port in (24561, 24562))
    lines = ["set -u", "ip link set lo up", f"export PYTHONPATH={REPO} TF_CPP_MIN_LOG_LEVEL=3"]
    for index in (0, 1):
        (tmp_path / f"w{index}").mkdir()
        lines.append(f'TF_CONFIG="{{\\"cluster\\": {{\\"worker\\": [{workers}]}}, \\"task\\": {{\\"type\\": \\"worker\\", '
                     f'\\"index\\": {index}}}}}" {qat} --strategy multiworker -o {tmp_path}/w{index}/q.tflite '
                     f'> {tmp_path}/w{index}.out 2> {tmp_path}/w{index}.err &')
        lines.append(f"pid{index}=$!")
    lines += ["wait $pid0; rc0=$?", "wait $pid1; rc1=$?", 'echo "$rc0 $rc1" > ' + f"{tmp_path}/rc.txt"]
    script = tmp_path / "workers.sh"
    script.write_text("\n".join(lines) + "\n")
    done = subprocess.run(["unshare", "--net", "bash", str(script)], capture_output=True, text=True, timeout=900)
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("w*.err")}
    assert done.returncode == 0 and (tmp_path / "rc.txt").read_text().split() == ["0", "0"], (done.stderr, logs)
    chief = json.loads((tmp_path / "w0.out").read_text())
    worker = json.loads((tmp_path / "w1.out").read_text())
    assert worker == {"command": "qat", "output": None, "chief_output": f"{tmp_path}/w1/q.tflite",
                      "distribution": {"strategy": "multiworker", "replicas": 2, "workers": 2, "task_index": 1}, "written": False}
    assert not any((tmp_path / "w1").iterdir())  # only the chief writes
    assert chief["training"]["distribution"] == {"strategy": "multiworker", "replicas": 2, "workers": 2, "task_index": 0}
    assert (tmp_path / "w0" / "q.tflite").is_file()
    single = _edgekit(*f"qat {EXAMPLE}/model.keras --data {EXAMPLE}/calib.npz --val {EXAMPLE}/val.npz --scale 1/255 --epochs 2 "
                       f"--seed 0 --no-ptq --json -o {tmp_path}/single.tflite".split())
    assert single.returncode == 0, single.stderr[-2000:]
    one = json.loads(single.stdout)

    def int8_top1(report: dict) -> float:
        return next(r for r in report["comparison"] if r["variant"] == "qat-int8")["top1"]

    assert abs(int8_top1(chief) - int8_top1(one)) <= 1.0, (int8_top1(chief), int8_top1(one))
    assert int8_top1(chief) >= 85.0


def test_multiworker_without_tf_config_is_a_one_line_error(tiny, tmp_path):
    done = _edgekit("qat", str(tiny["model"]), "--data", str(tiny["train"]), "--epochs", "1", "--strategy", "multiworker",
                    "-o", str(tmp_path / "q.tflite"))
    assert done.returncode == 2, done.stderr
    assert "needs TF_CONFIG" in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())
    bad = _edgekit("prune", str(tiny["model"]), "--data", str(tiny["train"]), "--sparsity", "0.5", "--strategy", "multiworker",
                   "-o", str(tmp_path / "p.keras"), env=_env(TF_CONFIG="{not json"))
    assert bad.returncode == 2 and "TF_CONFIG is not a JSON object" in bad.stderr, bad.stderr
    replicas = _edgekit("cluster", str(tiny["model"]), "--data", str(tiny["train"]), "--clusters", "4", "--strategy", "mirrored",
                        "-o", str(tmp_path / "c.keras"), env=_env(EDGEKIT_CPU_REPLICAS="two"))
    assert replicas.returncode == 2 and "EDGEKIT_CPU_REPLICAS" in replicas.stderr, replicas.stderr
    assert not any(tmp_path.iterdir())


RECIPE = """schema_version: 1
name: prune-qat-mirrored
passes:
  - pass: prune
    sparsity: 0.5
    epochs: 1
    strategy: {prune}
  - pass: qat
    epochs: 1
    strategy: mirrored
  - pass: export
    target: cpu
measure:
  runs: 5
  rounds: 1
"""


@pytest.mark.slow
def test_a_recipe_trains_its_steps_under_the_strategy_key(tiny, tmp_path):
    recipe = tmp_path / "mirrored.yaml"
    recipe.write_text(RECIPE.format(prune="mirrored"))
    done = _edgekit("run", str(recipe), "--model", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]),
                    "--scale", "1/255", "-o", str(tmp_path / "out"), "--json", "--quiet", env=_env(EDGEKIT_CPU_REPLICAS="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [s["config"]["strategy"] for s in report["steps"][:2]] == ["mirrored", "mirrored"]
    assert (tmp_path / "out" / "model.tflite").is_file()
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(RECIPE.format(prune="multiworker"))
    refused = _edgekit("run", str(mixed), "--model", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255",
                       "-o", str(tmp_path / "mixed-out"))
    assert refused.returncode == 9 and "different strategies" in refused.stderr, refused.stderr
    assert not (tmp_path / "mixed-out").exists()


def _gpus() -> int:
    """GPUs on this host, as nvidia-smi lists them (no TensorFlow start at collection time)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU ")) if listed.returncode == 0 else 0


@pytest.mark.slow
@pytest.mark.skipif(_gpus() == 0, reason="needs a GPU (nvidia-smi lists none): --strategy mirrored then trains on every GPU of the host")
def test_mirrored_trains_on_every_gpu_of_the_host(tiny, tmp_path):
    done = _edgekit("qat", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255", "--epochs", "1",
                    "--no-ptq", "--strategy", "mirrored", "--json", "-o", str(tmp_path / "q.tflite"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["training"]["distribution"]["replicas"] == _gpus()
    assert next(r for r in report["comparison"] if r["variant"] == "qat-int8")["top1"] >= 80.0


@pytest.mark.slow
def test_a_two_output_model_trains_under_mirrored_replicas(tmp_path):
    """Several outputs: Keras builds a loss tracker per output on first use, outside the replicas' step."""
    import model_zoo

    model, data, _ = model_zoo.save("two_output", tmp_path / "m", n=300)
    done = _edgekit("prune", str(model), "--data", str(data), "--sparsity", "0.5", "--epochs", "1", "--no-export", "--strategy", "mirrored",
                    "--json", "-o", str(tmp_path / "pruned.keras"), env=_env(EDGEKIT_CPU_REPLICAS="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["config"]["strategy"] == "mirrored" and len(report["history"]["loss"]) == 1
