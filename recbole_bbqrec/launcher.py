"""Spawn the ranks of a ``--nproc`` run (``python run_recbole_bbqrec.py --nproc=4``).

Each rank runs ``quick_start.run`` with RecBole's ``local_rank``/``world_size``/``ip``/
``port``/``offset`` keys; what a rank does differently (stage 1 once, gathered evaluation, one
writer) lives in ``distributed.py``, which the pipeline imports; this module imports the
pipeline, so the two are kept apart.
"""

from __future__ import annotations

import torch.distributed as dist


def _worker(local_rank, model, dataset, config_file_list, argv, ddp_dict, queue):
    from recbole_bbqrec.quick_start import run

    config_dict = {**ddp_dict, "local_rank": local_rank}
    try:
        record = run(model=model, dataset=dataset, config_file_list=config_file_list,
                     config_dict=config_dict, argv=argv)
        if local_rank + int(ddp_dict.get("offset", 0)) == 0:
            queue.put(("ok", record))
    except BaseException as err:
        queue.put(("error", err))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(model, dataset, config_file_list, argv, nproc: int, world_size: int = -1,
           ip: str = "localhost", port=5678, offset: int = 0,
           ddp_timeout: int | None = None) -> dict | None:
    """Spawn ``nproc`` ranks of ``quick_start.run``; return global rank 0's record (None on a
    node without it). An expected error of a rank is raised here as itself."""
    import torch.multiprocessing as mp

    world_size = nproc if world_size is None or world_size <= 0 else world_size
    ddp_dict = {"nproc": nproc, "world_size": world_size, "ip": ip, "port": port,
                "offset": offset}
    if ddp_timeout:
        ddp_dict["ddp_timeout"] = ddp_timeout
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_worker, args=(model, dataset, config_file_list, list(argv or []), ddp_dict,
                                queue), nprocs=nproc, join=True)
    except mp.ProcessRaisedException:
        errors = []
        while not queue.empty():
            kind, payload = queue.get()
            if kind == "error":
                errors.append(payload)
        if errors:
            raise errors[0] from None
        raise
    record = None
    while not queue.empty():
        kind, payload = queue.get()
        if kind == "ok":
            record = payload
    return record


def free_port() -> int:
    """A TCP port free on this machine now (tests, and ``--port=0``)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


def run_distributed(model, dataset, config_file_list, argv) -> dict | None:
    """The CLI's ``--nproc``/``--world_size`` path: check the config and build the dataset
    once in this process (an expected error stops here, before any rank starts), then spawn
    this machine's ranks."""
    from recbole_bbqrec.quick_start import build_config, ensure_dataset

    config = build_config(model, dataset, config_file_list, None, argv)
    if config["stage"] != "preprocess":
        ensure_dataset(config)
    return launch(model, dataset, config_file_list, argv, nproc=int(config["nproc"]),
                  world_size=int(config["world_size"]), ip=str(config["ip"]),
                  port=config["port"], offset=int(config["offset"]),
                  ddp_timeout=int(config["ddp_timeout"]))


def wants_distributed(argv) -> bool:
    """``--nproc=N`` with N > 1, or a ``--world_size`` > 0 (one node of several)."""
    values = {}
    for arg in argv or []:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            values[key] = value
    try:
        return int(values.get("nproc", 1)) > 1 or int(values.get("world_size", -1)) > 0
    except ValueError:
        return False  # Config names the bad value
