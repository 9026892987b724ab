"""Rendering of results as rich tables (stdout) or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table


class _Console(Console):
    """A rich console that ends quietly with exit 0 when the reader of stdout went away (``| head``)."""

    def on_broken_pipe(self) -> None:
        super_exit: SystemExit | None = None
        try:
            super().on_broken_pipe()  # points stdout at devnull, as the Python docs recommend
        except SystemExit as exc:
            super_exit = exc
        if super_exit is not None:
            raise SystemExit(0)


# soft_wrap off: prose wraps at word boundaries to the terminal width (80 when piped, or $COLUMNS)
console = _Console(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)


def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (``89.60000000000001`` -> ``89.6``)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return value
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def print_json(payload: Any) -> None:
    """Prints JSON to stdout (plain, no colour), floats rounded to meaningful precision."""
    sys.stdout.write(json.dumps(rounded(payload), indent=2) + "\n")


def show_gated_report(report: dict[str, Any] | None, failure: Exception | None, out_dir: Any, *, as_json: bool, quiet: bool,
                      render: Any) -> None:
    """Prints a run's report (when a gate failed: the report.json it left in ``out_dir``) as JSON
    or with ``render(report, out_dir)``, then re-raises the gate failure, if any."""
    if report is None and failure is not None:
        from pathlib import Path

        path = Path(out_dir) / "report.json"
        report = json.loads(path.read_text()) if path.is_file() else None
    if as_json and report is not None:
        print_json(report)
    elif report is not None and quiet:
        sys.stdout.write(result_line(report, out_dir) + "\n")
    elif report is not None:
        render(report, out_dir)
    if failure is not None:
        raise failure


def result_line(report: dict[str, Any], out_dir: Any) -> str:
    """The one-line result of a run/optimize report (what ``-q`` prints)."""
    chosen = report.get("recommended") if report.get("kind") == "optimize" else None
    if chosen is None:
        rows = [r for r in report.get("candidates", []) if r.get("name") != "reference"]
        chosen = rows[-1] if rows and report.get("kind") != "optimize" else None
    parts = [f"{out_dir}/model.tflite" if chosen is not None else f"{out_dir}: no candidate met the budget"]
    if chosen is not None:
        if report.get("kind") == "optimize":
            parts.append(str(chosen.get("name")))
        if chosen.get("bytes") is not None:
            parts.append(human_bytes(chosen["bytes"]))
        if chosen.get("top1") is not None:
            drop = f" (drop {fmt(chosen['drop'])})" if chosen.get("drop") is not None else ""
            parts.append(f"top-1 {fmt(chosen['top1'])}%{drop}")
        if chosen.get("p50_ms") is not None:
            parts.append(f"p50 {fmt(chosen['p50_ms'], 3)} ms")
    gates = report.get("gates") or []
    if gates:
        failed = [g["gate"] for g in gates if not g.get("passed")]
        parts.append("gates: " + ("FAIL " + ", ".join(failed) if failed else "pass"))
    return ", ".join(parts)


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


class KeyValues:
    """A titled block of ``key  value`` lines sized to the console: a value that does not fit
    beside its key goes on its own line below it, whole (a hash or a path is never cut)."""

    def __init__(self, title: str, rows: list[tuple[str, Any]]) -> None:
        self.title = title
        self.rows = [(key, fmt(value)) for key, value in rows]

    def __rich_console__(self, console: Console, options: Any) -> Any:
        from rich.text import Text

        width = options.max_width
        if self.title:
            yield Text(self.title, style="italic")
        key_width = max((len(k) for k, _ in self.rows), default=0) + 2
        for key, value in self.rows:
            lines = value.splitlines() or [""]
            if key_width + max(len(line) for line in lines) > width and ", " in value and "\n" not in value:
                lines = _pack(value.split(", "), max(width - key_width, 20))  # a list wraps between its items
            if key_width + max(len(line) for line in lines) <= width:
                for i, line in enumerate(lines):
                    label = Text(key.ljust(key_width) if i == 0 else " " * key_width, style="bold" if i == 0 else "")
                    yield label + Text(line)
            else:  # the key alone, then the value indented; a single long token (hash, path) is kept whole
                yield Text(key, style="bold")
                for line in lines:
                    yield Text("  " + line, overflow="ignore", no_wrap=len(line) + 2 > width and " " not in line)


def _pack(items: list[str], width: int) -> list[str]:
    """``items`` joined by ", " into lines of at most ``width`` (an item is never split)."""
    lines: list[str] = []
    current = ""
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if current and len(current) + 1 + len(piece) > width:
            lines.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    if current:
        lines.append(current)
    return lines


def kv_table(title: str, rows: list[tuple[str, Any]]) -> KeyValues:
    """The key/value block of a result (see :class:`KeyValues`)."""
    return KeyValues(title, rows)


def tensor_rows(specs: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, box=None, pad_edge=False)
    table.add_column("name", overflow="fold")  # a long tensor name wraps whole, never cut with an ellipsis
    for col in ("shape", "dtype", "quantization (scale, zero point)"):
        table.add_column(col, overflow="fold")
    for spec in specs:
        q = spec.get("quantization")
        if q:
            scales, zps = q["scales"], q["zero_points"]
            qtext = f"{scales[0]:.6g}, {zps[0]}" if len(scales) == 1 else f"per-channel x{len(scales)} (axis {q['axis']})"
        else:
            qtext = "-"
        shape = "x".join("?" if d is None or d == -1 else str(d) for d in spec.get("shape", ()))
        table.add_row(str(spec.get("name", "")), shape or "scalar", str(spec.get("dtype")), qtext)
    return table


def memory_text(lat: Any) -> str:
    """The model's memory footprint (what it adds at init and overall) beside the process's peak."""
    parts = []
    if getattr(lat, "model_init_mb", None) is not None or getattr(lat, "model_overall_mb", None) is not None:
        parts.append(f"model {fmt(lat.model_init_mb, 1)} MB at init, {fmt(lat.model_overall_mb, 1)} MB overall")
    if lat.peak_memory_mb:
        parts.append(f"process peak {lat.peak_memory_mb:.1f} MB (Python, numpy, the runtime and the model)")
    return "; ".join(parts) or "-"


def shown_worker_done(result: Any, as_json: bool) -> bool:
    """Prints a non-chief worker's line (``WorkerDone``: it trained and wrote nothing); False for any other result."""
    if not hasattr(result, "distribution") or not hasattr(result, "message"):
        return False
    if as_json:
        print_json(result.to_dict())
    else:
        err_console.print(result.message())
    return True
