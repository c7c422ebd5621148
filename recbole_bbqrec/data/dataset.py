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

    def copy(self, new_inter_feat):
        # RecBole builds train/valid/test datasets with copy(); share the cache with them.
        new = super().copy(new_inter_feat)
        new._feature_cache = self._feature_cache
        return new


class BBQRecDataset(MultiModalSequentialDataset):
    """Dataset of the generative models (BBQRec, TIGER): features for stage 1."""


TIGERDataset = BBQRecDataset
