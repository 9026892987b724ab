"""Knowledge distillation: loss, width-derived students, teacher safety, caching, conventions, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import build_tiny_cnn, files_in, make_blobs
from edgekit.core.errors import DataError, ModelError


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(256, seed=3)
    xv, yv = make_blobs(128, seed=4)
    return x.astype(np.float32) / 255.0, y, xv.astype(np.float32) / 255.0, yv


@pytest.fixture(scope="module")
def teacher(tiny):
    from edgekit.core.models import load_model

    return load_model(tiny["model"]).keras_model


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _residual_model():
    import keras

    inputs = keras.Input((8, 8, 3), name="img")
    a = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    b = keras.layers.Conv2D(8, 3, padding="same", name="c2")(a)
    b = keras.layers.BatchNormalization(name="bn")(b)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    squeeze = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    e = keras.layers.Dense(4, activation="relu", name="se1")(squeeze)
    e = keras.layers.Dense(8, activation="sigmoid", name="se2")(e)
    x = keras.layers.Multiply(name="scale")([x, keras.layers.Reshape((1, 1, 8), name="se_reshape")(e)])
    shortcut = keras.layers.Add(name="add_input")([inputs, keras.layers.Conv2D(3, 1, name="proj")(inputs)])
    x = keras.layers.Concatenate(name="cat")([keras.layers.Flatten(name="f1")(x), keras.layers.Flatten(name="f2")(shortcut)])
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name="residual")


# --- the loss ---------------------------------------------------------------------------------

def test_loss_goes_down_on_a_fixed_batch(teacher, blobs):
    from edgekit.passes.distill import derive_student, distillation_loss, fit_with_teacher, teacher_targets

    x, y = blobs[0][:64], blobs[1][:64]
    student, _ = derive_student(teacher, 0.5, seed=1)
    packed, conv = teacher_targets(teacher, x, y)
    loss = distillation_loss(4.0, 0.9, student_kind="softmax")
    before = float(loss(packed, student(x, training=False)))
    result = fit_with_teacher(student, teacher, (x, y), epochs=20, batch_size=64, learning_rate=2e-2, seed=0, temperature=4.0, alpha=0.9)
    after = float(loss(packed, student(x, training=False)))
    assert conv.kind.value == "softmax"
    assert np.isfinite(before) and before > 0
    assert after < 0.7 * before, (before, after)
    history = result.history["loss"]
    assert history[-1] < history[0]


def test_hard_term_is_keras_cross_entropy_and_soft_term_matches_by_hand():
    import keras

    from edgekit.passes.distill import OutputKind, distillation_loss, kd_terms

    rng = np.random.default_rng(0)
    student_logits = rng.normal(size=(16, 5)).astype(np.float32)
    teacher_logits = rng.normal(size=(16, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 16)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(student_logits))
    plain = float(distillation_loss(4.0, 0.9, student_kind=OutputKind.SOFTMAX)(labels.astype(np.float32), probs))
    reference = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    assert plain == pytest.approx(reference, rel=1e-4)

    total, soft, hard = kd_terms(labels, teacher_logits, student_logits, temperature=2.0, alpha=0.7)
    p_t = np.exp(teacher_logits / 2) / np.exp(teacher_logits / 2).sum(1, keepdims=True)
    p_s = np.exp(student_logits / 2) / np.exp(student_logits / 2).sum(1, keepdims=True)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(1) * 4.0
    ce = -np.log(np.exp(student_logits) / np.exp(student_logits).sum(1, keepdims=True))[np.arange(16), labels]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(soft), kl, rtol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(hard), ce, rtol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), 0.7 * kl + 0.3 * ce, rtol=1e-4)


# --- deriving students by width ---------------------------------------------------------------

def test_width_half_student_has_the_expected_layer_sizes(teacher):
    from edgekit.passes.distill import derive_student

    student, changes = derive_student(teacher, 0.5, seed=0)
    sizes = {layer.name: (getattr(layer, "filters", None) or getattr(layer, "units", None)) for layer in student.layers}
    assert sizes["conv"] == 4 and sizes["fc"] == 8
    assert sizes["probs"] == 6  # the classifier keeps the classes
    assert [(c.layer, c.teacher, c.student) for c in changes] == [("conv", 8, 4), ("fc", 16, 8), ("probs", 6, 6)]
    assert student.get_layer("conv").kernel.shape == (3, 3, 1, 4)
    assert student.get_layer("fc").kernel.shape == (3 * 3 * 4, 8)
    assert student.count_params() == 3 * 3 * 4 + 4 + 36 * 8 + 8 + 8 * 6 + 6
    # initialised fresh: not the teacher's weights cut down
    assert not np.allclose(student.get_layer("conv").kernel.numpy(), teacher.get_layer("conv").kernel.numpy()[..., :4])


def test_width_keeps_residual_adds_and_squeeze_excite_consistent():
    from edgekit.passes.distill import derive_student

    teacher = _residual_model()
    student, changes = derive_student(teacher, 0.5, seed=0)
    by_layer = {c.layer: c for c in changes}
    assert (by_layer["c1"].student, by_layer["c2"].student) == (4, 4)  # joined by an Add: scaled together
    assert (by_layer["se1"].student, by_layer["se2"].student) == (2, 4)  # se2 multiplies the trunk: follows it
    assert by_layer["proj"].student == 3 and "model input" in by_layer["proj"].note  # added to the raw input
    assert by_layer["logits"].student == 5 and "final classifier" in by_layer["logits"].note
    assert student.get_layer("se_reshape").target_shape == (1, 1, 4)
    assert student.get_layer("dw").depth_multiplier == 1
    out = student(np.zeros((2, 8, 8, 3), np.float32))
    assert tuple(out.shape) == (2, 5)


def test_width_on_a_sequential_model():
    import keras

    from edgekit.passes.distill import derive_student

    teacher = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(10, 3, name="c"), keras.layers.Flatten(name="f"),
                                keras.layers.Dense(20, name="d"), keras.layers.Dense(3, activation="softmax", name="out")])
    student, changes = derive_student(teacher, 0.3, seed=0)
    assert [(c.layer, c.student) for c in changes] == [("c", 3), ("d", 6), ("out", 3)]
    assert student.get_layer("d").kernel.shape == (4 * 4 * 3, 6)


def test_width_refuses_nested_models_with_a_clear_error():
    import keras

    from edgekit.passes.distill import derive_student

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)], name="backbone")
    inputs = keras.Input((4,))
    teacher = keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)))
    with pytest.raises(ModelError, match="nested models.*backbone"):
        derive_student(teacher, 0.5)


# --- the teacher is never changed; it runs once when cached -------------------------------------

def _bn_dropout_teacher():
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(6, name="logits")(x))


@pytest.mark.parametrize("mode", ["cached", "hints", "augment"])
def test_teacher_weights_are_unchanged(blobs, mode):
    from edgekit.passes.distill import derive_student, fit_with_teacher, make_augmentation

    teacher = _bn_dropout_teacher()  # BatchNorm statistics would move if it ever ran in training mode
    before = _weights(teacher)
    student, _ = derive_student(teacher, 0.5, seed=0)
    student_before = _weights(student)
    kwargs = {"hints": ["conv:conv"]} if mode == "hints" else {"augment": make_augmentation("shift")} if mode == "augment" else {}
    result = fit_with_teacher(student, teacher, (blobs[0], blobs[1]), epochs=2, batch_size=64, seed=0, **kwargs)
    assert _same(before, _weights(teacher))
    assert not _same(student_before, _weights(student))  # the student did train
    assert result.teacher_outputs.kind.value == "logits"


def _counting_teacher(classes=6):
    import keras

    class CountSamples(keras.layers.Layer):
        """Identity that adds the batch size to a counter each time it really runs."""

        def build(self, input_shape):
            self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

        def call(self, x):
            self.seen.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "float32"))
            return x

    keras.utils.set_random_seed(6)
    inputs = keras.Input((8, 8, 1))
    counter = CountSamples(name="count")
    x = keras.layers.Flatten()(counter(inputs))
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="probs")(x))
    counter.seen.assign(0.0)
    return model, counter


def test_teacher_runs_once_over_the_data_when_cached(blobs):
    from edgekit.passes.distill import fit_with_teacher, make_augmentation

    x, y = blobs[0], blobs[1]
    teacher, counter = _counting_teacher()
    student = build_tiny_cnn()
    result = fit_with_teacher(student, teacher, (x, y), epochs=3, batch_size=64, seed=0)
    assert result.teacher_cached
    assert float(counter.seen.numpy()) == len(x) == result.teacher_forward_samples  # once, not 3 times

    counter.seen.assign(0.0)
    student = build_tiny_cnn()
    result = fit_with_teacher(student, teacher, (x, y), epochs=2, batch_size=64, seed=0, augment=make_augmentation("flip"))
    assert not result.teacher_cached
    assert float(counter.seen.numpy()) == 2 * len(x) == result.teacher_forward_samples  # every batch of every epoch

    counter.seen.assign(0.0)
    student = build_tiny_cnn()
    result = fit_with_teacher(student, teacher, (x, y), epochs=1, batch_size=64, seed=0, alpha=0.0)
    assert float(counter.seen.numpy()) == 0 == result.teacher_forward_samples  # labels only: no teacher at all


def test_callbacks_see_the_student_itself(teacher, blobs):
    """The recovery hook: a pass's callbacks (pruning masks...) get the student as self.model."""
    import keras

    from edgekit.passes.distill import derive_student, fit_with_teacher

    student, _ = derive_student(teacher, 0.5, seed=0)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(self.model is student)

    result = fit_with_teacher(student, teacher, (blobs[0], blobs[1]), (blobs[2], blobs[3]), epochs=1, batch_size=64,
                              callbacks=[Probe()])
    assert seen and all(seen)
    assert "val_accuracy" in result.history and 0.0 <= result.history["val_accuracy"][0] <= 1.0


