"""Stage 1 on a RecBole dataset: train a tokenizer, export semantic IDs, reuse them by hash.

The only stage-1 code that reads RecBole's config. It maps RecBole's internal item ids
(1..n-1; 0 is padding) to tokenizer rows (0..n-2), takes users' sequences from the TRAINING
split only (validation and test items never reach the contrastive task), and writes
``<data_path>/<Name>.<hash>.sid`` + ``.zq.npy`` + ``.stage1.json`` where ``hash`` covers the
stage-1 config, the item set and the feature matrices: a changed config retrains, an
unchanged one reuses.
"""

from __future__ import annotations

import json
import os
from logging import getLogger

import numpy as np
import torch

from recbole_bbqrec.atomic_io import atomic_write_json
from recbole_bbqrec.tokenizers.semantic_ids import (count_collisions, fingerprint_array,
                                                    load_zq, read_sid_file, save_zq,
                                                    stage1_hash, write_sid_file, zq_path_for)

# Config keys that define stage 1 (anything else may change without retraining it).
STAGE1_KEYS = (
    "tokenizer", "modalities", "signals", "n_levels", "codebook_size", "code_dim",
    "tokenizer_hidden", "tokenizer_dropout", "shared_codebook", "use_mim", "use_rec",
    "tokenizer_temperature", "mim_weight", "rec_weight", "commitment_beta",
    "tokenizer_epochs", "tokenizer_batch_size", "tokenizer_lr", "tokenizer_patience",
    "tokenizer_steps_per_epoch", "letter_cf_weight", "letter_diversity_weight", "seed",
    "MAX_ITEM_LIST_LENGTH",
)
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
    params["modalities"] = modalities
    params["feature_scaling"] = FEATURE_SCALING
    params["dataset"] = dataset.dataset_name
    params["items"] = fingerprint_array(np.asarray(dataset.item_tokens()[1:], dtype=str))
    params["features"] = {m: fingerprint_array(dataset.item_features(m)[0].numpy())
                          for m in modalities}
    return stage1_hash(params), params


def artifact_paths(dataset, sid_hash: str) -> dict[str, str]:
    stem = os.path.join(dataset.feature_dir, f"{dataset.dataset_name}.{sid_hash}")
    return {"sid": stem + ".sid", "zq": str(zq_path_for(stem + ".sid")),
            "summary": stem + ".stage1.json", "checkpoint": stem + ".stage1.pth"}


def build_tokenizer(config, n_items: int, dims: dict[str, int], cf_embeddings=None):
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
                            max_len=config["MAX_ITEM_LIST_LENGTH"], **common)
    (modality, dim), = dims.items()
    if kind == "tiger":
        return RQVAETokenizer(n_items, dim, modality=modality, **common)
    if cf_embeddings is None:
        raise ValueError("tokenizer=letter needs collaborative item embeddings: set "
                         "letter_cf_checkpoint to a trained SASRec checkpoint (saved/*.pth)")
    return LETTERTokenizer(n_items, dim, cf_embeddings, modality=modality,
                           cf_weight=config["letter_cf_weight"],
                           diversity_weight=config["letter_diversity_weight"], **common)


def letter_cf_embeddings(config, n_items: int):
    """Item embeddings of a trained SASRec (weights-only checkpoint) for LETTER's alignment."""
    path = config["letter_cf_checkpoint"]
    if config["tokenizer"] != "letter" or not path:
        return None
    from recbole_bbqrec.trainer import load_checkpoint

    state = load_checkpoint(path)["state_dict"]
    weight = state.get("item_embedding.weight")
    if weight is None or weight.shape[0] != n_items + 1:
        raise ValueError(f"{path} has no item_embedding.weight for {n_items} items + padding "
                         f"(got {None if weight is None else tuple(weight.shape)}); train SASRec "
                         f"on the same dataset first.")
    return weight[1:].float()


