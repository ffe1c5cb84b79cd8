"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mixprune.study.evaluation import classification_metrics, per_class_scores


def one_hot_logits(preds: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(preds), classes).float() * 10


def test_hand_computed_three_class_example():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(one_hot_logits(preds, 3), y, num_classes=3)
    assert m["test_accuracy"] == pytest.approx(100 * 4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class 0: P = 2/2, R = 2/3; class 1: P = 1/2, R = 1/2; class 2: P = 1/2, R = 1/1
    assert m["per_class_precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert m["per_class_recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    assert m["per_class_f1"] == pytest.approx([0.8, 0.5, 2 / 3])


def test_loss_is_mean_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    expected = (-math.log(math.e**2 / (math.e**2 + 1)) - math.log(1 / (1 + math.e))) / 2
    assert classification_metrics(logits, y, 2)["test_loss"] == pytest.approx(expected, rel=1e-6)


def test_never_predicted_class_scores_zero_not_nan():
    scores = per_class_scores(torch.tensor([[3, 0], [2, 0]]))
    assert scores["per_class_precision"] == [0.6, 0.0]
    assert scores["per_class_recall"] == [1.0, 0.0]
    assert scores["per_class_f1"] == pytest.approx([0.75, 0.0])


def test_mismatched_shapes_rejected():
    with pytest.raises(ValueError, match="do not match"):
        classification_metrics(torch.zeros(3, 10), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_and_ece_equal_torchmetrics_exactly(seed):
    """mixprune computes them itself (importing torchmetrics cost 2.4 s per run); same numbers, bit for bit."""
    from torchmetrics.functional.classification import (
        multiclass_calibration_error,
        multiclass_confusion_matrix,
    )

    from mixprune.study.evaluation import confusion_matrix, expected_calibration_error

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(5000, 10, generator=g) * (1 + 4 * seed)  # seed 2: many confidences near 1.0
    logits[:50] = 0.0  # ties: confidence exactly 1/10, prediction class 0
    labels = torch.randint(0, 10, (5000,), generator=g)
    assert torch.equal(confusion_matrix(logits.argmax(1), labels, 10),
                       multiclass_confusion_matrix(logits.argmax(1), labels, num_classes=10))
    reference = float(multiclass_calibration_error(logits.softmax(1), labels, num_classes=10, n_bins=15, norm="l1"))
    assert expected_calibration_error(logits, labels) == reference
