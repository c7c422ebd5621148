"""Learning-rate schedule of stage 2: linear warm-up, then an optional decay to a floor.

The factor multiplies each parameter group's base learning rate at every step:

    factor(step) = warmup(step) * decay(progress)

* ``warmup_steps``: the factor rises linearly from 1/warmup_steps to 1 over the first steps
  (large batches, see properties/overall.yaml);
* ``lr_decay``: ``none`` (flat), ``linear`` or ``cosine`` from 1 down to ``lr_min_ratio`` as
  ``progress`` goes from 0 to 1, flat at ``lr_min_ratio`` beyond.

What ``progress`` counts is the run's horizon, which the trainer knows and this module does
not: the share of the training-time budget spent (``time_budget``: a budgeted run anneals
exactly by the time it must stop, whatever its speed), else the share of
``epochs x batches per epoch`` steps after the warm-up (early stopping may end a run before
the floor is reached).
"""

from __future__ import annotations

import math

LR_DECAYS = ("none", "linear", "cosine")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: (step + 1) / warmup_steps for the first warmup_steps steps, then 1."""
    if not warmup_steps or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def decay_factor(progress: float, kind: str = "none", min_ratio: float = 0.0) -> float:
    """1 at progress 0, ``min_ratio`` at progress >= 1, linear or half-cosine in between."""
    if kind not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {kind!r}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"lr_min_ratio must lie in [0, 1], got {min_ratio!r}")
    if kind == "none":
        return 1.0
    progress = min(max(float(progress), 0.0), 1.0)
    shape = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


def steps_progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """Share of the post-warm-up steps done (0 during the warm-up, 1 at ``total_steps``)."""
    span = max(1, total_steps - warmup_steps)
    return max(0, step - warmup_steps) / span


def budget_progress(elapsed_s: float, charged_s: float, budget_s: float) -> float:
    """Share of a time budget's training part spent: stage 1 (``charged_s``, paid up front)
    is not training time the schedule can use."""
    span = budget_s - charged_s
    if span <= 0:
        return 1.0
    return (elapsed_s - charged_s) / span


class LearningRateSchedule:
    """Sets ``factor * base_lr`` on an optimiser's groups; keeps each group's base rate.

    A group's base rate is read the first time the schedule touches it, so rates a model sets
    per group (BBQRec's ``optimizer_groups``) keep their ratios."""

    def __init__(self, warmup_steps: int = 0, decay: str = "none", min_ratio: float = 0.0):
        decay_factor(0.0, decay, min_ratio)  # validates both
        self.warmup_steps, self.decay, self.min_ratio = int(warmup_steps), decay, min_ratio

    @property
    def active(self) -> bool:
        return bool(self.warmup_steps) or self.decay != "none"

    def changes_at(self, step: int) -> bool:
        """Whether the factor may differ from the last one set: never when inactive, and not
        after the warm-up's last step when there is no decay (flat from there on)."""
        return self.active and (self.decay != "none" or step <= self.warmup_steps)

    def factor(self, step: int, progress: float) -> float:
        return warmup_factor(step, self.warmup_steps) * decay_factor(progress, self.decay,
                                                                      self.min_ratio)

    def apply(self, optimizer, step: int, progress: float) -> float:
        factor = self.factor(step, progress)
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * factor
        return factor
