"""What GRU4RecF and SASRecF share here: the dense feature layer that replaces RecBole's
``FeatureSeqEmbLayer``, and RecBole's choice of loss by ``loss_type``."""

from recbole.model.loss import BPRLoss
from torch import nn

from recbole_bbqrec.modules.dense_features import RecBoleFeatureSeqAdapter


class DenseFeatureInputs:
    """Mixin for RecBole's feature-fused sequential models. Call it where RecBole's class
    builds its ``FeatureSeqEmbLayer`` (right after the item/position embeddings), so layers are
    created, and randomly initialised, in RecBole's order."""

    def _init_dense_features(self, config, dataset, width: int, dropout: float) -> None:
        self.modalities = dataset.resolve_modalities(config["modalities"])
        self.num_feature_field = len(self.modalities)
        # [B, L] item ids -> ({'item': None}, {'item': [B, L, M, width]}), RecBole's contract
        self.feature_embed_layer = RecBoleFeatureSeqAdapter(
            dataset.feature_matrices(self.modalities), width, dropout=dropout)
        self.loss_type = config["loss_type"]
        if self.loss_type == "BPR":
            self.loss_fct = BPRLoss()
        elif self.loss_type == "CE":
            self.loss_fct = nn.CrossEntropyLoss()
        else:
            raise NotImplementedError("Make sure 'loss_type' in ['BPR', 'CE']!")
