"""Clustering: distinct-value counts, preserved sparsity, input untouched, LiteRT, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import files_in, int8_kernels


def _load(tiny):
    from edgekit.core.data import load_dataset
    from edgekit.core.datatypes import Preprocessing
    from edgekit.core.models import load_model

    source = load_model(tiny["model"], compile=True).keras_model
    train = load_dataset(tiny["train"], input_shape=(None, 8, 8, 1), preprocessing=Preprocessing(scale=1 / 255))
    return source, train


def test_kmeans_1d_assigns_to_nearest_and_keeps_k():
    from edgekit.passes.cluster import kmeans_1d

    values = np.random.default_rng(0).normal(size=5000)
    for init in ("kmeans++", "linear"):
        cents, assign = kmeans_1d(values, 8, init=init)
        assert cents.size <= 8 and np.all(np.diff(cents) > 0)
        nearest = np.abs(values[:, None] - cents[None, :]).argmin(axis=1)
        np.testing.assert_array_equal(assign, nearest)
    cents, assign = kmeans_1d(np.array([1.0, 1.0, 2.0]), 4)  # fewer distinct values than k
    np.testing.assert_array_equal(cents[assign], [1.0, 1.0, 2.0])


def test_per_layer_distinct_values_and_input_untouched(tiny):
    from edgekit.core.keras_graph import iter_layers, kernel_variable
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.cluster import ClusterConfig, ClusterPass, cluster_centroids

    source, train = _load(tiny)
    before = [np.array(w) for w in source.get_weights()]
    c = ClusterPass(ClusterConfig(clusters=5, init="linear", epochs=1, batch_size=32))
    c.check(ModelState(keras=source), PassContext(train=train))
    final = c.finalize(c.apply(ModelState(keras=source), PassContext(train=train)).state).keras
    for a, b in zip(before, source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    for path, layer in iter_layers(final):
        w = np.asarray(kernel_variable(layer).numpy()) if kernel_variable(layer) is not None else None
        if w is not None:
            assert np.unique(w).size <= 5, path
            assert np.unique(w).size >= 2, path
    centroids = cluster_centroids(final)
    assert set(centroids) == {"conv", "fc", "probs"} and all(v.size <= 5 for v in centroids.values())


def test_per_channel_codebook_shares_int8_codes(tiny):
    from edgekit.core.keras_graph import channel_view, kernel_variable, layers_by_path
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.cluster import ClusterConfig, ClusterPass, cluster_centroids

    source, train = _load(tiny)
    c = ClusterPass(ClusterConfig(clusters=6, per_channel=True, epochs=1, batch_size=32))
    final = c.finalize(c.apply(ModelState(keras=source), PassContext(train=train)).state).keras
    layer = layers_by_path(final)["fc"]
    w = np.asarray(kernel_variable(layer).numpy())
    view = channel_view(layer, w)
    assert max(np.unique(col).size for col in view.T) <= 6
    # each channel is (its max magnitude) x (one shared codebook): symmetric per-channel int8 codes agree
    codes = np.round(view / np.abs(view).max(axis=0) * 127).astype(int)
    assert np.unique(codes).size <= 6
    table = cluster_centroids(final, per_channel=True)["fc"]
    assert table.shape[0] == view.shape[1] and table.shape[1] <= 6


def test_preserve_sparsity_keeps_pruned_zeros(tiny):
    from edgekit.passes.base import ModelState, PassContext
    from edgekit.passes.cluster import ClusterConfig, ClusterPass
    from edgekit.passes.prune import PruneConfig, PrunePass
    from edgekit.passes.prune_masks import sparsity_masks

    source, train = _load(tiny)
    p = PrunePass(PruneConfig(sparsity=0.6, epochs=0))
    pruned = p.finalize(p.apply(ModelState(keras=source), PassContext(train=train)).state).keras
    masks = sparsity_masks(pruned)
    c = ClusterPass(ClusterConfig(clusters=4, preserve_sparsity=True, epochs=1, batch_size=32))
    final = c.finalize(c.apply(ModelState(keras=pruned), PassContext(train=train)).state).keras
    after = sparsity_masks(final)
    for path, mask in masks.items():
        np.testing.assert_array_equal(after[path], mask)  # the same zeros, no new ones
    kernel = np.asarray(final.get_layer("fc").kernel.numpy())
    assert np.unique(kernel).size <= 4 and 0.0 in np.unique(kernel)


def test_cli_cluster_end_to_end(tiny, tmp_path, runner, cli):
    from edgekit.core.tfshim import keras

    out = tmp_path / "c.keras"
    res = runner.invoke(cli, ["cluster", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255",
                              "--clusters", "8", "--epochs", "1", "--batch-size", "32", "--runs", "10", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "clustered" in res.output and "gzip" in res.output
    report = json.loads((tmp_path / "c.cluster.report.json").read_text())
    assert all(layer["distinct_values"] <= 8 for layer in report["layers"] if layer["status"] == "clustered")
    assert report["export"]["compressed"]["top1"] is not None  # the int8 export ran in LiteRT
    assert report["export"]["compressed"]["size"]["gzip_bytes"] < report["export"]["original"]["size"]["gzip_bytes"]
    model = keras().saving.load_model(out)
    assert np.unique(np.asarray(model.get_layer("fc").kernel.numpy())).size <= 8


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--clusters", "1"], 2, "--clusters: Input should be greater than or equal to 2"),
        (["--clusters", "300"], 2, "--clusters: Input should be less than or equal to 256"),
        (["--layers", "nothing"], 2, "--layers 'nothing' selects no layer"),
        (["--epochs", "-2"], 2, "--epochs cannot be negative"),
        (["--runs", "0"], 2, "--runs must be at least 1"),
    ],
)
def test_cluster_bad_input_fails_before_training(tiny, tmp_path, runner, cli, extra, code, message):
    res = runner.invoke(cli, ["cluster", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(tmp_path / "o.keras"), *extra])
    assert res.exit_code == code, res.output
    assert message in res.output and len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1
    assert files_in(tmp_path) == set()


def test_cluster_refuses_existing_output_and_wrong_suffix(tiny, tmp_path, runner, cli):
    existing = tmp_path / "o.keras"
    existing.write_bytes(b"keep")
    res = runner.invoke(cli, ["cluster", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(existing)])
    assert res.exit_code == 2 and "already exists" in res.output and existing.read_bytes() == b"keep"
    res = runner.invoke(cli, ["cluster", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(tmp_path / "o.tflite")])
    assert res.exit_code == 2 and "should end with .keras" in res.output


def test_quantize_keeps_one_codebook_per_layer_with_per_tensor_weights(tiny, tmp_path, runner, cli):
    """A model clustered per layer is exported with per-tensor int8 weights by default (its shared
    values stay shared: at most --clusters int8 codes per layer, smaller after gzip); --weights
    per-channel overrides it and gives more codes; an unclustered model stays per-channel."""
    clustered = tmp_path / "c.keras"
    res = runner.invoke(cli, ["cluster", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255",
                              "--clusters", "8", "--epochs", "1", "--batch-size", "32", "--no-export", "-o", str(clustered)])
    assert res.exit_code == 0, res.output
    common = ["--data", str(tiny["train"]), "--scale", "1/255"]
    auto, forced, plain = tmp_path / "auto.tflite", tmp_path / "pc.tflite", tmp_path / "plain.tflite"
    res = runner.invoke(cli, ["quantize", str(clustered), *common, "-o", str(auto)])
    assert res.exit_code == 0, res.output
    assert "per-tensor" in res.output and "clustered" in res.output
    res = runner.invoke(cli, ["quantize", str(clustered), *common, "--weights", "per-channel", "-o", str(forced)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["quantize", str(tiny["model"]), *common, "-o", str(plain)])
    assert res.exit_code == 0, res.output

    manifests = {p: json.loads(p.with_suffix(".json").read_text()) for p in (auto, forced, plain)}
    assert manifests[auto]["options"]["weights"] == "per-tensor"
    assert manifests[forced]["options"]["weights"] == "per-channel"
    assert manifests[plain]["options"]["weights"] == "per-channel"
    auto_k, forced_k = int8_kernels(auto), int8_kernels(forced)
    assert auto_k and all(scales == 1 for _, scales in auto_k.values())
    assert all(np.unique(values).size <= 8 for values, _ in auto_k.values())
    assert any(scales > 1 for _, scales in forced_k.values())
    assert max(np.unique(v).size for v, _ in forced_k.values()) > 8  # per-channel scales split the shared values
    assert manifests[auto]["artifact"]["gzip_bytes"] < manifests[forced]["artifact"]["gzip_bytes"]
    # edgekit export makes the same choice and records it
    res = runner.invoke(cli, ["export", str(clustered), "--target", "cpu", *common, "-o", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    exported = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert exported["options"]["mode"] == "int8" and exported["options"]["weights"] == "per-tensor"
    assert all(scales == 1 and np.unique(v).size <= 8 for v, scales in int8_kernels(tmp_path / "exp" / "model.tflite").values())


def test_quantize_weights_option_rejected_for_float_modes(tiny, tmp_path, runner, cli):
    out = tmp_path / "f16.tflite"
    res = runner.invoke(cli, ["quantize", str(tiny["model"]), "--mode", "float16", "--weights", "per-tensor", "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "--weights per-tensor applies to modes with int8 weights" in res.output
    assert "Traceback" not in res.output and files_in(tmp_path) == set()
