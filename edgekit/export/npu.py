"""NPU ahead-of-time compilation through LiteRT's ``ai_edge_litert.aot`` tooling.

``ai-edge-litert`` ships the compiler *plugins* (``ai_edge_litert/vendors/<vendor>/compiler/``)
but not the vendor SDKs they load: Qualcomm's QNN libraries (``libQnnHtp.so``), MediaTek's
NeuroPilot adapter and the Google Tensor compiler come in separate pip packages
(``ai-edge-litert-sdk-<vendor>``). edgekit checks all of it before any work starts and names what
is missing; when everything is there it compiles the int8 model for the chosen SoC(s).

Without AOT the exported int8 model can still be compiled on the device (LiteRT's JIT path).

Example:
    >>> missing_npu_requirements("qualcomm")  # doctest: +SKIP
    ['the Qualcomm SDK package (pip install ai-edge-litert-sdk-qualcomm==2.3.0)']
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from edgekit.core.errors import ConversionError, InputError
from edgekit.core.fsutil import sha256_file
from edgekit.core.tfshim import native_output_captured


@dataclass(frozen=True)
class NpuVendor:
    """Where the LiteRT AOT pieces of one vendor live."""

    name: str
    title: str
    backend_module: str
    target_module: str
    plugin: str  # relative to the ai_edge_litert package
    sdk_module: str
    sdk_pip: str
    sdk_env: str | None = None  # an environment variable that can point at the SDK instead


NPU_VENDORS: dict[str, NpuVendor] = {
    "qualcomm": NpuVendor(
        "qualcomm", "Qualcomm", "ai_edge_litert.aot.vendors.qualcomm.qualcomm_backend",
        "ai_edge_litert.aot.vendors.qualcomm.target", "vendors/qualcomm/compiler/libLiteRtCompilerPlugin_Qualcomm.so",
        "ai_edge_litert_sdk_qualcomm", "ai-edge-litert-sdk-qualcomm",
    ),
    "mediatek": NpuVendor(
        "mediatek", "MediaTek", "ai_edge_litert.aot.vendors.mediatek.mediatek_backend",
        "ai_edge_litert.aot.vendors.mediatek.target", "vendors/mediatek/compiler/libLiteRtCompilerPlugin_MediaTek.so",
        "ai_edge_litert_sdk_mediatek", "ai-edge-litert-sdk-mediatek",
    ),
    "google_tensor": NpuVendor(
        "google_tensor", "Google Tensor", "ai_edge_litert.aot.vendors.google_tensor.google_tensor_backend",
        "ai_edge_litert.aot.vendors.google_tensor.target", "vendors/google_tensor/compiler/libLiteRtCompilerPlugin_google_tensor.so",
        "ai_edge_litert_sdk_google_tensor", "ai-edge-litert-sdk-google-tensor", sdk_env="GOOGLE_TENSOR_COMPILER_LIB",
    ),
}


def _litert_version() -> str:
    try:
        return importlib_metadata.version("ai-edge-litert")
    except importlib_metadata.PackageNotFoundError:
        return "?"


def check_vendor(vendor: str) -> NpuVendor:
    """The :class:`NpuVendor` for a ``--npu`` value, or InputError."""
    key = str(vendor).lower().replace("-", "_")
    if key not in NPU_VENDORS:
        raise InputError(f"unknown NPU vendor '{vendor}' (expected one of: {', '.join(NPU_VENDORS)})", hint="pass --npu qualcomm, mediatek or google_tensor")
    return NPU_VENDORS[key]


def missing_npu_requirements(vendor: str) -> list[str]:
    """What this machine lacks to AOT-compile for ``vendor`` (empty when everything is there)."""
    v = check_vendor(vendor)
    missing: list[str] = []
    if importlib.util.find_spec("ai_edge_litert") is None:
        return ["the ai-edge-litert package (pip install ai-edge-litert)"]
    try:
        importlib.import_module("ai_edge_litert.aot.aot_compile")
        importlib.import_module(v.backend_module)
    except ImportError as exc:
        return [f"ai_edge_litert.aot with the {v.title} backend (ai-edge-litert {_litert_version()}: {exc})"]
    import ai_edge_litert

    plugin = Path(ai_edge_litert.__file__).parent / v.plugin
    if not plugin.is_file():
        missing.append(f"the {v.title} compiler plugin {plugin.name} (not in this ai-edge-litert wheel)")
    has_env = bool(v.sdk_env and os.environ.get(v.sdk_env))
    if importlib.util.find_spec(v.sdk_module) is None and not has_env:
        extra = f", or set {v.sdk_env}" if v.sdk_env else ""
        missing.append(f"the {v.title} SDK package (pip install {v.sdk_pip}=={_litert_version()}{extra})")
    return missing


def soc_models(vendor: str) -> list[str]:
    """The SoC names the vendor's AOT target accepts (``ALL`` first)."""
    v = check_vendor(vendor)
    module = importlib.import_module(v.target_module)
    return [m.value for m in module.SocModel]


