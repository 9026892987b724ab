"""A self-contained HTML report for ``edgekit run`` and ``edgekit optimize``.

One file, no network: the styles are inline and every plot is a matplotlib PNG embedded as a
base64 ``data:`` URI. It shows the candidates (accuracy vs latency vs size, with the Pareto front
and the recommendation), the gates or the budget, why each rejected candidate was rejected, the
per-layer int8 error, the latency distributions, delegate coverage, the device probe, the steps,
and the versions and hashes that make the result auditable.

Example:
    >>> html_text = render_report(json.load(open("out/report.json")))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any

from edgekit.core.datatypes import LOWER_IS_BETTER, METRIC_LABELS, PERCENT_METRICS

STATUS_COLORS = {"recommended": "#1a7f37", "reference": "#6e7781", "final": "#0969da", "feasible": "#0969da",
                 "rejected": "#cf222e", "failed": "#8250df", "skipped": "#bf8700"}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;color:#1f2328;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.muted{color:#6e7781}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-size:0.85em}
.box{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;margin:10px 0}
img.plot{max-width:100%;border:1px solid #d0d7de;border-radius:4px;margin:6px 0}code{font-size:0.9em}
ul{margin:4px 0}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return _e(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return _e(value)


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v if isinstance(v, str) and v.startswith('<') else _e(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _badge(status: str) -> str:
    return f"<span class='badge' style='background:{STATUS_COLORS.get(status, '#6e7781')}'>{_e(status)}</span>"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img class='plot' alt='plot' src='data:image/png;base64,{data}'>"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _val(row: dict[str, Any]) -> Any:
    """A candidate's primary metric (``value``; ``top1`` in reports written before tasks existed)."""
    value = row.get("value")
    return value if value is not None else row.get("top1")


