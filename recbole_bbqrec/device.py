"""One device, fast: mixed precision, no per-step host syncs, warm-up, DDP on any device.

RecBole 1.2.1's ``Trainer._train_epoch`` reads every loss on the host (``loss.item()``) and
checks it for NaN (``torch.isnan(loss)`` in an ``if``): two device->host syncs per step, which
stall a GPU between steps. It also autocasts in the device's default low precision (fp16 on
CUDA) without choosing bf16 where the card has it, and builds a fresh ``GradScaler`` every
epoch (the loss scale is relearnt each epoch). ``DeviceTrainerMixin`` replaces that loop for
trainers that use it unchanged (SASRec's, BBQRec's ...): losses are summed on the device and
read once per epoch, the NaN flag stays on the device (``SafeCheckpointMixin._check_nan``) and
is read every ``nan_check_steps`` steps and at the end of each epoch, autocast uses
``amp_dtype`` (bf16 where supported, else fp16 with a persistent scaler), and the learning rate
follows ``recbole_bbqrec/schedule.py`` (warm-up over ``warmup_steps``, then ``lr_decay``).
Trainers with their own loop (KGTrainer ...) keep it, and keep a flat learning rate.

RecBole wraps the model in ``DistributedDataParallel(model, device_ids=[local_rank])``, which
torch refuses for a CPU model; ``ddp_factory`` passes ``device_ids`` only for a CUDA model and
turns buffer broadcasting off (RecBole calls the wrapper once per step to register its hooks,
which would copy every buffer, e.g. BBQRec's [n_items, L, S] code table, from rank 0 each
step; the buffers are built identically on every rank). The wrapper is only RecBole's hook
carrier: ``self.model`` stays the plain model, so custom attributes (``decoding``,
``prefix_index`` ...) need no ``.module``.
"""

from __future__ import annotations

import contextlib

import torch
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_

from recbole_bbqrec.schedule import LearningRateSchedule, steps_progress

AMP_DTYPES = ("auto", "bf16", "fp16")


def resolve_amp_dtype(enable_amp: bool, amp_dtype: str, device) -> torch.dtype | None:
    """The autocast dtype for this run, or None for full precision.

    ``auto``: bf16 on CPU and on CUDA cards that support it (Ampere and newer), else fp16.
    Asking for bf16 on a card without it falls back to fp16 (with a loss scaler)."""
    if not enable_amp:
        return None
    device = torch.device(device)
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}, got {amp_dtype!r}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if amp_dtype == "fp16" or not bf16_ok:
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16  # CPU autocast supports bf16 only (fp16 kernels are sparse)
    return torch.bfloat16 if amp_dtype != "fp16" else torch.float16