def test_hint_distillation_learns_an_adapter_and_the_hint_loss_falls(teacher, blobs):
    from edgekit.passes.distill import derive_student, fit_with_teacher

    student, _ = derive_student(teacher, 0.5, seed=0)
    result = fit_with_teacher(student, teacher, (blobs[0], blobs[1]), epochs=4, batch_size=32, hints=["conv:conv"], seed=0)
    assert result.adapters == [{"teacher_layer": "conv", "student_layer": "conv", "teacher_shape": [6, 6, 8],
                                "student_shape": [6, 6, 4], "adapter": "Conv2D"}]
    hint = result.history["hint_loss"]
    assert hint[-1] < 0.8 * hint[0]
    assert result.teacher_cached and result.teacher_forward_samples == len(blobs[0])

    with pytest.raises(ModelError, match="only the channel count may differ"):
        fit_with_teacher(student, teacher, (blobs[0], blobs[1]), epochs=1, hints=["conv:fc"])


def test_teacher_only_distillation_needs_no_labels(teacher, blobs):
    from edgekit.passes.distill import derive_student, fit_with_teacher

    student, _ = derive_student(teacher, 0.5, seed=0)
    result = fit_with_teacher(student, teacher, (blobs[0], None), epochs=2, alpha=1.0, batch_size=64)
    assert np.isfinite(result.history["loss"]).all()
    with pytest.raises(DataError, match="no labels"):
        fit_with_teacher(student, teacher, (blobs[0], None), epochs=1, alpha=0.5)