def _metric_label(rows: list[dict[str, Any]]) -> str:
    """The primary metric's name for a table or an axis (``top-1 (%)``, ``MAE``, ``mean IoU (%)``)."""
    metric = str(next((r.get("metric") for r in rows if r.get("metric")), "top1"))
    return METRIC_LABELS.get(metric, metric) + (" (%)" if metric in PERCENT_METRICS else "")


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _budget_lines(budget: dict[str, Any] | None, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The gates as plot coordinates: ``top1`` floor, ``p50_ms`` and ``bytes`` (KB) limits."""
    out: dict[str, float] = {}
    if not budget:
        return out
    ref = next((r for r in rows if (r.get("status") or r.get("role")) == "reference" and _val(r) is not None), None)
    if budget.get("max_drop") is not None and ref is not None:
        drop = float(budget["max_drop"])
        relative = "%" in str(budget.get("drop_unit", ""))
        lower = ref.get("metric") in LOWER_IS_BETTER  # a ceiling for an error metric, a floor otherwise
        sign = 1 if lower else -1
        out["top1"] = _val(ref) * (1 + sign * drop / 100) if relative else _val(ref) + sign * drop
    if budget.get("max_latency_ms") is not None:
        out["p50_ms"] = float(budget["max_latency_ms"])
    if budget.get("max_size_bytes") is not None:
        out["bytes"] = float(budget["max_size_bytes"]) / 1024
    return out


def plot_candidates(rows: list[dict[str, Any]], budget: dict[str, Any] | None = None) -> str | None:
    """Accuracy vs latency (marker area ~ size) and accuracy vs size: points numbered (the key
    below the plots names them, so labels never overlap), the Pareto front highlighted, a line
    for each gate of the budget, and axes wide enough to show the whole budget."""
    pts = [r for r in rows if _val(r) is not None and r.get("p50_ms") is not None]
    if not pts:
        return None
    plt = _pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    lines = _budget_lines(budget, rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6 + 0.22 * ((len(pts) + 1) // 2)))
    biggest = max(r["bytes"] for r in pts) or 1
    for ax, xkey, xlabel in ((axes[0], "p50_ms", "latency p50 (ms)"), (axes[1], "bytes", "size on disk (KB)")):
        xs = []
        for i, r in enumerate(pts, 1):
            status = r.get("status") or r.get("role") or "feasible"
            x = r[xkey] / 1024 if xkey == "bytes" else r[xkey]
            xs.append(x)
            area = 40 + 400 * (r["bytes"] / biggest) if xkey == "p50_ms" else 60
            marker = "*" if status == "recommended" else ("s" if status in ("reference", "final") else "o")
            ax.scatter([x], [_val(r)], s=area * (2.2 if marker == "*" else 1), c=STATUS_COLORS.get(status, "#6e7781"),
                       marker=marker, alpha=0.85, edgecolors="#1a7f37" if r.get("pareto") else "black",
                       linewidths=2.0 if r.get("pareto") else 0.5, zorder=3)
            ax.annotate(str(i), (x, _val(r)), textcoords="offset points", xytext=(5, 5), fontsize=8, zorder=4)
        front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r[xkey])
        if len(front) > 1:
            ax.plot([r[xkey] / 1024 if xkey == "bytes" else r[xkey] for r in front], [_val(r) for r in front],
                    "-", color="#1a7f37", linewidth=1.5, alpha=0.7, label="Pareto front", zorder=2)
        tops = [_val(r) for r in pts]
        if "top1" in lines:
            ax.axhline(lines["top1"], color="#cf222e", linestyle="--", linewidth=1, label="accuracy floor")
            tops.append(lines["top1"])
        if xkey in lines:
            ax.axvline(lines[xkey], color="#bf8700", linestyle="--", linewidth=1,
                       label="latency limit" if xkey == "p50_ms" else "size limit")
            xs.append(lines[xkey])
        low, high = min(tops), max(tops)
        pad = max(0.5, (high - low) * 0.15)  # at least a point either side: no zoom into a 0.4-point range
        ax.set_ylim(low - pad, high + pad)
        if xkey == "p50_ms" and max(xs) > 5 * min(xs):
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            xlabel += ", log scale"
        else:
            ax.set_xlim(0, max(xs) * 1.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_metric_label(pts))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    axes[0].set_title("accuracy vs latency (marker area ~ size)", fontsize=10)
    axes[1].set_title("accuracy vs size", fontsize=10)
    key = [f"{i} {r['name']}" for i, r in enumerate(pts, 1)]
    half = (len(key) + 1) // 2
    fig.text(0.06, 0.01, "\n".join(key[:half]), fontsize=8, va="bottom", family="monospace")
    fig.text(0.53, 0.01, "\n".join(key[half:]), fontsize=8, va="bottom", family="monospace")
    fig.subplots_adjust(bottom=0.12 + 0.045 * half)
    return _png(fig)


def plot_latency(rows: list[dict[str, Any]]) -> str | None:
    """Box plots of the raw per-run latencies of each measured artifact."""
    series = [(r["name"], r.get("latency_samples_ms") or []) for r in rows]
    series = [(n, s) for n, s in series if s]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(series) + 1.6))
    ax.boxplot([s for _, s in series], vert=False, showfliers=True, flierprops={"markersize": 2})
    ax.set_xscale("log")
    ax.set_yticks(range(1, len(series) + 1), [_short(n, 40) for n, _ in series], fontsize=8)
    ax.set_xlabel("latency per run (ms, log scale)")
    ax.set_title("latency distribution (every timed run, all rounds)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def plot_layer_errors(errors: list[dict[str, Any]]) -> str | None:
    """Per-node int8 error: tensor SQNR and mean per-channel SQNR (dB; lower is worse)."""
    rows = [e for e in errors if isinstance(e.get("channel_sqnr_db"), (int, float)) and isinstance(e.get("sqnr_db"), (int, float))]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 0.38 * len(rows) + 1.6))
    labels = [f"{e.get('layer') or '?'} ({e.get('op')})" for e in rows]
    ys = list(range(len(rows)))
    clip = lambda v: max(min(float(v), 80.0), -10.0)  # noqa: E731
    ax.barh([y + 0.2 for y in ys], [clip(e["sqnr_db"]) for e in rows], height=0.4, color="#8c959f", label="tensor SQNR")
    ax.barh([y - 0.2 for y in ys], [clip(e["channel_sqnr_db"]) for e in rows], height=0.4, color="#cf222e",
            label="mean per-channel SQNR")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("dB (higher is better; clipped to [-10, 80])")
    ax.set_title("int8 error each layer adds (QuantizationDebugger, same quantized inputs)", fontsize=10)
    ax.axvline(20, color="#bf8700", linestyle=":", linewidth=1)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]], depth: int = 0) -> None:
    if isinstance(value, dict) and depth < 3:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, depth + 1)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out.append((prefix, json.dumps(value)[:400]))
    else:
        text = json.dumps(value) if isinstance(value, (list, dict)) else value
        out.append((prefix, text if not isinstance(text, str) or len(text) < 400 else text[:400] + "…"))


DEVICE_KEYS = ("name", "transport", "address", "model", "soc", "os", "system", "machine", "arch", "abi", "cpu", "cores",
               "memory", "ram", "runtime", "litert", "accelerator", "gpu", "npu", "thermal", "governor")


def _device_summary(flat: list[tuple[str, Any]], limit: int = 12) -> list[tuple[str, Any]]:
    """The few probe entries a reader wants first (name, transport, OS, CPU, memory, runtime...)."""
    picked = [(k, v) for k, v in flat
              if v not in (None, "", []) and any(word in part for part in k.lower().split(".") for word in DEVICE_KEYS)]
    rest = [(k, v) for k, v in flat if (k, v) not in picked and v not in (None, "", [])]
    return (picked + rest)[:limit]


def _candidates_section(rows: list[dict[str, Any]]) -> str:
    table_rows = []
    for r in rows:
        status = r.get("status") or r.get("role") or ""
        reasons = r.get("reasons") or []
        why = "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in reasons) + "</ul>" if reasons else ""
        table_rows.append([
            f"<b>{_e(r['name'])}</b>" + ("<br><span class='muted'>Pareto</span>" if r.get("pareto") else ""),
            _badge(status) + why,
            _num(r.get("bytes")), _num(r.get("smaller_than_reference"), 2, "x"), _num(r.get("gzip_bytes")),
            _num(_val(r)), _num(r.get("drop")), _num(r.get("p50_ms"), 4), _num(r.get("p90_ms"), 4),
            _num(r.get("faster_than_reference"), 2, "x"),
        ])
    return _table(["candidate", "status / why", "bytes", "smaller", "gzip bytes", _metric_label(rows), "drop", "p50 ms", "p90 ms", "faster"],
                  table_rows, numeric={2, 3, 4, 5, 6, 7, 8, 9})


def _delegates_section(compat: dict[str, Any] | None) -> str:
    if not compat:
        return "<p class='muted'>No delegate check.</p>"
    s = compat.get("summary", {})
    rows = [("target / delegate", f"{compat.get('target')} / {compat.get('delegate')}"),
            ("full coverage", "yes" if compat.get("full_coverage") else "no"),
            ("nodes supported", f"{s.get('supported_nodes')} of {s.get('nodes')} ({_num((s.get('node_share') or 0) * 100, 1)}%)"),
            ("FLOPs supported", f"{_num((s.get('flop_share') or 0) * 100, 2)}%"),
            ("partitions", f"{s.get('partitions')} (delegated: {s.get('delegated_partitions')})")]
    text = _kv(rows)
    unsupported = compat.get("unsupported") or []
    if unsupported:
        text += _table(["node", "op", "layer", "why"], [[_e(n.get("index")), _e(n.get("op")), _e(n.get("layer")),
                                                        _e(n.get("why") or "; ".join(n.get("reasons") or []))] for n in unsupported])
    for w in compat.get("warnings") or []:
        text += f"<p class='bad'>{_e(w)}</p>"
    text += "<p class='muted'>Offline check against edgekit's rule tables (edgekit.export.delegates); no delegate ran here.</p>"
    return text


def render_report(report: dict[str, Any]) -> str:
    """The HTML text of a run/optimize report (the dict written to report.json)."""
    kind = report.get("kind", "run")
    rows = report.get("candidates") or []
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(report.get('title', 'edgekit report'))}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(report.get('title', 'edgekit report'))}</h1>",
             f"<p class='muted'>{_e(report.get('command', ''))}</p>"]

    # summary
    if kind == "optimize":
        rec = report.get("recommended")
        budget = report.get("budget", {})
        if rec:
            parts.append(f"<div class='box'><b>Recommended: {_e(rec['name'])}</b> — {_num(rec.get('bytes'))} bytes "
                         f"({_num(rec.get('smaller_than_reference'), 2, 'x')} smaller than float32), {_metric_label([rec])} {_num(_val(rec))} "
                         f"(drop {_num(rec.get('drop'))} points), p50 {_num(rec.get('p50_ms'), 4)} ms "
                         f"({_num(rec.get('faster_than_reference'), 2, 'x')} faster). Recipe to rerun it: <code>recipe.yaml</code>."
                         f"<br>{_e(report.get('why_recommended', ''))}</div>")
        else:
            parts.append(f"<div class='box bad'>No candidate met the budget. {_e(report.get('why_recommended', ''))}</div>")
        parts.append("<h2>Budget</h2>" + _kv([(k, v) for k, v in budget.items()]))
    else:
        ok = report.get("passed")
        parts.append(f"<div class='box'><b class='{'ok' if ok else 'bad'}'>{'All gates passed' if ok else 'A gate failed'}</b>"
                     f" — artifact <code>{_e(report.get('artifact', {}).get('path'))}</code></div>")
        gates = report.get("gates") or []
        if gates:
            parts.append("<h2>Gates</h2>" + _table(["gate", "result", "value", "limit", "detail"], [
                [_e(g["gate"]), f"<span class='{'ok' if g['passed'] else 'bad'}'>{'pass' if g['passed'] else 'FAIL'}</span>",
                 _num(g.get("value"), 4), _num(g.get("limit"), 4), _e(g.get("detail"))] for g in gates], numeric={2, 3}))
        else:
            parts.append("<h2>Gates</h2><p class='muted'>The recipe has no gates.</p>")

    parts.append("<h2>Candidates: accuracy, size, latency</h2>")
    parts.append(_candidates_section(rows))
    plot = plot_candidates(rows, report.get("budget") if report.get("kind") == "optimize" else None)
    if plot:
        parts.append(plot)
    cond = report.get("latency_conditions") or {}
    if cond:
        parts.append(f"<p class='muted'>Latency: {_e(cond.get('runs'))} timed runs after {_e(cond.get('warmup'))} warm-up, "
                     f"{_e(cond.get('rounds'))} interleaved rounds, {_e(cond.get('threads'))} thread(s), on {_e(cond.get('where'))}. "
                     "Ratios are measured side by side in the same run.</p>")
    lat = plot_latency(rows)
    if lat:
        parts.append("<h2>Latency distribution</h2>" + lat)

    errors = report.get("layer_errors") or []
    parts.append("<h2>Per-layer int8 quantization error</h2>")
    if errors:
        plot = plot_layer_errors(errors)
        if plot:
            parts.append(plot)
        parts.append(_table(["layer", "op", "elements", "scale", "tensor SQNR dB", "mean channel SQNR dB", "worst channel dB", "RMSE/scale"], [
            [_e(e.get("layer")), _e(e.get("op")), _num(e.get("elements")), _num(e.get("scale"), 6), _num(e.get("sqnr_db"), 1),
             _num(e.get("channel_sqnr_db"), 1), _num(e.get("worst_channel_sqnr_db"), 1), _num(e.get("rmse_over_scale"), 3)]
            for e in errors], numeric={2, 3, 4, 5, 6, 7}))
        parts.append("<p class='muted'>Each layer's int8 output against its float op on the same quantized inputs. A low mean "
                     "per-channel SQNR with a fine tensor SQNR means a few wide channels set the scale and the others drown in "
                     "rounding noise: keep that layer (and its consumer) in float, use int16 activations, or QAT.</p>")
    else:
        parts.append("<p class='muted'>Not measured (no int8 quantization in this run).</p>")

    parts.append("<h2>Delegate coverage</h2>" + _delegates_section(report.get("delegates")))

    steps = report.get("steps") or []
    if steps:
        parts.append("<h2>Steps</h2>" + _table(["#", "pass", "seconds", "artifact", "details"], [
            [_e(s["index"]), _e(s["pass"]), _num(s.get("seconds"), 1), _e(s.get("artifact")),
             _e(json.dumps({k: v for k, v in (s.get("details") or {}).items() if k not in ("layers", "history", "ranked_layers")})[:500])]
            for s in steps]))

    warnings = report.get("warnings") or []
    if warnings:
        parts.append("<h2>Warnings and notes</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>")

    device = report.get("device")
    parts.append("<h2>Device</h2>")
    if device:
        flat: list[tuple[str, Any]] = []
        _flatten("", device, flat)
        short = _device_summary(flat)
        parts.append(_kv(short))
        if len(flat) > len(short):
            parts.append(f"<details><summary>full probe ({len(flat)} entries)</summary>{_kv(flat[:200])}</details>")
    else:
        parts.append("<p class='muted'>No device probe.</p>")

    prov: list[tuple[str, Any]] = []
    for key in ("model", "data", "val", "artifact"):
        if report.get(key):
            _flatten(key, report[key], prov)
    for r in rows:
        prov.append((f"sha256 {r['name']}", r.get("sha256")))
    _flatten("versions", report.get("versions") or {}, prov)
    prov.append(("seconds", report.get("seconds")))
    parts.append("<footer><h2>Versions and hashes</h2>" + _kv(prov))
    parts.append("<p class='muted'>Written by edgekit. Self-contained: no scripts, no network; plots are embedded PNGs.</p></footer></body></html>")
    return "\n".join(parts)
