r"""BBQRec: generative sequential recommendation over behavior-bound semantic IDs.

Stage 1 (``recbole_bbqrec.tokenizers.stage1``) gives every item a semantic ID of L
positions, each an S-tuple of codes (behavior-aligned ID, text, image/category ...), plus its
quantized vector; the dataset (``BBQRecDataset``) serves both.
Stage 2 (this class) is an encoder-decoder transformer: the encoder reads the user's history
(one token per item, similarity-enhanced self-attention over the items' quantized vectors),
the decoder generates the next item's ID position by position, and a trie-constrained beam
search turns generation into a ranking that RecBole's evaluator scores unchanged.

Reference: Behavior-Bind Quantization for Multi-Modal Sequential Recommendation
(arXiv 2504.06636), section 4.2.
"""

from __future__ import annotations

import contextlib

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_bbqrec.config_checks import ID_LAYOUTS
from recbole_bbqrec.modules.beam_search import PrefixIndex
from recbole_bbqrec.modules.cpu_linear import set_onednn
from recbole_bbqrec.modules.generator import SemanticIDGenerator


def layout_codes(item_codes: torch.Tensor, layout: str) -> torch.Tensor:
    """Arrange stage 1's codes [n, L, S] for the generator.

    'tuple' (the paper): L decoding steps, each an S-tuple scored by S heads at once.
    'flat': the same codes as L*S single steps, coarse to fine and signal by signal within a
    level ([n, L*S, 1]), so the decoder conditions each signal's code on the ones before it
    and the beam keeps whole prefixes instead of products of per-signal choices."""
    if layout == "tuple":
        return item_codes
    if layout == "flat":
        return item_codes.reshape(item_codes.shape[0], -1, 1)
    raise ValueError(f"id_layout must be one of {ID_LAYOUTS}, got {layout!r}")


