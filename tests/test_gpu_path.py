"""The device path: amp dtype choice, CPU bf16 autocast within noise of fp32 (stage 1, the
generator, RecBole's trainer), no per-step host reads in the training loops, warm-up, the
device keys. Runs on CPU everywhere; the CUDA-only parts skip without a GPU (and run on one:
``bash bench/gpu/run_gpu.sh`` runs this file first)."""

import math
import os
import sys

import numpy as np
import pytest
import torch

from recbole_bbqrec.device import resolve_amp_dtype
from recbole_bbqrec.errors import ConfigError
from recbole_bbqrec.schedule import warmup_factor
from recbole_bbqrec.modules.generator import SemanticIDGenerator

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
SMALL_SASREC = {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64}
L, S, N = 3, 2, 16


def test_amp_dtype_choice_on_cpu():
    assert resolve_amp_dtype(False, "auto", "cpu") is None  # amp off: full precision
    assert resolve_amp_dtype(True, "auto", "cpu") == torch.bfloat16  # CPU autocast is bf16
    assert resolve_amp_dtype(True, "fp16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="amp_dtype"):
        resolve_amp_dtype(True, "fp8", "cpu")


@CUDA
def test_amp_dtype_choice_on_cuda():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_amp_dtype(True, "auto", "cuda") == expected
    assert resolve_amp_dtype(True, "fp16", "cuda") == torch.float16


def test_warmup_is_linear_then_flat():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def _generator(device, seed=0):
    torch.manual_seed(seed)
    return SemanticIDGenerator(n_levels=L, n_signals=S, codebook_size=N, d_model=32, n_heads=2,
                               n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0,
                               max_history=8, n_buckets=5, use_similarity=True).to(device)


def _batches(device, n=12, bsz=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        codes = torch.randint(0, N, (bsz, 8, L, S), generator=gen)
        codes[:, :, 1:] = codes[:, :, :1]  # learnable structure: later levels copy level 0
        mask = torch.ones(bsz, 8, dtype=torch.bool)
        zq = torch.randn(bsz, 8, 6, generator=gen)
        out.append([t.to(device) for t in (codes, mask, zq, codes[:, -1])])
    return out


def _train_generator(device, amp_dtype):
    from recbole_bbqrec.device import autocast

    model, losses = _generator(device), []
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for hist, mask, zq, target in _batches(device, n=2, bsz=8) * 6:  # 2 batches, 6 passes
        opt.zero_grad()
        with autocast(device, amp_dtype):
            loss = model.loss(hist, mask, zq, target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("device", DEVICES)
def test_generator_trains_under_autocast_within_noise_of_fp32(device):
    amp = resolve_amp_dtype(True, "auto", device)
    full, mixed = _train_generator(device, None), _train_generator(device, amp)
    assert mixed[-1] < mixed[0] * 0.9  # it learns under autocast
    # same data, same init: bf16/fp16 rounding moves the losses by well under 5%
    assert all(abs(a - b) <= 0.05 * a for a, b in zip(full, mixed)), (full, mixed)


@CUDA
def test_generator_step_never_syncs_with_the_host_on_cuda():
    model = _generator("cuda")
    hist, mask, zq, target = _batches("cuda", n=1)[0]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = model.loss(hist, mask, zq, target)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


class _HostReads:
    """Counts tensor -> Python reads (``.item()``, ``float()``, ``bool()``, ``.tolist()``) made
    by the training code: ours, RecBole's trainer and models. Data loading (CPU by design) and
    torch's optimizers (their step counters live on the CPU) are not device reads."""

    NAMES = ("item", "__float__", "__bool__", "tolist", "__int__")
    WATCHED = (f"{os.sep}recbole_bbqrec{os.sep}", f"{os.sep}recbole{os.sep}trainer{os.sep}",
               f"{os.sep}recbole{os.sep}model{os.sep}")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                caller = sys._getframe(1).f_code.co_filename
                if any(part in caller for part in self.WATCHED):
                    self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _sasrec_data(ml100k_root, tmp_path, **extra):
    from recbole.data import data_preparation

    from recbole_bbqrec.config import Config
    from recbole_bbqrec.utils import create_dataset

    config = Config(model="SASRec", dataset="ml-100k", config_dict={
        "data_path": ml100k_root, "checkpoint_dir": str(tmp_path), "show_progress": False,
        "state": "WARNING", "train_batch_size": 512, "eval_batch_size": 512, **SMALL_SASREC,
        **extra})
    train_data = data_preparation(config, create_dataset(config))[0]
    return config, train_data


def _sasrec_trainer(config, train_data, n_batches=20, **keys):
    """A fresh seeded SASRec and trainer on built data; ``keys`` set before the trainer reads
    them (one dataset build serves every variant)."""
    from recbole_bbqrec.trainer import get_trainer
    from recbole_bbqrec.utils import get_model

    for key, value in keys.items():
        config[key] = value
    torch.manual_seed(0)
    model = get_model("SASRec")(config, train_data._dataset).to(config["device"])
    return get_trainer(config["MODEL_TYPE"], "SASRec")(config, model), _FirstBatches(train_data,
                                                                              n_batches)


class _FirstBatches:
    """RecBole's training loader cut to its first ``n`` batches (a short epoch)."""

    def __init__(self, loader, n):
        self._loader, self._n = loader, n

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return min(self._n, len(self._loader))

    def __iter__(self):
        for i, batch in enumerate(self._loader):
            if i == self._n:
                return
            yield batch


@pytest.fixture(scope="module")
def sasrec_data(ml100k_root, tmp_path_factory):
    return _sasrec_data(ml100k_root, tmp_path_factory.mktemp("sasrec"))


@pytest.fixture(scope="module")
def sasrec_epochs(sasrec_data):
    """A short SASRec epoch in fp32 and one under CPU bf16 autocast, same seed and batches."""
    out = {}
    for amp in (False, True):
        trainer, train_data = _sasrec_trainer(*sasrec_data, enable_amp=amp)
        out[amp] = (trainer, trainer._train_epoch(train_data, 0))
    return out


def test_recbole_trainer_under_cpu_bf16_is_within_noise_of_fp32(sasrec_epochs):
    (full_trainer, full), (amp_trainer, mixed) = sasrec_epochs[False], sasrec_epochs[True]
    assert full_trainer.amp_dtype is None and amp_trainer.amp_dtype == torch.bfloat16
    assert not amp_trainer.enable_scaler  # bf16 needs no loss scaling
    assert math.isfinite(mixed) and abs(mixed - full) <= 0.03 * full, (full, mixed)


def test_training_loop_reads_the_host_once_per_epoch_not_per_step(sasrec_data, monkeypatch):
    trainer, train_data = _sasrec_trainer(*sasrec_data, enable_amp=False, nan_check_steps=0)
    reads = _HostReads(monkeypatch)
    trainer._train_epoch(train_data, 0)
    assert len(train_data) == 20  # so per-step reads would show
    assert reads.count <= 5, f"{reads.count} host reads in {len(train_data)} steps"


def test_warmup_steps_ramp_the_learning_rate(sasrec_data):
    trainer, train_data = _sasrec_trainer(*sasrec_data, n_batches=5, warmup_steps=100000,
                                          learning_rate=0.001)
    trainer._train_epoch(train_data, 0)
    steps = len(train_data)
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(0.001 * steps / 100000)


def _scheduled_lr(sasrec_data, prepare=None, **keys):
    """The learning rate after one short epoch of a SASRec trainer with schedule ``keys``
    (the module's shared config gets its own values back afterwards)."""
    config = sasrec_data[0]
    keys = {"warmup_steps": 0, **keys}  # an earlier test may have left a warm-up in config
    saved = {key: config[key] for key in ("lr_decay", "lr_min_ratio", "time_budget", "epochs",
                                          "warmup_steps")}
    try:
        trainer, train_data = _sasrec_trainer(*sasrec_data, n_batches=5, learning_rate=0.001,
                                              **keys)
        if prepare:
            prepare(trainer)
        trainer._train_epoch(train_data, 0)
        return trainer, trainer.optimizer.param_groups[0]["lr"]
    finally:
        for key, value in saved.items():
            config[key] = value


def test_cosine_decay_spans_the_epochs_of_an_unbudgeted_run(sasrec_data):
    trainer, lr = _scheduled_lr(sasrec_data, lr_decay="cosine", lr_min_ratio=0.1, epochs=2)
    # 5 batches an epoch, 2 epochs: the 5th step (step 4) runs at progress 4/10
    assert trainer.global_step == 5
    assert lr == pytest.approx(0.001 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.4))))


