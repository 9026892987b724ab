"""The artifact manifest: what a model file is and how it was made.

``quantize -o out/model_int8.tflite`` writes ``out/model_int8.json`` beside it:

- ``artifact``: file name, sha256, size and gzip size;
- ``inputs`` / ``outputs``: names, shapes, dtypes and quantization parameters;
- ``preprocessing`` (scale, mean, std), ``labels`` (class names) when known;
- ``source``: the input model's path, format and sha256; ``data``: calibration data and its hash;
- ``options``: the mode, I/O type, samples, seed...; ``command``: the command line;
- ``versions``: edgekit, TensorFlow, Keras, LiteRT, Python, numpy.

``validate`` reads the manifest to apply the same preprocessing and show class names.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from edgekit.core.datatypes import Artifact, Preprocessing
from edgekit.core.errors import ModelError
from edgekit.core.fsutil import sha256_file, size_info, write_bytes_atomic, write_json_atomic
from edgekit.core.tflite_file import parse_tflite_bytes

MANIFEST_VERSION = 1


def manifest_path_for(artifact: str | Path) -> Path:
    """``dir/model.tflite`` -> ``dir/model.json``."""
    return Path(artifact).with_suffix(".json")


def report_path_for(artifact: str | Path, command: str) -> Path:
    """The one report naming scheme: ``dir/model.tflite`` + ``validate`` -> ``dir/model.validate.report.json``.

    Every command that reports on one artifact writes ``STEM.COMMAND.report.json`` beside it (``prune``,
    ``cluster``, ``qat``, ``distill``, ``validate``), so one command's report never overwrites another's
    (``validate`` on a ``qat`` output keeps qat's comparison). ``run``/``optimize`` write ``report.json``
    in their output folder; ``STEM.json`` is always the artifact's manifest, never a report.
    """
    p = Path(artifact)
    return p.with_name(f"{p.stem}.{command}.report.json")


def versions() -> dict[str, str | None]:
    """Versions of edgekit and the libraries that shape an artifact (no imports of TensorFlow)."""

    def v(name: str) -> str | None:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return None

    return {
        "edgekit": v("edgekit"),
        "tensorflow": v("tensorflow"),
        "keras": v("keras"),
        "ai_edge_litert": v("ai-edge-litert"),
        "numpy": v("numpy"),
        "python": platform.python_version(),
    }


def command_line() -> str:
    """The command that is running, as typed (best effort)."""
    args = [Path(sys.argv[0]).name if sys.argv else "edgekit", *sys.argv[1:]]
    return " ".join(args)


@dataclass(frozen=True)
class Manifest:
    """Provenance of an artifact; ``to_dict`` is the JSON written beside it."""

    artifact: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    preprocessing: dict[str, Any]
    source: dict[str, Any]
    options: dict[str, Any]
    labels: list[str] | None = None
    data: dict[str, Any] | None = None
    command: str = field(default_factory=command_line)
    versions: dict[str, Any] = field(default_factory=versions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "manifest_version": MANIFEST_VERSION,
            "artifact": self.artifact,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "preprocessing": self.preprocessing,
            "labels": self.labels,
            "source": self.source,
            "data": self.data,
            "options": self.options,
            "command": self.command,
            "versions": self.versions,
        }
        out.update(self.extra)
        return out


def read_manifest(artifact: str | Path) -> dict[str, Any] | None:
    """The manifest beside an artifact, or None if there is none. Raises on a corrupt one."""
    path = manifest_path_for(artifact)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"manifest {path} is not valid JSON ({type(exc).__name__})", hint="delete it or re-create the artifact") from None
    if not isinstance(data, dict) or "artifact" not in data:
        return None  # some other JSON file that happens to share the name
    _check_fields(data, path)
    return data


def _check_fields(data: dict[str, Any], path: Path) -> None:
    """Wrong-typed fields of an edgekit manifest are reported as such (not an AttributeError later)."""
    expected: dict[str, tuple[type, ...]] = {"artifact": (dict,), "preprocessing": (dict, type(None)), "labels": (list, type(None)),
                                             "inputs": (list,), "outputs": (list,), "options": (dict, type(None))}
    for key, types in expected.items():
        if key in data and not isinstance(data[key], types):
            raise ModelError(f"manifest {path} is malformed: field {key!r} is a {type(data[key]).__name__}",
                             hint="delete the manifest or re-create the artifact")
    sha = data["artifact"].get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        raise ModelError(f"manifest {path} is malformed: artifact.sha256 is not a sha256", hint="delete the manifest or re-create the artifact")
    labels = data.get("labels")
    if labels is not None and not all(isinstance(x, str) for x in labels):
        raise ModelError(f"manifest {path} is malformed: labels must be strings", hint="delete the manifest or re-create the artifact")


def check_integrity(artifact: str | Path, *, ignore: bool = False) -> dict[str, Any] | None:
    """The artifact's manifest, after checking the file is what edgekit wrote (its sha256 matches).

    An edgekit artifact modified after it was written (a flipped byte, another build copied over it)
    is refused whatever the command's options, unless ``ignore`` (``--ignore-manifest``), which also
    drops the manifest.

    Raises:
        ModelError: the sha256 differs, or the manifest is malformed.
    """
    if ignore:
        return None
    manifest = read_manifest(artifact)
    recorded = (manifest or {}).get("artifact", {}).get("sha256")
    if manifest is not None and recorded and recorded != sha256_file(artifact):
        raise ModelError(f"{Path(artifact).name} was modified after edgekit wrote it: its sha256 differs from {manifest_path_for(artifact).name}",
                         hint="re-create the artifact, or pass --ignore-manifest to run this file anyway (its manifest is then ignored)")
    return manifest


def preprocessing_from_manifest(manifest: dict[str, Any] | None) -> Preprocessing:
    """The preprocessing recorded in a manifest (identity if none)."""
    if not manifest:
        return Preprocessing()
    return Preprocessing.from_dict(manifest.get("preprocessing"))


def write_artifact(path: str | Path, flatbuffer: bytes, *, preprocessing: Preprocessing, source: dict[str, Any],
                   options: dict[str, Any], labels: list[str] | None = None, data: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None, manifest_name: str | None = None, overwrite: bool = True) -> Artifact:
    """Writes ``path`` (the .tflite) and its manifest, each atomically; never one without the other.

    The inputs/outputs recorded come from the flatbuffer itself. ``manifest_name`` overrides the
    manifest's ``artifact.file`` (default: the file's name). Without ``overwrite`` (no ``force``)
    the model is put in place only if ``path`` does not exist, decided in one step
    (:func:`~edgekit.core.fsutil.atomic_path`): of several runs racing to the same new path one
    wins, the others fail before writing any manifest.
    """
    out = Path(path)
    info = parse_tflite_bytes(flatbuffer, str(out))
    write_bytes_atomic(out, flatbuffer, overwrite=overwrite)
    try:
        artifact = Artifact(path=str(out), sha256=sha256_file(out), size=size_info(out), manifest_path=str(manifest_path_for(out)))
        manifest = Manifest(
            artifact={"file": manifest_name or out.name, "sha256": artifact.sha256, "bytes": artifact.size.bytes,
                      "gzip_bytes": artifact.size.gzip_bytes},
            inputs=[t.to_dict() for t in info.inputs], outputs=[t.to_dict() for t in info.outputs],
            preprocessing=preprocessing.to_dict(), labels=labels, source=source, data=data, options=options, extra=extra or {})
        write_json_atomic(manifest_path_for(out), manifest.to_dict())
    except BaseException:
        out.unlink(missing_ok=True)  # never leave a model without its manifest
        raise
    return artifact
