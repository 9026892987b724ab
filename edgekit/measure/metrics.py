"""Accuracy and output-fidelity metrics (numpy only)."""

from __future__ import annotations

import math

import numpy as np

from edgekit.core.datatypes import AccuracyResult, OutputComparison


def is_classifier_output(y: np.ndarray) -> bool:
    """A (N, classes) output with more than one class."""
    return y.ndim == 2 and y.shape[1] > 1


def accuracy(pred: np.ndarray, labels: np.ndarray) -> AccuracyResult:
    """Top-1 (and top-5 when there are more than 5 classes) in percent."""
    logits = pred.reshape(pred.shape[0], -1)
    top1 = float((logits.argmax(axis=1) == labels).mean() * 100.0)
    top5 = None
    if logits.shape[1] > 5:
        best5 = np.argsort(-logits, axis=1)[:, :5]
        top5 = float((best5 == labels[:, None]).any(axis=1).mean() * 100.0)
    return AccuracyResult(samples=int(labels.shape[0]), top1=top1, top5=top5)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10*log10(sum(ref^2) / sum((ref - test)^2))."""
    ref = reference.astype(np.float64).ravel()
    noise = ref - test.astype(np.float64).ravel()
    signal_power = float(np.sum(ref * ref))
    noise_power = float(np.sum(noise * noise))
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def compare_outputs(name: str, reference: np.ndarray, test: np.ndarray, *, categorical: bool | None = None) -> OutputComparison:
    """How close ``test`` is to ``reference`` (same shape).

    Top-1 agreement is reported for categorical outputs (classification, segmentation: per pixel);
    ``None`` decides from the shape (more than one value per sample).
    """
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    out = test.reshape(test.shape[0], -1).astype(np.float64)
    diff = np.abs(ref - out)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(ref == out, axis=1), 1.0, 0.0))
    if categorical is None:
        categorical = ref.shape[1] > 1
    agreement = None
    if categorical and reference.ndim > 2:  # per pixel (segmentation)
        classes = reference.shape[-1]
        agreement = float((reference.reshape(-1, classes).argmax(1) == test.reshape(-1, classes).argmax(1)).mean() * 100.0)
    elif categorical and ref.shape[1] > 1:
        agreement = float((ref.argmax(axis=1) == out.argmax(axis=1)).mean() * 100.0)
    return OutputComparison(
        output=name,
        top1_agreement=agreement,
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        cosine_similarity=float(cos.mean()),
        sqnr_db=sqnr_db(reference, test),
    )
