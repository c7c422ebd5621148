"""RecBole datasets that also serve the per-item feature matrices of the preprocessing step.

Feature files (``<Name>.<modality>.npy`` with ``<Name>.item_ids.txt``) are keyed by raw item
tokens; RecBole re-numbers items after filtering, so every matrix is re-ordered here to
RecBole's internal ids (row 0 = padding) once, and cached on the dataset object. The dataset
of the generative models also serves stage 1's artifacts (semantic IDs, quantized vectors,
codebooks) the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset

from recbole_bbqrec.layout import modalities_on_disk, stage1_files
from recbole_bbqrec.tokenizers.artifacts import (generator_codebooks, load_codebooks,
                                                 load_semantic_ids)


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
        return modalities_on_disk(self.feature_dir, self.dataset_name)

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
    the model's MRO): features for stage 1, then stage 1's artifacts for the model.

    Everything is computed or read once per dataset and shared with its splits: the stage-1
    identity (config hash, which fingerprints every feature matrix), the semantic IDs and
    quantized vectors aligned to internal ids, and the codebooks.
    """

    def __init__(self, config):
        super().__init__(config)
        self._stage1_cache: dict = {}

    def stage1_identity(self) -> tuple[str, dict]:
        """(hash, params) of the semantic IDs this dataset's config produces."""
        if "identity" not in self._stage1_cache:
            from recbole_bbqrec.tokenizers.stage1 import stage1_identity

            self._stage1_cache["identity"] = stage1_identity(self.config, self)
        return self._stage1_cache["identity"]

    def prepare_stage1(self) -> dict:
        """Train (or reuse) stage 1 on this dataset, which must be the TRAINING split; returns
        the stage-1 summary."""
        from recbole_bbqrec.tokenizers.stage1 import prepare_stage1

        return prepare_stage1(self.config, self, identity=self.stage1_identity())

    def stage1_files(self) -> dict[str, str]:
        return stage1_files(self.feature_dir, self.dataset_name, self.stage1_identity()[0])

    def semantic_ids(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(codes [n_items, L, S] long, zq [n_items, Dz] float32, hash), row k = internal id k
        (row 0, padding, zeros)."""
        if "ids" not in self._stage1_cache:
            sid_hash = self.stage1_identity()[0]
            codes, zq = load_semantic_ids(self.stage1_files(), sid_hash, self.item_tokens()[1:],
                                          int(self.config["codebook_size"]))
            self._stage1_cache["ids"] = (codes, zq, sid_hash)
        return self._stage1_cache["ids"]

    def stage1_codebooks(self) -> torch.Tensor:
        """The stage-1 codebooks as the generator inherits them: [L, N, D] (one shared set) or
        [L, S, N, D] (one set per signal)."""
        if "codebooks" not in self._stage1_cache:
            books = load_codebooks(self.stage1_files())  # [sets, L, N, D]
            self._stage1_cache["codebooks"] = generator_codebooks(books)
        return self._stage1_cache["codebooks"]

    def copy(self, new_inter_feat):
        new = super().copy(new_inter_feat)
        new._stage1_cache = self._stage1_cache
        return new


# The feature-fused baselines read the same matrices (``feature_matrices``). They share no
# plugin base class (NOVA extends RecBole's BERT4Rec, the others RecBole's classes of the
# same name), so each is named here.
GRU4RecFDataset = SASRecFDataset = NOVADataset = MultiModalSequentialDataset
