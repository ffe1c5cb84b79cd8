"""Running a model on a dataset held as tensors: logits in large batches, loss and accuracy.

    logits = predict(model, x, batch_size=1000)            # eval mode, inference mode, the model's mode restored
    loss, acc = evaluate_loss_accuracy(model, x, y)         # mean cross-entropy, accuracy in percent
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits [N, classes] in eval mode, computed in large batches."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def evaluate_loss_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in percent) over (x, y)."""
    logits = predict(model, x, batch_size)
    loss = F.cross_entropy(logits, y).item()
    acc = 100.0 * (logits.argmax(1) == y).float().mean().item()
    return loss, acc
