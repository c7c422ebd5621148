"""SASRec trained as its paper (Kang & McAuley, 2018) and generative-recommendation papers
(TIGER, BBQRec) train it: binary cross-entropy on the positive next item and one uniformly
sampled negative. RecBole 1.2.1's SASRec offers only CE (full softmax) and BPR."""

import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec


class SASRecBCE(SASRec):
    """RecBole's SASRec with the BCE loss; architecture, data and evaluation unchanged.

    ``loss_type: BPR`` in its YAML only selects RecBole's pairwise input (one sampled
    negative per positive); the loss itself is replaced here.
    """

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)                            # [B, H]
        pos_logits = (seq_output * self.item_embedding(interaction[self.POS_ITEM_ID])).sum(-1)
        neg_logits = (seq_output * self.item_embedding(interaction[self.NEG_ITEM_ID])).sum(-1)
        return (F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
                + F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits)))
