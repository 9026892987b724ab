"""Standard TFLite metadata: the writer, the reader, and LiteRT running the result unchanged."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from edgekit.core.datatypes import Preprocessing
from edgekit.core.errors import InputError, ModelError
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.export.tflite_metadata import (
    LABELS_FILE,
    METADATA_NAME,
    AssociatedFile,
    Normalization,
    add_standard_metadata,
    decode_metadata,
    describe_model,
    encode_metadata,
    normalization_for,
    preprocessing_from_normalization,
    read_standard_metadata,
    write_standard_metadata,
)

LABELS = [f"class_{i}" for i in range(6)]


@pytest.fixture(scope="module")
def float_model(tiny) -> bytes:
    from edgekit.export.convert import Conversion, convert_model

    return convert_model(tiny["keras_model"], Conversion(mode="float32")).flatbuffer


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None].astype(np.float32))
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def test_normalization_converts_edgekit_preprocessing_per_channel():
    # edgekit: ((x * scale) - mean) / std; schema: (x - mean') / std' on the same raw x
    assert normalization_for(Preprocessing(scale=1 / 255)) == Normalization(mean=(0.0,), std=(255.0,))
    norm = normalization_for(Preprocessing(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), channels=3)
    assert norm.mean == pytest.approx((123.675, 116.28, 103.53))
    assert norm.std == pytest.approx((58.395, 57.12, 57.375))
    raw = np.array([[10.0, 200.0, 255.0]])
    pre = Preprocessing(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert ((raw - np.array(norm.mean)) / np.array(norm.std)) == pytest.approx(pre.apply(raw), rel=1e-5)
    # one std, three means: the std is repeated so mean and std have equal lengths (MediaPipe needs it)
    assert normalization_for(Preprocessing(mean=(1.0, 2.0, 3.0), std=(2.0,))).std == (2.0, 2.0, 2.0)
    assert normalization_for(Preprocessing()) == Normalization(mean=(0.0,), std=(1.0,))
    with pytest.raises(InputError, match="zero or non-finite"):
        normalization_for(Preprocessing(scale=1 / 255, std=(0.0,)))
    with pytest.raises(InputError, match="3 channel"):
        normalization_for(Preprocessing(mean=(0.1, 0.2)), channels=3)


def test_written_metadata_reads_back_and_litert_outputs_are_identical(float_model, tiny):
    info = parse_tflite_bytes(float_model)
    meta, files = describe_model(info, name="tiny_cnn", version="3", description="six blobs", author="edgekit tests",
                                 preprocessing=Preprocessing(scale=1 / 255), labels=LABELS)
    written = write_standard_metadata(float_model, meta, files)

    standard = read_standard_metadata(written)
    assert standard is not None and standard.metadata == meta
    assert standard.labels() == LABELS
    assert standard.files == {LABELS_FILE: ("\n".join(LABELS) + "\n").encode()}
    first = standard.metadata.inputs[0]
    assert (first.content, first.color_space) == ("image", "grayscale")
    assert first.normalization == Normalization(mean=(0.0,), std=(255.0,))
    assert (first.range_min, first.range_max) == ((0.0,), (1.0,))  # raw 0..255 after preprocessing
    assert standard.metadata.outputs[0].associated_files == (AssociatedFile(LABELS_FILE, "tensor_axis_labels", "class names, one per line"),)
    as_json = standard.to_dict()
    assert as_json["labels"] == LABELS and as_json["files"] == {LABELS_FILE: len(files[LABELS_FILE])}
    assert as_json["inputs"][0]["normalization"] == {"mean": [0.0], "std": [255.0]}

    # the converter's own metadata entries are kept; the graph is the same
    before, after = parse_tflite_bytes(float_model), parse_tflite_bytes(written)
    assert set(before.metadata) <= set(after.metadata) and METADATA_NAME in after.metadata
    assert after.op_histogram() == before.op_histogram() and after.inputs == before.inputs
    x = np.load(tiny["val"])["x"][:20] / 255.0
    assert np.array_equal(_run(float_model, x), _run(written, x))


def test_labels_zip_is_stored_with_absolute_offsets(float_model):
    meta, files = describe_model(parse_tflite_bytes(float_model), name="m", labels=LABELS)
    written = write_standard_metadata(float_model, meta, files)
    with zipfile.ZipFile(io.BytesIO(written)) as zf:
        (member,) = zf.infolist()
        assert member.filename == LABELS_FILE and member.compress_type == zipfile.ZIP_STORED
    # the local header sits after the flatbuffer and the central directory points at it directly
    # (offsets counted from the start of the file, as tflite-support's populator writes them)
    local = written.rfind(b"PK\x03\x04")
    central = written.rfind(b"PK\x01\x02")
    assert struct.unpack_from("<I", written, central + 42)[0] == local


def test_rewriting_replaces_metadata_and_zip(float_model):
    info = parse_tflite_bytes(float_model)
    meta, files = describe_model(info, name="first", labels=LABELS)
    once = write_standard_metadata(float_model, meta, files)
    renamed = [f"other_{i}" for i in range(6)]
    meta2, files2 = describe_model(parse_tflite_bytes(once), name="second", labels=renamed)
    twice = write_standard_metadata(once, meta2, files2)
    standard = read_standard_metadata(twice)
    assert standard.metadata.name == "second" and standard.labels() == renamed
    assert twice.count(b"PK\x05\x06") == 1  # one zip, not two stacked
    assert list(parse_tflite_bytes(twice).metadata).count(METADATA_NAME) == 1


def test_a_model_without_standard_metadata_reads_none(float_model):
    assert read_standard_metadata(float_model) is None


def test_bad_inputs_are_one_line_errors(float_model):
    info = parse_tflite_bytes(float_model)
    with pytest.raises(InputError, match="5 labels given but output .* has 6 classes"):
        describe_model(info, name="m", labels=LABELS[:5])
    with pytest.raises(InputError, match="line break"):
        describe_model(info, name="m", labels=["a\nb", *LABELS[1:]])
    meta, _ = describe_model(info, name="m", labels=LABELS)
    with pytest.raises(InputError, match="labels.txt"):
        write_standard_metadata(float_model, meta, {})


def test_malformed_metadata_is_a_model_error():
    meta, _ = describe_model(_fake_info(), name="m")
    good = encode_metadata(meta)
    assert decode_metadata(good) == meta
    with pytest.raises(ModelError, match="identifier"):
        decode_metadata(good[:4] + b"XXXX" + good[8:])
    with pytest.raises(ModelError, match="truncated or malformed"):
        decode_metadata(good[:40])


def _fake_info():
    from edgekit.core.datatypes import TensorSpec
    from edgekit.core.tflite_file import TfliteInfo

    return TfliteInfo(path="x", file_bytes=0, schema_version=3, description="", subgraph_count=1, tensors=(), operators=(),
                      inputs=(TensorSpec("in", (1, 4), "float32"),), outputs=(TensorSpec("out", (1, 2), "float32"),))


def test_one_call_writer_and_preprocessing_back_from_normalization(float_model):
    pre = Preprocessing(scale=1 / 255, mean=(0.5,), std=(0.25,))
    standard = read_standard_metadata(add_standard_metadata(float_model, name="m", preprocessing=pre, labels=LABELS))
    assert standard.labels() == LABELS
    back = preprocessing_from_normalization(standard.metadata.inputs[0].normalization)
    raw = np.array([0.0, 17.0, 255.0])
    assert back.apply(raw) == pytest.approx(pre.apply(raw), rel=1e-6)