def check_npu_ready(vendor: str, soc: str | None = None) -> tuple[NpuVendor, str]:
    """Raises ConversionError naming what is missing; returns the vendor and the SoC name to use."""
    v = check_vendor(vendor)
    missing = missing_npu_requirements(v.name)
    if missing:
        raise ConversionError(
            f"NPU ahead-of-time compilation for {v.title} is not available here: missing {'; '.join(missing)}",
            hint="install what is named, or export without --npu and let LiteRT compile the int8 model on the device",
        )
    socs = soc_models(v.name)
    if soc is None:
        return v, "ALL"
    match = next((s for s in socs if s.lower() == str(soc).lower()), None)
    if match is None:
        raise InputError(f"unknown {v.title} SoC '{soc}' (known: {', '.join(socs)})", hint="pick one of the listed SoCs or omit --soc for all")
    return v, match


_MISSING_LIB = re.compile(r"([\w.+-]+\.so[\w.]*)(?::)? (?:cannot open shared object file|not found)")


def _plugin_error(message: str) -> str:
    """The useful line of a failed apply_plugin run (its details are in a temp .error file)."""
    path = re.search(r"See (\S+\.error)", message)
    text = message
    if path and Path(path.group(1)).is_file():
        text = Path(path.group(1)).read_text(errors="replace")
    lib = _MISSING_LIB.search(text)
    if lib:
        return f"the vendor library {lib.group(1)} is missing"
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line or "Failed" in line]
    return (errors[-1] if errors else message.strip().splitlines()[0])[:300]


def npu_compile(model_path: str | os.PathLike[str], vendor: str, soc: str, out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """AOT-compiles ``model_path`` for ``vendor``/``soc`` into ``out_dir``; returns the files written.

    Raises:
        ConversionError: the compiler failed for every SoC (the message names the missing
            library or the compiler's error).
    """
    v = check_vendor(vendor)
    from ai_edge_litert.aot import aot_compile as aot
    from ai_edge_litert.aot.core import aot_types

    importlib.import_module(v.backend_module)  # registers the backend
    target_mod = importlib.import_module(v.target_module)
    soc_enum = target_mod.SocModel(soc)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with native_output_captured(python_stderr=True):
        result = aot.aot_compile(str(model_path), output_dir=str(out / ".work"), target=target_mod.Target(soc_enum), keep_going=True)
    if not result.models_with_backend:
        why = _plugin_error(result.failed_backends[0][1]) if result.failed_backends else "no model was produced"
        raise ConversionError(f"NPU compilation for {v.title} {soc} failed: {why}",
                              hint=f"check the {v.sdk_pip} package matches ai-edge-litert {_litert_version()}; rerun with -v")
    written = []
    for backend, model in result.models_with_backend:
        assert isinstance(model, aot_types.Model)
        path = out / f"model{backend.target_id_suffix}.tflite"
        model.save(path, export_only=True)
        written.append({"file": path.name, "target": backend.target_id, "sha256": sha256_file(path), "bytes": path.stat().st_size})
    failures = [{"target": b.target_id, "error": _plugin_error(e)} for b, e in result.failed_backends]
    for item in failures:
        written.append({"file": None, **item})
    with contextlib.suppress(OSError):
        shutil.rmtree(out / ".work")
    return written


def npu_compile_bytes(flatbuffer: bytes, vendor: str, soc: str) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """:func:`npu_compile` on flatbuffer bytes, with the compiled models returned as bytes.

    Returns:
        ``({"model_<target>.tflite": bytes}, [{"file", "target", "sha256", "bytes"} or {"file": None, "target", "error"}])``;
        the compilation runs in a temporary folder, so nothing is left on disk.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-npu-") as tmp:
        model_path = Path(tmp) / "model.tflite"
        model_path.write_bytes(flatbuffer)
        out = Path(tmp) / "npu"
        models = npu_compile(model_path, vendor, soc, out)
        files = {m["file"]: (out / m["file"]).read_bytes() for m in models if m.get("file")}
    return files, models
