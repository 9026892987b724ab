"""Models quantized by Keras itself (model.quantize) are detected and refused with what to do instead."""

from __future__ import annotations

import json
import zipfile

import pytest

from edgekit.core.errors import ModelError
from edgekit.core.keras_quantized import (
    check_config_not_keras_quantized,
    check_not_keras_quantized,
    quantized_layers,
    quantized_layers_in_config,
)


def _dense_model():
    import keras

    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="dense")


@pytest.mark.filterwarnings("ignore:Layer InputLayer does not have")
@pytest.mark.parametrize("mode", ["int8", "float8", "int4"])
def test_keras_quantize_is_detected_in_memory_and_in_the_saved_config(mode, tmp_path):
    model = _dense_model()
    assert quantized_layers(model) == {}
    model.quantize(mode)
    assert quantized_layers(model) == {"hidden": mode, "logits": mode}
    with pytest.raises(ModelError, match=rf"quantized by Keras itself \(model.quantize\('{mode}'\) on 2 layer\(s\): hidden, logits\)") as err:
        check_not_keras_quantized(model)
    assert "give edgekit the float model" in err.value.one_line()

    path = tmp_path / f"q_{mode}.keras"
    model.save(path)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    assert quantized_layers_in_config(config) == {"hidden": mode, "logits": mode}
    with pytest.raises(ModelError, match="q_.*keras was quantized by Keras itself"):
        check_config_not_keras_quantized(config, path.name)


def test_float_models_pass(tmp_path):
    from conftest import EXAMPLE

    config = json.loads(zipfile.ZipFile(EXAMPLE / "model.keras").read("config.json"))
    assert quantized_layers_in_config(config) == {}
    check_config_not_keras_quantized(config)
    check_not_keras_quantized(_dense_model())


def test_policy_strings_and_policy_maps_are_read():
    layer = {"class_name": "Dense", "config": {"name": "d", "dtype": "int4/128_from_float32"}}
    assert quantized_layers_in_config({"layers": [layer]}) == {"d": "int4"}
    mapped = {"class_name": "Functional", "config": {"name": "m", "dtype": {"class_name": "DTypePolicyMap", "config": {
        "policy_map": {"m/d": {"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8", "source_name": "float32"}}}}}}}
    assert quantized_layers_in_config(mapped) == {"m": "int8"}


def test_quantize_refuses_a_keras_quantized_model_with_what_to_do(tmp_path):
    """Issue 16: before converting, a model quantized by Keras itself is refused (exit 3), nothing written."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    model = _dense_model()
    model.quantize("int8")
    model.save(tmp_path / "kq.keras")
    r = CliRunner().invoke(cli, ["quantize", str(tmp_path / "kq.keras"), "--mode", "float32", "-o", str(tmp_path / "out.tflite")])
    assert r.exit_code == 3, r.output
    assert "quantized by Keras itself" in r.output and "give edgekit the float model" in r.output
    assert not (tmp_path / "out.tflite").exists()