def test_a_budgeted_run_decays_over_its_training_time_not_its_epochs(sasrec_data):
    def half_spent(trainer):
        # 100 s budget, 20 s of it stage 1: 60 s on the clock is half the training time
        trainer.budget_s = 100.0
        trainer.clock.charge(20.0)
        trainer.clock.elapsed = lambda: 60.0

    trainer, lr = _scheduled_lr(sasrec_data, half_spent, lr_decay="linear", lr_min_ratio=0.2,
                                time_budget=100 / 60, epochs=100000)
    assert not trainer.budget_spent
    assert lr == pytest.approx(0.001 * (0.2 + 0.8 * 0.5))


def test_stage1_under_autocast_within_noise_and_one_host_read_per_epoch(monkeypatch):
    from recbole_bbqrec.tokenizers.rqvae import RQVAETokenizer
    from recbole_bbqrec.tokenizers.trainer import TokenizerTrainer, seed_everything

    gen = torch.Generator().manual_seed(0)
    features = {"text": torch.randn(600, 24, generator=gen)}

    def fit(amp_dtype, **kwargs):
        seed_everything(3)
        tok = RQVAETokenizer(n_items=600, input_dim=24, code_dim=8, n_levels=3,
                             codebook_size=32, hidden_dims=(32,), kmeans_iters=2)
        trainer = TokenizerTrainer(tok, epochs=2, batch_size=16, seed=3, amp_dtype=amp_dtype,
                                   patience=5, reseed_dead_codes=False, **kwargs)
        return trainer.fit(features)

    full, mixed = fit(None), fit(torch.bfloat16)
    assert mixed.codes.shape == full.codes.shape == (600, 3, 1) and mixed.collisions == 0
    for a, b in zip(full.history, mixed.history):
        assert abs(a["loss"] - b["loss"]) <= 0.05 * a["loss"], (full.history, mixed.history)

    # the step loop (38 steps an epoch) reads the device a bounded number of times per epoch
    from recbole_bbqrec.tokenizers import trainer as stage1_trainer

    counts = []
    real_fit = stage1_trainer.TokenizerTrainer.fit
    for epochs in (1, 2):
        seed_everything(3)
        tok = RQVAETokenizer(n_items=600, input_dim=24, code_dim=8, n_levels=3,
                             codebook_size=32, hidden_dims=(32,), kmeans_iters=2)
        trainer = TokenizerTrainer(tok, epochs=epochs, batch_size=16, seed=3, patience=5,
                                   reseed_dead_codes=False, sync_every=0)
        with monkeypatch.context() as patch:
            reads = _HostReads(patch)
            real_fit(trainer, features)
            counts.append(reads.count)
    assert counts[1] - counts[0] < 38, counts  # one more epoch costs far fewer reads than steps


