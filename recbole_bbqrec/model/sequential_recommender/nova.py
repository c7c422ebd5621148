"""NOVA-BERT (Liu et al., "Non-invasive Self-attention for Side Information Fusion in
Sequential Recommendation", AAAI 2021) as a RecBole model.

BERT4Rec's masked-item training and scoring (RecBole's class, unchanged) over a non-invasive
encoder: the item embeddings stay pure (no position or feature is added to them), and the side
information, positions plus the same pretrained feature matrices BBQRec quantizes, enters
every layer's queries and keys only (``recbole_bbqrec.modules.nova_attention``).
"""

import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec

from recbole_bbqrec.modules.dense_features import DenseItemFeatures
from recbole_bbqrec.modules.nova_attention import NonInvasiveEncoder


class NOVA(BERT4Rec):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.fusion_type = config["fusion_type"]
        self.modalities = dataset.resolve_modalities(config["modalities"])

        # define layers: BERT4Rec's transformer is replaced by the non-invasive encoder.
        del self.trm_encoder
        # one extra zero row: BERT4Rec's mask token (id n_items) must carry no features, or
        # the masked item's own features would give the answer away
        self.feature_layer = DenseItemFeatures(
            dataset.feature_matrices(self.modalities, extra_rows=1), self.hidden_size,
            dropout=self.hidden_dropout_prob)
        self.nova_encoder = NonInvasiveEncoder(
            n_layers=self.n_layers, hidden_size=self.hidden_size, n_heads=self.n_heads,
            inner_size=self.inner_size, n_side=1 + len(self.modalities),  # position + modalities
            fusion=self.fusion_type, hidden_dropout=self.hidden_dropout_prob,
            attn_dropout=self.attn_dropout_prob, layer_norm_eps=self.layer_norm_eps)

        # parameters initialization (RecBole's, over the new layers too)
        self.apply(self._init_weights)

    def forward(self, item_seq):
        batch, length = item_seq.shape
        position_ids = torch.arange(length, device=item_seq.device)
        positions = self.position_embedding(position_ids).expand(batch, length, -1)  # [B, L, H]
        # NOVA treats the position as side information too: it is not added to the items.
        side = torch.cat([positions.unsqueeze(-2), self.feature_layer(item_seq)], dim=-2)  # [B, L, 1+M, H]
        item_emb = self.dropout(self.LayerNorm(self.item_embedding(item_seq)))  # [B, L, H]
        attention_mask = self.get_attention_mask(item_seq, bidirectional=True)  # [B, 1, L, L]
        hidden = self.nova_encoder(item_emb, side, attention_mask)
        # BERT4Rec's output head
        return self.output_ln(self.output_gelu(self.output_ffn(hidden)))  # [B, L, H]
