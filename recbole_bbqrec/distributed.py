"""Stage 2 under torch.distributed, through RecBole's own DDP switches.

``python run_recbole_bbqrec.py --dataset=Beauty --nproc=4`` spawns 4 ranks on this machine
(``launcher.launch``); each runs ``quick_start.run`` with RecBole's ``local_rank``/``world_size``/
``ip``/``port``/``offset`` keys. Across machines, start the same command on every node with
the same ``--world_size`` (all ranks), ``--ip``/``--port`` of node 0, this node's ``--nproc``
and ``--offset`` (the global rank of this node's first process).

What RecBole 1.2.1 leaves to us, and where it is handled:
- ``Config._init_device`` always asks for NCCL and CUDA: ``init_device`` picks gloo and the CPU
  when the run has no GPU (``use_gpu: False`` or no CUDA), NCCL and ``cuda:<local_rank>``
  otherwise, and honours ``use_gpu`` (RecBole takes a GPU whenever one exists);
- stage 1 runs once, on global rank 0 (``rank_zero_first``); the other ranks wait at a barrier
  and then reuse its artifacts (stage 1's writer lock already allows one writer per artifact);
- every rank evaluates its share of the users; the DistributedSampler pads the shares to
  equal length by repeating users, so RecBole's ``_map_reduce`` (a weighted mean of the ranks'
  metrics) would count some users twice. ``gather_eval_struct`` gathers the ranks' top-k rows
  with their dataset indices, keeps each index once, in single-process order, and RecBole's
  evaluator then runs on exactly the rows a single process would have scored, on every rank
  (so early stopping agrees);
- only global rank 0 writes checkpoints and result files; all ranks test from rank 0's
  checkpoint file (one name, broadcast; on several machines ``checkpoint_dir`` must be a
  shared folder).
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

from recbole_bbqrec.errors import ConfigError


def global_rank(config) -> int:
    return int(config["local_rank"] or 0) + int(config["offset"] or 0)


def is_distributed(config) -> bool:
    return not config["single_spec"]


def is_main(config) -> bool:
    """Global rank 0, or a single-process run: the process that writes results."""
    return not is_distributed(config) or global_rank(config) == 0


def barrier(config) -> None:
    if is_distributed(config) and dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def rank_zero_first(config):
    """Global rank 0 runs the body first; the others wait, then run it (and reuse its files)."""
    if is_main(config):
        yield
        barrier(config)
    else:
        barrier(config)
        yield


def same_on_all_ranks(config, value):
    """Global rank 0's ``value`` on every rank (e.g. the checkpoint file name)."""
    if not is_distributed(config):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --- Config._init_device ------------------------------------------------------------------
def init_device(final: dict) -> None:
    """RecBole's device setup with a CPU/gloo path and ``use_gpu`` honoured (``final`` is the
    config's ``final_config_dict``, updated in place)."""
    gpu_id = final.get("gpu_id", "")
    if isinstance(gpu_id, (tuple, list)):
        gpu_id = ",".join(map(str, gpu_id))
    gpu_id = "" if gpu_id is None else str(gpu_id)
    final["gpu_id"] = gpu_id
    use_gpu = bool(final.get("use_gpu", True)) and len(gpu_id) > 0
    if use_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id  # as RecBole; read when CUDA starts
    use_cuda = use_gpu and torch.cuda.is_available()
    if "local_rank" not in final:
        final["single_spec"] = True
        final["local_rank"] = 0
        final["device"] = torch.device("cuda" if use_cuda else "cpu")
        return
    local_rank = int(final["local_rank"])
    nproc = int(final.get("nproc") or 1)
    offset = int(final.get("offset") or 0)
    world_size = int(final.get("world_size") or -1)
    world_size = nproc if world_size <= 0 else world_size
    final["world_size"], final["offset"] = world_size, offset
    if use_cuda and torch.cuda.device_count() < nproc:
        raise ConfigError(f"nproc={nproc} processes need {nproc} GPUs, but gpu_id={gpu_id!r} "
                          f"shows {torch.cuda.device_count()}: list them, e.g. "
                          f"--gpu_id={','.join(map(str, range(nproc)))}, or --use_gpu=False")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", rank=local_rank + offset,
            world_size=world_size, init_method=f"tcp://{final.get('ip') or 'localhost'}:"
                                               f"{final.get('port') or 5678}",
            timeout=datetime.timedelta(seconds=int(final.get("ddp_timeout") or 7200)))
    final["single_spec"] = False
    if use_cuda:
        torch.cuda.set_device(local_rank)
        final["device"] = torch.device("cuda", local_rank)
    else:
        final["device"] = torch.device("cpu")
    if local_rank + offset != 0:  # as RecBole: one rank logs
        final["state"] = "error"
        final["show_progress"] = False
        final["verbose"] = False


# --- evaluation: every user exactly once ----------------------------------------------------
_ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


def gather_eval_struct(struct, eval_data, config):
    """The ranks' collected rows as one struct, each dataset index once, in index order (the
    order a single process evaluates them in). A no-op without torch.distributed."""
    if struct is None or not is_distributed(config):
        return struct
    import numpy as np

    indices = np.asarray(list(iter(eval_data.sampler)), dtype=np.int64)
    rows = {}
    for key in _ROW_KEYS:
        if key in struct._data_dict:
            value = struct.get(key)
            if torch.is_tensor(value) and value.shape[0] == len(indices):
                rows[key] = value.cpu()
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (indices, rows))
    all_indices = np.concatenate([g[0] for g in gathered])
    _, first = np.unique(all_indices, return_index=True)  # sorted by index, first copy kept
    keep = torch.from_numpy(first)
    for key in rows:
        struct.set(key, torch.cat([g[1][key] for g in gathered], dim=0)[keep])
    return struct
