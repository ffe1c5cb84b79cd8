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


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [true, predicted] (int64), as torchmetrics' multiclass_confusion_matrix gives them."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """test_accuracy (%), test_loss (mean CE), confusion (list of lists) and per-class scores."""
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    logits, labels = logits.float().cpu(), labels.cpu()
    num_classes = num_classes or logits.shape[1]
    preds = logits.argmax(1)
    confusion = confusion_matrix(preds, labels, num_classes)
    out = {"test_accuracy": 100.0 * (preds == labels).double().mean().item(),
           "test_loss": F.cross_entropy(logits, labels).item(),
           "confusion": confusion.tolist()}
    out.update(per_class_scores(confusion))
    return out


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size; the top-label
    binning of torchmetrics' multiclass_calibration_error (norm l1), op for op (tested equal). Written out
    because importing torchmetrics took 2.4 s of every run's main process (it imports torchvision)."""
    confidences, predictions = logits.float().cpu().softmax(1).max(dim=1)
    accuracies = predictions.eq(labels.cpu()).float()
    boundaries = torch.linspace(0, 1, bins + 1, dtype=confidences.dtype)
    index = torch.bucketize(confidences, boundaries, right=True) - 1
    count = torch.zeros(bins + 1).scatter_add_(0, index, torch.ones_like(confidences))
    conf = torch.nan_to_num(torch.zeros(bins + 1).scatter_add_(0, index, confidences) / count)
    acc = torch.nan_to_num(torch.zeros(bins + 1).scatter_add_(0, index, accuracies) / count)
    return float(torch.sum(torch.abs(acc - conf) * (count / count.sum())))


@torch.no_grad()
def noise_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                   generator: torch.Generator, batch_size: int = 1000) -> float:
    """Accuracy (%) on x + N(0, sigma^2) noise, sigma in normalized input units."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        noise = torch.randn(xb.shape, generator=generator).to(xb.device) * sigma
        correct += int((model(xb + noise).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x)


def fgsm_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float,
                  batch_size: int = 1000, bounds: tuple[torch.Tensor | float, torch.Tensor | float] = (-1.0, 1.0)
                  ) -> float:
    """Accuracy (%) under the fast gradient sign attack (Goodfellow et al. 2015) of size epsilon in
    normalized input units, inputs clipped to the valid range `bounds` (normalized pixels 0 and 255, per
    channel where tensors [C, 1, 1]; the paper's inputs span [-1, 1])."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].clone().requires_grad_(True)
        yb = y[i:i + batch_size]
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xb), yb), xb)
        with torch.no_grad():
            adv = torch.clamp(xb + epsilon * grad.sign(), min=bounds[0], max=bounds[1])
            correct += int((model(adv).argmax(1) == yb).sum())
    return 100.0 * correct / len(x)
