"""Checks that stage 1's codes carry signal, not just that they exist.

A semantic ID can be unique, well spread over the codebook and still be noise: BBQRec's first
stage once shipped ID codes that were the k-means cells of a random table. Two measurements
catch that, both written to the stage-1 JSON and asserted in tests:

* ``code_predictability``: how many bits about the next item's code (one signal, one level)
  the previous item's code gives, on held-out transitions, against the same codes shuffled
  across items. Codes that follow behavior beat their shuffled copy by a wide margin; a
  random start does not.
* ``usage_per_signal``: the share of the (shared) codebook each signal uses at each level. A
  codebook "shared" by signals that each keep to their own corner is shared in name only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def transitions(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_prev, train_next, held_prev, held_next): consecutive item pairs; each sequence's
    last pair is held out, the others are for fitting."""
    fit_a, fit_b, held_a, held_b = [], [], [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        held_a.append(seq[-2:-1])
        held_b.append(seq[-1:])
        fit_a.append(seq[:-2])
        fit_b.append(seq[1:-1])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(fit_a), cat(fit_b), cat(held_a), cat(held_b)


def _bigram_gain(codes: np.ndarray, pairs: tuple[np.ndarray, ...], n_codes: int, smoothing: float) -> float:
    """Held-out bits per transition that a bigram over codes saves against the unigram."""
    fit_a, fit_b, held_a, held_b = pairs
    if len(held_a) == 0:
        return 0.0
    unigram = (np.bincount(codes[fit_b], minlength=n_codes) + 1.0)
    unigram /= unigram.sum()  # [N], add-one so no held-out code has probability 0
    table = np.zeros((n_codes, n_codes))  # [prev code, next code] counts
    np.add.at(table, (codes[fit_a], codes[fit_b]), 1.0)
    prev, nxt = codes[held_a], codes[held_b]
    # Dirichlet smoothing toward the unigram: rare previous codes fall back on popularity
    bigram = (table[prev, nxt] + smoothing * unigram[nxt]) / (table[prev].sum(1) + smoothing)
    return float(np.mean(np.log2(bigram) - np.log2(unigram[nxt])))


def code_predictability(
    codes: np.ndarray, sequences: Sequence[np.ndarray], n_codes: int, seed: int = 0,
    n_shuffles: int = 3, smoothing: float = 10.0,
) -> dict[str, float]:
    """How much the previous item's code tells about the next item's code, held out.

    Information gain in bits per held-out transition of a smoothed bigram over codes against
    the codes' unigram (popularity), for a code column [n_items] and for copies shuffled
    across items (``n_shuffles``, mean). Codes that follow behavior gain clearly more than
    their shuffled copies (which gain ~0 or less: the bigram only adds noise); noise codes do
    not. Returns {'bits', 'shuffled_bits'}."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 1 or (len(codes) and (codes.min() < 0 or codes.max() >= n_codes)):
        raise ValueError(f"codes must be a 1-D array of values in [0, {n_codes})")
    pairs = transitions(sequences)
    bits = _bigram_gain(codes, pairs, n_codes, smoothing)
    rng = np.random.default_rng(seed)
    shuffled = float(np.mean([_bigram_gain(rng.permutation(codes), pairs, n_codes, smoothing)
                              for _ in range(n_shuffles)]))
    return {"bits": bits, "shuffled_bits": shuffled}


def usage_per_signal(codes: np.ndarray, signal_names: Sequence[str], n_codes: int) -> dict[str, list[float]]:
    """{signal: share of the N codes its items use, per level} for codes [n, L, S]."""
    if codes.ndim != 3 or codes.shape[2] != len(signal_names):
        raise ValueError(f"codes must be [n, L, {len(signal_names)}], got {codes.shape}")
    return {
        sig: [len(np.unique(codes[:, level, i])) / n_codes for level in range(codes.shape[1])]
        for i, sig in enumerate(signal_names)
    }


def signal_report(
    codes: np.ndarray, signal_names: Sequence[str], n_codes: int, sequences: Sequence[np.ndarray], seed: int = 0
) -> dict[str, dict]:
    """Per signal: codebook usage per level and level-1 code predictability (stage-1 JSON)."""
    usage = usage_per_signal(codes, signal_names, n_codes)
    return {
        sig: {"usage": [round(u, 4) for u in usage[sig]],
              "level1_predictability": {k: round(v, 4) for k, v in
                                        code_predictability(codes[:, 0, i], sequences, n_codes, seed).items()}}
        for i, sig in enumerate(signal_names)
    }