class BBQRec(SequentialRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.d_model = config["d_model"]
        self.n_heads = config["n_heads"]
        self.n_encoder_layers = config["n_encoder_layers"]
        self.n_decoder_layers = config["n_decoder_layers"]
        self.d_ff = config["d_ff"]
        self.dropout_prob = config["dropout_prob"]
        self.n_buckets = config["n_buckets"]
        self.similarity_attention = config["similarity_attention"]
        self.beam_size = config["beam_size"]
        self.valid_beam_size = config["valid_beam_size"] or self.beam_size
        self.max_topk = max(config["topk"])
        for name, beam in (("beam_size", self.beam_size), ("valid_beam_size", self.valid_beam_size)):
            if beam < self.max_topk:
                raise ValueError(f"{name}={beam} is smaller than max(topk)={self.max_topk}: a "
                                 f"beam search cannot rank more items than it keeps.")
        self.active_beam_size = self.beam_size  # changed only for a block: ``decoding``

        # semantic IDs aligned to RecBole's internal ids (row 0 = padding), read by the dataset
        if not hasattr(dataset, "semantic_ids"):
            raise TypeError(f"{type(self).__name__} needs a dataset that serves stage 1's "
                            f"semantic IDs (BBQRecDataset), got {type(dataset).__name__}.")
        item_codes, item_zq, self.sid_hash = dataset.semantic_ids()
        self.id_layout = config["id_layout"] or "tuple"
        n_sid_levels, n_sid_signals = item_codes.shape[1:]
        item_codes = layout_codes(item_codes, self.id_layout)
        self.register_buffer("item_codes", item_codes, persistent=False)  # [n_items, L, S]
        self.register_buffer("item_zq", item_zq, persistent=False)        # [n_items, Dz]
        n_levels, n_signals = item_codes.shape[1:]
        self.prefix_index = PrefixIndex.from_codes(item_codes[1:])  # item k <-> internal id k+1

        # define layers
        self.generator = SemanticIDGenerator(
            n_levels=n_levels, n_signals=n_signals, codebook_size=config["codebook_size"],
            d_model=self.d_model, n_heads=self.n_heads, n_encoder_layers=self.n_encoder_layers,
            n_decoder_layers=self.n_decoder_layers, d_ff=self.d_ff, dropout=self.dropout_prob,
            max_history=self.max_seq_length, n_buckets=self.n_buckets,
            use_similarity=self.similarity_attention,
            similarity_per_signal=config["similarity_per_signal"], similarity_parts=n_sid_signals)
        # CPU decoding on oneDNN (modules/cpu_linear.py); None (an older config): on
        onednn = config["onednn_inference"]
        set_onednn(self.generator, True if onednn is None else bool(onednn))
        self.similarity_lr = config["similarity_lr"]
        self.label_smoothing = float(config["label_smoothing"] or 0.0)
        if config["inherit_codebooks"]:
            books = dataset.stage1_codebooks()  # [L, N, D] or [L, S, N, D]
            if self.id_layout == "flat":
                if books.dim() == 3:
                    books = books[:, None].expand(-1, n_sid_signals, -1, -1)
                books = books.reshape(n_sid_levels * n_sid_signals, 1, *books.shape[-2:])
            self.generator.inherit_codebooks(books, seed=config["seed"])

    # ------------------------------------------------------------------ inputs
    def _history(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]                 # [B, T], right-padded with 0
        hist_codes = self.item_codes[item_seq]                # [B, T, L, S]
        hist_mask = item_seq > 0                              # [B, T]
        hist_zq = self.item_zq[item_seq] if self.similarity_attention else None  # [B, T, Dz]
        return hist_codes, hist_mask, hist_zq

    # ------------------------------------------------------------------ RecBole API
    def calculate_loss(self, interaction):
        hist = self._history(interaction)
        target_codes = self.item_codes[interaction[self.POS_ITEM_ID]]  # [B, L, S]
        return self.generator.loss(*hist, target_codes, self.label_smoothing)

    def predict(self, interaction):
        """Log-likelihood of the given item's semantic ID for each user: [B]."""
        hist = self._history(interaction)
        candidate = self.item_codes[interaction[self.ITEM_ID]][:, None]  # [B, 1, L, S]
        return self.generator.score_items(*hist, candidate)[:, 0]

    def full_sort_predict(self, interaction):
        """Beam-search scores for the final beams, -inf for every other item: [B, n_items]."""
        hist = self._history(interaction)
        items, scores = self.generator.generate(*hist, self.prefix_index,
                                                beam_size=self.active_beam_size,
                                                topk=self.max_topk)        # [B, beam]
        out = torch.full((items.shape[0], self.n_items), float("-inf"), device=scores.device)
        valid = items >= 0
        rows = torch.arange(items.shape[0], device=items.device)[:, None].expand_as(items)
        out[rows[valid], items[valid] + 1] = scores[valid]
        return out

    @contextlib.contextmanager
    def decoding(self, beam_size: int | None = None, topk: int | None = None):
        """Decode with ``beam_size`` beams and rank ``topk`` items inside the block (None keeps
        the current value); the previous values come back on exit, also after an error.
        Validation uses the cheaper ``valid_beam_size``; ``recommend.py`` a wider beam for a
        larger k."""
        saved = self.active_beam_size, self.max_topk
        beam, ranked = beam_size or self.active_beam_size, topk or self.max_topk
        if beam < ranked:
            raise ValueError(f"beam_size={beam} is smaller than topk={ranked}: a beam search "
                             f"cannot rank more items than it keeps.")
        self.active_beam_size, self.max_topk = beam, ranked
        try:
            yield self
        finally:
            self.active_beam_size, self.max_topk = saved

    # ------------------------------------------------------------------ training
    def optimizer_groups(self, learning_rate: float) -> list[dict]:
        """Parameter groups for the trainer's optimiser: the similarity tables (SimEmb) get
        ``similarity_lr``. They start at ones and their gradient is a product of attention
        weights and values, so at the shared rate they barely leave 1 in a short run and the
        layer stays plain attention."""
        tables = [p for n, p in self.named_parameters() if n.endswith("sim_embedding")]
        others = [p for n, p in self.named_parameters() if not n.endswith("sim_embedding")]
        groups = [{"params": others}]
        if tables:
            groups.append({"params": tables, "lr": self.similarity_lr or learning_rate})
        return groups

    def diagnostics(self) -> dict:
        """Learned state worth reporting (results JSON ``model_diagnostics``)."""
        from recbole_bbqrec.modules.attention import similarity_table_summary

        if not self.similarity_attention:
            return {}
        return {"similarity_scale_by_bucket_decile": similarity_table_summary(self.generator.encoder)}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_meta(self) -> dict:
        return {"sid_hash": self.sid_hash, "n_items": self.n_items}

    def check_checkpoint_meta(self, meta: dict, path: str) -> None:
        theirs = meta.get("sid_hash")
        if theirs != self.sid_hash:
            raise ValueError(f"{path} was trained on semantic IDs {theirs}, but this run uses "
                             f"{self.sid_hash}: its code embeddings would mean other items. "
                             f"Retrain stage 2, or rerun with the stage-1 config of {theirs}.")

    def to(self, *args, **kwargs):
        model = super().to(*args, **kwargs)
        model.prefix_index = model.prefix_index.to(model.item_codes.device)
        return model
