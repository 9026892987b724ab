"""Two artifacts side by side: size, accuracy, agreement of their outputs, latency in interleaved rounds.

The latency verdict is noise-aware (:mod:`edgekit.measure.noise`): B is "faster" or "slower" than A
only when the intervals of their p50 over the interleaved rounds do not overlap; two runs of the
same file are "the same speed".

Example:
    >>> report = compare("model_fp32.tflite", "model_int8.tflite", data="val.npz")  # doctest: +SKIP
    >>> report.speed.verdict  # doctest: +SKIP
    'faster'
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.data import load_dataset
from edgekit.core.datatypes import OutputComparison, Preprocessing
from edgekit.core.errors import InputError
from edgekit.core.fsutil import require_file
from edgekit.core.manifest import preprocessing_from_manifest, read_manifest
from edgekit.core.tflite_verify import read_verified_tflite
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.measure.bench import Bench, Candidate, Measurement, MeasureSettings
from edgekit.measure.metrics import compare_outputs
from edgekit.measure.noise import SpeedComparison, compare_speed


@dataclass(frozen=True)
class CompareReport:
    """What ``edgekit compare`` measured: A and B, B's outputs against A's, and the speed verdict."""

    a: Measurement
    b: Measurement
    agreement: OutputComparison | None
    speed: SpeedComparison | None
    samples: int
    preprocessing: Preprocessing
    device: str

    @property
    def size_ratio(self) -> float:
        """A's size over B's (above 1: B is smaller)."""
        return self.a.size.bytes / self.b.size.bytes

    def accuracy_change(self) -> float | None:
        """B's primary metric minus A's (top-1 points for a classifier; None without labels)."""
        if self.a.accuracy is None or self.b.accuracy is None or self.a.accuracy.value is None or self.b.accuracy.value is None:
            return None
        return self.b.accuracy.value - self.a.accuracy.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(), "b": self.b.to_dict(),
            "size_ratio_a_over_b": round(self.size_ratio, 4),
            "accuracy_change_points": self.accuracy_change(),
            "agreement_of_b_with_a": self.agreement.to_dict() if self.agreement else None,
            "speed": self.speed.to_dict() if self.speed else None,
            "speed_verdict": self.speed.sentence("B", "A") if self.speed else None,
            "samples": self.samples, "preprocessing": self.preprocessing.to_dict(), "device": self.device,
            "per_op": None,  # per-operator times need an op profiler (issue 15); not measured
        }


def compare(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
    device: str | os.PathLike[str] | DeviceProfile = "local",
    runs: int = 50,
    warmup: int = 5,
    rounds: int = 5,
    threads: int | None = None,
    samples: int | None = None,
    seed: int = 0,
    x_key: str = "x",
    y_key: str = "y",
    devices_dir: str | os.PathLike[str] | None = None,
) -> CompareReport:
    """Measures ``a`` and ``b`` (``.tflite``) side by side on ``device``.

    With ``data``, both run on it (preprocessing: ``preprocessing``, else the one in A's manifest,
    else B's) and B's outputs are compared with A's. Latency is timed in ``rounds`` interleaved
    rounds of ``runs`` runs each, so the verdict carries the spread of the rounds.
    """
    profile = device if isinstance(device, DeviceProfile) else load_profile(device, devices_dir=devices_dir)
    settings = MeasureSettings(runs=runs, warmup=warmup, rounds=rounds, threads=threads)
    if samples is not None and samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}", hint="omit it to use all samples", settings=("samples",))
    paths = [require_file(p, "artifact") for p in (a, b)]
    infos = [read_verified_tflite(p) for p in paths]
    shapes = [tuple(t.shape[1:]) for t in (infos[0].inputs[0], infos[1].inputs[0])]
    if data is not None and shapes[0] != shapes[1]:
        raise InputError(f"the artifacts take different inputs ({shapes[0]} vs {shapes[1]}); they cannot run on the same data",
                         hint="compare two builds of the same model, or leave out the data to compare size and latency only")
    dataset = None
    pre = preprocessing
    if data is not None:
        if pre is None:
            manifests = [read_manifest(p) for p in paths]
            pre = preprocessing_from_manifest(manifests[0] or manifests[1])
        shape = (None, *(None if d < 0 else d for d in infos[0].inputs[0].shape[1:]))
        dataset = load_dataset(data, input_shape=shape, preprocessing=pre, x_key=x_key, y_key=y_key, limit=samples, seed=seed)
    with tempfile.TemporaryDirectory(prefix="edgekit-compare-") as tmp:
        bench = Bench(Path(tmp), val=dataset, calibration=None, device=profile, settings=settings)
        ma = bench.add(Candidate("A", path=paths[0]), reference=True)
        mb = bench.add(Candidate("B", path=paths[1]))
        agreement = None
        if dataset is not None and "A" in bench.outputs and "B" in bench.outputs:
            ref, out = bench.outputs["A"], bench.outputs["B"]
            if ref.shape == out.shape:
                agreement = compare_outputs(infos[1].outputs[0].name, ref, out)
        ma, mb = bench.time([ma, mb])
    speed = compare_speed(mb.spread, ma.spread) if ma.spread is not None and mb.spread is not None else None
    return CompareReport(a=ma, b=mb, agreement=agreement, speed=speed, samples=len(dataset) if dataset is not None else 0,
                         preprocessing=dataset.preprocessing if dataset is not None else (pre or Preprocessing()), device=profile.name)
