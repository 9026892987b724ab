"""Plain sentences on what weight compression bought: size on disk, gzipped, and latency.

The ``prune`` and ``cluster`` reports end with them: unstructured sparsity and shared values make
a file smaller only once it is compressed, and LiteRT's CPU kernels are not faster for them; the
verdict says so instead of leaving a reader to guess from the numbers.

Example:
    >>> compression_verdict(float32, original, compressed, structure="unstructured")  # doctest: +SKIP
    ['size: 21,532 B gzipped vs 60,118 B for the uncompressed int8 model (x2.79) ...', 'NOT FASTER ...']
"""

from __future__ import annotations

from edgekit.measure.bench import Measurement
from edgekit.measure.noise import compare_speed

SPEEDUP_NOISE = 1.10  # without round intervals, a p50 ratio below this is reported as "not faster"


def speedup(original: Measurement, compressed: Measurement) -> float | None:
    """``original`` p50 over ``compressed`` p50 (None when either was not timed)."""
    if original.latency is None or compressed.latency is None:
        return None
    return original.latency.p50_ms / compressed.latency.p50_ms


def compression_verdict(float32: Measurement, original: Measurement, compressed: Measurement, structure: str | None) -> list[str]:
    """What compression bought on disk and in latency, as sentences.

    Args:
        float32: the original model converted to float32.
        original: the original model converted like ``compressed``.
        compressed: the compressed (pruned or clustered) model, converted.
        structure: the pruning structure (``unstructured``, ``2:4``, ``channels``), or ``cluster``.
    """
    lines = [
        f"size: {compressed.size.gzip_bytes:,} B gzipped vs {original.size.gzip_bytes:,} B for the uncompressed "
        f"{original.mode} model (x{original.size.gzip_bytes / compressed.size.gzip_bytes:.2f}) and {float32.size.gzip_bytes:,} B for "
        f"float32 (x{float32.size.gzip_bytes / compressed.size.gzip_bytes:.2f})"
    ]
    if compressed.weights == "per-tensor" and original.weights != "per-tensor":
        lines.append(
            "the clustered model was exported with per-tensor int8 weights (as `edgekit quantize` does for it by default): "
            "per-channel scales would give every channel its own codes for the shared values and lose part of the gain"
        )
    if original.size.bytes <= compressed.size.bytes * 1.02:
        lines.append(
            "on disk (uncompressed) the file is not smaller: zeros and shared values are still stored as full tensors; "
            "the saving appears only when the file is compressed (gzip, an app bundle, an OTA update)"
        )
    speed = speedup(original, compressed)
    if speed is not None and original.latency is not None and compressed.latency is not None:
        o, c = original.latency, compressed.latency
        if original.spread is not None and compressed.spread is not None:
            faster = compare_speed(compressed.spread, original.spread).verdict == "faster"
        else:
            faster = speed >= SPEEDUP_NOISE
        if not faster:
            why = ("LiteRT's CPU kernels multiply zeros and repeated values like any other weight"
                   if structure != "channels" else "the removed channels did not shrink the work enough to show")
            lines.append(
                f"NOT FASTER on this runtime: p50 {c.p50_ms:.3f} ms vs {o.p50_ms:.3f} ms (x{speed:.2f}, within noise of the interleaved rounds); {why}"
                + ("; prune with structure channels to remove filters and really cut the work" if structure != "channels" else "")
            )
        else:
            lines.append(f"faster: p50 {c.p50_ms:.3f} ms vs {o.p50_ms:.3f} ms (x{speed:.2f}, {o.runtime}, {o.threads} thread(s))")
    return lines
