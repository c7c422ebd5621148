"""Trainers with safe checkpoints: state dicts plus plain config data, loaded weights-only.

RecBole 1.2.1 pickles its whole ``Config`` object into every checkpoint and reloads it with a
bare ``torch.load``; torch>=2.6 loads weights-only by default, so RecBole's test step after
training crashes. Switching weights-only off globally would let any checkpoint run pickled
code, so instead the save side writes only tensors and plain data and the load side always
passes ``weights_only=True``. ``make_safe`` applies this to any RecBole trainer class.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import set_color

from recbole_bbqrec.atomic_io import atomic_torch_save
from recbole_bbqrec.budget import BudgetMixin
from recbole_bbqrec.checkpoints import load_model_weights
from recbole_bbqrec.config import to_plain
from recbole_bbqrec.device import device_mixins
from recbole_bbqrec.distributed import gather_eval_struct


class TrainingDivergedError(ValueError):
    """The training loss became NaN/Inf; the last good checkpoint is left untouched."""


class SafeCheckpointMixin:
    """Overrides RecBole's checkpoint save/resume/evaluate-loading with weights-only I/O."""

    def checkpoint_meta(self) -> dict:
        """Extra plain data stored in the checkpoint (models may add identity checks)."""
        meta = getattr(self.model, "checkpoint_meta", None)
        return to_plain(meta()) if callable(meta) else {}

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        best = self.best_valid_score
        state = {
            "config": to_plain(self.config.final_config_dict),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(best) if best is not None else None,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "meta": self.checkpoint_meta(),
        }
        atomic_torch_save(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_model_weights(self, checkpoint_file: str) -> dict:
        return load_model_weights(self.model, checkpoint_file, self.device)

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = self._load_model_weights(resume_file)  # refuses another model's
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_model_weights(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        # Capture the collected top-k struct on its way to RecBole's evaluator, so per-user
        # metrics (for paired significance tests) come from exactly what RecBole averaged.
        evaluator, captured, config = self.evaluator, {}, self.config

        class _Capture:
            def evaluate(self, struct):
                # under torch.distributed: every rank's rows, each user once
                struct = gather_eval_struct(struct, eval_data, config)
                captured["struct"] = struct
                return evaluator.evaluate(struct)

        self.evaluator = _Capture()
        try:
            result = super().evaluate(eval_data, load_best_model=False, model_file=None,
                                      show_progress=show_progress)
        finally:
            self.evaluator = evaluator
        self.last_per_user = per_user_metrics(evaluator, captured.get("struct"))
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch = epoch_idx  # for the divergence message
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func,
                                    show_progress=show_progress)
        self._raise_if_diverged()  # before this epoch can validate or save a checkpoint
        return loss

    def _check_nan(self, loss):
        """Note a non-finite loss on the device; reading it on the host every step would stall
        a GPU, so the flag is read every ``nan_check_steps`` steps and at every epoch end."""
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss).all()
        if getattr(self, "_first_bad_loss", None) is None:
            self._first_bad_loss, self._steps_unchecked = torch.where(bad, loss, 0.0), 0
        else:  # keep the first non-finite value, for the message
            self._first_bad_loss = torch.where(torch.isfinite(self._first_bad_loss) & bad,
                                               loss, self._first_bad_loss)
        self._steps_unchecked += 1
        every = self.config["nan_check_steps"]
        if every and self._steps_unchecked >= int(every):
            self._raise_if_diverged()

    def _raise_if_diverged(self):
        first_bad = getattr(self, "_first_bad_loss", None)
        self._first_bad_loss = None
        if first_bad is not None and not math.isfinite(float(first_bad)):
            raise TrainingDivergedError(
                f"Training loss is {float(first_bad)} in epoch {getattr(self, '_epoch', '?')}; "
                f"stopping. The last good checkpoint ({self.saved_model_file}) is kept; lower "
                f"learning_rate or set clip_grad_norm and resume from it.")


def per_user_metrics(evaluator, struct) -> dict[str, np.ndarray]:
    """``{"recall@10": [n_users] float32, ...}`` for every top-k metric RecBole computed."""
    from recbole.evaluator.base_metric import TopkMetric

    if struct is None:
        return {}
    out = {}
    for name, metric in evaluator.metric_class.items():
        if not isinstance(metric, TopkMetric):
            continue
        pos_index, pos_len = metric.used_info(struct)
        try:
            values = metric.metric_info(pos_index, pos_len)  # [n_users, max(topk)]
        except TypeError:  # Hit/MRR/Precision take pos_index only
            values = metric.metric_info(pos_index)
        for k in metric.topk:
            out[f"{name}@{k}"] = np.asarray(values[:, k - 1], dtype=np.float32)
    return out


_SAFE_CLASSES: dict[type, type] = {}


def make_safe(trainer_class: type) -> type:
    """Return ``trainer_class`` with ``SafeCheckpointMixin`` (weights-only checkpoints) and
    ``BudgetMixin`` (time budget, learning curve) in front (cached per class)."""
    if issubclass(trainer_class, SafeCheckpointMixin):
        return trainer_class
    if trainer_class not in _SAFE_CLASSES:
        _SAFE_CLASSES[trainer_class] = type(f"Safe{trainer_class.__name__}",
                                            (SafeCheckpointMixin, BudgetMixin,
                                             *device_mixins(trainer_class), trainer_class), {})
    return _SAFE_CLASSES[trainer_class]


SafeTrainer = make_safe(Trainer)


class BBQRecTrainer(SafeTrainer):
    """Trainer of the generative models: validation decodes with ``valid_beam_size`` (cheaper,
    run every ``eval_step`` epochs), the test with ``beam_size``; the model may give parameter
    groups their own learning rates (``optimizer_groups``)."""

    def _build_optimizer(self, **kwargs):
        groups = getattr(self.model, "optimizer_groups", None)
        if "params" not in kwargs and callable(groups):
            kwargs["params"] = groups(kwargs.get("learning_rate", self.learning_rate))
        return super()._build_optimizer(**kwargs)

    def _valid_epoch(self, valid_data, show_progress=False):
        with self.model.decoding(beam_size=self.model.valid_beam_size):
            return super()._valid_epoch(valid_data, show_progress=show_progress)


def get_trainer(model_type, model_name: str):
    """Return the trainer class for a model, always with safe (weights-only) checkpoints.

    A plugin trainer (``<Class>Trainer`` in this module) found along the model class's MRO
    comes first (TIGER, a BBQRec subclass, trains with ``BBQRecTrainer``). RecBole's own
    trainers pickle the whole ``Config`` into their checkpoints, which torch>=2.6 refuses to
    load with ``weights_only=True``; they are returned wrapped in ``SafeCheckpointMixin`` so
    the checkpoint holds only tensors and plain data.
    """
    import sys

    from recbole_bbqrec.utils import get_model, plugin_class_for

    found = plugin_class_for(get_model(model_name), sys.modules[__name__], "Trainer")
    if found is not None and issubclass(found, SafeCheckpointMixin):
        return found
    return make_safe(recbole_get_trainer(model_type, model_name))
