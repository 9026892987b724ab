"""The last step of every artifact edgekit writes: standard TFLite metadata (:mod:`edgekit.export.tflite_metadata`).

``quantize``, ``export``, ``qat``, ``run`` and ``optimize`` pass their final flatbuffer through
:func:`with_standard_metadata` just before writing it, so MediaPipe Tasks, Android Studio's ML
binding and LiteRT's support library find the model's name, version, description, the input's
normalization (from the declared preprocessing) and value range, and the class names as an
associated ``labels.txt``. edgekit's own ``edgekit_metadata`` entry (export) and the manifest
beside the file stay as they are. The model's graph and weights are untouched: LiteRT runs the
file with identical outputs.

Example:
    >>> data, notes = with_standard_metadata(flatbuffer, name="model_int8", description="int8 of model.keras",
    ...                                      preprocessing=Preprocessing(scale=1 / 255), labels=names)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgekit import __version__
from edgekit.core.datatypes import Preprocessing
from edgekit.core.errors import InputError
from edgekit.export.tflite_metadata import add_standard_metadata

AUTHOR = "edgekit"


def with_standard_metadata(flatbuffer: bytes, *, name: str, description: str, preprocessing: Preprocessing | None,
                           labels: Sequence[str] | None) -> tuple[bytes, list[str]]:
    """``flatbuffer`` with standard metadata, and notes on what could not be described.

    ``name`` should come from the source model, not the output path: the same model, data, options
    and seed must give the same bytes whatever the output is called.

    Labels that do not fit the first output (another count, a line break in a name) are left out
    of the metadata with a note, as is a normalization the schema cannot express; the model is
    never refused for its metadata.
    """
    notes: list[str] = []
    label_list = list(labels) if labels else None
    try:
        return add_standard_metadata(flatbuffer, name=name, version=__version__, description=description, author=AUTHOR,
                                     preprocessing=preprocessing, labels=label_list), notes
    except InputError as exc:
        if label_list:
            notes.append(f"standard metadata without labels: {exc.one_line()}")
            try:
                return add_standard_metadata(flatbuffer, name=name, version=__version__, description=description, author=AUTHOR,
                                             preprocessing=preprocessing, labels=None), notes
            except InputError as again:
                exc = again
        notes.append(f"no standard metadata written: {exc.one_line()}")
        return flatbuffer, notes


@dataclass(frozen=True)
class Finalized:
    """A flatbuffer ready to write: with standard metadata, the notes, and the converted model's sha256."""

    flatbuffer: bytes
    notes: tuple[str, ...]
    converted_sha256: str  # of the model before metadata: the same for the same conversion in every command

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's ``standard_metadata`` entry."""
        return {"written": not any(n.startswith("no standard metadata") for n in self.notes), "schema": "TFLITE_METADATA",
                "converted_sha256": self.converted_sha256, "notes": list(self.notes)}


def finalize(flatbuffer: bytes, *, name: str, description: str, preprocessing: Preprocessing | None,
             labels: Sequence[str] | None) -> Finalized:
    """:func:`with_standard_metadata`, remembering the sha256 of the model as converted."""
    data, notes = with_standard_metadata(flatbuffer, name=name, description=description, preprocessing=preprocessing, labels=labels)
    return Finalized(flatbuffer=data, notes=tuple(notes), converted_sha256=hashlib.sha256(flatbuffer).hexdigest())
