"""RecBole datasets that also serve the per-item feature matrices of the preprocessing step.

Feature files (``<Name>.<modality>.npy`` with ``<Name>.item_ids.txt``) are keyed by raw item
tokens; RecBole re-numbers items after filtering, so every matrix is re-ordered here to
RecBole's internal ids (row 0 = padding) once, and cached on the dataset object.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset


class MultiModalSequentialDataset(SequentialDataset):
    """``SequentialDataset`` plus ``item_features(modality)`` aligned to internal item ids."""

    def __init__(self, config):
        super().__init__(config)
        self._feature_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def feature_dir(self) -> str:
        return self.config["data_path"]

    def item_tokens(self) -> list[str]:
        """Raw item token of every internal item id (index 0 is RecBole's ``[PAD]``)."""
        return list(self.field2id_token[self.iid_field])

    def item_features(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(matrix float32 [n_items, dim], mask bool [n_items]) for ``modality``."""
        if modality not in self._feature_cache:
            from recbole_bbqrec.data.item_features import align_to_recbole, load_item_features

            features = load_item_features(self.feature_dir, self.dataset_name, modality)
            matrix, mask = align_to_recbole(features, self.item_tokens())
            self._feature_cache[modality] = (torch.from_numpy(np.ascontiguousarray(matrix)),
                                             torch.from_numpy(np.asarray(mask, dtype=bool)))
        return self._feature_cache[modality]

    def available_modalities(self) -> list[str]:
        """Modalities with a feature matrix on disk for this dataset."""
        prefix, found = self.dataset_name + ".", []
        for name in sorted(os.listdir(self.feature_dir)):
            parts = name[len(prefix):].split(".") if name.startswith(prefix) else []
            if len(parts) == 2 and parts[1] == "npy":
                found.append(parts[0])
        return found

    def resolve_modalities(self, chosen: list[str] | None) -> list[str]:
        """``chosen`` checked against the files on disk; None or empty = every modality found."""
        available = self.available_modalities()
        if not chosen:
            if not available:
                raise FileNotFoundError(
                    f"No feature matrices (<Name>.<modality>.npy) in {self.feature_dir}: run "
                    f"python -m recbole_bbqrec.preprocess --dataset {self.dataset_name}")
            return available
        missing = [m for m in chosen if m not in available]
        if missing:
            raise FileNotFoundError(f"Modalities {missing} listed in config have no feature file "
                                    f"in {self.feature_dir} (found: {available}).")
        return list(chosen)

    def feature_matrices(self, modalities: list[str] | None = None,
                         extra_rows: int = 0) -> list[torch.Tensor]:
        """One ``[n_items + extra_rows, dim]`` matrix per modality (None = every one on disk).

        ``extra_rows`` zero rows are appended for ids beyond the catalogue (BERT4Rec's mask
        token). Items that lack a modality keep their zero row.
        """
        matrices = []
        for name in self.resolve_modalities(modalities):
            matrix, _ = self.item_features(name)                   # [n_items, dim]
            padding = matrix.new_zeros(extra_rows, matrix.shape[1])
            matrices.append(torch.cat([matrix, padding]) if extra_rows else matrix)
        return matrices

    def copy(self, new_inter_feat):
        # RecBole builds train/valid/test datasets with copy(); share the cache with them.
        new = super().copy(new_inter_feat)
        new._feature_cache = self._feature_cache
        return new


class BBQRecDataset(MultiModalSequentialDataset):
    """Dataset of the generative models (BBQRec and its subclasses, e.g. TIGER, found along
    the model's MRO): features for stage 1."""


# The feature-fused baselines read the same matrices (``feature_matrices``). They share no
# plugin base class (NOVA extends RecBole's BERT4Rec, the others RecBole's classes of the
# same name), so each is named here.
GRU4RecFDataset = SASRecFDataset = NOVADataset = MultiModalSequentialDataset
