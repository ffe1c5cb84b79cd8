"""Budgets instead of ratios: how many channels each group loses so that a network meets a target cost.

    target = parse_target("macs", "0.5x")                 # or an absolute count: parse_target("params", "20000")
    path = RemovalPath(groups, rows, cost=macs_of)        # greedy, sensitivity-guided: one rung of one group a step
    step = meet(path, measure=macs_of, limit=target.absolute(original_macs))   # least removal that meets it

The path starts from the whole network and, step by step, moves the group whose next rung of the sensitivity
ladder (compress.sensitivity) costs the least accuracy per unit of cost saved one rung further; the accuracy
cost of a state is the sum of its groups' drops pruned alone (made non-decreasing along each group's ladder), the
cost saved is estimated from each group's first rung removed alone, and the cost of every state on the path is
then computed exactly by `cost`. `meet` walks the path to the first state whose measured cost is within the limit,
then moves the last group back channel by channel (bisection) to the least removal that still meets it, so the
achieved cost sits just under the target instead of a whole rung below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..core.errors import ConfigError
from .structured import UnitGroup

METRICS = {"macs": "multiply-accumulates per image", "params": "parameters",
           "bytes": "bytes of the deployable file", "latency": "milliseconds per batch"}
Removal = dict[str, int]  # group name -> channels removed
Cost = Callable[[Removal], float]


@dataclass(frozen=True)
class Target:
    """One budget: a metric of METRICS at most `value` (a share of the original's where `relative`)."""
    metric: str
    value: float
    relative: bool
    text: str  # as given, e.g. "0.5x"

    @property
    def label(self) -> str:
        """A name for files and reports: macs-0.5x, bytes-32000."""
        return f"{self.metric}-{self.text}"

    def absolute(self, original: float) -> float:
        return self.value * original if self.relative else self.value


def parse_target(metric: str, text: str) -> Target:
    """A target as written on the command line: a ratio of the original's cost such as 0.5x (in (0, 1]) or an
    absolute amount (> 0); ConfigError naming the flag otherwise."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    flag = f"--target-{metric}"
    relative = text.strip().lower().endswith("x")
    try:
        value = float(text.strip()[:-1] if relative else text)
    except ValueError:
        raise ConfigError(f"invalid {flag} {text!r}: give a ratio of the original's such as 0.5x, or an amount "
                          f"of {METRICS[metric]}") from None
    if relative and not 0.0 < value <= 1.0:
        raise ConfigError(f"invalid {flag} {text}: a ratio must be above 0x and at most 1x (the original's cost)")
    if not relative and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"invalid {flag} {text}: an amount of {METRICS[metric]} must be a number above 0")
    return Target(metric, value, relative, text.strip())


def drop_curves(groups: list[UnitGroup], rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per group, (channels removed, accuracy drop in points) from (0, 0) along the sensitivity ladder, the drop
    made non-decreasing: removing more of a group is never taken to cost less."""
    out = {}
    for g in groups:
        points, worst = [(0, 0.0)], 0.0
        for r in sorted((r for r in rows if r["group"] == g.name), key=lambda r: r["removed"]):
            worst = max(worst, float(r["drop"]))
            if r["removed"] > points[-1][0]:
                points.append((int(r["removed"]), worst))
        out[g.name] = points
    return out


def drop_at(curve: list[tuple[int, float]], removed: int) -> float:
    """The curve's drop at `removed` channels, linear between its points."""
    for (n0, d0), (n1, d1) in zip(curve, curve[1:]):
        if removed <= n1:
            return d0 + (d1 - d0) * (removed - n0) / (n1 - n0)
    return curve[-1][1]


@dataclass
class Step:
    """A state of the path: channels removed per group, its exact cost, its predicted drop, and which group moved
    into it from the state before (None for the whole network)."""
    removal: Removal
    cost: float
    drop: float
    moved: str | None = None


@dataclass
class RemovalPath:
    """The greedy path from the whole network, computed lazily (iterate, or index) and kept."""
    groups: list[UnitGroup]
    rows: list[dict]
    cost: Cost
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.curves = drop_curves(self.groups, self.rows)
        start = {g.name: 0 for g in self.groups}
        self.steps.append(Step(start, self.cost(start), 0.0))
        self.saving = {}  # per group: cost saved per channel, from its first rung removed alone
        for g in self.groups:
            first = self.curves[g.name][1][0] if len(self.curves[g.name]) > 1 else 0
            if first:
                self.saving[g.name] = max(self.steps[0].cost - self.cost({**start, g.name: first}), 0.0) / first
        self._more = self._walk()

    def drop(self, removal: Removal) -> float:
        return sum(drop_at(self.curves[name], n) for name, n in removal.items())

    def _next(self, removal: Removal) -> Removal | None:
        best, choice = math.inf, None
        for name, n in removal.items():
            rung = next((m for m, _ in self.curves[name] if m > n), None)
            if rung is None or name not in self.saving:
                continue
            extra = drop_at(self.curves[name], rung) - drop_at(self.curves[name], n)
            score = (max(extra, 0.0) + 1e-3) / max(self.saving[name] * (rung - n), 1e-12)
            if score < best:
                best, choice = score, {**removal, name: rung}
        return choice

    def _walk(self) -> Iterator[Step]:
        while True:
            last = self.steps[-1]
            nxt = self._next(last.removal)
            if nxt is None:
                return
            moved = next(k for k in nxt if nxt[k] != last.removal[k])
            step = Step(nxt, self.cost(nxt), self.drop(nxt), moved)
            self.steps.append(step)
            yield step

    def __getitem__(self, i: int) -> Step | None:
        while len(self.steps) <= i:
            if next(self._more, None) is None:
                return None
        return self.steps[i]


def first_ok(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The least x in (lo, hi] with ok(x), by bisection, given ok(hi) and not ok(lo) (ok monotone)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def meet(path: RemovalPath, measure: Cost, limit: float, every: float = 0.0) -> Step | None:
    """The least removal on the path whose `measure` is at most `limit`, or None where even the whole path does not
    reach it. `every` > 0 measures only states whose path cost fell by that share since the last one measured (for
    slow measures: latency), then bisects back among the states skipped; channels are then given back while the
    limit still holds (_back_off)."""
    i, checked, measured = 0, -1, path[0].cost
    while path[i] is not None:
        step = path[i]
        if every and i and step.cost > measured * (1.0 - every) and path[i + 1] is not None:
            i += 1
            continue
        measured = step.cost
        if measure(step.removal) <= limit:
            hi = first_ok(checked, i, lambda j: measure(path[j].removal) <= limit)  # skipped states: bisected
            return _back_off(path, path[hi], measure, limit, fill=not every) if hi > 0 else path[0]
        checked = i
        i += 1
    return None


def _back_off(path: RemovalPath, step: Step, measure: Cost, limit: float, fill: bool) -> Step:
    """`step` with channels given back while the limit holds: first to its last-moved group (bisection between the
    rung before and the rung it moved to), then, with `fill`, to every other group in turn, the one whose removed
    channels cost the most accuracy per channel first, so that a coarse last step (one of LeNet-5's 6 conv1
    channels is 14% of its MACs) does not leave the network far under its budget."""
    removal = dict(step.removal)
    before = max((m for m, _ in path.curves[step.moved] if m < removal[step.moved]), default=0)
    order = [step.moved] + sorted((n for n in removal if n != step.moved and removal[n]) if fill else (),
                                  key=lambda n: -path.drop({n: removal[n]}) / removal[n])
    for name in order:
        lo = before if name == step.moved else -1  # over the limit (the state before), or nothing known
        removal[name] = first_ok(lo, removal[name], lambda k: measure({**removal, name: k}) <= limit)
    step = Step(removal, path.cost(removal), path.drop(removal), step.moved)
    return _exchange(path, step, measure, limit) if fill else step


USE = 0.95  # a design under this share of its budget trades channels of a coarse group for finer ones (_exchange)


def _least(path: RemovalPath, removal: Removal, name: str, measure: Cost, limit: float) -> int | None:
    """The fewest channels of group `name` removed (more than now, at most its last rung) that bring `removal`
    within the limit, or None."""
    top = path.curves[name][-1][0]
    if top <= removal[name] or measure({**removal, name: top}) > limit:
        return None
    return first_ok(removal[name], top, lambda k: measure({**removal, name: k}) <= limit)


def _exchange(path: RemovalPath, step: Step, measure: Cost, limit: float) -> Step:
    """While the design uses less than USE of its budget: give one channel back to the last-moved group and remove
    the fewest channels of another group that meet the limit again, the exchange of the least predicted drop, as
    long as that brings the cost closer to the limit."""
    while step.cost < USE * limit and step.removal[step.moved] > 0:
        back = {**step.removal, step.moved: step.removal[step.moved] - 1}
        options = []
        for name in back:
            k = _least(path, back, name, measure, limit) if name != step.moved else None
            if k is not None:
                removal = {**back, name: k}
                options.append(Step(removal, path.cost(removal), path.drop(removal), step.moved))
        better = [o for o in options if o.cost > step.cost]
        if not better:
            return step
        step = min(better, key=lambda o: (o.drop, -o.cost))
    return step


def floor(path: RemovalPath) -> Removal:
    """The most the path can remove: every group at the last rung of its ladder."""
    return {name: curve[-1][0] for name, curve in path.curves.items()}


def within_drop(path: RemovalPath, max_drop: float) -> Step:
    """The furthest state on the path whose predicted drop (its groups' drops pruned alone, summed) is at most
    max_drop points: the design for an accuracy budget alone."""
    best, i = path[0], 1
    while path[i] is not None and path[i].drop <= max_drop:
        best, i = path[i], i + 1
    return best