# --- output conventions -----------------------------------------------------------------------

def _head(kind):
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense", activation="softmax" if kind == "dense_softmax" else None)
    x = dense(inputs)
    if kind == "activation_softmax":
        x = keras.layers.Activation("softmax", name="act")(x)
    elif kind == "softmax_layer":
        x = keras.layers.Softmax(name="sm")(x)
    elif kind == "reshape_probs":
        x = keras.layers.Reshape((3,), name="reshape")(keras.layers.Softmax(name="sm")(x))
    elif kind == "reshape_logits":
        x = keras.layers.Reshape((3,), name="reshape")(x)
    elif kind == "sigmoid":
        x = keras.layers.Dense(1, activation="sigmoid", name="binary")(inputs)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(("kind", "expected", "evidence"), [
    ("logits", "logits", "linear activation"),
    ("dense_softmax", "softmax", "'dense' has a softmax"),
    ("activation_softmax", "softmax", "'act' has a softmax"),
    ("softmax_layer", "softmax", "'sm' has a softmax"),
    ("sigmoid", "sigmoid", "sigmoid activation"),
    ("reshape_probs", "softmax", "every row sums to 1 on 32 samples"),
    ("reshape_logits", "logits", "not probabilities on 32 samples"),
])
def test_detects_logits_and_probabilities(kind, expected, evidence):
    from edgekit.passes.distill import detect_output_kind, run_teacher

    model = _head(kind)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    conv = detect_output_kind(model, run_teacher(model, x))
    assert conv.kind.value == expected
    assert evidence in conv.evidence


