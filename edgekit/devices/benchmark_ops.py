"""Per-operator times from ``benchmark_model --enable_op_profiling=true`` (Android) output.

The tool prints a "Run Order" table, one row per node in execution order, tab-separated::

    ============================== Run Order ==============================
    \t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]
    \tCONV_2D\t0.520\t0.475\t4.781%\t4.781%\t0.000\t1\t[MobilenetV2/Conv/Relu6]:0

Nodes the XNNPACK delegate ran carry XNNPACK's operator names (``Convolution (NHWC, QC8)``) and a
``Delegate/`` name; LiteRT builds add their own overhead rows (``LiteRT::Run[Buffer sync]``) and
an ``AllocateTensors`` row that is not called per inference (``times called`` 0): those are kept
apart from the operators.

Example:
    >>> rows = parse_op_profiling(text)  # doctest: +SKIP
    >>> rows[0].node_type, rows[0].avg_ms  # doctest: +SKIP
    ('CONV_2D', 0.475)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SECTION = re.compile(r"=+\s*Run Order\s*=+")
_ANY_SECTION = re.compile(r"^\s*(?:\S+:\s*(?:\[[^\]]*\]\s*)?)?=+\s*[A-Za-z].*=+\s*$")


@dataclass(frozen=True)
class NativeOpTime:
    """One row of the tool's Run Order table (times in ms)."""

    node_type: str
    first_ms: float
    avg_ms: float
    percent: float
    times_called: int
    name: str

    @property
    def overhead(self) -> bool:
        """Runtime bookkeeping rather than an operator of the graph."""
        return self.times_called == 0 or self.node_type.startswith("LiteRT::") or self.node_type == "AllocateTensors"

    @property
    def delegate(self) -> str | None:
        return "XNNPACK" if self.name.startswith("Delegate/") else None


def _number(text: str) -> float:
    return float(text.strip().rstrip("%"))


def parse_op_profiling(text: str) -> tuple[NativeOpTime, ...]:
    """The Run Order rows of the inference profile in ``text`` (empty when there is none).

    The classic tool prints an initialisation profile first ("Profiling Info for Benchmark
    Initialization") and then the one of the timed runs ("... for Regular Benchmark Runs"): the
    latter is taken when present.
    """
    lines = text.splitlines()
    regular = next((i for i, line in enumerate(lines) if "Regular Benchmark Runs" in line), 0)
    start = next((i for i, line in enumerate(lines) if i >= regular and _SECTION.search(line)), None)
    if start is None:
        return ()
    rows: list[NativeOpTime] = []
    for line in lines[start + 1:]:
        if not line.strip():
            if rows:
                break
            continue
        if _ANY_SECTION.match(line):
            break
        cells = [c for c in line.split("\t") if c.strip()] if "\t" in line else re.split(r"\s{2,}", line.strip())
        if not cells or cells[0].strip().startswith("["):
            continue  # the header
        if len(cells) < 8:
            continue
        try:
            # [node type] [first] [avg ms] [%] [cdf%] [mem KB] [times called] [Name]; older builds add [start]
            numbers = cells[1:-1]
            first, avg, pct = _number(numbers[-6]), _number(numbers[-5]), _number(numbers[-4])
            called = int(float(numbers[-1]))
        except (ValueError, IndexError):
            continue
        rows.append(NativeOpTime(node_type=cells[0].strip(), first_ms=first, avg_ms=avg, percent=pct, times_called=called,
                                 name=cells[-1].strip()))
    return tuple(rows)
