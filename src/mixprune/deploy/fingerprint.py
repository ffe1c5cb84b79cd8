"""What identifies a model's computation and its weights, for sharing work between models that compute alike.

    computation_key(model)     # module tree, hooks, tensor names/shapes/dtypes/strides: same key, same kernels
    weights_digest(model)      # the computation and every tensor's bytes: same digest, same outputs
    tensor_bytes(t)            # a tensor's elements as stored, C order
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def computation_key(model: nn.Module) -> str:
    """What decides the computation a dense forward pass (and its ONNX graph) performs, weight values aside: the
    module tree (types and hyperparameters, as repr prints them), hooks, and every tensor's name, shape, dtype
    and strides. An unstructured-pruned model runs the same dense kernels on its zeros as its parent does."""
    tensors = sorted((k, tuple(v.shape), str(v.dtype), v.stride()) for k, v in model.state_dict().items())
    hooks = [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()]
    text = repr((type(model).__module__, type(model).__qualname__, repr(model), tensors, hooks))
    return hashlib.sha256(text.encode()).hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's elements as stored in memory, C order (any dtype, bfloat16 included)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_digest(model: nn.Module) -> str:
    """A digest of the computation (computation_key) and every tensor's bytes: equal digests, equal outputs (the
    fp16 file and the sparse fp16 file of a model decode to the same weights)."""
    digest = hashlib.sha256(computation_key(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()
