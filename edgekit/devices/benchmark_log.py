"""Log lines of the native benchmark tools: prefixes stripped, the delegate that ran, the telling error.

``benchmark_model`` and ``benchmark_litert_model`` log through ``TFLITE_LOG`` / ``LITERT_LOG``
(``INFO: ...``), glog/absl (``I0000 ... file.cc:12] ...``) or, copied from ``adb logcat``, with
logcat prefixes; :func:`clean_line` reduces each line to its severity and message. The numbers
are parsed in :mod:`edgekit.devices.benchmark_output`. Only the standard library is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Coverage = Literal["complete", "partial", "none"]


# --- line prefixes -----------------------------------------------------------------------------
# adb logcat -v threadtime:  "05-30 15:16:44.857  3380  3380 I tflite  : message"
_LOGCAT_THREADTIME = re.compile(r"^\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\d+\s+([VDIWEFA])\s+[^:]*?\s*: ?(.*)$")
# adb logcat -v brief:  "I/tflite  ( 3380): message"
_LOGCAT_BRIEF = re.compile(r"^([VDIWEFA])/[^:(]*(?:\(\s*\d+\))?\s*: ?(.*)$")
# Android Studio's logcat view: "2026-03-10 17:01:31.105 22716-23089 tflite  com.example.app  I  message"
_LOGCAT_STUDIO = re.compile(r"^\d{4}-\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+\s+\d+-\d+\s+\S+\s+\S+\s+([VDIWEFA])\s+(.*)$")
# absl / glog: "I0000 00:00:1776763095.992481   21214 delegate_kernel.cc:285] message"
_ABSL = re.compile(r"^([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+[^\]\s]+\] ?(.*)$")
# TFLITE_LOG / TFLite minimal logging / LITERT_LOG severity prefix.
_SEVERITY = re.compile(r"^(INFO|WARN|WARNING|ERROR|FATAL|VERBOSE|DEBUG): ?(.*)$")
# LITERT_LOG adds "[file.cc:123] " after the severity.
_LITERT_TAG = re.compile(r"^\[[^\]\s]+:\d+\] ?(.*)$")

_LOGCAT_LEVELS = {
    "V": "VERBOSE",
    "D": "DEBUG",
    "I": "INFO",
    "W": "WARNING",
    "E": "ERROR",
    "F": "FATAL",
    "A": "FATAL",
}
WARNING_SEVERITIES = frozenset({"WARN", "WARNING", "ERROR", "FATAL"})
ERROR_SEVERITIES = frozenset({"ERROR", "FATAL"})
_EXPLICIT_COMPLETE = re.compile(r"Explicitly applied (.+?) delegate, and the model graph will be completely executed by the delegate")
_EXPLICIT_PARTIAL = re.compile(
    r"Explicitly applied (.+?) delegate, and the model graph will be partially executed by the "
    r"delegate w/ (\d+) delegate kernels"
)
_EXPLICIT_NONE = re.compile(r"Though (.+?) delegate is explicitly applied, the model graph will not be executed by the delegate")
# "Replacing 148 out of 151 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions
#  for the whole graph." (TF 2.1x), "... for subgraph 0." (newer), "Replacing 66 node(s) with ..." (older).
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node, yielding (\d+) partitions")
_XNNPACK_CREATED = re.compile(r"Created TensorFlow Lite XNNPACK delegate for CPU")

# Lines that say the process died, for outputs without any ERROR-prefixed line.
_CRASH_MARKERS = re.compile(
    r"Segmentation fault|Aborted|Killed|CANNOT LINK EXECUTABLE|Fatal signal|terminate called|"
    r"No such file or directory|Permission denied|not found|inaccessible or not found",
    re.IGNORECASE,
)
_DECISIVE_ERROR = re.compile(r"^(?:Failed to |Disallowed |Could not |Error )", re.IGNORECASE)
GENERIC_FAILURE = "Benchmarking failed."

# Delegate kernel names (as printed in the "Replacing ..." line) -> delegate provider names (as
# printed by benchmark_model's "Explicitly applied <name> delegate" lines).
_KERNEL_TO_DELEGATE = {
    "TfLiteXNNPackDelegate": "XNNPACK",
    "TfLiteGpuDelegateV2": "GPU",
    "TfLiteGpuDelegate": "GPU",
    "TfLiteMetalDelegate": "GPU",
    "TfLiteNnapiDelegate": "NNAPI",
    "TfLiteHexagonDelegate": "Hexagon",
    "TfLiteCoreMlDelegate": "CoreML",
}
_LITERT_GPU_KERNELS = ("LITERT_CL", "LITERT_GL", "LITERT_WEBGPU", "LITERT_METAL", "LITERT_VULKAN")


@dataclass(frozen=True)
class LogLine:
    """One output line with its logging prefixes removed."""

    severity: str | None
    message: str
    text: str


@dataclass(frozen=True)
class _Replacement:
    """A parsed ``Replacing X out of Y node(s) with delegate (K) node, yielding Z partitions``."""

    delegated: int
    total: int | None
    kernel: str
    partitions: int


def clean_line(raw: str) -> LogLine:
    """Strip logcat / glog / severity / LiteRT file-tag prefixes from one line."""
    text = raw.rstrip()
    severity: str | None = None
    message = text.strip()
    for pattern in (_LOGCAT_THREADTIME, _LOGCAT_STUDIO, _LOGCAT_BRIEF):
        match = pattern.match(message)
        if match:
            severity = _LOGCAT_LEVELS[match.group(1)]
            message = match.group(2).strip()
            break
    else:
        match = _ABSL.match(message)
        if match:
            severity = _LOGCAT_LEVELS[match.group(1)]
            message = match.group(2).strip()
    match = _SEVERITY.match(message)
    if match:
        severity = match.group(1)
        message = match.group(2).strip()
    match = _LITERT_TAG.match(message)
    if match:
        message = match.group(1).strip()
    return LogLine(severity=severity, message=message, text=text.strip())


def warning_text(line: LogLine) -> str:
    """The line as printed, or ``SEVERITY: message`` when it carried a logcat/glog prefix."""
    if _SEVERITY.match(line.text):
        return line.text
    return f"{line.severity}: {line.message}"


def last_invocation(lines: list[LogLine]) -> list[LogLine]:
    """Keep only the lines of the last tool invocation (each one starts with ``STARTING!``)."""
    starts = [i for i, line in enumerate(lines) if line.message == "STARTING!"]
    return lines[starts[-1] :] if starts else lines

# --- delegates ---------------------------------------------------------------------------------


def _kernel_delegate_name(kernel: str) -> str:
    """Map a delegate kernel name (``TfLiteGpuDelegateV2``, ``LITERT_CL``) to a delegate name."""
    if kernel in _KERNEL_TO_DELEGATE:
        return _KERNEL_TO_DELEGATE[kernel]
    if kernel in _LITERT_GPU_KERNELS:
        return "GPU"
    return kernel


def delegate_facts(lines: list[LogLine]) -> dict:
    """Which delegate ran the graph, and how much of it."""
    explicit: list[tuple[str, Coverage, int]] = []
    replacements: list[_Replacement] = []
    xnnpack_created = False
    for line in lines:
        message = line.message
        if match := _EXPLICIT_COMPLETE.search(message):
            explicit.append((match.group(1), "complete", 1))
        elif match := _EXPLICIT_PARTIAL.search(message):
            explicit.append((match.group(1), "partial", int(match.group(2))))
        elif match := _EXPLICIT_NONE.search(message):
            explicit.append((match.group(1), "none", 0))
        elif match := _REPLACING.search(message):
            replacements.append(
                _Replacement(
                    delegated=int(match.group(1)),
                    total=int(match.group(2)) if match.group(2) else None,
                    kernel=match.group(3),
                    partitions=int(match.group(4)),
                )
            )
        elif _XNNPACK_CREATED.search(message):
            xnnpack_created = True

    result: dict = {
        "delegate": None,
        "coverage": None,
        "kernels": None,
        "delegated_nodes": None,
        "total_nodes": None,
        "partitions": None,
    }
    if explicit:
        # benchmark_model applies every requested delegate in turn and says what each one took;
        # report the first one that actually runs something, else the first one that was asked for.
        name, coverage, kernels = next((e for e in explicit if e[1] != "none"), explicit[0])
        result.update(delegate=name, coverage=coverage, kernels=kernels)
        if coverage != "none":
            replacement = _matching_replacement(name, replacements)
            if replacement is not None:
                result.update(_replacement_counts(replacement))
        return result

    if replacements:
        # No "Explicitly applied" line (LiteRT, or the classic tool's default XNNPACK): the
        # accelerator's own line wins over XNNPACK, which only picks up what is left on the CPU.
        primary = next((r for r in replacements if _kernel_delegate_name(r.kernel) != "XNNPACK"), replacements[0])
        coverage = "complete" if primary.partitions == 1 else "partial"
        result.update(delegate=_kernel_delegate_name(primary.kernel), coverage=coverage)
        result.update(_replacement_counts(primary))
        return result

    if xnnpack_created:
        result["delegate"] = "XNNPACK"
    return result


def _matching_replacement(name: str, replacements: list[_Replacement]) -> _Replacement | None:
    for replacement in replacements:
        if _kernel_delegate_name(replacement.kernel) == name:
            return replacement
    if name != "XNNPACK":
        # External / stable delegates have kernel names we cannot map; take the first non-XNNPACK.
        for replacement in replacements:
            if _kernel_delegate_name(replacement.kernel) != "XNNPACK":
                return replacement
    return None


def _replacement_counts(replacement: _Replacement) -> dict:
    return {
        "delegated_nodes": replacement.delegated,
        "total_nodes": replacement.total,
        "partitions": replacement.partitions,
    }


# --- failures ----------------------------------------------------------------------------------

def most_telling_error(lines: list[LogLine]) -> str | None:
    """The error line that best explains a failed run, plus the first error line when different."""
    errors = [line.message for line in lines if line.severity in ERROR_SEVERITIES and line.message]
    specific = [e for e in errors if e != GENERIC_FAILURE]
    if specific:
        decisive = next((e for e in specific if _DECISIVE_ERROR.match(e)), specific[0])
        if decisive != specific[0]:
            return f"{decisive} (first error line: {specific[0]})"
        return decisive
    crash = next((line.message for line in lines if _CRASH_MARKERS.search(line.message)), None)
    if crash:
        return crash
    return errors[0] if errors else None
