"""Training under a time budget, with a learning curve: compare models at equal cost.

A comparison of a long run against a short one says nothing about the models. With
``time_budget: <minutes>`` a run trains until its clock has spent the budget (or early
stopping ends it first), validates once more at that point and tests the best checkpoint.
What the clock counts:

* training batches only (forward, backward, optimiser, batch collation); validation and the
  test are not charged, since the models' validation costs differ by design (beam search
  against one matrix product) and the comparison is about what training buys;
* stage 1, for the generative models: the CPU seconds the stage-1 JSON records for the IDs
  in use (``cpu_s``), charged up front, so reusing cached IDs costs the same as making them.

``budget_clock``: ``process`` counts CPU seconds of this process (with ``torch_threads: 1``,
the wall-clock of one idle core, and unchanged when other jobs share the machine), ``wall``
counts elapsed seconds (what a GPU run should use: its kernels run off the CPU), ``auto``
picks ``wall`` on CUDA and ``process`` otherwise.

Every run (budget or not) records its learning curve: one point per validation, the charged
seconds so far against the validation metrics; ``curve_points`` reads them back for plots.
"""

from __future__ import annotations

import time

from recbole_bbqrec.schedule import budget_progress

CLOCKS = ("auto", "process", "wall")


class BudgetSpent(Exception):
    """Raised at the start of an epoch once the budget is spent; ``fit`` ends there."""


class TrainingClock:
    """Seconds charged to a run: what ran between ``start`` and ``stop`` plus explicit charges."""

    def __init__(self, kind: str = "process") -> None:
        if kind not in ("process", "wall"):
            raise ValueError(f"clock must be 'process' or 'wall', got {kind!r}")
        self.kind = kind
        self._now = time.process_time if kind == "process" else time.perf_counter
        self.charged = 0.0  # stage 1 and anything else paid for up front
        self.trained = 0.0  # seconds of finished training intervals
        self._since: float | None = None

    def charge(self, seconds: float) -> None:
        self.charged += max(0.0, float(seconds))

    def start(self) -> None:
        if self._since is None:
            self._since = self._now()

    def stop(self) -> None:
        if self._since is not None:
            self.trained += self._now() - self._since
            self._since = None

    def elapsed(self) -> float:
        running = 0.0 if self._since is None else self._now() - self._since
        return self.charged + self.trained + running


def resolve_clock(kind: str, device) -> str:
    if kind not in CLOCKS:
        raise ValueError(f"budget_clock must be one of {CLOCKS}, got {kind!r}")
    if kind != "auto":
        return kind
    return "wall" if getattr(device, "type", str(device)) == "cuda" else "process"


class _BudgetedBatches:
    """The training loader, cut off at the first batch that would start after the budget.

    Everything but iteration is the loader's own (RecBole reads ``sampler``, ``len`` ...)."""

    def __init__(self, loader, clock: TrainingClock, limit_s: float | None,
                 free_batches: int = 0) -> None:
        self._loader, self._clock, self._limit = loader, clock, limit_s
        self._free = free_batches  # batches run whatever the clock says
        self.cut, self.count = False, 0

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        for batch in self._loader:
            if (self._limit is not None and self.count >= self._free
                    and self._clock.elapsed() >= self._limit):
                self.cut = True
                return
            self.count += 1
            yield batch


class BudgetMixin:
    """Trainer mixin: ``time_budget`` (minutes) stops training, every run keeps its curve.

    Mixed in front of any RecBole trainer (``trainer.make_safe``). Stopping goes through
    RecBole's own loop: the epoch in which the budget runs out validates (``eval_step`` is set
    to 1 for it) and the next epoch raises ``BudgetSpent``, which ``fit`` turns into its
    normal return, so checkpoint choice and early stopping stay RecBole's.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        minutes = config["time_budget"]
        self.budget_s = None if minutes is None else float(minutes) * 60.0
        self.clock = TrainingClock(resolve_clock(config["budget_clock"] or "auto", self.device))
        self.curve: list[dict] = []
        self.budget_spent = False
        self._epoch_of_curve = -1

    def charge(self, seconds: float) -> None:
        """Pay for work done before training (stage 1) out of the budget."""
        self.clock.charge(seconds)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.budget_spent:
            raise BudgetSpent
        # a run's first batch always trains: a model that never trained has nothing to validate
        first = 1 if epoch_idx == self.start_epoch else 0
        batches = _BudgetedBatches(train_data, self.clock, self.budget_s, free_batches=first)
        self._epoch_of_curve = epoch_idx
        self.clock.start()
        try:
            loss = super()._train_epoch(batches, epoch_idx, loss_func=loss_func,
                                        show_progress=show_progress)
        finally:
            self.clock.stop()
        if self.budget_s is not None and (batches.cut or self.clock.elapsed() >= self.budget_s):
            self.budget_spent = True
            self.eval_step = 1  # validate what the budget bought before stopping
            self.logger.info(f"time budget of {self.budget_s / 60:g} min spent in epoch "
                             f"{epoch_idx} ({self.clock.elapsed():.0f} s {self.clock.kind} "
                             f"clock); validating, then stopping")
        return loss

    def _schedule_progress(self) -> float:
        """A budgeted run's learning-rate schedule spans its training time: a decaying rate
        reaches its floor as the budget runs out, however fast the machine is."""
        if self.budget_s is None:
            return super()._schedule_progress()
        return budget_progress(self.clock.elapsed(), self.clock.charged, self.budget_s)

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.curve.append({"epoch": int(self._epoch_of_curve),
                           "seconds": round(self.clock.elapsed(), 2),
                           "valid_score": float(score),
                           **{k: float(v) for k, v in (result or {}).items()}})
        return score, result

    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        except BudgetSpent:
            self._add_hparam_to_tensorboard(self.best_valid_score)
            return self.best_valid_score, self.best_valid_result

    def budget_summary(self) -> dict:
        """What the results JSON keeps: the budget, what was charged, and the curve."""
        return {"minutes": None if self.budget_s is None else self.budget_s / 60.0,
                "clock": self.clock.kind, "stage1_s": round(self.clock.charged, 2),
                "train_s": round(self.clock.trained, 2),
                "charged_s": round(self.clock.elapsed(), 2), "spent": self.budget_spent}


def curve_points(record: dict, metric: str = "ndcg@10") -> list[tuple[float, float]]:
    """(charged seconds, validation metric) per validation of a results record."""
    return [(p["seconds"], p[metric]) for p in record.get("curve") or [] if metric in p]