def prepare_stage1(config, dataset) -> dict:
    """Train (or reuse) the stage-1 tokenizer for ``config`` and export its semantic IDs.

    ``dataset``: the RecBole TRAINING split (a ``MultiModalSequentialDataset``). Returns the
    stage-1 summary (hash, files, raw collisions, code usage, time ...).
    """
    logger = getLogger()
    sid_hash, params = stage1_identity(config, dataset)
    paths = artifact_paths(dataset, sid_hash)
    if all(os.path.isfile(paths[k]) for k in ("sid", "zq", "summary")):
        with open(paths["summary"], encoding="utf-8") as f:
            summary = json.load(f)
        logger.info(f"stage 1: reusing semantic IDs {paths['sid']} (config hash {sid_hash})")
        return summary | {"reused": True}

    from recbole_bbqrec.tokenizers.trainer import TokenizerTrainer, seed_everything

    modalities = params["modalities"]
    n_items = dataset.item_num - 1  # tokenizer rows 0..n-2 <-> internal ids 1..n-1
    masks = {m: dataset.item_features(m)[1][1:] for m in modalities}
    features = {m: standardize(dataset.item_features(m)[0][1:], masks[m]) for m in modalities}
    sequences = [seq - 1 for seq in training_sequences(dataset)]
    seed_everything(config["seed"])  # same seed -> same initial weights -> same IDs
    tokenizer = build_tokenizer(config, n_items, {m: f.shape[1] for m, f in features.items()},
                                letter_cf_embeddings(config, n_items))
    logger.info(f"stage 1: training the {config['tokenizer']} tokenizer on {n_items} items, "
                f"{len(sequences)} training sequences, modalities {modalities} (hash {sid_hash})")
    trainer = TokenizerTrainer(
        tokenizer, epochs=config["tokenizer_epochs"], batch_size=config["tokenizer_batch_size"],
        lr=config["tokenizer_lr"], patience=config["tokenizer_patience"],
        checkpoint_path=paths["checkpoint"], device=config["device"],
        show_progress=config["show_progress"], logger=logger, seed=config["seed"],
        max_history=config["MAX_ITEM_LIST_LENGTH"],
        steps_per_epoch=config["tokenizer_steps_per_epoch"])
    result = trainer.fit(features, masks, sequences)
    tokens = dataset.item_tokens()[1:]
    write_sid_file(paths["sid"], tokens, result.codes, result.signal_names)
    save_zq(paths["zq"], result.zq)
    summary = {
        "hash": sid_hash, "tokenizer": config["tokenizer"], "signals": result.signal_names,
        "n_items": n_items, "n_levels": int(result.codes.shape[1]),
        "raw_collisions": int(result.raw_collisions),
        "collisions": int(count_collisions(result.codes)),
        "code_usage": result.code_usage, "valid_metric": result.valid_metric,
        "best_valid": float(result.best_valid), "best_epoch": int(result.best_epoch),
        "epochs_run": int(result.epochs_run), "train_s": round(result.train_seconds, 2),
        "files": {k: os.path.basename(v) for k, v in paths.items()},
        "params": {k: v for k, v in params.items() if k not in ("features", "items")},
    }
    atomic_write_json(paths["summary"], summary)
    logger.info(f"stage 1: {summary['raw_collisions']} items collided before uniqueness, "
                f"{summary['collisions']} after; code usage {summary['code_usage']}")
    return summary | {"reused": False}


def load_semantic_ids(config, dataset) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(codes [n_items, L, S] long, zq [n_items, Dz] float, hash) aligned to internal ids.

    Row 0 (padding) is zeros. Every item RecBole knows must have an ID in the file; one that
    does not (IDs from another tokenizer hash, another dataset) is a clear error.
    """
    sid_hash, _params = stage1_identity(config, dataset)
    paths = artifact_paths(dataset, sid_hash)
    if not os.path.isfile(paths["sid"]):
        raise FileNotFoundError(f"No semantic IDs for stage-1 hash {sid_hash} ({paths['sid']}): "
                                f"run with --stage=tokenizer (or --stage=all) first.")
    tokens, codes, _signals = read_sid_file(paths["sid"])
    zq = load_zq(paths["zq"], n_items=len(tokens))
    row_of = {tok: i for i, tok in enumerate(tokens)}
    wanted = dataset.item_tokens()[1:]
    missing = [t for t in wanted if t not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} items have no semantic ID in {paths['sid']} (hash "
                         f"{sid_hash}), e.g. {missing[:5]}: the IDs were made for another item "
                         f"set; rerun stage 1.")
    rows = np.asarray([row_of[t] for t in wanted], dtype=np.int64)
    aligned_codes = np.zeros((len(wanted) + 1, *codes.shape[1:]), dtype=np.int64)
    aligned_codes[1:] = codes[rows]
    aligned_zq = np.zeros((len(wanted) + 1, zq.shape[1]), dtype=np.float32)
    aligned_zq[1:] = zq[rows]
    return torch.from_numpy(aligned_codes), torch.from_numpy(aligned_zq), sid_hash
