"""Pruning: sparsity, exact 2:4 patterns, channel surgery, input model untouched, LiteRT, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import files_in, make_blobs


def _dataset(x, y, scale=True):
    from edgekit.core.datatypes import Dataset, Preprocessing

    pre = Preprocessing(scale=1 / 255) if scale else Preprocessing()
    return Dataset(x=pre.apply(x), y=y, source="memory", sha256="", preprocessing=pre)


@pytest.fixture(scope="module")
def blobs16():
    """8x8x4 blobs: input channels a multiple of 4, for 2:4."""
    x, y = make_blobs(256, seed=3, shape=(8, 8, 4))
    return _dataset(x, y)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_unstructured_sparsity_within_one_percent_and_input_untouched(tiny):
    from edgekit.core.data import load_dataset
    from edgekit.core.datatypes import Preprocessing
    from edgekit.core.keras_graph import iter_layers, kernel_variable
    from edgekit.core.models import load_model
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.prune import PruneConfig, PrunePass
    from edgekit.passes.prune_masks import sparsity_masks

    source = load_model(tiny["model"], compile=True).keras_model
    train = load_dataset(tiny["train"], input_shape=(None, 8, 8, 1), preprocessing=Preprocessing(scale=1 / 255))
    before = _weights(source)
    p = PrunePass(PruneConfig(sparsity=0.7, epochs=1, batch_size=32))
    p.check(ModelState(keras=source), PassContext(train=train))
    final = p.finalize(p.apply(ModelState(keras=source), PassContext(train=train)).state).keras
    for a, b in zip(before, _weights(source), strict=True):
        np.testing.assert_array_equal(a, b)  # the input model is never modified
    layers = dict(iter_layers(final))
    for path in ("conv", "fc", "probs"):
        w = np.asarray(kernel_variable(layers[path]).numpy())
        assert abs(float((w == 0).mean()) - 0.7) <= 0.01, path
    masks = sparsity_masks(final)
    assert set(masks) == {"conv", "fc", "probs"}
    assert abs(1 - masks["fc"].mean() - 0.7) <= 0.01
    assert final is not source and final.loss == source.loss  # keeps the loss, for a later fine-tuning step
    assert not final.optimizer.built  # but no optimizer state


def test_polynomial_schedule_reaches_target_with_per_layer_targets(tiny, tmp_path):
    from edgekit.core.datatypes import Preprocessing
    from edgekit.workflows.compress import prune

    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - layers: '^fc$'\n    sparsity: 0.9\n")
    result = prune(tiny["model"], tmp_path / "p.keras", data=tiny["train"], sparsity=0.5, schedule="polynomial", epochs=2,
                   batch_size=32, targets=targets, preprocessing=Preprocessing(scale=1 / 255), export=False)
    by_path = {r.path: r for r in result.layers}
    assert abs(by_path["fc"].sparsity - 0.9) <= 0.01 and by_path["fc"].target_sparsity == 0.9
    assert abs(by_path["conv"].sparsity - 0.5) <= 0.01 and abs(by_path["probs"].sparsity - 0.5) <= 0.01
    assert len(result.history["loss"]) == 2
    report = json.loads((tmp_path / "p.prune.report.json").read_text())
    assert report["config"]["schedule"] == "polynomial" and report["layers"][0]["path"] == "conv"


def test_schedule_bounds_in_epochs(tiny, tmp_path):
    """--begin-epoch/--end-epoch: converted to steps (fractions allowed); the first epoch trains dense,
    the target is reached at the end bound and kept."""
    from edgekit.core.datatypes import Preprocessing
    from edgekit.passes.prune import PruneConfig
    from edgekit.passes.prune_masks import polynomial_sparsity
    from edgekit.workflows.compress import prune

    cfg = PruneConfig(sparsity=0.8, schedule="polynomial", begin_epoch=1, end_epoch=2.5, epochs=3)  # the bounds fit the epochs
    assert cfg.step_bounds(steps_per_epoch=10, total_steps=30) == (10, 25)
    assert PruneConfig(sparsity=0.8, schedule="polynomial").step_bounds(10, 40) == (0, 30)  # default: 3/4 of training
    assert polynomial_sparsity(10, 0.8, 0.0, 10, 25) == 0.0 and polynomial_sparsity(25, 0.8, 0.0, 10, 25) == pytest.approx(0.8)
    result = prune(tiny["model"], tmp_path / "p.keras", data=tiny["train"], sparsity=0.6, schedule="polynomial", epochs=3,
                   begin_epoch=1, end_epoch=2, batch_size=32, preprocessing=Preprocessing(scale=1 / 255), export=False)
    assert all(abs(r.sparsity - 0.6) <= 0.01 for r in result.layers if r.status == "pruned")
    assert result.config["begin_epoch"] == 1 and result.config["end_epoch"] == 2


def test_cli_schedule_in_epochs_with_cosine_learning_rate(tiny, tmp_path, runner, cli):
    out = tmp_path / "p.keras"
    res = runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255", "--sparsity", "0.6",
                              "--schedule", "polynomial", "--begin-epoch", "0.5", "--end-epoch", "1.5", "--epochs", "2",
                              "--lr-schedule", "cosine", "--batch-size", "32", "--no-export", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p.prune.report.json").read_text())
    assert report["config"]["lr_schedule"] == "cosine"
    assert (report["config"]["begin_epoch"], report["config"]["end_epoch"]) == (0.5, 1.5)
    assert all(abs(layer["sparsity"] - 0.6) <= 0.01 for layer in report["layers"] if layer["status"] == "pruned")


def test_magnitude_mask_removes_the_smallest():
    from edgekit.passes.prune_masks import magnitude_mask

    w = np.array([[0.1, -5.0], [0.01, 3.0], [-0.2, 0.0]])
    mask = magnitude_mask(w, 0.5)
    np.testing.assert_array_equal(mask, [[0, 1], [0, 1], [1, 0]])


def test_two_four_exact_pattern_and_skips(blobs16):
    from edgekit.core.keras_graph import iter_layers, kernel_variable
    from edgekit.core.tfshim import keras
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.prune import PruneConfig, PrunePass
    from edgekit.passes.prune_masks import check_m_by_n, input_axis

    k = keras()
    k.utils.set_random_seed(1)
    inputs = k.Input((8, 8, 4))
    x = k.layers.Conv2D(8, 3, name="conv_a")(inputs)          # in=4: eligible (along I of HWIO)
    x = k.layers.DepthwiseConv2D(3, name="dw")(x)             # depthwise: skipped
    x = k.layers.Conv2D(6, 1, name="conv_b")(x)               # in=8: eligible
    x = k.layers.Conv2D(5, 1, name="conv_c")(x)               # in=6: skipped
    x = k.layers.Flatten()(x)
    outputs = k.layers.Dense(6, activation="softmax", name="head")(x)  # in=80: eligible
    model = k.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    p = PrunePass(PruneConfig(structure="2:4", epochs=1, batch_size=32))
    p.check(ModelState(keras=model), PassContext(train=blobs16))
    plan = {e.path: e.reason for e in p.plan(model).layers}
    assert plan["dw"] == "depthwise kernel has no input-channel axis for 2:4"
    assert plan["conv_c"] == "6 input channels is not a multiple of 4"
    final = p.finalize(p.apply(ModelState(keras=model), PassContext(train=blobs16)).state).keras
    layers = dict(iter_layers(final))
    for path in ("conv_a", "conv_b", "head"):
        w = np.asarray(kernel_variable(layers[path]).numpy())
        axis = input_axis(layers[path])
        moved = np.moveaxis(w, axis, -1)
        groups = moved.reshape(-1, 4)
        assert ((groups == 0).sum(axis=1) == 2).all(), path  # exactly 2 zeros in every group of 4
        assert check_m_by_n(w, axis)
    assert float((np.asarray(kernel_variable(layers["conv_c"]).numpy()) == 0).mean()) == 0.0


def _residual_model():
    """Residual blocks with BN, a depthwise conv, a nested model with a SeparableConv2D,
    a Concatenate, Flatten -> Dense and a softmax head."""
    from edgekit.core.tfshim import keras

    k = keras()
    L = k.layers
    k.utils.set_random_seed(0)
    inner_in = k.Input((8, 8, 16))
    inner = k.Model(inner_in, L.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep")(inner_in), name="inner")
    x_in = k.Input((8, 8, 3), name="img")
    x = L.BatchNormalization(name="stem_bn")(L.Conv2D(16, 3, padding="same", name="stem")(x_in))
    for b in ("b1", "b2"):
        y = L.ReLU(6.0)(L.BatchNormalization(name=f"{b}_bn1")(L.Conv2D(32, 1, name=f"{b}_exp")(x)))
        y = L.ReLU()(L.BatchNormalization(name=f"{b}_bn2")(L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{b}_dw")(y)))
        y = L.BatchNormalization(name=f"{b}_bn3")(L.Conv2D(16, 1, use_bias=False, name=f"{b}_proj")(y))
        x = L.Add(name=f"{b}_add")([x, y])
    c = L.Concatenate(name="cat")([inner(x), L.Conv2D(8, 1, activation="relu", name="side")(x)])
    f = L.Flatten(name="flat")(L.MaxPooling2D(2, name="pool")(c))
    out = L.Dense(10, activation="softmax", name="head")(L.Dense(32, activation="relu", name="fc")(f))
    model = k.Model(x_in, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _kill_channels(model):
    """Makes half the channels of every group dead (exactly zero), so removing them is exact."""
    from edgekit.core.keras_graph import layers_by_path

    layers = layers_by_path(model)
    rng = np.random.default_rng(0)

    def kill_bn(name, dead):
        bn = layers[name]
        gamma, beta, mean, var = [np.array(w) for w in bn.get_weights()]
        gamma = rng.uniform(0.5, 1.5, gamma.shape)
        gamma[dead] = 0.0
        beta[dead] = 0.0
        bn.set_weights([gamma, beta, rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])

    def kill_conv(name, dead, kernel="kernel"):
        layer = layers[name]
        values = []
        for w in layer.weights:
            arr = np.array(w.numpy())
            if w.name in (kernel, "bias"):
                arr[..., dead] = 0.0
            values.append(arr)
        layer.set_weights(values)

    residual = np.arange(0, 16, 2)
    for name in ("stem_bn", "b1_bn3", "b2_bn3"):
        kill_bn(name, residual)
    for b in ("b1", "b2"):
        expanded = np.arange(1, 32, 2)
        kill_bn(f"{b}_bn1", expanded)
        kill_bn(f"{b}_bn2", expanded)
    kill_conv("inner/sep", np.arange(6), kernel="pointwise_kernel")
    kill_conv("side", np.arange(4))
    kill_conv("fc", np.arange(16, 32))


def test_channel_pruning_rebuilds_smaller_model_exactly(tmp_path):
    from edgekit.core.datatypes import Dataset
    from edgekit.core.keras_graph import layers_by_path
    from edgekit.core.tfshim import keras
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.compression import LayerReport
    from edgekit.passes.prune import PruneConfig, PrunePass

    model = _residual_model()
    _kill_channels(model)
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 3)).astype(np.float32)
    y = np.zeros(16, dtype=np.int64)
    before = _weights(model)
    expected = model.predict(x, verbose=0)
    p = PrunePass(PruneConfig(sparsity=0.5, structure="channels", epochs=0))
    ctx = PassContext(train=Dataset(x=x, y=y, source="m", sha256=""))
    p.check(ModelState(keras=model), ctx)
    out = p.apply(ModelState(keras=model), ctx)
    final = p.finalize(out.state).keras
    for a, b in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    got = final.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=2e-5)  # only dead channels were removed
    layers = layers_by_path(final)
    assert layers["stem"].filters == 8 and layers["b1_proj"].filters == 8 and layers["b2_proj"].filters == 8
    assert layers["b1_exp"].filters == 16 and tuple(layers["b1_dw"].kernel.shape) == (3, 3, 16, 1)
    assert tuple(layers["b1_bn2"].gamma.shape) == (16,)
    assert layers["inner/sep"].filters == 6 and tuple(layers["inner/sep"].depthwise_kernel.shape) == (3, 3, 8, 1)
    assert layers["side"].filters == 4 and layers["fc"].units == 16 and layers["head"].units == 10
    assert tuple(layers["fc"].kernel.shape) == (4 * 4 * (6 + 4), 16)  # Flatten rows sliced per channel
    report = {r["path"]: LayerReport.from_dict(r) for r in out.details["layers"]}
    assert (report["stem"].channels_before, report["stem"].channels_after) == (16, 8)
    assert report["head"].status == "skipped" and "softmax" in report["head"].reason
    assert report["b1_dw"].status == "rewired" and report["b1_dw"].channels_after == 16
    final.save(tmp_path / "m.keras")
    reloaded = keras().saving.load_model(tmp_path / "m.keras")  # plain Keras: no custom objects
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=2e-5)
    # the smaller model converts and LiteRT gives the same answer
    from edgekit.core.datatypes import QuantMode
    from edgekit.core.models import LoadedModel
    from edgekit.export.convert import convert
    from edgekit.runtime.local import run_local

    flat = convert(LoadedModel(path="m", format="keras", sha256="", keras_model=reloaded, input_shape=(None, 8, 8, 3)), QuantMode.FLOAT32)
    (tmp_path / "m.tflite").write_bytes(flat)
    run = run_local(tmp_path / "m.tflite", x[:8], runs=1, warmup=0)
    np.testing.assert_allclose(run.outputs[0], expected[:8], atol=1e-4)


def test_channel_pruning_keeps_nested_sequential_consistent():
    from edgekit.core.datatypes import Dataset
    from edgekit.core.keras_graph import layers_by_path
    from edgekit.core.tfshim import keras
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.prune import PruneConfig, PrunePass

    k = keras()
    k.utils.set_random_seed(0)
    inner = k.Sequential([k.Input((12,)), k.layers.Dense(10, activation="relu", name="d1"), k.layers.Dense(8, name="d2")], name="inner")
    x_in = k.Input((6,))
    out = k.layers.Dense(3, activation="softmax", name="head")(inner(k.layers.Dense(12, activation="relu", name="d0")(x_in)))
    model = k.Model(x_in, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    data = Dataset(x=np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32), y=np.zeros(64, np.int64), source="m", sha256="")
    p = PrunePass(PruneConfig(sparsity=0.5, structure="channels", epochs=1, batch_size=16))
    p.check(ModelState(keras=model), PassContext(train=data))
    final = p.finalize(p.apply(ModelState(keras=model), PassContext(train=data)).state).keras
    layers = layers_by_path(final)
    assert (layers["d0"].units, layers["inner/d1"].units, layers["inner/d2"].units, layers["head"].units) == (6, 5, 4, 3)
    assert final.predict(data.x[:4], verbose=0).shape == (4, 3)


def test_cli_prune_end_to_end_converts_and_runs_in_litert(tiny, tmp_path, runner, cli):
    from edgekit.core.keras_graph import kernel_variable
    from edgekit.core.tfshim import keras

    out = tmp_path / "pruned.keras"
    res = runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255",
                              "--sparsity", "0.8", "--epochs", "1", "--batch-size", "32", "--runs", "10", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "pruned.prune.report.json").read_text())
    export = report["export"]
    assert export["compressed"]["size"]["gzip_bytes"] < export["original"]["size"]["gzip_bytes"]
    assert export["compressed"]["top1"] is not None and export["compressed"]["top1"] > 50  # ran in LiteRT on --val
    assert export["compressed"]["latency"]["runs"] >= 10
    assert any("NOT FASTER" in line or "faster" in line for line in export["verdict"])
    assert report["top1"]["before"] is not None
    model = keras().saving.load_model(out)  # plain Keras model, no custom classes
    w = np.asarray(kernel_variable(model.get_layer("fc")).numpy())
    assert abs(float((w == 0).mean()) - 0.8) <= 0.01


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--sparsity", "1.0"], 2, "--sparsity: Input should be less than 1"),
        (["--sparsity", "-0.1"], 2, "--sparsity: Input should be greater than or equal to 0"),
        ([], 2, "--sparsity is required for --structure unstructured"),
        (["--sparsity", "0.5", "--layers", "nomatch"], 2, "--layers 'nomatch' selects no layer"),
        (["--sparsity", "0.5", "--skip", "zzz"], 2, "--skip 'zzz' matches no layer"),
        (["--sparsity", "0.5", "--layers", "("], 2, "is not a valid regular expression"),
        (["--structure", "2:4", "--sparsity", "0.8"], 2, "2:4 always prunes 50%"),
        (["--sparsity", "0.5", "--epochs", "-1"], 2, "--epochs cannot be negative"),
        (["--sparsity", "0.5", "--loss", "nonsense_loss"], 2, "--loss 'nonsense_loss' is not a Keras loss"),
        (["--sparsity", "0.5", "--schedule", "polynomial", "--end-epoch", "5"], 2, "--end-epoch 5 is after the last fine-tuning epoch (2)"),
        (["--sparsity", "0.5", "--end-epoch", "1"], 2, "add --schedule polynomial"),
        (["--sparsity", "0.5", "--schedule", "polynomial", "--end-epoch", "1", "--end-step", "3"], 2, "--end-step or --end-epoch, not both"),
        (["--sparsity", "0.5", "--schedule", "polynomial", "--begin-epoch", "1", "--end-epoch", "0.5"], 2, "must be after --begin-epoch"),
        (["--sparsity", "0.5", "--schedule", "polynomial", "--begin-epoch", "2"], 2, "--begin-epoch 2 leaves no fine-tuning epoch"),
        (["--sparsity", "0.5", "--schedule", "polynomial", "--begin-epoch", "inf"], 2, "--begin-epoch: Input should be a finite number"),
        (["--sparsity", "0.5", "--schedule", "polynomial", "--begin-step", "999"], 2, "the pruning schedule starts at step 999"),
    ],
)
def test_bad_input_fails_before_training(tiny, tmp_path, runner, cli, extra, code, message):
    out = tmp_path / "out.keras"
    res = runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255", "-o", str(out), *extra])
    assert res.exit_code == code, res.output
    assert message in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    assert files_in(tmp_path) == set()


def test_bad_data_fails_before_training(tiny, tmp_path, runner, cli):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((10, 9, 9, 1), np.uint8), y=np.zeros(10, np.int64))
    res = runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(wrong), "--sparsity", "0.5", "-o", str(tmp_path / "o.keras")])
    assert res.exit_code == 4 and "model expects 8x8x1" in res.output
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((10, 8, 8, 1), np.uint8), y=np.full(10, 9, np.int64))
    res = runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(labels), "--sparsity", "0.5", "-o", str(tmp_path / "o.keras")])
    assert res.exit_code == 4 and "labels in --data" in res.output and "6 classes" in res.output
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - layers: fc\n    sparsity: 0.5\n    typo: 1\n")
    res = runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(tiny["train"]), "--sparsity", "0.5", "--targets", str(targets),
                              "-o", str(tmp_path / "o.keras")])
    assert res.exit_code == 2 and "typo" in res.output
    assert not (tmp_path / "o.keras").exists() and not (tmp_path / "o.prune.report.json").exists()


def test_cosine_learning_rate_schedule_decays_across_stages(tiny):
    """--lr-schedule cosine: the rate starts at the optimizer's, falls every batch, ends near 2%, and a
    fit that starts at a later epoch (channel pruning's stages) continues the same curve."""
    import keras

    from edgekit.core.data import load_dataset
    from edgekit.core.datatypes import Preprocessing
    from edgekit.core.keras_graph import clone_model
    from edgekit.core.models import load_model
    from edgekit.passes.training import TrainSettings, fit

    source = load_model(tiny["model"], compile=True).keras_model
    train = load_dataset(tiny["train"], input_shape=(None, 8, 8, 1), preprocessing=Preprocessing(scale=1 / 255))
    settings = TrainSettings(epochs=2, batch_size=100, learning_rate=1e-2, lr_schedule="cosine")
    rates: list[float] = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            rates.append(float(np.asarray(self.model.optimizer.learning_rate)))

    fit(clone_model(source), source, train, None, settings, [Record()], title="t")
    assert len(rates) == 12 and rates[0] == pytest.approx(1e-2)
    assert all(b < a for a, b in zip(rates, rates[1:])) and rates[-1] < 1e-3
    rates.clear()
    fit(clone_model(source), source, train, None, settings, [Record()], title="t", epochs=1, initial_epoch=1)
    assert rates[0] == pytest.approx(1e-2 * (0.02 + 0.98 * 0.5)), rates[0]  # halfway along the curve
    rates.clear()
    fit(clone_model(source), source, train, None, TrainSettings(epochs=1, batch_size=100, learning_rate=1e-2), [Record()], title="t")
    assert rates and all(r == pytest.approx(1e-2) for r in rates)


def test_unknown_lr_schedule_is_an_input_error():
    from edgekit.cli import with_flags
    from edgekit.cli.cmd_prune import prune as prune_command
    from edgekit.core.errors import InputError
    from edgekit.passes.training import TrainSettings

    with pytest.raises(InputError) as raised:
        TrainSettings(lr_schedule="linear")
    # the library names the setting; the CLI shows it as its flag
    assert with_flags(raised.value, prune_command).startswith("--lr-schedule must be one of constant, cosine")
