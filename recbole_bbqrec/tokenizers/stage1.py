"""Stage 1 on a RecBole dataset: train a tokenizer, export its artifacts, reuse them by hash.

The only stage-1 code that reads RecBole's config. It maps RecBole's internal item ids
(1..n-1; 0 is padding) to tokenizer rows (0..n-2), takes users' sequences from the TRAINING
split only (validation and test items never reach the contrastive task), and writes the
artifacts ``layout.stage1_files`` names (``<Name>.<hash>.sid``, ``.zq.npy``,
``.codebooks.npy``, ``.stage1.json``, ``.stage1.pth``) where ``hash`` covers the stage-1
config, the item set and the feature matrices: a changed config retrains, an unchanged one
reuses. The dataset (``data/dataset.py``) serves them to stage 2 (``artifacts.py``).
"""

from __future__ import annotations

import json
import os
import time
from logging import getLogger
from pathlib import Path

import numpy as np
import torch

from recbole_bbqrec.atomic_io import atomic_write_json
from recbole_bbqrec.layout import stage1_files, stage1_lock_name
from recbole_bbqrec.tokenizers.artifacts import export_codebooks
from recbole_bbqrec.tokenizers.semantic_ids import (CollisionError, count_collisions, fingerprint_array,
                                                    save_zq, stage1_hash, write_sid_file)

# Config keys that define stage 1 (anything else may change without retraining it).
STAGE1_KEYS = (
    "tokenizer", "modalities", "signals", "n_levels", "codebook_size", "code_dim",
    "tokenizer_hidden", "tokenizer_dropout", "shared_codebook", "use_mim", "use_rec",
    "tokenizer_temperature", "mim_weight", "rec_weight", "commitment_beta",
    "tokenizer_epochs", "tokenizer_batch_size", "tokenizer_lr", "tokenizer_patience",
    "tokenizer_steps_per_epoch", "letter_cf_weight", "letter_diversity_weight", "seed",
    "MAX_ITEM_LIST_LENGTH", "id_init", "id_init_checkpoint", "id_init_window", "id_lr",
    "tokenizer_negatives", "tokenizer_seq_dim", "club_steps", "kmeans_redo_epoch",
    "tokenizer_valid_users", "signal_norm", "recon_from_z", "club_hidden", "club_lr",
    "whiteness_weight", "club_learned_variance",
)
# Keys added after IDs were first cached, with the value that reproduces the older behaviour:
# hashed only when set to something else, so the IDs cached before them stay valid (and only
# for the BBQ tokenizer, the one that reads them: TIGER/LETTER IDs do not depend on them).
STAGE1_KEYS_ADDED = {"code_usage_weight": 0.0, "code_usage_temperature": 0.1}
ID_INITS = ("cooc", "checkpoint", "random")
TOKENIZERS = ("bbq", "tiger", "letter")
# How feature matrices are scaled before stage 1 (part of the cache key: changing it retrains).
FEATURE_SCALING = "zscore"