def test_probability_teacher_gives_the_same_targets_as_its_logits():
    import keras

    from edgekit.passes.distill import kd_terms, teacher_targets

    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(5, name="dense")(inputs)
    logit_teacher = keras.Model(inputs, logits)
    prob_teacher = keras.Model(inputs, keras.layers.Softmax()(logits))  # same weights, probabilities out
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32) * 3
    y = np.random.default_rng(2).integers(0, 5, 64)
    packed_l, conv_l = teacher_targets(logit_teacher, x, y)
    packed_p, conv_p = teacher_targets(prob_teacher, x, y)
    assert (conv_l.kind.value, conv_p.kind.value) == ("logits", "softmax")
    student = np.random.default_rng(3).normal(size=(64, 5)).astype(np.float32)
    loss_l = keras.ops.convert_to_numpy(kd_terms(y, packed_l[:, 1:], student, temperature=4.0, alpha=0.9)[0])
    loss_p = keras.ops.convert_to_numpy(kd_terms(y, packed_p[:, 1:], student, temperature=4.0, alpha=0.9)[0])
    np.testing.assert_allclose(loss_p, loss_l, rtol=1e-4, atol=1e-5)


# --- incompatible pairs fail before training --------------------------------------------------

def test_incompatible_teacher_and_student_fail_before_training(teacher, blobs):
    import keras

    from edgekit.passes.distill import fit_with_teacher

    five_classes = build_tiny_cnn(classes=5)
    before = _weights(five_classes)
    with pytest.raises(ModelError, match="teacher has 6 classes.*student 5"):
        fit_with_teacher(five_classes, teacher, (blobs[0], blobs[1]), epochs=1)
    assert _same(before, _weights(five_classes))

    bigger_input = build_tiny_cnn(shape=(10, 10, 1))
    with pytest.raises(ModelError, match=r"different inputs: teacher 8x8x1, student 10x10x1"):
        fit_with_teacher(bigger_input, teacher, (blobs[0], blobs[1]), epochs=1)

    two_outputs = keras.Model(teacher.inputs, [teacher.outputs[0], teacher.outputs[0]])
    with pytest.raises(ModelError, match="single-input, single-output"):
        fit_with_teacher(two_outputs, teacher, (blobs[0], blobs[1]), epochs=1)


# --- the command ------------------------------------------------------------------------------

