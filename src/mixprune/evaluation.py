"""Classification metrics from logits and labels: accuracy, loss, confusion, per-class precision/recall/F1.

    m = classification_metrics(logits, labels, num_classes=10)
    m["test_accuracy"], m["per_class_f1"], m["confusion"]

Confusion matrix rows are true classes, columns predicted classes (torchmetrics' convention).
A class that is never predicted has precision 0; one never present has recall 0; F1 is 0 where
precision + recall is 0 (scikit-learn's zero_division=0 convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_confusion_matrix


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


def per_class_scores(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Precision, recall and F1 per class from a confusion matrix [true, predicted]."""
    c = confusion.to(torch.float64)
    tp = c.diagonal()
    precision = _safe_div(tp, c.sum(0))
    recall = _safe_div(tp, c.sum(1))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"per_class_precision": precision.tolist(), "per_class_recall": recall.tolist(),
            "per_class_f1": f1.tolist()}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> dict:
    """test_accuracy (%), test_loss (mean CE), confusion (list of lists) and per-class scores."""
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    logits, labels = logits.float().cpu(), labels.cpu()
    preds = logits.argmax(1)
    confusion = multiclass_confusion_matrix(preds, labels, num_classes=num_classes)
    out = {"test_accuracy": 100.0 * (preds == labels).double().mean().item(),
           "test_loss": F.cross_entropy(logits, labels).item(),
           "confusion": confusion.tolist()}
    out.update(per_class_scores(confusion))
    return out