def standardize(matrix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Z-score every feature dimension over the items that have the modality.

    Sentence embeddings are L2-normalised, so each of their ~384 dimensions has a std of ~0.05
    and the reconstruction loss starts near 1e-3, against quantization losses of order 1: the
    RQ-VAE then minimises its total by collapsing the encoder onto a single code (seen on
    Beauty: 1 of 256 codes used per level). Unit-variance inputs put reconstruction on the
    scale of the other losses. Rows without the modality stay zero (masked out anyway).
    """
    rows = matrix[mask] if bool(mask.any()) else matrix
    mean, std = rows.mean(0), rows.std(0).clamp_min(1e-6)
    return torch.where(mask[:, None], (matrix - mean) / std, torch.zeros_like(matrix))


def training_sequences(train_dataset) -> list[np.ndarray]:
    """Each user's chronological TRAINING items (internal ids), rebuilt from RecBole's
    augmented train split: the first row's history start plus every row's target."""
    inter = train_dataset.inter_feat
    uids = inter[train_dataset.uid_field].numpy()
    targets = inter[train_dataset.iid_field].numpy()
    item_lists = inter[train_dataset.item_id_list_field].numpy()
    lengths = inter[train_dataset.item_list_length_field].numpy()
    order = np.lexsort((lengths, uids))  # rows are user-major, time-ordered within a user
    sequences, current, last_uid = [], [], None
    for row in order:
        if uids[row] != last_uid:
            if current:
                sequences.append(np.asarray(current, dtype=np.int64))
            last_uid, current = uids[row], list(item_lists[row][: lengths[row]])
        current.append(targets[row])
    if current:
        sequences.append(np.asarray(current, dtype=np.int64))
    return sequences


def stage1_modalities(config, dataset) -> list[str]:
    chosen = dataset.resolve_modalities(config["modalities"])
    if config["tokenizer"] in ("tiger", "letter"):
        chosen = chosen[:1]  # TIGER/LETTER quantize one (text) embedding
    return chosen


def stage1_identity(config, dataset) -> tuple[str, dict]:
    """(hash, params) identifying the semantic IDs this config would produce on ``dataset``."""
    if config["tokenizer"] not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {config['tokenizer']!r}")
    modalities = stage1_modalities(config, dataset)
    params = {key: config[key] for key in STAGE1_KEYS}
    params.update({key: config[key] for key, old in STAGE1_KEYS_ADDED.items()
                   if config["tokenizer"] == "bbq" and config["code_usage_weight"] and config[key] != old})
    if config["enable_amp"]:
        # mixed precision trains other IDs than fp32; hashed only when on, so the fp32 IDs
        # cached before this key was hashed stay valid
        params["enable_amp"], params["amp_dtype"] = True, config["amp_dtype"] or "auto"
    params["modalities"] = modalities
    params["feature_scaling"] = FEATURE_SCALING
    params["dataset"] = dataset.dataset_name
    params["items"] = fingerprint_array(np.asarray(dataset.item_tokens()[1:], dtype=str))
    params["features"] = {m: fingerprint_array(dataset.item_features(m)[0].numpy())
                          for m in modalities}
    # a collaborative table read from a checkpoint is an input like the features: the same
    # path holding another (retrained) model must give new IDs, not reuse the old ones
    table_path = None
    if config["tokenizer"] == "letter":
        table_path = config["letter_cf_checkpoint"]
    elif config["tokenizer"] == "bbq" and config["id_init"] == "checkpoint":
        table_path = config["id_init_checkpoint"]
    if table_path:
        table = sequential_item_embeddings(table_path, dataset.item_num - 1)
        params["cf_table"] = fingerprint_array(table.numpy())
    return stage1_hash(params), params


def artifact_paths(dataset, sid_hash: str) -> dict[str, str]:
    """The stage-1 files of ``sid_hash`` in ``dataset``'s folder (``layout.stage1_files``)."""
    return stage1_files(dataset.feature_dir, dataset.dataset_name, sid_hash)


def build_tokenizer(config, n_items: int, dims: dict[str, int], cf_embeddings=None, id_init=None):
    from recbole_bbqrec.tokenizers.bbq import BBQTokenizer
    from recbole_bbqrec.tokenizers.letter import LETTERTokenizer
    from recbole_bbqrec.tokenizers.rqvae import RQVAETokenizer

    common = dict(code_dim=config["code_dim"], n_levels=config["n_levels"],
                  codebook_size=config["codebook_size"],
                  hidden_dims=tuple(config["tokenizer_hidden"]),
                  dropout=config["tokenizer_dropout"], beta=config["commitment_beta"])
    kind = config["tokenizer"]
    if kind == "bbq":
        return BBQTokenizer(n_items, dims, shared_codebook=config["shared_codebook"],
                            use_mim=config["use_mim"], use_rec=config["use_rec"],
                            signals=config["signals"], temperature=config["tokenizer_temperature"],
                            alpha=config["mim_weight"], gamma=config["rec_weight"],
                            max_len=config["MAX_ITEM_LIST_LENGTH"], seq_dim=config["tokenizer_seq_dim"],
                            id_init=id_init, signal_norm=config["signal_norm"],
                            recon_from_z=config["recon_from_z"], club_hidden=config["club_hidden"],
                            club_learned_variance=config["club_learned_variance"],
                            whiteness_weight=config["whiteness_weight"],
                            usage_weight=config["code_usage_weight"],
                            usage_temperature=config["code_usage_temperature"], **common)
    (modality, dim), = dims.items()
    if kind == "tiger":
        return RQVAETokenizer(n_items, dim, modality=modality, **common)
    if cf_embeddings is None:
        raise ValueError("tokenizer=letter needs collaborative item embeddings: set "
                         "letter_cf_checkpoint to a trained SASRec checkpoint (saved/*.pth)")
    return LETTERTokenizer(n_items, dim, cf_embeddings, modality=modality,
                           cf_weight=config["letter_cf_weight"],
                           diversity_weight=config["letter_diversity_weight"], **common)


def sequential_item_embeddings(path: str, n_items: int):
    """Item embeddings [n_items, h] of a trained sequential model's weights-only checkpoint
    (RecBole's SASRec / GRU4Rec ...: ``item_embedding.weight``, row 0 the padding)."""
    from recbole_bbqrec.checkpoints import load_model_checkpoint

    state = load_model_checkpoint(path)["state_dict"]
    weight = state.get("item_embedding.weight")
    if weight is None or weight.shape[0] != n_items + 1:
        raise ValueError(f"{path} has no item_embedding.weight for {n_items} items + padding "
                         f"(got {None if weight is None else tuple(weight.shape)}); train SASRec "
                         f"on the same dataset first.")
    return weight[1:].float()


def letter_cf_embeddings(config, n_items: int):
    """Item embeddings of a trained SASRec (weights-only checkpoint) for LETTER's alignment."""
    path = config["letter_cf_checkpoint"]
    if config["tokenizer"] != "letter" or not path:
        return None
    return sequential_item_embeddings(path, n_items)


def id_signal_init(config, n_items: int, sequences: list[np.ndarray]):
    """The starting ID table [n_items, code_dim] of BBQ's learnable ID signal, or None (random).

    ``sequences`` are the stage-1 training sequences; their last items are stage 1's
    validation targets, so the co-occurrence statistics leave them out."""
    kind = config["id_init"]
    if kind not in ID_INITS:
        raise ValueError(f"id_init must be one of {ID_INITS}, got {kind!r}")
    if config["tokenizer"] != "bbq" or kind == "random":
        return None
    from recbole_bbqrec.tokenizers.collaborative import cooccurrence_embeddings, fit_width

    if kind == "checkpoint":
        if not config["id_init_checkpoint"]:
            raise ValueError("id_init=checkpoint needs id_init_checkpoint: a trained SASRec "
                             "checkpoint (saved/*.pth) on the same dataset")
        return fit_width(sequential_item_embeddings(config["id_init_checkpoint"], n_items), config["code_dim"])
    return cooccurrence_embeddings([seq[:-1] for seq in sequences], n_items, config["code_dim"],
                                   window=config["id_init_window"], seed=config["seed"])


def prepare_stage1(config, dataset, identity: tuple[str, dict] | None = None) -> dict:
    """Train (or reuse) the stage-1 tokenizer for ``config`` and export its artifacts.

    ``dataset``: the RecBole TRAINING split (a ``MultiModalSequentialDataset``); ``identity``:
    ``stage1_identity(config, dataset)`` when the caller holds it already. Returns the
    stage-1 summary (hash, files, raw collisions, code usage, time ...).
    """
    sid_hash, params = identity or stage1_identity(config, dataset)
    paths = artifact_paths(dataset, sid_hash)
    check_capacity(config, dataset.item_num - 1, len(signal_names(config, params)))
    summary = _reuse(paths, sid_hash)
    if summary is not None:
        return summary
    from recbole_bbqrec.preprocess.provenance import writer_lock

    # one writer per stage-1 artifact; a second run of the same config waits, then reuses
    with writer_lock(Path(dataset.feature_dir), f"stage 1 ({sid_hash})",
                     lock_name=stage1_lock_name(dataset.dataset_name, sid_hash)):
        summary = _reuse(paths, sid_hash)
        if summary is not None:
            return summary
        try:
            return _train_stage1(config, dataset, sid_hash, params, paths)
        except CollisionError:
            # IDs that cannot be made unique are no result: leave no orphan checkpoint
            if os.path.isfile(paths["checkpoint"]):
                os.remove(paths["checkpoint"])
            raise


def signal_names(config, params: dict) -> list[str]:
    """The signals one ID position holds for this config, as the tokenizer will resolve them
    (known here before anything is built, so the capacity check costs nothing)."""
    if config["tokenizer"] != "bbq":
        return params["modalities"][:1]
    if config["signals"]:
        return list(config["signals"])
    return (["id"] if config["use_rec"] else []) + list(params["modalities"])


def check_capacity(config, n_items: int, n_signals: int) -> None:
    """Refuse, before any training, IDs that cannot tell n_items apart: L positions of S codes
    out of N give at most N^(S*L) distinct IDs."""
    n_levels, n_codes = config["n_levels"], config["codebook_size"]
    if n_codes ** (n_signals * n_levels) < n_items:
        raise ValueError(
            f"n_levels={n_levels} positions of {n_signals} code(s) from codebook_size={n_codes} give "
            f"at most {n_codes ** (n_signals * n_levels)} distinct semantic IDs, fewer than the "
            f"{n_items} items: raise n_levels or codebook_size")


def _reuse(paths: dict, sid_hash: str) -> dict | None:
    if not all(os.path.isfile(paths[k]) for k in ("sid", "zq", "summary")):
        return None
    with open(paths["summary"], encoding="utf-8") as f:
        summary = json.load(f)
    getLogger().info(f"stage 1: reusing semantic IDs {paths['sid']} (config hash {sid_hash})")
    return summary | {"reused": True}


def _train_stage1(config, dataset, sid_hash: str, params: dict, paths: dict) -> dict:
    from recbole_bbqrec.device import resolve_amp_dtype
    from recbole_bbqrec.tokenizers.trainer import TokenizerTrainer, seed_everything

    logger = getLogger()
    # CPU seconds of the whole stage (ID init included): what a time budget charges for it,
    # also when the IDs are reused later (equal to wall-clock on an idle core, one thread)
    cpu_start = time.process_time()
    modalities = params["modalities"]
    n_items = dataset.item_num - 1  # tokenizer rows 0..n-2 <-> internal ids 1..n-1
    masks = {m: dataset.item_features(m)[1][1:] for m in modalities}
    features = {m: standardize(dataset.item_features(m)[0][1:], masks[m]) for m in modalities}
    sequences = [seq - 1 for seq in training_sequences(dataset)]
    id_init = id_signal_init(config, n_items, sequences)
    seed_everything(config["seed"])  # same seed -> same initial weights -> same IDs
    tokenizer = build_tokenizer(config, n_items, {m: f.shape[1] for m, f in features.items()},
                                letter_cf_embeddings(config, n_items), id_init)
    logger.info(f"stage 1: training the {config['tokenizer']} tokenizer on {n_items} items, "
                f"{len(sequences)} training sequences, modalities {modalities} (hash {sid_hash})")
    trainer = TokenizerTrainer(
        tokenizer, epochs=config["tokenizer_epochs"], batch_size=config["tokenizer_batch_size"],
        lr=config["tokenizer_lr"], patience=config["tokenizer_patience"],
        checkpoint_path=paths["checkpoint"], device=config["device"],
        show_progress=config["show_progress"], logger=logger, seed=config["seed"],
        max_history=config["MAX_ITEM_LIST_LENGTH"],
        steps_per_epoch=config["tokenizer_steps_per_epoch"],
        n_negatives=config["tokenizer_negatives"], id_lr=config["id_lr"],
        club_steps=config["club_steps"], mim_lr=config["club_lr"],
        kmeans_redo_epoch=config["kmeans_redo_epoch"],
        valid_users=config["tokenizer_valid_users"],
        amp_dtype=resolve_amp_dtype(bool(config["enable_amp"]), config["amp_dtype"] or "auto",
                                    config["device"]),
        sync_every=config["nan_check_steps"])
    result = trainer.fit(features, masks, sequences)
    tokens = dataset.item_tokens()[1:]
    write_sid_file(paths["sid"], tokens, result.codes, result.signal_names)
    save_zq(paths["zq"], result.zq)
    export_codebooks(paths["checkpoint"], paths["codebooks"])
    summary = {
        "hash": sid_hash, "tokenizer": config["tokenizer"], "signals": result.signal_names,
        "n_items": n_items, "n_levels": int(result.codes.shape[1]),
        "raw_collisions": int(result.raw_collisions),
        "collisions": int(count_collisions(result.codes)),
        "code_usage": result.code_usage, "valid_metric": result.valid_metric,
        "best_valid": float(result.best_valid), "best_epoch": int(result.best_epoch),
        "epochs_run": int(result.epochs_run), "train_s": round(result.train_seconds, 2),
        "cpu_s": round(time.process_time() - cpu_start, 2),
        "signal_report": result.signal_report, "decoder_dependence": result.decoder_dependence,
        "history": result.history,
        "files": {k: os.path.basename(v) for k, v in paths.items()},
        "params": {k: v for k, v in params.items() if k not in ("features", "items", "cf_table")},
    }
    atomic_write_json(paths["summary"], summary)
    logger.info(f"stage 1: {summary['raw_collisions']} items collided before uniqueness, "
                f"{summary['collisions']} after; code usage {summary['code_usage']}")
    return summary | {"reused": False}
