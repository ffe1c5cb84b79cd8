"""One training loop for training and fine-tuning, over a dataset held in memory as tensors.

    hist = fit(model, data, FitSpec(epochs=10, lr=lr_steps(0.01, 8, 0.1)), order_gen, mixup_gen=None,
               callbacks=[print_epoch])      # data: data.prepare.Tensors; lr_steps: train.schedules

No per-sample Python work: the normalized dataset sits on the device as one tensor and each epoch
slices it by a permutation drawn from `order_gen`, so two models given generators with the same seed
see exactly the same batches (the paper trains all models with the same shuffling order). The last,
partial batch is kept, as torch's DataLoader does by default. Evaluation runs in inference mode with
large batches. Observers (progress bars, logging) are callbacks that receive each epoch's record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..core.errors import MixpruneError
from ..data.prepare import Tensors
from ..models import evaluate_loss_accuracy, stateless
from .losses import Loss, target_cross_entropy
from .mixup import mix_inputs, sample_mixup


class TrainingDiverged(MixpruneError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class FitSpec:
    """What one call of fit does: epochs, batch size, LR per epoch and SGD settings."""
    epochs: int
    lr: Callable[[int], float]  # epoch index (0-based) -> learning rate
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    mixup_alpha: float | None = None  # None: plain cross-entropy
    eval_batch_size: int = 1000
    step_hook: Callable[[int], None] | None = None  # called after every optimizer step with the step count
    cuda_graphs: bool = False  # on a GPU, replay each full-batch step as a CUDA graph (see GraphedSteps)
    loss: Loss = target_cross_entropy  # (logits, labels, lam or None, partner or None) -> loss; losses.LOSSES
    teacher: nn.Module | None = None  # distillation: its logits on the same (mixed) inputs go to the loss


@dataclass(frozen=True)
class EpochRecord:
    phase: str  # e.g. "train", "finetune"
    epoch: int  # 1-based
    lr: float
    train_loss: float  # mean over the epoch's batches (the Mixup loss where Mixup is on)
    test_loss: float
    test_accuracy: float  # percent
    seconds: float  # wall time of the epoch's training steps

    def as_dict(self) -> dict:
        return asdict(self)


Callback = Callable[[EpochRecord], None]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # the last, partial batch counts


def draw_mixup(n: int, batch_size: int, alpha: float, gen: torch.Generator) -> tuple[list[float], torch.Tensor]:
    """One epoch's Mixup draws, batch after batch in the order fit consumes them: (lambdas, partners).

    partners[i:i + b] is the partner permutation (values 0..b-1) of the batch that starts at i; drawing
    the epoch at once gives the same numbers as drawing per batch and moves them to the device once."""
    lams, perms = [], []
    for i in range(0, n, batch_size):
        lam, perm = sample_mixup(min(batch_size, n - i), alpha, gen)
        lams.append(lam)
        perms.append(perm)
    return lams, torch.cat(perms)


def batch_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, lam: float | torch.Tensor | None,
               partner: torch.Tensor | None, loss: Loss = target_cross_entropy,
               teacher: nn.Module | None = None) -> torch.Tensor:
    """The loss of one batch: inputs mixed with their partners when lam is given (a float, or a 0-d device
    tensor), then `loss` of the logits against the labels (and the partners' labels); with a teacher, its
    logits on the same inputs (no gradient) go to the loss as well."""
    inputs = xb if lam is None else mix_inputs(xb, lam, partner)
    if teacher is None:
        return loss(model(inputs), yb, lam, partner)
    with torch.no_grad():
        target = teacher(inputs)
    return loss(model(inputs), yb, lam, partner, target)


def sgd_step(opt: torch.optim.Optimizer, compute_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One training step: clear the gradients, compute the loss, backpropagate, update; returns the loss.
    The loss is one model's (0-d) or a stack's per-member losses [K], summed for the backward pass so that
    each member gets exactly the gradient of its own loss (stacked.py)."""
    opt.zero_grad(set_to_none=True)
    loss = compute_loss()
    (loss.sum() if loss.dim() else loss).backward()
    opt.step()
    return loss


class GraphedSteps:
    """Full-batch training steps (forward, backward, SGD) replayed as CUDA graphs: one launch per step
    instead of ~40, which is what bounds a net this small on a GPU. `step` reads its inputs from the
    static buffers in `inputs`, which run() fills before each replay; one graph per learning rate (the
    optimizer bakes lr in). Before capture, warm-up steps run on a side stream (cuDNN/cuBLAS set-up,
    momentum buffers), then weights are restored and the momentum buffers zeroed, which is exactly SGD's
    first step (buf = 0 * m + g = g). `release` drops autograd state that modules keep between calls."""

    def __init__(self, step: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, inputs: dict[str, torch.Tensor],
                 release: Callable[[], None] = lambda: None):
        self.step, self.opt, self.inputs, self.release = step, opt, inputs, release
        self.graphs: dict[float, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._warm_up()

    def _warm_up(self) -> None:
        self.release()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        saved = [p.detach().clone() for p in params]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        self.release()
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
            for p in params:
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.zero_()
        self.opt.zero_grad(set_to_none=True)

    def run(self, lr: float, **values: torch.Tensor | float) -> torch.Tensor:
        """One step on a full batch: copy `values` (tensors, or numbers for 0-d buffers) into the named
        input buffers and replay; returns the (static) loss tensor of this step."""
        if lr not in self.graphs:
            self.release()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loss = self.step()
            self.graphs[lr] = (graph, loss.detach())  # detached: keep no autograd graph alive between steps
            self.release()
        for name, value in values.items():
            buf = self.inputs[name]
            if isinstance(value, torch.Tensor):
                buf.copy_(value)  # a device-to-device copy into the graph's input buffer
            else:
                buf.fill_(value)
        graph, loss = self.graphs[lr]
        graph.replay()
        return loss


def drop_stale_autograd(model: nn.Module) -> None:
    """Detach tensors that modules cache between calls (torch.nn.utils.prune keeps `weight` = weight_orig
    * mask, with its autograd graph, until the next forward). A graph kept alive from an earlier step
    ties the weights' gradient accumulators to the stream it ran on, and capture on another stream
    then fails ('would make the legacy stream depend on a capturing blocking stream')."""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, name, value.detach())


def graph_model_steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                      batch_size: int, mixup: bool, loss: Loss = target_cross_entropy,
                      teacher: nn.Module | None = None) -> GraphedSteps:
    """GraphedSteps for one model: inputs x [batch, C, H, W] (the data's layout), y [batch], and for Mixup
    lam (0-d) and partner [batch]."""
    inputs = {"x": torch.zeros_like(x[:batch_size]), "y": torch.zeros_like(y[:batch_size]),
              "lam": torch.ones((), device=x.device), "partner": torch.arange(batch_size, device=x.device)}

    def step() -> torch.Tensor:
        return sgd_step(opt, lambda: batch_loss(model, inputs["x"], inputs["y"], inputs["lam"] if mixup else None,
                                                inputs["partner"], loss, teacher))

    return GraphedSteps(step, opt, inputs, release=lambda: drop_stale_autograd(model))


