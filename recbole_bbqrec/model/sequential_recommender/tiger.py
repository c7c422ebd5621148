"""TIGER (Rajput et al., 2023) on BBQRec's generator: RQ-VAE IDs of the text embedding,
plain self-attention. LETTER-TIGER is the same class with ``tokenizer: letter``
(``--config_files=properties/overrides/letter.yaml``)."""

from recbole_bbqrec.model.sequential_recommender.bbqrec import BBQRec


class TIGER(BBQRec):
    """Same training and decoding code paths as BBQRec; only the YAML defaults differ
    (``properties/model/TIGER.yaml``: tokenizer tiger, similarity_attention False)."""