def test_device_keys_are_checked_and_use_gpu_false_means_cpu(ml100k_root):
    from recbole_bbqrec.config import Config

    base = {"data_path": ml100k_root, "state": "WARNING"}
    config = Config(model="SASRec", dataset="ml-100k", config_dict={**base, "use_gpu": False})
    assert config["device"] == torch.device("cpu") and config["single_spec"]
    with pytest.raises(ConfigError, match="amp_dtype"):
        Config(model="SASRec", dataset="ml-100k", config_dict={**base, "amp_dtype": "half"})
    with pytest.raises(ConfigError, match="nan_check_steps"):
        Config(model="SASRec", dataset="ml-100k", config_dict={**base, "nan_check_steps": -1})
    with pytest.raises(ConfigError, match="world_size"):
        Config(model="SASRec", dataset="ml-100k", config_dict={**base, "nproc": 4,
                                                               "world_size": 2})


@CUDA
def test_recbole_trainer_runs_on_cuda_with_amp(ml100k_root, tmp_path):
    trainer, train_data = _sasrec_trainer(*_sasrec_data(ml100k_root, tmp_path, use_gpu=True),
                                          enable_amp=True)
    assert trainer.device.type == "cuda"
    assert next(trainer.model.parameters()).is_cuda
    loss = trainer._train_epoch(train_data, 0)
    assert np.isfinite(loss)
    assert trainer.enable_scaler == (trainer.amp_dtype == torch.float16)


@pytest.mark.parametrize("device", DEVICES)
def test_decode_bench_runs_on_the_device(device, capsys):
    """bench/decode.py --device: the batched search and the reference's model on the device
    (the CUDA figure of issue 14 comes from this command on a lent GPU)."""
    from bench.decode import main

    main(["--device", device, "--unpruned", "--n_items", "500", "--levels", "3", "--signals",
          "3", "--codebook_size", "8", "--d_model", "16", "--n_heads", "2", "--encoder_layers",
          "1", "--decoder_layers", "1", "--d_ff", "32", "--n_buckets", "8", "--n_users", "8",
          "--batch_size", "8", "--beams", "30", "--scale_items", "400", "--scale_users", "4",
          "--scale_batch", "4", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"device={device}" in lines[0]
    assert any(line.startswith("scaling: S=3,") for line in lines)
    # On a GPU, matmuls of other shapes may round differently: only the CPU run must match.
    assert lines[-1].startswith("decode speed-up: ")
    if device == "cpu":
        assert lines[-1].endswith("identical top-10: yes")
