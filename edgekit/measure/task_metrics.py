"""Metrics per task, each with a primary metric and its direction (numpy only).

| task | metrics | primary |
|---|---|---|
| classification | top-1, top-5 (%) | top-1 (higher is better) |
| binary | accuracy at 0.5 (%), ROC AUC | accuracy |
| multilabel | accuracy at 0.5 over all labels (%), macro ROC AUC | accuracy |
| regression | MAE, RMSE, R² | MAE (lower is better) |
| segmentation | pixel accuracy (%), mean IoU (%) | mean IoU |
| embedding, none | - (agreement with the reference only) | - |

A **drop** is always "how much worse" (:meth:`edgekit.core.datatypes.AccuracyResult.drop_from`):
``reference - artifact`` for a higher-is-better metric, ``artifact - reference`` for a lower-is-better
one, optionally relative to the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.core.datatypes import LOWER_IS_BETTER, AccuracyResult, Serializable
from edgekit.core.tasks import OutputTask, Task

PRIMARY = {Task.CLASSIFICATION: "top1", Task.BINARY: "accuracy", Task.MULTILABEL: "accuracy", Task.REGRESSION: "mae",
           Task.SEGMENTATION: "mean_iou"}


@dataclass(frozen=True)
class TaskMetrics(Serializable):
    """One output's metrics on labelled data."""

    output: str
    task: str
    samples: int
    values: dict[str, float] = field(default_factory=dict)
    primary: str | None = None

    @property
    def primary_value(self) -> float | None:
        return self.values.get(self.primary) if self.primary else None

    @property
    def higher_is_better(self) -> bool:
        return self.primary not in LOWER_IS_BETTER


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None when one class is absent."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty_like(order, dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(sorted_s):  # average ranks over ties
        j = i
        while j + 1 < len(sorted_s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _classification(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    logits = pred.reshape(pred.shape[0], -1)
    y = y.reshape(-1).astype(np.int64)
    out = {"top1": float((logits.argmax(axis=1) == y).mean() * 100.0)}
    if logits.shape[1] > 5:
        best5 = np.argsort(-logits, axis=1)[:, :5]
        out["top5"] = float((best5 == y[:, None]).any(axis=1).mean() * 100.0)
    return out


def _probabilities(pred: np.ndarray, task: OutputTask) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)
    return p if task.probabilities else _sigmoid(p)


def _binary(pred: np.ndarray, y: np.ndarray, task: OutputTask) -> dict[str, float]:
    p = _probabilities(pred, task).reshape(len(pred), -1)[:, 0]
    t = np.asarray(y).reshape(len(pred), -1)[:, 0] > 0.5
    out = {"accuracy": float(((p > 0.5) == t).mean() * 100.0)}
    auc = roc_auc(p, t)
    if auc is not None:
        out["auc"] = auc
    return out


def _multilabel(pred: np.ndarray, y: np.ndarray, task: OutputTask) -> dict[str, float]:
    p = _probabilities(pred, task).reshape(len(pred), -1)
    t = np.asarray(y).reshape(len(pred), -1) > 0.5
    out = {"accuracy": float(((p > 0.5) == t).mean() * 100.0)}
    aucs = [a for k in range(p.shape[1]) if (a := roc_auc(p[:, k], t[:, k])) is not None]
    if aucs:
        out["auc"] = float(np.mean(aucs))
    return out


def _regression(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    t = np.asarray(y, dtype=np.float64).reshape(len(pred), -1)
    err = p - t
    ss_res = float((err ** 2).sum())
    ss_tot = float(((t - t.mean(axis=0)) ** 2).sum())
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else -math.inf)}


def _segmentation(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    classes = pred.shape[-1]
    got = pred.reshape(-1, classes).argmax(axis=1)
    want = np.asarray(y).reshape(-1).astype(np.int64) if np.asarray(y).size == got.size else \
        np.asarray(y).reshape(-1, classes).argmax(axis=1)  # one-hot masks
    ious = []
    for c in range(classes):
        union = int(((got == c) | (want == c)).sum())
        if union:
            ious.append(int(((got == c) & (want == c)).sum()) / union)
    return {"pixel_accuracy": float((got == want).mean() * 100.0), "mean_iou": float(np.mean(ious) * 100.0) if ious else 0.0}


def score(task: OutputTask, pred: np.ndarray, labels: np.ndarray) -> TaskMetrics:
    """The metrics of one output's predictions against its labels, as its task defines them."""
    n = int(len(pred))
    if task.task is Task.CLASSIFICATION:
        values = _classification(pred, labels)
    elif task.task is Task.BINARY:
        values = _binary(pred, labels, task)
    elif task.task is Task.MULTILABEL:
        values = _multilabel(pred, labels, task)
    elif task.task is Task.REGRESSION:
        values = _regression(pred, labels)
    elif task.task is Task.SEGMENTATION:
        values = _segmentation(pred, labels)
    else:
        values = {}
    return TaskMetrics(output=task.output, task=task.task.value, samples=n, values=values, primary=PRIMARY.get(task.task))


def evaluate(tasks: list[OutputTask], outputs: list[np.ndarray], targets: tuple[np.ndarray | None, ...] | list[Any]) -> AccuracyResult | None:
    """Every labelled output's metrics; the primary metric is the first labelled output's. None without labels.

    ``outputs`` and ``targets`` are in the model's output order (targets conformed to the tasks by
    :func:`edgekit.core.tasks.conform_targets`).
    """
    per = [score(t, np.asarray(o), y) for t, o, y in zip(tasks, outputs, targets, strict=False) if y is not None and t.task.labelled]
    if not per:
        return None
    head = per[0]
    return AccuracyResult(samples=head.samples, top1=head.values.get("top1"), top5=head.values.get("top5"), task=head.task,
                          metric=head.primary or "top1", value=head.primary_value, values=dict(head.values), output=head.output,
                          outputs=tuple(p.to_dict() for p in per) if len(tasks) > 1 else ())
