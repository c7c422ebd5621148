"""Plugin lookups that fall back to RecBole: models and datasets (trainers: ``trainer.py``).

The same shape as RecBole-GNN's ``utils.py``: every lookup tries this package first and then
RecBole, so ``run_recbole_bbqrec.py --model=SASRec`` and ``--model=BBQRec`` share one path.
"""

from __future__ import annotations

import importlib
import os
from logging import getLogger

import torch
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import init_seed

PLUGIN_MODEL_PACKAGES = ["recbole_bbqrec.model.sequential_recommender"]
# RecBole's get_model walks these too, but stops with an ImportError on exlib_recommender
# (optional lightgbm/xgboost) before it can say that a name is unknown.
RECBOLE_MODEL_SUBMODULES = ["general_recommender", "context_aware_recommender",
                            "sequential_recommender", "knowledge_aware_recommender",
                            "exlib_recommender"]


def disable_anomaly_detection() -> None:
    """Undo RecBole's import-time ``torch.autograd.set_detect_anomaly(True)``.

    ``recbole.model.sequential_recommender.sine`` switches anomaly detection on for the whole
    process as a side effect of being imported (and the package ``__init__`` imports it), which
    slows every backward pass by ~20%. Called after every model lookup, so it also holds in
    Ray workers, which import models on their own.
    """
    torch.autograd.set_detect_anomaly(False)


def init_seed_and_determinism(seed: int, reproducibility: bool) -> None:
    """RecBole's ``init_seed`` plus torch's deterministic kernels when ``reproducibility``.

    Seeding alone is not enough on CPU with more than one torch thread: the backward pass of
    advanced indexing (``table[index]``, used throughout stage 1 and stage 2) accumulates into
    a float gradient with atomic adds from several threads, so the sum's order, and thus its
    last bits, follows thread scheduling (on a 2-core machine beside other work, 49 of 60
    repeats of one such backward differed). Those bits move k-means, codes and beam ties, and
    two runs of one seed ended with different semantic IDs and metrics. Deterministic mode
    makes torch use its serial kernel there (and refuses nothing: ``warn_only``). It is
    process-wide, so it is set both ways, never left over from an earlier run.
    """
    init_seed(seed, reproducibility)
    if reproducibility:
        # cuBLAS needs a fixed workspace to be deterministic; it is read when CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(reproducibility), warn_only=True)
    # Deterministic mode also fills every new tensor's memory with NaN (a debugging aid that
    # catches reads of uninitialised memory); that alone made a SASRec epoch 10x slower.
    torch.utils.deterministic.fill_uninitialized_memory = False


def get_model(model_name: str):
    """Return the model class named ``model_name``: this plugin's first, then RecBole's."""
    for package in PLUGIN_MODEL_PACKAGES:
        module_path = f"{package}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, model_name):
                disable_anomaly_detection()
                return getattr(module, model_name)
    for submodule in RECBOLE_MODEL_SUBMODULES:
        module_path = f"recbole.model.{submodule}.{model_name.lower()}"
        try:
            found = importlib.util.find_spec(module_path) is not None
        except ImportError:  # e.g. exlib_recommender needs lightgbm/xgboost, absent here
            continue
        if found:
            model_class = recbole_get_model(model_name)
            disable_anomaly_detection()
            return model_class
    raise ValueError(f"`model_name` [{model_name}] is neither a recbole_bbqrec model "
                     f"({', '.join(plugin_model_names())}) nor a RecBole model.")


def plugin_model_names() -> list[str]:
    """The model classes this plugin defines, one per module of its model packages."""
    import pkgutil

    names = []
    for package in PLUGIN_MODEL_PACKAGES:
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            module = importlib.import_module(f"{package}.{info.name}")
            names += [name for name, value in vars(module).items()
                      if isinstance(value, type) and name.lower() == info.name
                      and value.__module__ == module.__name__]
    return sorted(names)


def plugin_class_for(model_class: type, module, suffix: str) -> type | None:
    """The first ``<Class>{suffix}`` in ``module`` along ``model_class``'s MRO, so a subclass
    of BBQRec gets BBQRec's dataset and trainer without registering anything."""
    for cls in model_class.__mro__:
        found = getattr(module, cls.__name__ + suffix, None)
        if isinstance(found, type):
            return found
    return None


def get_dataset_class(config):
    """The dataset class for ``config['model']``: the plugin's along the model's MRO, then
    RecBole's by name, then by model type."""
    plugin_module = importlib.import_module("recbole_bbqrec.data.dataset")
    recbole_module = importlib.import_module("recbole.data.dataset")
    found = plugin_class_for(get_model(config["model"]), plugin_module, "Dataset")
    if found is not None:
        return found
    name = config["model"] + "Dataset"
    if hasattr(recbole_module, name):
        return getattr(recbole_module, name)
    type2class = {
        ModelType.GENERAL: "Dataset",
        ModelType.SEQUENTIAL: "SequentialDataset",
        ModelType.CONTEXT: "Dataset",
        ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        ModelType.TRADITIONAL: "Dataset",
        ModelType.DECISIONTREE: "Dataset",
    }
    return getattr(recbole_module, type2class[config["MODEL_TYPE"]])


def create_dataset(config):
    """Build the filtered dataset for ``config``.

    Unlike RecBole's ``create_dataset`` this never unpickles a cached dataset from
    ``checkpoint_dir`` (unpickling runs arbitrary code); building from the atomic files takes
    seconds at the sizes BBQRec targets.
    """
    dataset_class = get_dataset_class(config)
    dataset = dataset_class(config)
    getLogger().info(dataset)
    return dataset


def create_run_dirs(config) -> list[str]:
    """Create the folders RecBole's trainer and logger make, race-free, before RecBole does.

    RecBole's ``ensure_dir`` checks, then creates: two processes that both find the folder
    missing (DDP ranks, parallel Ray Tune trials) both call ``os.makedirs`` and the slower one
    dies with ``FileExistsError`` (CI, 2026-12-02, on ``checkpoint_dir``, both paths).
    ``exist_ok=True`` is safe under that race; once the folder exists RecBole skips it."""
    folders = [str(config["checkpoint_dir"]),
               os.path.join("log", str(config["model"]))]  # init_logger's fixed ./log/<model>
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    return folders


def repo_root() -> str:
    """The checkout's root (where ``properties/`` and ``run_recbole_bbqrec.py`` live)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
