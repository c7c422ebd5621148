"""recommend.py on real ml-100k: a tiny trained BBQRec and SASRec loaded from their result
files, top-k for a history, unknown items, exclusion, the CLI, and foreign checkpoints."""

import json
import math

import pytest
import torch

from recbole_bbqrec.quick_start import run
from recbole_bbqrec.recommend import Recommender, main

pytestmark = pytest.mark.usefixtures("single_thread")

# Same stage-1/2 sizes as test_bbqrec_end_to_end.TINY_GENERATIVE, so stage 1 is reused.
TINY_BBQREC = {
    "codebook_size": 32, "code_dim": 16, "n_levels": 3, "tokenizer_hidden": [64],
    "tokenizer_epochs": 1, "tokenizer_steps_per_epoch": 8, "tokenizer_batch_size": 256,
    "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
    "n_buckets": 10, "beam_size": 10, "valid_beam_size": 10,
}
TINY_SASREC = {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64}
# Raw ml-100k item tokens: Toy Story, Star Wars, Return of the Jedi, Fargo.
HISTORY = ["1", "50", "181", "100"]


def _train(model, extra, ml100k_root, tmp):
    config = {"epochs": 1, "show_progress": False, "state": "WARNING", "torch_threads": 1,
              "train_batch_size": 512, "eval_batch_size": 512, "data_path": ml100k_root,
              "checkpoint_dir": str(tmp / "saved"), "results_dir": str(tmp / "results"), **extra}
    return run(model=model, dataset="ml-100k", config_dict=config)


@pytest.fixture(scope="module")
def records(single_thread, ml100k_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recommend")
    return {"BBQRec": _train("BBQRec", TINY_BBQREC, ml100k_root, tmp),
            "SASRec": _train("SASRec", TINY_SASREC, ml100k_root, tmp)}


@pytest.fixture(scope="module")
def recommenders(records):
    return {name: Recommender.from_result(r["result_file"]) for name, r in records.items()}


@pytest.mark.parametrize("name", ["BBQRec", "SASRec"])
def test_topk_are_distinct_known_items_best_first(recommenders, name):
    rec = recommenders[name]
    result = rec.recommend(HISTORY + ["no-such-movie"], k=10)
    assert len(result.items) == 10 == len(set(result.items))
    assert all(item in rec.token_to_id for item in result.items)
    assert all(math.isfinite(s) for s in result.scores)
    assert result.scores == sorted(result.scores, reverse=True)
    assert result.unknown == ["no-such-movie"] and result.history_used == HISTORY
    # Titles come from the raw ml-100k item file, "title (year)".
    assert result.titles[0] and result.titles[0].endswith(")")
    assert rec.titles()["1"] == "Toy Story (1995)"


def test_bbqrec_scores_match_the_model_on_the_same_interaction(recommenders):
    from recbole.data.interaction import Interaction

    rec = recommenders["BBQRec"]
    model = rec.model
    assert not model.training
    ids = [rec.token_to_id[t] for t in HISTORY]
    seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    seq[0, :4] = torch.tensor(ids)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({model.ITEM_SEQ: seq,
                                                      model.ITEM_SEQ_LEN: torch.tensor([4])}))[0]
    top = torch.topk(scores, 10)
    result = rec.recommend(HISTORY, k=10)
    assert result.items == [rec.id_to_token[i] for i in top.indices.tolist()]
    assert result.scores == pytest.approx(top.values.tolist(), abs=1e-5)


def test_long_history_keeps_the_last_max_length_items(recommenders):
    rec = recommenders["SASRec"]
    tokens = [t for t in rec.id_to_token[1:60]]
    result = rec.recommend(tokens, k=5)
    assert result.history_used == tokens[-rec.max_length:]
    same = rec.recommend(tokens[-rec.max_length:], k=5)
    assert same.items == result.items and same.scores == pytest.approx(result.scores)


def test_bbqrec_beyond_the_evaluation_beam(recommenders):
    rec = recommenders["BBQRec"]  # trained with max(topk) = beam = 10
    result = rec.recommend(HISTORY, k=15)
    assert len(result.items) == 15 == len(set(result.items))
    assert (rec.model.active_beam_size, rec.model.max_topk) == (10, 10)  # restored


def test_all_unknown_history_is_an_error(recommenders):
    with pytest.raises(ValueError, match="None of the 2 history item"):
        recommenders["SASRec"].recommend(["nope", "[PAD]"])


@pytest.mark.parametrize("name", ["BBQRec", "SASRec"])
def test_exclude_history_masks_exactly_the_history(recommenders, name):
    rec = recommenders[name]
    history = HISTORY + rec.recommend(HISTORY, k=3).items  # surely in the unmasked ranking
    masked = rec.recommend(history, k=10, exclude_history=True)
    assert len(masked.items) == 10 and not set(masked.items) & set(history)
    # = the unmasked ranking, as deep as the history is long, minus the history's items
    # (same depth, so BBQRec runs the same beam width in both calls).
    wide = rec.recommend(history, k=10 + len(set(history)))
    assert masked.items == [item for item in wide.items if item not in history][:10]
    assert set(wide.items[:10]) & set(history)  # nothing is excluded by default


def test_cli_prints_table_and_unknown(records, capsys):
    main(["--run", records["SASRec"]["result_file"], "--history", "1,50,zzz", "--k", "3",
          "--threads", "1"])
    out = capsys.readouterr().out
    assert "| rank | item | title | score |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2", "3"]
    assert "unknown items (1): zzz" in out
    with pytest.raises(SystemExit, match="None of the 1 history"):
        main(["--run", records["SASRec"]["result_file"], "--history", "zzz"])


def test_checkpoint_from_other_semantic_ids_is_refused(records, tmp_path):
    from recbole_bbqrec.checkpoints import load_model_checkpoint

    checkpoint = load_model_checkpoint(records["BBQRec"]["checkpoint"])
    assert Recommender.from_checkpoint(records["BBQRec"]["checkpoint"]).model.sid_hash == \
        checkpoint["meta"]["sid_hash"]
    checkpoint["meta"]["sid_hash"] = "0123456789ab"
    tampered = tmp_path / "tampered.pth"
    torch.save(checkpoint, tampered)
    with pytest.raises(ValueError, match="semantic IDs 0123456789ab"):
        Recommender.from_checkpoint(str(tampered))
    record = dict(records["BBQRec"], checkpoint=str(tampered))
    result_file = tmp_path / "tampered.json"
    result_file.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="semantic IDs 0123456789ab"):
        Recommender.from_result(str(result_file))


def test_decode_bench_runs_a_trained_model_on_its_test_users(records, capsys):
    from bench.decode import main as bench_main

    bench_main(["--result", records["BBQRec"]["result_file"], "--n_users", "16",
                "--batch_size", "8", "--beams", "10", "--scale_items", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "trained: " in lines[0] and "d_model=32" in lines[0]
    assert lines[-1].endswith("identical top-10: yes")


def test_beam_reach_bench_reads_a_trained_run(records, capsys):
    from bench.beam_reach import main as reach_main

    rows = reach_main(["--result", records["BBQRec"]["result_file"], "--n_users", "16",
                       "--batch_size", "8", "--beam", "10", "--topk", "5", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "16 test users, beam 10, top 5" in lines[0]
    assert [r["cut"] for r in rows] == [10, 5]            # L = 3: two scored levels
    assert all(0 < r["mean_in_reach"] <= 10 for r in rows)
    assert lines[-1].startswith("step 3 of 3 (cut at the 5th child)")
