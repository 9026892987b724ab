"""TensorFlow ops outside the TFLite builtins: refused by default, allowed with a warning."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def flex_saved_model(tmp_path_factory):
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 3, 3], tf.float32, name="m")])
        def serve(self, m):
            return {"det": tf.linalg.det(m)}  # MatrixDeterminant has no TFLite builtin

    path = tmp_path_factory.mktemp("flex") / "det_model"
    module = Det()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_select_tf_ops_refused_by_default(runner, cli, flex_saved_model, tmp_path):
    out = tmp_path / "det.tflite"
    result = runner.invoke(cli, ["quantize", str(flex_saved_model), "-o", str(out), "--mode", "float32"])
    assert result.exit_code == 5, result.output
    assert result.output.startswith("error: the TFLite converter failed")
    assert "--allow-select-tf-ops" in result.output
    assert not out.exists()


def test_select_tf_ops_allowed_with_warning(runner, cli, flex_saved_model, tmp_path):
    out = tmp_path / "det.tflite"
    result = runner.invoke(cli, ["quantize", str(flex_saved_model), "-o", str(out), "--mode", "float32",
                                 "--allow-select-tf-ops", "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: SELECT_TF_OPS is on" in result.stderr
    payload = json.loads(result.stdout)
    assert "FLEX:MatrixDeterminant" in payload["ops"]
    assert any("Flex" in w for w in payload["warnings"])
