"""Plain-torch training loop for any stage-1 tokenizer (BBQ, RQ-VAE, LETTER).

fit(features, masks, train_sequences) ->
  1. seed torch / numpy / random; k-means init of the codebooks on all items' encoder outputs;
  2. per epoch: sequence tokenizers get one row per user (its TRAINING sequence minus the last
     item, a random window of max_history + 1 when longer; the loss runs at every position)
     in length-grouped batches, ``n_negatives`` sampled items as extra candidates, and a
     cycling batch of items so every item trains; others get shuffled item batches. The ID
     table has its own learning rate; CLUB nets get ``club_steps`` optimiser steps per step;
     after ``kmeans_redo_epoch`` the codebooks are refitted by k-means on the warmed-up signals;
  3. validation (every eval_every epochs): recall@10 of each training sequence's held-out last
     item for sequence tokenizers, else -(recon + RQ) over all items; early stopping after
     ``patience`` evaluations without improvement; best state checkpointed atomically;
  4. dead codes re-seeded after each epoch; < collapse_threshold usage -> logger.warning;
  5. best state restored; codes, raw collisions, make_unique, zq recomputed from the final codes;
     per signal: codebook usage and how predictable its level-1 code is from the previous item
     against shuffled codes (``diagnostics.py``), so IDs that are noise show as noise.

On a GPU the step loop never waits for the host: the losses are summed on the device and the
finiteness flag (with the first bad step) is read every ``sync_every`` steps and at the end of
each epoch, before validation can checkpoint; CLUB's diagnostic NLL is sampled at those reads.
``amp_dtype`` autocasts the training losses (bf16, or fp16 with a loss scaler on CUDA); the
k-means, code assignment for export and validation stay fp32.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from recbole_bbqrec.atomic_io import atomic_torch_save
from recbole_bbqrec.device import autocast, needs_scaler
from recbole_bbqrec.tokenizers.base import ItemTokenizer
from recbole_bbqrec.tokenizers.diagnostics import signal_report
from recbole_bbqrec.tokenizers.semantic_ids import CollisionError, count_collisions, make_unique


@dataclass
class Stage1Result:
    codes: np.ndarray  # [n_items, L, S] int64, collision-free
    zq: np.ndarray  # [n_items, S*D] float32, quantized vectors of the final codes
    signal_names: list[str]
    raw_collisions: int  # items sharing a full ID before make_unique
    collisions: int  # after make_unique (0)
    code_usage: dict[str, list[float]]  # codebook set ('shared' or signal) -> fraction used per level
    best_valid: float
    valid_metric: str
    best_epoch: int
    epochs_run: int
    train_seconds: float
    raw_codes: np.ndarray | None = None  # [n_items, L, S] before make_unique
    history: list[dict[str, float]] = field(default_factory=list)
    signal_report: dict[str, dict] = field(default_factory=dict)  # per signal: usage, predictability
    decoder_dependence: dict[str, float] = field(default_factory=dict)  # recon error with z / s zeroed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def user_sequences(
    train_sequences: Sequence[np.ndarray], n_items: int, max_len: int
) -> tuple[list[np.ndarray], dict[str, torch.Tensor]]:
    """(training rows, validation pairs). The last item of every sequence (len >= 2) is the
    validation target, its previous <= max_len items the history ({'history' [U, max_len]
    right-padded with 0, 'history_len' [U], 'target' [U]}); the rest of the sequence, when it
    holds >= 2 items, is that user's one training row (the loss runs at every position)."""
    rows, hist, lens, targets = [], [], [], []
    for u, seq in enumerate(train_sequences):
        seq = np.asarray(seq, dtype=np.int64)
        if seq.ndim != 1 or (len(seq) and (seq.min() < 0 or seq.max() >= n_items)):
            raise ValueError(f"training sequence {u} must be 1-D item indices in [0, {n_items}), got {seq[:10]}")
        if len(seq) < 2:
            continue
        history = seq[:-1][-max_len:]
        padded = np.zeros(max_len, dtype=np.int64)
        padded[: len(history)] = history
        hist.append(padded)
        lens.append(len(history))
        targets.append(int(seq[-1]))
        if len(seq) >= 3:
            rows.append(seq[:-1])
    if not rows:
        raise ValueError("no training sequences: sequences need >= 3 items (one is held out for validation)")
    valid = {"history": torch.as_tensor(np.stack(hist)),
             "history_len": torch.as_tensor(np.asarray(lens, dtype=np.int64)),
             "target": torch.as_tensor(np.asarray(targets, dtype=np.int64))}
    return rows, valid