def autocast(device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def needs_scaler(dtype: torch.dtype | None, device) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
    return dtype == torch.float16 and torch.device(device).type == "cuda"


def ddp_factory(ddp_class):
    """``DistributedDataParallel`` as RecBole calls it, made valid for CPU (gloo) models."""

    def make(module, device_ids=None, **kwargs):
        on_cuda = any(p.is_cuda for p in module.parameters())
        kwargs.setdefault("broadcast_buffers", False)
        return ddp_class(module, device_ids=device_ids if on_cuda else None, **kwargs)

    return make


@contextlib.contextmanager
def recbole_ddp_patched():
    """RecBole's trainer module builds its DDP wrapper through ``ddp_factory`` (only while a
    trainer is constructed)."""
    import recbole.trainer.trainer as recbole_trainer

    original = recbole_trainer.DistributedDataParallel
    recbole_trainer.DistributedDataParallel = ddp_factory(original)
    try:
        yield
    finally:
        recbole_trainer.DistributedDataParallel = original


class DeviceTrainerMixin:
    """Device setup for every trainer: amp dtype, DDP on CPU, results gathered exactly once."""

    def __init__(self, config, model):
        if config["single_spec"]:
            super().__init__(config, model)
        else:
            with recbole_ddp_patched():
                super().__init__(config, model)
        self.amp_dtype = resolve_amp_dtype(bool(config["enable_amp"]),
                                           config["amp_dtype"] or "auto", self.device)
        self.enable_amp = self.amp_dtype is not None  # RecBole's own loops read this flag
        self.enable_scaler = (needs_scaler(self.amp_dtype, self.device)
                              or (self.enable_scaler and self.enable_amp))
        self.lr_schedule = LearningRateSchedule(int(config["warmup_steps"] or 0),
                                                config["lr_decay"] or "none",
                                                float(config["lr_min_ratio"] or 0.0))
        self.global_step = 0
        self._batches_per_epoch = 1
        self._grad_scaler = None

    def _map_reduce(self, result, num_sample):
        # the evaluated rows were gathered before RecBole's evaluator ran
        # (distributed.gather_eval_struct): every rank already holds the global metrics
        return result


class FastTrainEpochMixin:
    """RecBole's ``Trainer._train_epoch`` without per-step host syncs; amp with a chosen
    dtype and a scaler kept across epochs; the learning-rate schedule applied every step."""

    def _schedule_progress(self) -> float:
        """Share of the run's horizon done: steps over ``epochs`` x batches per epoch
        (``BudgetMixin`` counts the time budget instead)."""
        return steps_progress(self.global_step, self.lr_schedule.warmup_steps,
                              self.epochs * self._batches_per_epoch)

    def _set_scheduled_lr(self) -> None:
        if self.lr_schedule.changes_at(self.global_step):
            self.lr_schedule.apply(self.optimizer, self.global_step, self._schedule_progress())

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        from recbole.utils import set_color
        from tqdm import tqdm

        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        iter_data = (tqdm(train_data, total=len(train_data), ncols=100,
                          desc=set_color(f"Train {epoch_idx:>5}", "pink"))
                     if show_progress else train_data)
        if not self.config["single_spec"] and train_data.shuffle:
            train_data.sampler.set_epoch(epoch_idx)
        if self._grad_scaler is None:
            self._grad_scaler = torch.amp.GradScaler(self.device.type,
                                                     enabled=self.enable_scaler)
        scaler = self._grad_scaler
        self._batches_per_epoch = max(1, len(train_data))
        total, is_tuple = None, False
        for interaction in iter_data:
            interaction = interaction.to(self.device)
            self._set_scheduled_lr()
            self.optimizer.zero_grad()
            sync_loss = 0
            if not self.config["single_spec"]:
                self.set_reduce_hook()
                sync_loss = self.sync_grad_loss()
            with autocast(self.device, self.amp_dtype):
                losses = loss_func(interaction)
            is_tuple = isinstance(losses, tuple)
            parts = losses if is_tuple else (losses,)
            loss = sum(parts)
            # stays on device; sum(): some losses are [1], not scalars (RecBole's Pop)
            step_losses = torch.stack([p.detach().float().sum() for p in parts])
            total = step_losses if total is None else total + step_losses
            self._check_nan(loss)  # on-device flag, read every nan_check_steps steps
            scaler.scale(loss + sync_loss).backward()
            if self.clip_grad_norm:
                scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            scaler.step(self.optimizer)
            scaler.update()
            self.global_step += 1
            if self.gpu_available and show_progress:
                from recbole.utils import get_gpu_usage

                iter_data.set_postfix_str(set_color("GPU RAM: " + get_gpu_usage(self.device),
                                                    "yellow"))
        if total is None:
            return 0.0
        values = total.tolist()  # the one host read of the epoch's losses
        return tuple(values) if is_tuple else values[0]


def device_mixins(trainer_class: type) -> tuple[type, ...]:
    """The mixins for ``trainer_class``: the fast loop only where it runs RecBole's own."""
    if getattr(trainer_class, "_train_epoch", None) is Trainer._train_epoch:
        return (DeviceTrainerMixin, FastTrainEpochMixin)
    return (DeviceTrainerMixin,)
