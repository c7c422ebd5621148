"""BBQRec and TIGER end to end on real ml-100k: stage 1 -> semantic IDs -> stage 2 ->
RecBole's evaluator, plus the stage-level bad inputs (beam < topk, foreign IDs, foreign
checkpoints)."""

import os

import pytest

from recbole_bbqrec.quick_start import run

TINY_GENERATIVE = {
    "epochs": 1, "show_progress": False, "state": "WARNING",
    "train_batch_size": 512, "eval_batch_size": 512,
    # stage 1
    "codebook_size": 32, "code_dim": 16, "n_levels": 3, "tokenizer_hidden": [64],
    "tokenizer_epochs": 1, "tokenizer_steps_per_epoch": 8, "tokenizer_batch_size": 256,
    # stage 2
    "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
    "n_buckets": 10, "beam_size": 10, "valid_beam_size": 10,
}


def random_recall_at_10(record: dict) -> float:
    """Expected recall@10 of a uniformly random full ranking: leave-one-out holds out one
    item per user, which lands in the top 10 of n_items with probability 10 / n_items."""
    return 10 / record["stage1"]["n_items"]


def tiny(ml100k_root, tmp_path, **extra) -> dict:
    return {**TINY_GENERATIVE, "data_path": ml100k_root,
            "checkpoint_dir": str(tmp_path / "saved"), "results_dir": str(tmp_path / "results"),
            **extra}


@pytest.fixture(scope="module")
def bbqrec_record(ml100k_root, tmp_path_factory):
    return run(model="BBQRec", dataset="ml-100k",
               config_dict=tiny(ml100k_root, tmp_path_factory.mktemp("bbq")))


