"""Networks: a registry (lenet5, torchvision:NAME, timm:NAME, PATH.py:FUNCTION), counting and inference for any
model."""

from .counting import (
    count_nonzero,
    count_params,
    effective_macs,
    effective_tensors,
    example_input,
    input_shape,
    layer_sparsity,
    macs_per_image,
    prunable,
    stateless,
    weight_sparsity,
)
from .inference import evaluate_loss_accuracy, predict
from .lenet5 import LAYERS, LeNet5, init_weights
from .registry import (
    FAMILIES,
    LENET,
    build_model,
    check_arch,
    check_config,
    check_input,
    describe,
    described_parameters,
    kind,
    python_factory,
    rebuild,
)

__all__ = ["count_nonzero", "count_params", "effective_macs", "effective_tensors", "example_input", "input_shape",
           "layer_sparsity", "macs_per_image", "prunable", "stateless", "weight_sparsity", "LAYERS", "LeNet5", "init_weights", "LENET",
           "build_model", "describe", "kind", "python_factory", "rebuild", "FAMILIES", "check_arch", "check_config", "check_input",
           "evaluate_loss_accuracy", "predict", "described_parameters"]