def sequence_batches(
    rows: Sequence[np.ndarray], batch_size: int, max_len: int, rng: np.random.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (sequence [B, T] right-padded, lengths [B]) batches, one row per user.

    A row longer than max_len + 1 items contributes a random window of max_len + 1 (every
    part of a long history is seen across epochs). Rows are grouped by length so a batch
    pads little, and the batches come in random order."""
    window = max_len + 1
    crops = []
    for seq in rows:
        if len(seq) > window:
            start = int(rng.integers(0, len(seq) - window + 1))
            seq = seq[start: start + window]
        crops.append(seq)
    lengths = np.asarray([len(c) for c in crops])
    order = np.lexsort((rng.random(len(crops)), lengths))  # by length, random among equals
    batches = []
    for start in range(0, len(order), batch_size):
        chosen = order[start: start + batch_size]
        width = int(lengths[chosen].max())
        seq = np.zeros((len(chosen), width), dtype=np.int64)
        for i, r in enumerate(chosen):
            seq[i, : lengths[r]] = crops[r]
        batches.append((torch.from_numpy(seq), torch.from_numpy(lengths[chosen].copy())))
    return [batches[i] for i in rng.permutation(len(batches))]


def save_checkpoint(path: str | os.PathLike, tokenizer: ItemTokenizer, meta: dict) -> None:
    """state_dict + plain-Python metadata, written atomically (temp file + os.replace)."""
    atomic_torch_save({"state_dict": tokenizer.state_dict(), "meta": meta}, path)


def load_tokenizer_checkpoint(path: str | os.PathLike, tokenizer: ItemTokenizer) -> dict:
    """Loads weights into tokenizer (weights_only, no pickled objects); returns the metadata."""
    blob = torch.load(path, map_location=tokenizer.device, weights_only=True)
    tokenizer.load_state_dict(blob["state_dict"])
    return blob["meta"]


class TokenizerTrainer:
    def __init__(
        self,
        tokenizer: ItemTokenizer,
        *,
        epochs: int = 100,
        batch_size: int = 256,
        item_batch_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        mim_lr: float | None = None,
        patience: int = 10,
        eval_every: int = 1,
        checkpoint_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        show_progress: bool = False,
        logger: logging.Logger | None = None,
        seed: int = 2024,
        max_history: int = 20,
        grad_clip: float | None = 1.0,
        steps_per_epoch: int | None = None,
        reseed_dead_codes: bool = True,
        dead_code_min_count: float = 1.0,
        collapse_threshold: float = 0.1,
        n_negatives: int = 1024,
        id_lr: float | None = None,
        club_steps: int = 5,
        kmeans_redo_epoch: int = 0,
        valid_users: int | None = None,
        amp_dtype: torch.dtype | None = None,
        sync_every: int = 100,
    ) -> None:
        self.tokenizer = tokenizer
        self.epochs, self.batch_size = epochs, batch_size
        self.item_batch_size = item_batch_size or batch_size
        self.lr, self.weight_decay, self.mim_lr = lr, weight_decay, mim_lr or lr
        self.patience, self.eval_every = patience, max(1, eval_every)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.device = torch.device(device)
        self.show_progress = show_progress
        self.logger = logger or logging.getLogger(__name__)
        self.seed, self.max_history, self.grad_clip = seed, max_history, grad_clip
        self.steps_per_epoch = steps_per_epoch
        self.reseed, self.dead_code_min_count = reseed_dead_codes, dead_code_min_count
        self.collapse_threshold = collapse_threshold
        self.n_negatives, self.id_lr = n_negatives, id_lr or lr
        self.club_steps, self.kmeans_redo_epoch = max(1, club_steps), kmeans_redo_epoch
        self.valid_users = valid_users
        self.amp_dtype, self.sync_every = amp_dtype, max(0, int(sync_every or 0))
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
            if not value > 0:
                raise ValueError(f"stage-1 {name} must be positive, got {value}")
        if n_negatives < 0:
            raise ValueError(f"stage-1 n_negatives must be >= 0, got {n_negatives}")

    # ---- helpers ----------------------------------------------------------------------------
    def _code_usage(self, codes: np.ndarray) -> dict[str, list[float]]:
        tok, n_codes = self.tokenizer, self.tokenizer.quantizer.codebook_size
        if tok.quantizer.n_codebook_sets == 1:
            groups = {"shared": codes.transpose(0, 2, 1).reshape(-1, codes.shape[1])}  # [n*S, L]
        else:
            groups = {s: codes[:, :, i] for i, s in enumerate(tok.signal_names)}
        return {k: [len(np.unique(c[:, l])) / n_codes for l in range(c.shape[1])] for k, c in groups.items()}

    def _warn_collapse(self, usage: dict[str, list[float]], epoch: int) -> None:
        for name, levels in usage.items():
            if min(levels) < self.collapse_threshold:
                self.logger.warning(
                    "stage 1 epoch %d: codebook collapse in set %r, fraction of codes used per level %s "
                    "(< %.0f%%); consider a smaller N, more k-means iterations or a lower lr",
                    epoch, name, [round(u, 3) for u in levels], 100 * self.collapse_threshold,
                )

    def _check_finite(self, parts: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        bad = {k: float(v.detach()) for k, v in parts.items() if not torch.isfinite(v).all()}
        if bad:
            kept = f"; the last good checkpoint {self.checkpoint_path} is kept" if self.checkpoint_path else ""
            raise FloatingPointError(
                f"stage-1 loss is not finite at epoch {epoch} step {step}: {bad}{kept}. "
                "Lower lr, enable grad_clip, or check the input features"
            )

    def _note_finite(self, watch: dict, parts: dict[str, torch.Tensor], step: int) -> None:
        """Record on the device the first step whose losses are not all finite, with them."""
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in parts.values()]).all()
        first = (watch["step"] < 0) & ~finite
        watch["step"] = torch.where(first, step, watch["step"])
        watch["parts"] = {k: torch.where(first, v.detach().float(), watch["parts"].get(k, v.detach().float()))
                          for k, v in parts.items()}

    def _read_finite(self, watch: dict, epoch: int) -> None:
        """One host read of the flag; raises naming the first bad step (as ``_check_finite``)."""
        step = int(watch["step"])
        if step >= 0:
            self._check_finite(watch["parts"], epoch, step)

    # ---- training ---------------------------------------------------------------------------
    def fit(
        self,
        features: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor] | None = None,
        train_sequences: Sequence[np.ndarray] | None = None,
    ) -> Stage1Result:
        start_time = time.time()
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        tok = self.tokenizer.to(self.device)
        tok.set_features(features, masks)
        n_items = tok.n_items
        valid, rows = None, []
        if tok.uses_sequences:
            if train_sequences is None:
                raise ValueError(f"{type(tok).__name__} with the contrastive task needs train_sequences")
            rows, valid = user_sequences(train_sequences, n_items, self.max_history)
            if self.valid_users and self.valid_users < len(valid["target"]):
                # a fixed sample of users: cheaper validation, the same users every epoch
                keep = torch.as_tensor(np.sort(rng.choice(len(valid["target"]), self.valid_users, replace=False)))
                valid = {k: v[keep] for k, v in valid.items()}
            valid = {k: v.to(self.device) for k, v in valid.items()}
        tok.init_codebooks()
        id_params = tok.id_parameters()
        id_ids = {id(p) for p in id_params}
        groups = [{"params": [p for p in tok.main_parameters() if id(p) not in id_ids]}]
        if id_params:  # the learnable ID table has its own learning rate
            groups.append({"params": id_params, "lr": self.id_lr})
        main_opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        mim_params = tok.mim_parameters()
        mim_opt = torch.optim.Adam(mim_params, lr=self.mim_lr) if mim_params else None
        use_scaler = needs_scaler(self.amp_dtype, self.device)  # fp16 only; bf16 needs none
        scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        mim_scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

        best_score, best_epoch, best_state, evals_since_best = -math.inf, 0, None, 0
        item_order, item_cursor = torch.randperm(n_items, device=self.device), 0
        history, epoch = [], 0
        for epoch in range(1, self.epochs + 1):
            tok.train()
            if tok.uses_sequences:
                batches = sequence_batches(rows, self.batch_size, self.max_history, rng)
            else:
                order = torch.randperm(n_items, device=self.device)
                batches = [order[i: i + self.batch_size] for i in range(0, n_items, self.batch_size)]
            if self.steps_per_epoch:
                batches = batches[: self.steps_per_epoch]
            steps = len(batches)
            sums: dict[str, torch.Tensor] = {}  # on the device, read once per epoch
            club_nll: list[float] = []  # sampled at the host reads
            watch = {"step": torch.tensor(-1, device=self.device), "parts": {}}
            bar = tqdm(range(steps), desc=f"stage1 epoch {epoch}", disable=not self.show_progress, leave=False)
            for step in bar:
                if tok.uses_sequences:
                    if item_cursor + self.item_batch_size > n_items:
                        item_order, item_cursor = torch.randperm(n_items, device=self.device), 0
                    items = item_order[item_cursor : item_cursor + self.item_batch_size]
                    item_cursor += self.item_batch_size
                    seq, lengths = batches[step]
                    batch = {
                        "items": items,
                        "sequence": seq.to(self.device),
                        "sequence_len": lengths.to(self.device),
                        "negatives": torch.randint(0, n_items, (self.n_negatives,), device=self.device),
                    }
                else:
                    batch = {"items": batches[step]}
                with autocast(self.device, self.amp_dtype):
                    parts = tok.loss(batch)
                self._note_finite(watch, parts, step)
                read_now = step == steps - 1 or (self.sync_every and (step + 1) % self.sync_every == 0)
                main_opt.zero_grad(set_to_none=True)
                scaler.scale(parts["loss"]).backward()
                if self.grad_clip:
                    scaler.unscale_(main_opt)
                    torch.nn.utils.clip_grad_norm_(tok.main_parameters(), self.grad_clip)
                scaler.step(main_opt)
                scaler.update()
                if mim_opt is not None:
                    # q(s|b) fitted on the step's detached pairs, several steps so it keeps up
                    for _ in range(self.club_steps):
                        mim_opt.zero_grad(set_to_none=True)
                        with autocast(self.device, self.amp_dtype):
                            mim_loss = tok.mim_learning_loss()
                        mim_scaler.scale(mim_loss).backward()
                        mim_scaler.step(mim_opt)
                        mim_scaler.update()
                    if read_now:  # q's NLL after its steps (a host read: sampled, not per step)
                        club_nll.append(tok.club_nll_per_dim())
                for k, v in parts.items():
                    v = v.detach().float()
                    sums[k] = v if k not in sums else sums[k] + v
                if read_now:
                    self._read_finite(watch, epoch)
                if self.show_progress:
                    bar.set_postfix(loss=f"{float(parts['loss'].detach()):.4f}")
            record = {k: float(v) / max(1, steps) for k, v in sums.items()}
            if club_nll:
                record["club_nll"] = sum(club_nll) / len(club_nll)
            record["epoch"] = epoch
            if epoch % self.eval_every == 0 or epoch == self.epochs:
                score = tok.validation_score(valid)
                record["valid"] = score
                if score > best_score:
                    best_score, best_epoch, evals_since_best = score, epoch, 0
                    best_state = copy.deepcopy(tok.state_dict())
                    if self.checkpoint_path:
                        meta = {"epoch": epoch, "valid": score, "metric": tok.validation_metric,
                                "tokenizer": type(tok).__name__, "signals": list(tok.signal_names)}
                        save_checkpoint(self.checkpoint_path, tok, meta)
                else:
                    evals_since_best += 1
            usage = self._code_usage(tok.encode_all().codes)
            record["min_code_usage"] = min(min(v) for v in usage.values())
            self._warn_collapse(usage, epoch)
            history.append(record)
            self.logger.info("stage 1 epoch %d: %s", epoch, {k: round(v, 5) for k, v in record.items()})
            if evals_since_best >= self.patience:
                self.logger.info("stage 1: early stop at epoch %d (best %s=%.5f at epoch %d)",
                                 epoch, tok.validation_metric, best_score, best_epoch)
                break
            if epoch == self.kmeans_redo_epoch and epoch < self.epochs:
                # the encoders moved away from where the first k-means saw them: refit the
                # codebooks on the warmed-up signals (the best state so far keeps its own)
                tok.init_codebooks()
                self.logger.info("stage 1: codebooks refitted by k-means after epoch %d", epoch)
            elif self.reseed and epoch < self.epochs:
                tok.reseed_dead_codes(self.dead_code_min_count)

        if best_state is not None:
            tok.load_state_dict(best_state)
        encoded = tok.encode_all()
        raw = count_collisions(encoded.codes)
        try:
            codes = make_unique(encoded.codes, encoded.last_distances) if raw else encoded.codes
        except ValueError as err:  # keep the paper's Table-5 count in the message
            raise CollisionError(str(err), raw, len(encoded.codes)) from err
        usage = self._code_usage(codes)
        self._warn_collapse(usage, best_epoch)
        return Stage1Result(
            codes=codes,
            zq=tok.zq_from_codes(codes),
            signal_names=list(tok.signal_names),
            raw_collisions=raw,
            collisions=count_collisions(codes),
            code_usage=usage,
            best_valid=best_score,
            valid_metric=tok.validation_metric,
            best_epoch=best_epoch,
            epochs_run=epoch,
            train_seconds=time.time() - start_time,
            raw_codes=encoded.codes,
            history=history,
            signal_report=signal_report(codes, tok.signal_names, tok.quantizer.codebook_size,
                                        train_sequences or [], self.seed),
            decoder_dependence=tok.decoder_dependence(),
        )