def test_bbqrec_one_epoch_through_recbole_evaluator(bbqrec_record):
    record = bbqrec_record
    stage1 = record["stage1"]
    assert stage1["collisions"] == 0 and stage1["signals"] == ["id", "text"]
    assert stage1["n_levels"] == 3 and stage1["n_items"] == 1349
    assert set(record["test"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert 0.0 <= record["test"]["ndcg@10"] <= record["test"]["recall@10"] <= 1.0
    assert record["test"]["recall@10"] >= record["test"]["recall@5"]
    assert os.path.isfile(record["result_file"])
    # Any ranking passes the checks above; a trained model must beat chance clearly.
    assert record["test"]["recall@10"] > 2 * random_recall_at_10(record), record["test"]


def test_beam_diagnostics_follow_the_target_prefix_down_the_beam(bbqrec_record):
    beams = bbqrec_record["beam_diagnostics"]
    kept = beams["target_prefix_kept_per_step"]
    assert beams["beam"] == TINY_GENERATIVE["beam_size"] and len(kept) == 3
    # a prefix that left the beam never comes back: the shares can only fall
    assert all(a >= b for a, b in zip(kept, kept[1:])) and kept[0] > 0
    # every ml-100k user is tracked, so the last step is recall at the full beam, which
    # cannot be below the recall@10 RecBole computed from the same beams (beam = 10 here)
    assert beams["users"] == 943
    assert beams["recall_at_beam"] == pytest.approx(bbqrec_record["test"]["recall@10"], abs=1e-3)


def test_unchanged_stage1_config_reuses_ids_and_changed_one_retrains(bbqrec_record, ml100k_root,
                                                                      tmp_path):
    again = run(model="BBQRec", dataset="ml-100k",
                config_dict=tiny(ml100k_root, tmp_path, stage="tokenizer"))
    assert again["stage1"]["reused"] and again["stage1"]["hash"] == bbqrec_record["stage1"]["hash"]
    assert "test" not in again  # --stage=tokenizer stops after stage 1
    changed = run(model="BBQRec", dataset="ml-100k",
                  config_dict=tiny(ml100k_root, tmp_path, stage="tokenizer", codebook_size=48))
    assert not changed["stage1"]["reused"]
    assert changed["stage1"]["hash"] != bbqrec_record["stage1"]["hash"]


def test_beam_smaller_than_topk_is_a_config_error(bbqrec_record, ml100k_root, tmp_path):
    with pytest.raises(ValueError, match=r"max\(topk\)"):
        run(model="BBQRec", dataset="ml-100k",
            config_dict=tiny(ml100k_root, tmp_path, beam_size=5, valid_beam_size=5))


def test_ids_from_another_item_set_are_refused(bbqrec_record, ml100k_root, tmp_path):
    model, config, dataset = _built_model(ml100k_root, tmp_path)
    dataset._stage1_cache.pop("ids")  # read the file again
    sid_path = os.path.join(config["data_path"], f"ml-100k.{model.sid_hash}.sid")
    lines = open(sid_path).read().splitlines()
    backup = sid_path + ".bak"
    os.replace(sid_path, backup)
    try:
        with open(sid_path, "w") as f:
            f.write("\n".join(lines[:-3]) + "\n")  # three items lose their IDs
        with pytest.raises(ValueError, match=model.sid_hash):
            dataset.semantic_ids()
    finally:
        os.replace(backup, sid_path)


def test_checkpoint_from_other_ids_is_refused(bbqrec_record, ml100k_root, tmp_path):
    import torch

    from recbole_bbqrec.checkpoints import load_model_checkpoint, load_model_weights

    # Through the load path every user of a checkpoint takes (trainer, recommend).
    model, _config, _dataset = _built_model(ml100k_root, tmp_path)
    load_model_weights(model, bbqrec_record["checkpoint"])  # its own IDs: accepted
    checkpoint = load_model_checkpoint(bbqrec_record["checkpoint"])
    assert checkpoint["meta"]["sid_hash"] == model.sid_hash
    checkpoint["meta"]["sid_hash"] = "0123456789ab"  # as if trained on other semantic IDs
    other = tmp_path / "other.pth"
    torch.save(checkpoint, other)
    with pytest.raises(ValueError, match="semantic IDs"):
        load_model_weights(model, str(other))


def test_full_sort_predict_scores_only_beam_items(bbqrec_record, ml100k_root, tmp_path):
    import torch
    from recbole.data.interaction import Interaction

    model, _config, _dataset = _built_model(ml100k_root, tmp_path)
    model.eval()
    seq = torch.tensor([[5, 9, 12, 0, 0], [7, 0, 0, 0, 0]])
    batch = Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.tensor([3, 1]),
                         model.ITEM_ID: torch.tensor([3, 4])})
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        likelihood = model.predict(batch)
    assert scores.shape == (2, model.n_items)
    finite = torch.isfinite(scores)
    assert finite.sum(1).tolist() == [model.beam_size, model.beam_size]
    assert not finite[:, 0].any()  # padding id never recommended
    assert likelihood.shape == (2,) and torch.all(likelihood <= 0)
    # the beam's best item is the one with the highest teacher-forced likelihood among beams
    best = scores.argmax(1)
    best_ll = model.predict(Interaction({**{k: batch[k] for k in (model.ITEM_SEQ, model.ITEM_SEQ_LEN)},
                                         model.ITEM_ID: best}))
    assert torch.allclose(best_ll, scores.max(1).values, atol=1e-4)


def test_flat_layout_decodes_the_same_codes_as_single_steps(bbqrec_record, ml100k_root, tmp_path):
    record = run(model="BBQRec", dataset="ml-100k",
                 config_dict=tiny(ml100k_root, tmp_path, id_layout="flat"))
    # the same stage-1 IDs (reused by hash), decoded as L*S = 6 single codes
    assert record["stage1"]["reused"] and record["stage1"]["hash"] == bbqrec_record["stage1"]["hash"]
    assert len(record["beam_diagnostics"]["target_prefix_kept_per_step"]) == 6
    assert record["test"]["recall@10"] > 2 * random_recall_at_10(record), record["test"]
    with pytest.raises(ValueError, match="id_layout"):
        run(model="BBQRec", dataset="ml-100k",
            config_dict=tiny(ml100k_root, tmp_path, id_layout="interleaved"))


def test_tiger_runs_on_the_same_generator(ml100k_root, tmp_path, capsys):
    # N=64: with 1,349 items and a barely trained RQ-VAE, N=32 can exhaust a prefix's codes.
    record = run(model="TIGER", dataset="ml-100k",
                 config_dict=tiny(ml100k_root, tmp_path, codebook_size=64))
    assert record["stage1"]["signals"] == ["text"] and record["stage1"]["collisions"] == 0
    assert record["config"]["similarity_attention"] is False
    assert record["test"]["recall@10"] > 2 * random_recall_at_10(record), record["test"]
    # The decoding bench reads a plain-attention run too (its histories carry no zq).
    from bench.decode import main as bench_main

    bench_main(["--result", record["result_file"], "--n_users", "16", "--batch_size", "8",
                "--beams", "10", "--scale_items", "--threads", "1"])
    assert capsys.readouterr().out.strip().endswith("identical top-10: yes")


