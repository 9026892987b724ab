"""Safe model loading and data loading."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.data import load_dataset, parse_preprocessing
from edgekit.core.errors import DataError, InputError, ModelError
from edgekit.core.models import load_model

CUSTOM_SRC = '''
import keras

class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
'''


@pytest.fixture(scope="module")
def risky_models(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("risky")
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")(hidden))
    lam.save(root / "lambda.keras")
    (root / "my_layers.py").write_text(CUSTOM_SRC)
    ns: dict = {}
    exec(CUSTOM_SRC, ns)  # noqa: S102 - the test defines the class the model uses
    custom = keras.Model(inputs, ns["Doubler"](name="doubler")(hidden))
    custom.save(root / "custom.keras")
    custom_h5 = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    custom_h5.save(root / "plain.h5")
    return root


def test_lambda_refused_with_layer_name_and_flag(risky_models):
    with pytest.raises(ModelError) as err:
        load_model(risky_models / "lambda.keras")
    assert "Lambda layer 'plus_one'" in str(err.value) and "--unsafe" in str(err.value)
    loaded = load_model(risky_models / "lambda.keras", unsafe=True)
    out = loaded.predict(np.zeros((1, 4), np.float32))[0]
    np.testing.assert_allclose(out, np.ones((1, 3)), atol=1e-6)  # zero input -> bias 0 -> +1


def test_custom_class_needs_custom_objects_file(risky_models, runner, cli):
    with pytest.raises(ModelError) as err:
        load_model(risky_models / "custom.keras")
    assert "Doubler" in str(err.value) and "doubler" in str(err.value) and "--custom-objects" in str(err.value)
    loaded = load_model(risky_models / "custom.keras", custom_objects=risky_models / "my_layers.py")
    assert loaded.parameter_count == 15
    result = runner.invoke(cli, ["inspect", str(risky_models / "custom.keras"), "--custom-objects", str(risky_models / "my_layers.py"), "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["inspect", str(risky_models / "custom.keras")])
    assert result.exit_code == 3 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_h5_written_by_keras3(risky_models):
    loaded = load_model(risky_models / "plain.h5")
    assert loaded.format == "h5" and loaded.parameter_count == 15 + 8


def test_h5_written_by_tf_keras(tmp_path):
    """tests/data/tfkeras_cnn.h5 was written by tf-keras 2.21 (Keras 2); see tests/data/README.md."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "tfkeras_cnn.h5"
    loaded = load_model(path)
    assert loaded.format == "h5"
    assert loaded.input_shape == (None, 8, 8, 1)
    ref = np.load(Path(__file__).parent / "data" / "tfkeras_cnn_io.npz")
    np.testing.assert_allclose(loaded.predict(ref["x"])[0], ref["y"], atol=1e-5)


def test_preprocessing_parse_and_apply():
    pre = parse_preprocessing("1/255", "0.5", "0.25")
    np.testing.assert_allclose(pre.apply(np.array([255, 0], np.uint8)), [2.0, -2.0])
    with pytest.raises(InputError):
        parse_preprocessing("abc", None, None)
    with pytest.raises(InputError):
        parse_preprocessing(None, None, "0")


def test_npz_keys_npy_and_channel_expansion(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((5, 8, 8), np.uint8), target=np.arange(5))
    with pytest.raises(DataError, match="no array 'x'.*images, target"):
        load_dataset(tmp_path / "d.npz", input_shape=(None, 8, 8, 1))
    ds = load_dataset(tmp_path / "d.npz", input_shape=(None, 8, 8, 1), x_key="images", y_key="target")
    assert ds.x.shape == (5, 8, 8, 1) and ds.x.dtype == np.float32 and list(ds.y) == [0, 1, 2, 3, 4]
    np.save(tmp_path / "x.npy", np.ones((3, 8, 8, 1), np.float32))
    ds = load_dataset(tmp_path / "x.npy", input_shape=(None, 8, 8, 1), limit=2)
    assert len(ds) == 2 and ds.y is None


def test_one_hot_labels_and_out_of_range(tmp_path):
    from edgekit.core.tasks import OutputTask, Task, with_tasks

    classifier = [OutputTask("probs", Task.CLASSIFICATION, "test", True, 3)]
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4), np.float32), y=np.eye(3))
    ds = load_dataset(tmp_path / "d.npz", input_shape=(None, 4))
    assert list(with_tasks(ds, classifier, [(None, 3)]).y) == [0, 1, 2]  # one-hot rows -> class ids for a classifier
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 4), np.float32), y=np.array([0, -1]))
    with pytest.raises(DataError, match="negative"):
        with_tasks(load_dataset(tmp_path / "neg.npz", input_shape=(None, 4)), classifier, [(None, 3)])
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 4), np.float32), y=np.array([0, 3]))
    with pytest.raises(DataError, match="3 classes"):
        with_tasks(load_dataset(tmp_path / "big.npz", input_shape=(None, 4)), classifier, [(None, 3)])


def test_image_folder_resized_to_model_input(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 30, 3), value + i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = load_dataset(tmp_path / "imgs", input_shape=(None, 8, 8, 1), preprocessing=parse_preprocessing("1/255", None, None))
    assert ds.x.shape == (6, 8, 8, 1)
    assert ds.labels == ("cat", "dog") and list(ds.y) == [0, 0, 0, 1, 1, 1]
    assert ds.x[0, 0, 0, 0] == pytest.approx(10 / 255, abs=1e-6)


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="never unpickles"):
        load_dataset(tmp_path / "p.npz")
