"""--weights for the study: the dense models start from trained weights (and train --epochs more), the cache tells
runs from different weights apart, and a file of another network is refused before anything is written."""

from __future__ import annotations

import pytest
import torch

from mixprune import StudyConfig, reproduce
from mixprune.core.config import with_overrides
from mixprune.core.errors import ModelFileError
from mixprune.data.prepare import prepare_dataset, prepare_tensors
from mixprune.models import LeNet5, evaluate_loss_accuracy
from mixprune.study.cache import model_key

DIGITS = {"data.dataset": "digits", "data.image_size": 28, "data.train_subset": 60, "data.test_subset": 30,
          "seeds": [0], "workers": 1, "bench.quick": True, "mixup.alpha": 0.0}


def test_dense_models_start_from_the_weights(tmp_path):
    trained = LeNet5(generator=torch.Generator().manual_seed(11)).eval()
    path = tmp_path / "trained.pt"
    torch.save({"model": trained.state_dict()}, path)
    cfg = with_overrides(StudyConfig(), {**DIGITS, "train.epochs": 0, "prune.finetune_epochs": 0,
                                         "model.weights": str(path), "out": str(tmp_path / "out")})
    results = reproduce(cfg)
    data = prepare_tensors(prepare_dataset(cfg, None), torch.device("cpu"))
    expected = evaluate_loss_accuracy(trained, data.test_x, data.test_y)[1]
    assert results.values("baseline", "test_accuracy") == [pytest.approx(expected, abs=1e-4)]  # as they are
    other = with_overrides(cfg, {"model.weights": ""})
    assert model_key(cfg, 0, "baseline", "fp", "cpu", 1) != model_key(other, 0, "baseline", "fp", "cpu", 1)


def test_weights_of_another_network_are_refused_before_the_run(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(LeNet5(widths=(8, 16, 120, 84)).state_dict(), path)
    cfg = with_overrides(StudyConfig(), {**DIGITS, "model.weights": str(path), "out": str(tmp_path / "out")})
    with pytest.raises(ModelFileError, match="conv1.weight has shape"):
        reproduce(cfg)
    assert not (tmp_path / "out").exists()
