"""``edgekit check``: offline per-operator delegate compatibility of a ``.tflite`` file or an export directory.

Example:
    >>> report = check_artifact("out/gpu", "gpu")  # doctest: +SKIP
    >>> [(n.index, n.op) for n in report.unsupported]  # doctest: +SKIP
    [(6, 'TOPK_V2')]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekit.core.errors import InputError
from edgekit.core.manifest import check_integrity
from edgekit.core.tflite_verify import read_verified_tflite
from edgekit.export.delegates import CompatReport, check_compatibility
from edgekit.export.mediapipe import MediaPipeCheck, check_mediapipe_file
from edgekit.export.rules import check_target


def layers_from_manifest(path: Path) -> dict[str, str] | None:
    """Keras layer name -> class recorded by ``edgekit export`` beside ``path`` (``model.json``), or None."""
    manifest = path.with_suffix(".json")
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    if isinstance(layers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in layers.items()):
        return layers
    return None


def resolve_artifact(path: str | os.PathLike[str]) -> Path:
    """A ``.tflite`` file, or an export directory holding ``model.tflite``."""
    p = Path(path)
    if p.is_dir():
        candidate = p / "model.tflite"
        if candidate.is_file():
            return candidate
        raise InputError(f"{p} is a directory without model.tflite", hint="give a .tflite file or an `edgekit export` output directory")
    if not p.exists():
        raise InputError(f"artifact {p} does not exist", hint="check the path")
    return p


def check_artifact(path: str | os.PathLike[str], target: str, *, api_level: int | None = None,
                   ignore_manifest: bool = False) -> CompatReport:
    """:func:`check_compatibility` for a file (or export directory); layer names come from its manifest."""
    target = check_target(target)
    p = resolve_artifact(path)
    info = read_verified_tflite(p)
    check_integrity(p, ignore=ignore_manifest)  # a modified edgekit artifact is refused
    return check_compatibility(info, target, api_level=api_level, layers=layers_from_manifest(p))


def check_mediapipe_artifact(path: str | os.PathLike[str]) -> MediaPipeCheck:
    """Whether MediaPipe Tasks' ImageClassifier would accept the file (or export directory), and why not."""
    p = resolve_artifact(path)
    read_verified_tflite(p)  # parse and bounds-check first
    return check_mediapipe_file(p)
