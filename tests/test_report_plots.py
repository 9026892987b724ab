"""The HTML report's candidate plot: budget lines, whole budget visible, numbered points."""

from __future__ import annotations

from edgekit.report.html import _budget_lines, plot_candidates

ROWS = [
    {"name": "reference float32", "status": "reference", "top1": 90.0, "p50_ms": 2.0, "bytes": 400_000, "pareto": False},
    {"name": "int8 per-channel with a rather long candidate name", "status": "recommended", "top1": 89.8, "p50_ms": 0.5,
     "bytes": 100_000, "pareto": True},
    {"name": "int8 per-tensor", "status": "feasible", "top1": 89.7, "p50_ms": 0.45, "bytes": 99_000, "pareto": True},
    {"name": "float16", "status": "rejected", "top1": 90.0, "p50_ms": 25.0, "bytes": 200_000, "pareto": False},
]


def test_budget_lines_from_the_budget():
    budget = {"max_drop": 1.0, "drop_unit": "points", "max_latency_ms": 30.0, "max_size_bytes": 512_000}
    assert _budget_lines(budget, ROWS) == {"top1": 89.0, "p50_ms": 30.0, "bytes": 500.0}
    relative = _budget_lines({"max_drop": 10.0, "drop_unit": "% of float32 top-1"}, ROWS)
    assert abs(relative["top1"] - 81.0) < 1e-9


def test_plot_with_budget_renders():
    png = plot_candidates(ROWS, {"max_drop": 1.0, "drop_unit": "points", "max_latency_ms": 30.0, "max_size_bytes": 512_000})
    assert png is not None and len(png) > 1000
    assert plot_candidates([{"name": "x", "top1": None, "p50_ms": None, "bytes": 1}]) is None


def test_device_probe_is_a_short_table():
    from edgekit.report.html import _device_summary

    flat = [(f"details.k{i}", i) for i in range(40)] + [("name", "pixel-8"), ("transport", "adb"), ("os.release", "14")]
    short = _device_summary(flat)
    assert len(short) == 12 and short[:3] == [("name", "pixel-8"), ("transport", "adb"), ("os.release", "14")]


def test_report_has_the_layer_error_chart_and_a_versions_footer():
    from edgekit.report.html import render_report

    errors = [{"layer": f"conv{i}", "op": "CONV_2D", "elements": 100, "scale": 0.01, "sqnr_db": 30.0 - i,
               "channel_sqnr_db": 25.0 - i, "worst_channel_sqnr_db": 10.0, "rmse_over_scale": 0.3} for i in range(3)]
    html = render_report({"kind": "optimize", "recommended": None, "budget": {}, "candidates": [dict(r, sha256="ab" * 32) for r in ROWS],
                          "layer_errors": errors, "versions": {"edgekit": "9.9.9", "tensorflow": "2.21.0"}})
    section = html.split("Per-layer int8 quantization error", 1)[1].split("<h2>", 1)[0]
    assert "data:image/png;base64," in section and "conv2" in section
    footer = html.split("<footer>", 1)[1]
    assert footer.rstrip().endswith("</footer></body></html>")
    assert "9.9.9" in footer and "2.21.0" in footer and "ab" * 32 in footer  # full hashes, never cut
