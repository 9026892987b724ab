"""Noise-aware latency verdicts (measure/noise.py), `edgekit compare`, and optimize's budget on noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.core.datatypes import LatencyStats, SizeInfo
from edgekit.measure.bench import Measurement
from edgekit.measure.noise import compare_speed, spread_of
from edgekit.workflows.search import Budget, Trial, closest_per_limit


def _rounds(center: float, spread: float, seed: int, rounds: int = 3, runs: int = 30) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(center + rng.normal(0, spread, runs)) for _ in range(rounds)]


def test_same_distribution_is_same_speed_even_when_p50_differs():
    a, b = spread_of(_rounds(1.00, 0.05, 1)), spread_of(_rounds(1.00, 0.05, 2))
    assert a.p50.value != b.p50.value
    assert compare_speed(a, b).verdict == "same speed"
    assert compare_speed(b, a).verdict == "same speed"


def test_clearly_separated_latencies_are_faster_and_slower():
    fast, slow = spread_of(_rounds(1.0, 0.01, 1)), spread_of(_rounds(2.0, 0.01, 2))
    assert compare_speed(fast, slow).verdict == "faster"
    assert compare_speed(slow, fast).verdict == "slower"
    assert compare_speed(slow, fast).ratio == pytest.approx(0.5, rel=0.05)


def test_noise_floor_makes_tiny_differences_the_same_speed():
    # no spread at all, 2% apart: below the 3% floor, never "slower"
    a, b = spread_of([[1.00] * 10] * 3), spread_of([[1.02] * 10] * 3)
    assert compare_speed(b, a).verdict == "same speed"


def test_round_to_round_drift_widens_the_interval():
    steady = spread_of([[1.0] * 20, [1.0] * 20, [1.0] * 20])
    drifting = spread_of([[1.0] * 20, [1.3] * 20, [1.0] * 20])
    assert drifting.p50.high >= 1.3 > steady.p50.high


def _measurement(name: str, p50: float, rounds: list[list[float]] | None, size: int = 1000, top1: float = 90.0) -> Measurement:
    from edgekit.core.datatypes import AccuracyResult

    samples = [t for r in rounds for t in r] if rounds else [p50]
    lat = LatencyStats.from_samples(samples, warmup=0, threads=1, first_inference_ms=p50, init_ms=1.0, peak_memory_mb=None, runtime="x")
    return Measurement(name=name, path=f"/{name}.tflite", sha256="0" * 64, size=SizeInfo(bytes=size, gzip_bytes=size),
                       accuracy=AccuracyResult(top1=top1, top5=None, samples=100), latency=lat,
                       spread=spread_of(rounds) if rounds else None)


def test_budget_does_not_reject_a_candidate_within_noise_of_float32():
    """The case of issue 15: 0.0030 vs 0.0027 ms p50 inside run-to-run noise is not "slower than float32"."""
    ref_rounds = [[0.0027, 0.0024, 0.0031, 0.0026], [0.0027, 0.0025, 0.0032, 0.0026], [0.0028, 0.0033, 0.0026, 0.0027]]
    cand_rounds = [[0.0030, 0.0028, 0.0035, 0.0026], [0.0031, 0.0027, 0.0033, 0.0030], [0.0029, 0.0036, 0.0030, 0.0031]]
    ref, cand = _measurement("float32", 0.0027, ref_rounds), _measurement("int8", 0.0030, cand_rounds)
    assert cand.latency.p50_ms > ref.latency.p50_ms * 1.10  # the old 10% rule rejected it
    budget = Budget(max_drop=1.0)
    assert not any(r.startswith("slower") for r in budget.reasons(ref, cand))
    # truly slower (intervals apart) is still rejected
    slow = _measurement("slow", 0.006, [[0.006, 0.0061, 0.0059]] * 3)
    assert any(r.startswith("slower than float32") for r in budget.reasons(ref, slow))


def test_failed_search_names_the_candidate_closest_to_each_limit():
    """Issue 15: float16 (494 KB) was named 'closest' to a 100 KB limit when int8 per-tensor (250 KB) was closer."""
    ref = _measurement("float32", 1.0, None, size=990_000)
    f16 = _measurement("float16", 1.0, None, size=494_000, top1=90.0)
    int8 = _measurement("int8 per-tensor", 1.0, None, size=250_000, top1=87.0)
    budget = Budget(max_drop=1.0, max_size_bytes=100_000)
    trials = [Trial(name=m.name, family="ptq", passes=[], measurement=m, reasons=tuple(budget.reasons(ref, m))) for m in (f16, int8)]
    lines = closest_per_limit(trials, ref, budget)
    assert any(line.startswith("size: int8 per-tensor is 250,000 bytes") for line in lines), lines
    assert any(line.startswith("accuracy: float16 drops 0.00") for line in lines), lines


@pytest.fixture(scope="module")
def artifacts(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    runner = CliRunner()
    for mode in ("float32", "int8"):
        r = runner.invoke(cli, ["quantize", str(tiny["model"]), "--mode", mode, "--data", str(tiny["train"]), "--scale", "1/255",
                                "-o", str(out / f"m_{mode}.tflite")])
        assert r.exit_code == 0, r.output
    return out


def test_compare_same_artifact_twice_is_same_speed(artifacts, tiny):
    path = artifacts / "m_float32.tflite"
    r = CliRunner().invoke(cli, ["compare", str(path), str(path), "--data", str(tiny["val"]), "--runs", "20", "--rounds", "3", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["speed"]["verdict"] == "same speed"
    assert report["size_ratio_a_over_b"] == 1.0
    assert report["accuracy_change_points"] == 0.0
    assert report["agreement_of_b_with_a"]["top1_agreement"] == 100.0
    assert report["a"]["spread"]["rounds"] == 3


def test_compare_float_and_int8_reports_size_accuracy_and_agreement(artifacts, tiny):
    r = CliRunner().invoke(cli, ["compare", str(artifacts / "m_float32.tflite"), str(artifacts / "m_int8.tflite"),
                                 "--data", str(tiny["val"]), "--runs", "10", "--rounds", "2", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["size_ratio_a_over_b"] > 1.2  # int8 weights (the flatbuffer overhead dominates a tiny model)
    assert report["a"]["accuracy"]["top1"] > 50 and report["b"]["accuracy"]["top1"] > 50
    assert 90.0 <= report["agreement_of_b_with_a"]["top1_agreement"] <= 100.0
    assert report["speed"]["verdict"] in ("faster", "slower", "same speed")
    text = CliRunner().invoke(cli, ["compare", str(artifacts / "m_float32.tflite"), str(artifacts / "m_int8.tflite"), "--runs", "5", "--rounds", "2"])
    assert text.exit_code == 0, text.output
    assert "speed" in text.output and "smaller" in text.output


def test_compare_refuses_artifacts_with_different_inputs(artifacts, tiny, tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(tmp_path / "o.keras")
    r = CliRunner().invoke(cli, ["quantize", str(tmp_path / "o.keras"), "--mode", "float32", "-o", str(tmp_path / "o.tflite")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["compare", str(artifacts / "m_float32.tflite"), str(tmp_path / "o.tflite"), "--data", str(tiny["val"])])
    assert r.exit_code not in (0, 1)
    assert "different inputs" in r.output


def test_benchmark_profile_ops_lists_every_op_and_sums_to_the_total(artifacts):
    from edgekit.core.tflite_file import read_tflite

    path = artifacts / "m_int8.tflite"
    r = CliRunner().invoke(cli, ["benchmark", str(path), "--runs", "20", "--profile-ops", "--json"])
    assert r.exit_code == 0, r.output
    prof = json.loads(r.output)["op_profile"]
    info = read_tflite(path)
    assert [o["op"] for o in prof["ops"]] == [o.op for o in info.operators if o.subgraph == 0]
    assert prof["measured"] is True and prof["method"].startswith("measured")
    assert all(o["time_ms"] >= 0 for o in prof["ops"])
    assert prof["sum_ms"] == pytest.approx(prof["total_ms"], rel=0.15)
    conv = next(t for t in prof["by_type"] if t["op"] == "CONV_2D")
    assert conv["flops"] > 0
    text = CliRunner().invoke(cli, ["benchmark", str(path), "--runs", "10", "--profile-ops"])
    assert text.exit_code == 0, text.output
    assert "By operator type" in text.output and "CONV_2D" in text.output


def test_op_profile_estimate_is_labelled_and_splits_the_total(artifacts):
    from edgekit.devices.profiles import load_profile
    from edgekit.measure.op_profile import profile_ops

    prof = profile_ops(artifacts / "m_int8.tflite", load_profile("local"), measure=False, total_ms=2.0)
    assert not prof.measured and prof.method.startswith("estimate")
    assert prof.sum_ms == pytest.approx(2.0)
    assert max(prof.ops, key=lambda o: o.time_ms).op in ("CONV_2D", "FULLY_CONNECTED")


def test_benchmark_thread_sweep(artifacts):
    r = CliRunner().invoke(cli, ["benchmark", str(artifacts / "m_float32.tflite"), "--runs", "10", "--threads", "1,2", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["thread_sweep"]
    assert [row["threads"] for row in rows] == [1, 2]
    assert rows[0]["speedup"] == 1.0 and rows[1]["p50_low_ms"] <= rows[1]["p50_ms"] <= rows[1]["p50_high_ms"]
    bad = CliRunner().invoke(cli, ["benchmark", str(artifacts / "m_float32.tflite"), "--threads", "1,x"])
    assert bad.exit_code == 2 and "thread count" in bad.output


def test_isotonic_fit_is_monotone_and_keeps_the_mean():
    from edgekit.measure.op_profile import isotonic

    noisy = [1.0, 3.0, 2.0, 4.0, 3.5, 5.0]
    fit = isotonic(noisy)
    assert list(fit) == [1.0, 2.5, 2.5, 3.75, 3.75, 5.0]
    assert all(b >= a for a, b in zip(fit, fit[1:]))
    assert fit.sum() == pytest.approx(sum(noisy))
