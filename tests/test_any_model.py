"""Models beyond single-input float image classifiers (issue #14): integer token inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.tflite_file import read_tflite


@pytest.mark.parametrize("layer", ["pool", "lstm"])
def test_int32_token_model_quantizes_to_int8_with_int32_input(runner, cli, tmp_path, layer):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(50, 8)(inp)
    h = keras.layers.GlobalAveragePooling1D()(h) if layer == "pool" else keras.layers.LSTM(8, unroll=True)(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    model.save(tmp_path / "text.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tok.npz", x=rng.integers(0, 50, (64, 12)).astype("int32"), y=rng.integers(0, 3, 64))
    out = tmp_path / "text_int8.tflite"
    result = runner.invoke(cli, ["quantize", str(tmp_path / "text.keras"), "-o", str(out), "--mode", "int8",
                                 "--data", str(tmp_path / "tok.npz")])
    assert result.exit_code == 0, result.output
    assert "I/O int32 -> float32" in result.output  # the header names the real I/O dtypes
    info = read_tflite(out)
    assert str(info.inputs[0].dtype).lower() == "int32"  # token ids stay int32
    ops = {op.name if hasattr(op, "name") else str(op) for op in getattr(info, "operators", ())}
    assert not any("FLEX" in str(o).upper() for o in ops)  # no SELECT_TF_OPS
