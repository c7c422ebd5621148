"""SASRecF fed the pretrained item-feature matrices (text, image, ...) that BBQRec quantizes.

RecBole's SASRecF embeds atomic item fields (tokens, or each element of a ``float_seq`` as a
field of its own: a 384-d sentence embedding would become 384 fields); it has no way to take
a dense pretrained matrix as one feature. This subclass keeps RecBole's architecture (item
embedding concatenated with the feature embeddings, a linear fusion, then the causal
transformer) and its forward, loss and scoring unchanged, and swaps the feature layer for
frozen matrices with one learned projection per modality.
"""

from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender.sasrecf import SASRecF as RecBoleSASRecF
from torch import nn

from recbole_bbqrec.model.sequential_recommender.feature_inputs import DenseFeatureInputs


class SASRecF(DenseFeatureInputs, RecBoleSASRecF):
    def __init__(self, config, dataset):
        # RecBole's __init__ would build a FeatureSeqEmbLayer over `selected_features`
        # (atomic fields this dataset does not have), so the layers are built here instead.
        super(RecBoleSASRecF, self).__init__(config, dataset)

        # load parameters info
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self._init_dense_features(config, dataset, self.hidden_size, self.hidden_dropout_prob)
        self.trm_encoder = TransformerEncoder(
            n_layers=self.n_layers, n_heads=self.n_heads, hidden_size=self.hidden_size,
            inner_size=self.inner_size, hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob, hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps)
        # [B, L, (1 + M) * H] -> [B, L, H]: item embedding next to the M modality embeddings
        self.concat_layer = nn.Linear(self.hidden_size * (1 + self.num_feature_field),
                                      self.hidden_size)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)

        # parameters initialization (RecBole's); the feature projections are trained
        self.apply(self._init_weights)