def test_cli_distills_with_baseline_and_writes_the_report(tiny, runner, cli, tmp_path):
    from edgekit.core.models import load_model

    out = tmp_path / "student.keras"
    result = runner.invoke(cli, [
        "distill", "--teacher", str(tiny["model"]), "--width", "0.5", "--data", str(tiny["train"]), "--val", str(tiny["val"]),
        "--scale", "1/255", "--epochs", "3", "--batch-size", "32", "--baseline", "--runs", "6", "--samples", "20", "-o", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "distilled" in result.output and "probabilities (softmax)" in result.output
    report = json.loads((tmp_path / "student.distill.report.json").read_text())
    assert set(report["models"]) == {"teacher", "baseline", "distilled"}
    assert report["teacher_outputs"]["kind"] == "softmax"
    assert report["teacher_cache"] == {"cached": True, "teacher_forward_samples": 600,
                                       "note": "teacher ran once over 600 samples; its outputs were reused for 3 epochs"}
    models = report["models"]
    assert models["distilled"]["parameters"] == models["baseline"]["parameters"] < models["teacher"]["parameters"]
    assert report["parameter_ratio_teacher_to_student"] == pytest.approx(models["teacher"]["parameters"] / models["distilled"]["parameters"], rel=1e-3)
    for row in models.values():
        assert 0 <= row["top1"] <= 100 and 0 <= row["int8_top1"] <= 100
        assert row["int8_bytes"] > 0 and row["latency"]["runs"] == 6
    assert models["distilled"]["int8_bytes"] < models["teacher"]["int8_bytes"]
    assert report["top1_gain_over_baseline"] == pytest.approx(models["distilled"]["top1"] - models["baseline"]["top1"], abs=1e-2)
    assert len(report["history"]["distilled"]["loss"]) == 3 and len(report["history"]["baseline"]["loss"]) == 3
    # the written student is a plain Keras model edgekit loads safely (no custom loss in its config)
    loaded = load_model(out)
    assert loaded.parameter_count == models["distilled"]["parameters"]


def test_distillation_worse_than_labels_is_reported(tiny, runner, cli, tmp_path):
    """An untrained teacher at alpha 0.9 drags the student down: the report must say so, not hide it."""
    import keras

    from conftest import build_tiny_cnn as build

    keras.utils.set_random_seed(3)
    bad = build()
    bad.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    bad.save(tmp_path / "untrained.keras")
    out = tmp_path / "student.keras"
    result = runner.invoke(cli, [
        "distill", "--teacher", str(tmp_path / "untrained.keras"), "--width", "0.5", "--data", str(tiny["train"]), "--val", str(tiny["val"]),
        "--scale", "1/255", "--epochs", "3", "--batch-size", "32", "--alpha", "0.9", "--baseline", "--no-export", "-o", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "student.distill.report.json").read_text())
    assert report["models"]["distilled"]["top1"] < report["models"]["baseline"]["top1"]
    assert any(n.startswith("distillation did worse than the labels alone") for n in report["notes"])
    assert "distillation did worse than the labels alone" in result.output


def _student_file(tmp_path, name, **kwargs):
    path = tmp_path / f"{name}.keras"
    build_tiny_cnn(**kwargs).save(path)
    return path


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--width", "0.5", "--student", "STUDENT"], 2, "give exactly one of --student S.keras or --width W"),
    (["--width", "1.5"], 2, "--width must be in (0, 1], got 1.5"),
    (["--width", "0.5", "--alpha", "2"], 2, "--alpha must be in [0, 1], got 2.0"),
    (["--width", "0.5", "--temperature", "0"], 2, "--temperature must be positive"),
    (["--width", "0.5", "--hint", "conv"], 2, "--hint 'conv' is not TEACHER_LAYER:STUDENT_LAYER"),
    (["--width", "0.5", "--hint", "conv:nope"], 3, "--hint names layer 'nope', which the student does not have"),
    (["--student", "FIVE_CLASSES"], 3, "teacher has 6 classes (6), student 5 (5)"),
    (["--student", "BIG_INPUT"], 3, "different inputs: teacher 8x8x1, student 12x12x1"),
    (["--width", "0.5", "--data", "MISSING"], 2, "does not exist"),
    (["--width", "0.5", "--data", "BAD_LABELS"], 4, "go up to 9, but the model has 6 classes"),
])
def test_cli_bad_input_one_line_and_nothing_written(tiny, runner, cli, tmp_path, args, code, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    replace = {
        "STUDENT": str(_student_file(inputs, "same")),
        "FIVE_CLASSES": str(_student_file(inputs, "five", classes=5)),
        "BIG_INPUT": str(_student_file(inputs, "big", shape=(12, 12, 1))),
        "MISSING": str(inputs / "missing.npz"),
    }
    if "BAD_LABELS" in args:
        x, y = make_blobs(20)
        np.savez(inputs / "bad.npz", x=x, y=np.full_like(y, 9))
        replace["BAD_LABELS"] = str(inputs / "bad.npz")
    args = [replace.get(a, a) for a in args]
    base = ["distill", "--teacher", str(tiny["model"]), "--epochs", "1", "--scale", "1/255", "-o", str(tmp_path / "out" / "s.keras")]
    if "--data" not in args:
        base += ["--data", str(tiny["train"])]
    (tmp_path / "out").mkdir()
    result = runner.invoke(cli, base + args)
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
    assert files_in(tmp_path / "out") == set()