def use_graphs(model: nn.Module, x: torch.Tensor, spec: FitSpec) -> bool:
    """CUDA graphs where they are safe: on a GPU, no per-step hook, no dropout (its masks come from a
    CPU generator each step), no state besides weights (BatchNorm with momentum=None reads its step count
    on the host, which capture forbids), and at least one full batch."""
    return (spec.cuda_graphs and x.is_cuda and spec.step_hook is None and not getattr(model, "dropout", 0)
            and stateless(model) and len(x) >= spec.batch_size)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                spec: FitSpec, order_gen: torch.Generator, mixup_gen: torch.Generator | None,
                first_step: int = 0, graphed: GraphedSteps | None = None) -> float:
    """One pass over (x, y) in the order drawn from order_gen; returns the mean batch loss."""
    model.train()
    perm = torch.randperm(len(x), generator=order_gen).to(x.device)
    if spec.mixup_alpha is not None:
        lams, partners = draw_mixup(len(x), spec.batch_size, spec.mixup_alpha, mixup_gen)
        partners = partners.to(x.device)
    lr = opt.param_groups[0]["lr"]
    total = torch.zeros((), device=x.device)
    batches = 0
    for i in range(0, len(x), spec.batch_size):
        idx = perm[i:i + spec.batch_size]
        xb, yb = x[idx], y[idx]
        lam = lams[batches] if spec.mixup_alpha is not None else None
        partner = partners[i:i + len(idx)] if spec.mixup_alpha is not None else None
        if graphed is not None and len(idx) == spec.batch_size:
            mix = {"lam": lam, "partner": partner} if lam is not None else {}
            loss = graphed.run(lr, x=xb, y=yb, **mix)
        else:
            loss = sgd_step(opt, lambda: batch_loss(model, xb, yb, lam, partner, spec.loss, spec.teacher))
        total += loss.detach()
        batches += 1
        if spec.step_hook is not None:
            spec.step_hook(first_step + batches)
    return total.item() / max(batches, 1)