def test_eval_pass_bench_reproduces_the_recorded_metrics(bbqrec_record, tmp_path, capsys):
    """bench/eval_pass.py rebuilds the run, evaluates its checkpoint as the run did, and finds
    the metrics the run recorded; a record whose metrics differ gets "no" and status 1."""
    import json

    import torch

    from bench.eval_pass import main as eval_main

    threads = torch.get_num_threads()                     # what the fixture's run used
    eval_main(["--result", bbqrec_record["result_file"], "--threads", str(threads)])
    out = capsys.readouterr().out
    assert "eval pass 1:" in out and "for 943 test users" in out
    assert out.strip().endswith("(ndcg@10, ndcg@5, recall@10, recall@5): yes"), out
    assert torch.get_num_threads() == threads
    with open(bbqrec_record["result_file"], encoding="utf-8") as f:
        record = json.load(f)
    record["test"]["recall@10"] += 0.01
    other = tmp_path / "changed.json"
    other.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(SystemExit) as failed:
        eval_main(["--result", str(other), "--threads", str(threads)])
    assert failed.value.code == 1 and capsys.readouterr().out.strip().endswith(": no")
    del record["test"]
    other.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ValueError, match="no test metrics"):
        eval_main(["--result", str(other)])


def _built_model(ml100k_root, tmp_path):
    from recbole.data import data_preparation

    from recbole_bbqrec.config import Config
    from recbole_bbqrec.utils import create_dataset, get_model

    config = Config(model="BBQRec", dataset="ml-100k", config_dict=tiny(ml100k_root, tmp_path))
    dataset = create_dataset(config)
    train_data, _valid, _test = data_preparation(config, dataset)
    model = get_model("BBQRec")(config, train_data._dataset)
    return model, config, train_data._dataset


def test_onednn_inference_switch_reaches_every_layer(bbqrec_record, ml100k_root, tmp_path):
    from recbole_bbqrec.utils import get_model

    model, config, dataset = _built_model(ml100k_root, tmp_path)
    flags = lambda m: {sub.onednn for sub in m.generator.modules() if hasattr(sub, "onednn")}  # noqa: E731
    assert flags(model) == {True}                          # the YAML default
    config["onednn_inference"] = False
    assert flags(get_model("BBQRec")(config, dataset)) == {False}
    config["onednn_inference"] = None                      # an older config without the key
    assert flags(get_model("BBQRec")(config, dataset)) == {True}


def test_stage1_exports_its_codebooks_and_older_caches_fall_back_to_the_checkpoint(
        bbqrec_record, ml100k_root, tmp_path):
    import numpy as np
    import torch

    _model, _config, dataset = _built_model(ml100k_root, tmp_path)
    files = dataset.stage1_files()
    in_checkpoint = torch.load(files["checkpoint"], weights_only=True)["state_dict"]
    exported = np.load(files["codebooks"])                  # [sets, L, N, D]
    assert np.array_equal(exported, in_checkpoint["quantizer.codebooks"].numpy())
    books = dataset.stage1_codebooks()                       # as the generator inherits them
    assert books.shape[0] == exported.shape[1]  # [L, ...]: the set axis is gone or moved
    moved = {kind: str(tmp_path / f"{kind}.bak") for kind in ("codebooks", "checkpoint")}
    try:
        os.replace(files["codebooks"], moved["codebooks"])  # IDs cached before the file existed
        dataset._stage1_cache.pop("codebooks")
        assert torch.equal(dataset.stage1_codebooks(), books)
        os.replace(files["checkpoint"], moved["checkpoint"])
        dataset._stage1_cache.pop("codebooks")
        with pytest.raises(FileNotFoundError, match="--stage=tokenizer"):
            dataset.stage1_codebooks()
    finally:
        for kind, backup in moved.items():
            if os.path.exists(backup):
                os.replace(backup, files[kind])
