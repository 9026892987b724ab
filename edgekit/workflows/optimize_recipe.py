"""The recommendation of ``edgekit optimize`` as a recipe that ``edgekit run`` reruns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.core.datatypes import Preprocessing
from edgekit.export.target import TARGET_MODES
from edgekit.workflows.recipes import recipe_from_dict
from edgekit.workflows.search import Budget, Trial


def write_recipe(path: Path, trial: Trial, budget: Budget, pre: Preprocessing, device: str | None, model: Any, data: Any,
                 val: Any) -> str:
    """Writes the recipe of ``trial`` with the budget as gates (validated before it is written); returns its text."""
    passes = [dict(p) for p in trial.passes]
    quant = next((p for p in passes if p["pass"] == "quantize"), None)
    if trial.family == "qat" or (quant is not None and quant["mode"] in TARGET_MODES["cpu"]):
        passes.append({"pass": "export", "target": "cpu"})
    gates: dict[str, Any] = {"accuracy": {"max_drop": budget.max_drop, "relative": budget.relative}}
    if budget.max_latency_ms is not None:
        gates["latency"] = {"max_ms": budget.max_latency_ms, "percentile": budget.percentile, **({"device": device} if device else {})}
    if budget.max_size_bytes is not None:
        gates["size"] = {"max_bytes": budget.max_size_bytes, "compressed": budget.size_metric == "gzip"}
    pre_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pre.to_dict().items() if v is not None}
    slug = "".join(ch if ch.isalnum() else "-" for ch in trial.name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    recipe = recipe_from_dict({
        "schema_version": 1, "name": f"optimized-{slug}"[:64].rstrip("-"),
        "description": f"Chosen by edgekit optimize for {Path(str(model)).name}: {trial.name}.",
        "data": {"preprocessing": pre_dict or None}, "passes": passes, "gates": gates,
    }, source=str(path))
    header = (f"Written by edgekit optimize: the recommended candidate '{trial.name}'.\n"
              f"Rerun: edgekit run {path.name} --model {model} --data {data}" + (f" --val {val}" if val else "") + " -o OUT")
    text = recipe.to_yaml(header=header)
    path.write_text(text, encoding="utf-8")
    return text