def sgd(params: Sequence[torch.Tensor], spec: FitSpec, device: torch.device) -> torch.optim.SGD:
    """The paper's SGD; fused on a GPU: one kernel for the whole update (same arithmetic as the CPU's
    foreach path)."""
    return torch.optim.SGD(params, lr=spec.lr(0), momentum=spec.momentum, weight_decay=spec.weight_decay,
                           fused=True if device.type == "cuda" else None)


def end_epoch(model: nn.Module, data: Tensors, spec: FitSpec, phase: str, epoch: int, lr: float, train_loss: float,
              seconds: float, callbacks: Sequence[Callback], who: str = "") -> EpochRecord:
    """After an epoch's steps: stop on a non-finite loss, evaluate on the test split, tell the callbacks.
    `who` names the model in the error where several train together."""
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"{phase} epoch {epoch + 1}{who}: training loss became {train_loss}; "
                               "lower --lr or check the input data")
    test_loss, test_acc = evaluate_loss_accuracy(model, data.test_x, data.test_y, spec.eval_batch_size)
    record = EpochRecord(phase, epoch + 1, lr, train_loss, test_loss, test_acc, seconds)
    for cb in callbacks:
        cb(record)
    return record


def fit(model: nn.Module, data: Tensors, spec: FitSpec, order_gen: torch.Generator,
        mixup_gen: torch.Generator | None = None, phase: str = "train",
        callbacks: Sequence[Callback] = ()) -> list[EpochRecord]:
    """Train model in place for spec.epochs; evaluate on the test split after every epoch."""
    if spec.mixup_alpha is not None and mixup_gen is None:
        raise ValueError("Mixup needs a mixup_gen generator")
    opt = sgd(list(model.parameters()), spec, data.train_x.device)
    if spec.teacher is not None:
        spec.teacher.eval()  # a teacher is inference only: dropout off, BatchNorm on its running statistics
    graphed = (graph_model_steps(model, opt, data.train_x, data.train_y, spec.batch_size, spec.mixup_alpha is not None,
                                 spec.loss, spec.teacher) if use_graphs(model, data.train_x, spec) else None)
    history = []
    for epoch in range(spec.epochs):
        lr = spec.lr(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        train_loss = train_epoch(model, opt, data.train_x, data.train_y, spec, order_gen, mixup_gen,
                                 first_step=epoch * steps_per_epoch(len(data.train_x), spec.batch_size),
                                 graphed=graphed)
        seconds = time.perf_counter() - start
        history.append(end_epoch(model, data, spec, phase, epoch, lr, train_loss, seconds, callbacks))
    return history
