"""GRU4RecF fed the pretrained item-feature matrices (text, image, ...) that BBQRec quantizes.

RecBole's GRU4RecF (parallel item and feature GRUs, outputs concatenated) embeds atomic item
fields only; this subclass keeps its architecture, forward, loss and scoring and swaps the
feature layer for frozen matrices with one learned projection per modality (see sasrecf.py
for why RecBole's own layer cannot take a dense pretrained matrix).
"""

from recbole.model.init import xavier_normal_initialization
from recbole.model.sequential_recommender.gru4recf import GRU4RecF as RecBoleGRU4RecF
from torch import nn

from recbole_bbqrec.model.sequential_recommender.feature_inputs import DenseFeatureInputs


class GRU4RecF(DenseFeatureInputs, RecBoleGRU4RecF):
    def __init__(self, config, dataset):
        # Skip RecBole's __init__: its FeatureSeqEmbLayer needs atomic `selected_features`.
        super(RecBoleGRU4RecF, self).__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.hidden_size = config["hidden_size"]
        self.num_layers = config["num_layers"]
        self.dropout_prob = config["dropout_prob"]

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self._init_dense_features(config, dataset, self.embedding_size, self.dropout_prob)
        self.item_gru_layers = nn.GRU(input_size=self.embedding_size, hidden_size=self.hidden_size,
                                      num_layers=self.num_layers, bias=False, batch_first=True)
        # the feature GRU reads the M projected modalities side by side: [B, L, M * E]
        self.feature_gru_layers = nn.GRU(
            input_size=self.embedding_size * self.num_feature_field, hidden_size=self.hidden_size,
            num_layers=self.num_layers, bias=False, batch_first=True)
        self.dense_layer = nn.Linear(self.hidden_size * 2, self.embedding_size)
        self.dropout = nn.Dropout(self.dropout_prob)

        # parameters initialization (RecBole's)
        self.apply(xavier_normal_initialization)
