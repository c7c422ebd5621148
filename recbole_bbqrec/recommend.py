"""Recommend for one history with a trained run: load once, then ``recommend(history, k)``.

```python
rec = Recommender.from_result("results/Beauty/BBQRec-20260101-120000-42.json")
out = rec.recommend(["B000052YAN", "B0009OAGS6"], k=10)  # raw item tokens, oldest first
out.items, out.titles, out.scores, out.unknown
```

CLI: ``python -m recbole_bbqrec.recommend --run RESULT.json|CHECKPOINT.pth --history A,B,C
[--k 10] [--exclude_history]`` prints rank, item, title, score and the unknown items.

Loading rebuilds the run's ``Config`` from the plain config stored in the result record (the
same dict the checkpoint carries): only the keys whose value differs from a fresh default
config are passed, as ``config_dict`` (never argv), and the rebuilt values are checked against
the recorded ones. The dataset and model are rebuilt by ``quick_start.build_run`` without a
split (the dataset from its atomic files, never unpickled), the checkpoint is read
weights-only (``checkpoints.load_model_checkpoint``) and, for models with semantic IDs,
checked against the IDs this config resolves to (``check_checkpoint_meta``). Works for any
RecBole sequential model (``full_sort_predict`` on RecBole's Interaction).

Titles are not part of the preprocessed files, so they are read once, lazily, from the raw
sources the preprocessing locator finds (ml-100k: RecBole's wheel, ``title (year)``; Amazon:
the ``meta_<Cat>`` file / ``<Cat>.meta.jsonl``); without them the item token is shown.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from logging import getLogger

import torch
from recbole.data.interaction import Interaction

from recbole_bbqrec.checkpoints import load_model_checkpoint, load_model_weights
from recbole_bbqrec.config import Config, to_plain
from recbole_bbqrec.quick_start import build_run
from recbole_bbqrec.utils import disable_anomaly_detection, repo_root

# Final-config keys RecBole derives itself (passing them back would be wrong or warned about),
# and training-only sampling settings that RecBole rewrites into another shape.
DERIVED_KEYS = {
    "model", "dataset", "data_path", "device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type",
    "valid_metric_bigger", "local_rank", "single_spec", "config_files", "train_neg_sample_args",
    "valid_neg_sample_args", "test_neg_sample_args", "eval_neg_sample_args",
}


@dataclass
class RecommendationResult:
    """Top-k items for one history, best first. ``titles[i]`` is None when unknown."""

    items: list[str]
    titles: list[str | None]
    scores: list[float]
    unknown: list[str] = field(default_factory=list)       # history tokens the dataset lacks
    history_used: list[str] = field(default_factory=list)  # known tokens fed to the model

    def rows(self) -> list[tuple[int, str, str, float]]:
        return [(rank, item, title or item, score) for rank, (item, title, score)
                in enumerate(zip(self.items, self.titles, self.scores), start=1)]


def _rebuild_config(plain: dict, overrides: dict | None = None) -> Config:
    """A ``Config`` equal to the recorded one on every key the run could have set."""
    model, dataset = plain.get("model"), plain.get("dataset")
    if not isinstance(model, str) or not isinstance(dataset, str):
        raise ValueError(f"The recorded config names no model/dataset (model={model!r}, "
                         f"dataset={dataset!r}); it is not the record of a recbole_bbqrec run.")
    # The final data_path is <root>/<dataset>; Config appends the dataset again.
    root = os.path.dirname(os.path.normpath(plain["data_path"]))
    default = Config(model=model, dataset=dataset, config_dict={"data_path": root})
    default_plain = to_plain(default.final_config_dict)
    config_dict = {key: value for key, value in plain.items()
                   if key not in DERIVED_KEYS and default_plain.get(key, object()) != value}
    config_dict["data_path"] = root
    # A run recorded with allow_unknown_keys (or before unknown keys were errors) rebuilds.
    config_dict["allow_unknown_keys"] = True
    config_dict.update(overrides or {})
    # The recorded values keep their JSON types: a string is never parsed, let alone run.
    config = Config(model=model, dataset=dataset, config_dict=config_dict, typed_config_dict=True)
    rebuilt = to_plain(config.final_config_dict)
    differ = [key for key in plain if key not in DERIVED_KEYS and key not in (overrides or {})
              and key != "allow_unknown_keys" and rebuilt.get(key) != plain[key]]
    if differ:
        raise ValueError(f"Cannot rebuild the run's config: {differ} come out as "
                         f"{[rebuilt.get(k) for k in differ]}, recorded "
                         f"{[plain[k] for k in differ]}.")
    return config


def _resolve(path: str, base_dirs: list[str]) -> str:
    if os.path.isabs(path) or os.path.isfile(path):
        return path
    for base in base_dirs:
        candidate = os.path.join(base, path)
        if os.path.isfile(candidate):
            return candidate
    return path  # load_model_checkpoint names the missing file


def read_result_run(path: str, overrides: dict | None = None) -> tuple[Config, str]:
    """A finished run's rebuilt config and checkpoint path, from its results JSON; refuses a
    failed run and a record saved without a checkpoint."""
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a result record (a JSON object).")
    if record.get("status") == "failed":
        raise ValueError(f"{path} records a failed run ({record.get('failure')}); it has no "
                         f"model to recommend with.")
    if not record.get("checkpoint") or not isinstance(record.get("config"), dict):
        raise ValueError(f"{path} names no checkpoint or config: it is not the record of a "
                         f"finished run saved with a checkpoint (saved=True).")
    checkpoint = _resolve(record["checkpoint"], [repo_root(), os.path.dirname(path)])
    return _rebuild_config(record["config"], overrides), checkpoint


class Recommender:
    """A trained sequential model, its dataset and its item vocabulary, loaded once."""

    def __init__(self, config: Config, checkpoint_path: str, source: str | None = None):
        self.config = config
        self.source = source or checkpoint_path
        self.checkpoint_path = checkpoint_path
        disable_anomaly_detection()
        if config["torch_threads"]:
            torch.set_num_threads(int(config["torch_threads"]))
        # the whole dataset (no split, no stage 1: the run's IDs are read as they are)
        parts = build_run(config, split=False, trainer=False)
        self.dataset, self.model, self.device = parts.dataset, parts.model, config["device"]
        load_model_weights(self.model, checkpoint_path, self.device)
        self.model.eval()
        self.max_length = int(config["MAX_ITEM_LIST_LENGTH"])
        self.token_to_id = dict(self.dataset.field2token_id[self.dataset.iid_field])
        self.token_to_id.pop("[PAD]", None)
        self.id_to_token = list(self.dataset.field2id_token[self.dataset.iid_field])
        self._titles: dict[str, str] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_result(cls, path: str, overrides: dict | None = None) -> "Recommender":
        """From a results JSON (``results/<dataset>/<label>-<time>.json``) or a checkpoint."""
        if path.endswith(".pth"):
            return cls.from_checkpoint(path, overrides=overrides)
        config, checkpoint = read_result_run(path, overrides)
        return cls(config, checkpoint, source=path)

    @classmethod
    def from_checkpoint(cls, path: str, overrides: dict | None = None) -> "Recommender":
        """From a weights-only checkpoint (``saved/*.pth``): its own plain config is used."""
        plain = load_model_checkpoint(path).get("config")
        if not isinstance(plain, dict) or "model" not in plain:
            raise ValueError(f"{path} carries no plain config; load it via its results JSON.")
        return cls(_rebuild_config(plain, overrides), path)

    # ------------------------------------------------------------------ titles
    def titles(self) -> dict[str, str]:
        """``{item token: title}``, read once from the raw sources ({} when unavailable)."""
        if self._titles is None:
            try:
                self._titles = load_titles(self.config, set(self.token_to_id))
            except Exception as err:  # titles are a nicety; recommendations do not need them
                getLogger().warning(f"No item titles for {self.config['dataset']} ({err}); "
                                    f"showing item tokens.")
                self._titles = {}
        return self._titles

    # ------------------------------------------------------------------ recommend
    @torch.no_grad()
    def recommend(self, history: list[str], k: int = 10,
                  exclude_history: bool = False) -> RecommendationResult:
        """Top-``k`` next items for ``history`` (raw item tokens, oldest first).

        Unknown tokens are reported in ``unknown`` and left out of the model's input; the last
        ``MAX_ITEM_LIST_LENGTH`` known items are used. ``exclude_history`` masks the history's
        items out of the ranking (nothing is excluded by default).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        history = [str(token).strip() for token in history if str(token).strip()]
        unknown = [token for token in history if token not in self.token_to_id]
        known = [token for token in history if token in self.token_to_id]
        if not known:
            raise ValueError(f"None of the {len(history)} history item(s) is known to the "
                             f"{self.config['dataset']} dataset of this run "
                             f"(unknown: {unknown[:10]}); give raw item tokens as in "
                             f"{self.config['dataset']}.item_ids.txt.")
        used = known[-self.max_length:]
        ids = [self.token_to_id[token] for token in used]
        item_seq = torch.zeros(1, self.max_length, dtype=torch.long)  # [1, T], right-padded
        item_seq[0, :len(ids)] = torch.tensor(ids)
        batch = Interaction({self.model.ITEM_SEQ: item_seq,
                             self.model.ITEM_SEQ_LEN: torch.tensor([len(ids)])}).to(self.device)
        excluded = sorted(set(ids)) if exclude_history else []
        scores = self._full_sort(batch, k + len(excluded))[0].float().cpu()  # [n_items]
        scores[0] = float("-inf")  # padding is never an item
        if excluded:
            scores[excluded] = float("-inf")
        top = torch.topk(scores, min(k, scores.numel()))
        keep = torch.isfinite(top.values)
        top_ids, top_scores = top.indices[keep].tolist(), top.values[keep].tolist()
        tokens = [self.id_to_token[i] for i in top_ids]
        titles = self.titles()
        return RecommendationResult(items=tokens, titles=[titles.get(t) for t in tokens],
                                    scores=[float(s) for s in top_scores], unknown=unknown,
                                    history_used=used)

    def _full_sort(self, batch: Interaction, needed: int) -> torch.Tensor:
        """``full_sort_predict``; a generative model keeps at least ``needed`` beams.

        Its beam search scores only ``max_topk`` items (the evaluator's max(topk)); a larger
        ``k`` (or one plus the excluded history) widens the beam for this call only.
        """
        model = self.model
        if not hasattr(model, "decoding"):
            return model.full_sort_predict(batch)
        topk = max(model.max_topk, needed)
        with model.decoding(beam_size=max(model.beam_size, topk), topk=topk):
            return model.full_sort_predict(batch)


def load_titles(config, tokens: set[str]) -> dict[str, str]:
    """Titles of ``tokens`` from the raw sources the preprocessing step read."""
    from recbole_bbqrec.preprocess.amazon2014 import read_meta
    from recbole_bbqrec.preprocess.locate import locate_source
    from recbole_bbqrec.preprocess.movielens import ML100K, read_ml100k

    name = config["dataset"]
    if name == ML100K:
        _frame, meta, _dir = read_ml100k()
    else:
        out_dir = os.path.dirname(os.path.normpath(config["data_path"]))
        source = locate_source(name, out_dir, config["raw_dir"])
        if source.meta is None:
            return {}
        meta, _tally = read_meta(source.meta, tokens, max_bad_fraction=1.0)
    return {token: m.title for token, m in meta.items() if token in tokens and m.title}


def format_result(result: RecommendationResult) -> str:
    from recbole_bbqrec.experiments.tables import to_markdown

    rows = [[str(rank), item, title.replace("|", "/"), f"{score:.4f}"]
            for rank, item, title, score in result.rows()]
    text = to_markdown(["rank", "item", "title", "score"], rows)
    unknown = ", ".join(result.unknown) if result.unknown else "none"
    return text + f"\nunknown items ({len(result.unknown)}): {unknown}"


def main(argv=None) -> RecommendationResult:
    parser = argparse.ArgumentParser(description="Top-k next items for one history with a "
                                     "trained run (results JSON or weights-only checkpoint).")
    parser.add_argument("--run", required=True, help="results/<dataset>/<label>-<time>.json or "
                        "a saved/*.pth checkpoint")
    parser.add_argument("--history", required=True,
                        help="comma-separated raw item tokens, oldest first")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--exclude_history", action="store_true",
                        help="never recommend an item of the history")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    overrides = {"torch_threads": args.threads} if args.threads else None
    recommender = Recommender.from_result(args.run, overrides=overrides)
    history = [token for token in args.history.split(",") if token.strip()]
    try:
        result = recommender.recommend(history, k=args.k, exclude_history=args.exclude_history)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    print(format_result(result))
    return result


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)  # expected errors: one line on stderr, exit 2
