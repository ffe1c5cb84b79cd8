"""The study as one table of variants: what each model is, where it starts from and how it is made.

    for v in PAPER:                      # Baseline (A), Mixup (B), Pruned (C), Mixup+Pruned (D)
        v.name, v.label, v.parent, v.mixup, v.step, v.loss
    design = design_for(cfg)             # PAPER, plus Pruned+KD and Mixup+Pruned+KD with --distill
    design.chains()                      # [(baseline, pruned), (mixup, mixup_pruned)]: parents first
    design.twins(cfg)                    # {"mixup": "baseline", ...} where alpha 0 makes them the same

A variant is trained from the initial weights (step "dense") or made from its parent's trained weights
(step "prune": masks, then fine-tuning). It trains with Mixup when `mixup` is set and alpha > 0
(fine-tuning follows --finetune-mixup), with the loss named by `loss`. Training, caching, results,
reports, plots, sweeps and the claims audit read this table; a new variant is one row here plus, for
a new kind of step, its job builder in jobs.py. Per seed every dense variant starts from the same
initial weights and sees the same batches, and every pruned one fine-tunes on the same data order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..core.config import StudyConfig
from ..train.losses import LOSSES

STEPS = ("dense", "prune")


@dataclass(frozen=True)
class Variant:
    name: str  # results key and file prefix
    label: str  # how reports name it
    parent: str | None  # the variant whose trained weights it starts from; None: from the initial weights
    mixup: bool  # trains with Mixup when alpha > 0 (a pruned variant's fine-tuning follows --finetune-mixup)
    step: str  # "dense" (train from init) or "prune" (prune the parent, fine-tune)
    loss: str = "ce"  # the training loss (losses.LOSSES): cross-entropy against the (mixed) targets, or "kd"

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"variant {self.name}: unknown step {self.step!r}; known: {', '.join(STEPS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"variant {self.name}: unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if (self.step == "dense") != (self.parent is None):
            raise ValueError(f"variant {self.name}: a dense variant has no parent, every other one has one")


PAPER = (Variant("baseline", "Baseline (A)", None, False, "dense"),
         Variant("mixup", "Mixup (B)", None, True, "dense"),
         Variant("pruned", "Pruned (C)", "baseline", False, "prune"),
         Variant("mixup_pruned", "Mixup+Pruned (D)", "mixup", True, "prune"))
# --distill: Pruned and Mixup+Pruned once more, fine-tuned against a teacher (their dense parent by default)
DISTILLED = (Variant("pruned_kd", "Pruned+KD", "baseline", False, "prune", "kd"),
             Variant("mixup_pruned_kd", "Mixup+Pruned+KD", "mixup", True, "prune", "kd"))


def design_for(cfg: StudyConfig) -> Design:
    """The table a config asks for: the paper's four variants, and with --distill their distilled twins."""
    return Design(PAPER + DISTILLED) if cfg.distill.enabled else Design(PAPER)


def mixup_on(cfg: StudyConfig, v: Variant) -> bool:
    """Whether variant v's own training step uses Mixup under cfg; alpha 0 turns Mixup off everywhere."""
    on = cfg.mixup.alpha > 0 and v.mixup
    if v.step == "dense":
        return on
    return {"inherit": on, "always": cfg.mixup.alpha > 0, "never": False}[cfg.prune.finetune_mixup]


class Design:
    """An ordered table of variants (parents before children) with the questions the study asks of it."""

    def __init__(self, variants: tuple[Variant, ...] | list[Variant] = PAPER):
        self.variants = tuple(variants)
        self.by_name = {v.name: v for v in self.variants}
        if len(self.by_name) != len(self.variants):
            raise ValueError("variant names must be distinct")
        for i, v in enumerate(self.variants):
            if v.parent is not None and v.parent not in {p.name for p in self.variants[:i]}:
                raise ValueError(f"variant {v.name}: parent {v.parent!r} must come earlier in the table")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def __getitem__(self, name: str) -> Variant:
        return self.by_name[name]

    def label(self, name: str) -> str:
        return self.by_name[name].label if name in self.by_name else name

    def root(self, name: str) -> str:
        v = self.by_name[name]
        return name if v.parent is None else self.root(v.parent)

    def depth(self, name: str) -> int:
        v = self.by_name[name]
        return 0 if v.parent is None else 1 + self.depth(v.parent)

    def ancestors(self, name: str) -> list[Variant]:
        """The variant and every variant it descends from, root first."""
        v = self.by_name[name]
        return ([] if v.parent is None else self.ancestors(v.parent)) + [v]

    def chains(self) -> list[tuple[str, ...]]:
        """Per dense variant: it and its descendants, in table order (what one worker trains in sequence)."""
        return [tuple(v.name for v in self.variants if self.root(v.name) == r.name)
                for r in self.variants if r.parent is None]

    def _signature(self, cfg: StudyConfig, name: str) -> tuple:
        return tuple((v.step, v.loss, mixup_on(cfg, v)) for v in self.ancestors(name))

    def twins(self, cfg: StudyConfig) -> dict[str, str]:
        """variant -> the earlier variant it is bit for bit under cfg (same steps, losses and Mixup use down its
        line: alpha 0 makes Mixup (B) Baseline (A)). Never with dropout, whose masks are drawn per variant name."""
        if cfg.model.dropout > 0:
            return {}
        first: dict[tuple, str] = {}
        out = {}
        for v in self.variants:
            sig = self._signature(cfg, v.name)
            if sig in first:
                out[v.name] = first[sig]
            else:
                first[sig] = v.name
        return out

    def without_mixup(self, name: str) -> str | None:
        """The variant made as `name` is, step by step and loss by loss, but with no Mixup down its line (Baseline for
        Mixup, Pruned for Mixup+Pruned); None where `name` has no Mixup in its line or the table has no such variant."""
        line = self.ancestors(name)
        if not any(v.mixup for v in line):
            return None
        want = [(v.step, v.loss) for v in line]
        return next((v.name for v in self.variants if not any(a.mixup for a in self.ancestors(v.name))
                     and [(a.step, a.loss) for a in self.ancestors(v.name)] == want), None)

    def mixup_pair(self, step: str) -> tuple[str, str] | None:
        """(the variant without Mixup, its Mixup twin) for the first variant of `step` with plain cross-entropy whose
        line has Mixup and a twin without it (the paper's: Baseline/Mixup for "dense", Pruned/Mixup+Pruned for
        "prune"); None where the table has no such pair."""
        for v in self.variants:
            plain = self.without_mixup(v.name)
            if v.step == step and v.loss == "ce" and plain is not None:
                return plain, v.name
        return None

    def as_records(self) -> list[dict[str, Any]]:
        return [asdict(v) for v in self.variants]

    def is_paper(self) -> bool:
        """Whether the table holds the paper's four variants (first, as the paper defines them)."""
        return self.variants[:len(PAPER)] == PAPER


def from_records(records: list[dict[str, Any]]) -> Design:
    """The design a results.json was written with (results without a 'variants' list are the paper's)."""
    return Design(tuple(Variant(**r) for r in records)) if records else Design(PAPER)
