"""ablation.py: variants from properties/ablations.yaml run through quick_start on real
ml-100k (tiny), tagged for compare/report, one failing variant not stopping the others, and
the table written under results/<dataset>/."""

import csv
import os

import pytest

from recbole_bbqrec.experiments import ablation, tables
from recbole_bbqrec.results import load_results

pytestmark = pytest.mark.usefixtures("single_thread")

# Same stage-1/2 sizes as test_bbqrec_end_to_end.TINY_GENERATIVE, so stage 1 is reused.
TINY = {
    "epochs": 1, "show_progress": False, "state": "WARNING", "torch_threads": 1,
    "train_batch_size": 512, "eval_batch_size": 512,
    "codebook_size": 32, "code_dim": 16, "n_levels": 3, "tokenizer_hidden": [64],
    "tokenizer_epochs": 1, "tokenizer_steps_per_epoch": 8, "tokenizer_batch_size": 256,
    "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
    "n_buckets": 10, "beam_size": 10, "valid_beam_size": 10,
}


@pytest.fixture(scope="module")
def ablation_run(single_thread, ml100k_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    # The shipped variants plus one that names a modality ml-100k does not have.
    variants_file = tmp / "ablations.yaml"
    with open(ablation.variants_file(), encoding="utf-8") as f:
        shipped = f.read()
    variants_file.write_text(shipped + "  - name: bad_image\n    description: needs images\n"
                             "    config: {signals: [id, image]}\n")
    config = {**TINY, "data_path": ml100k_root, "checkpoint_dir": str(tmp / "saved"),
              "results_dir": str(tmp / "results")}
    outcomes, table = ablation.run_ablations(
        "ml-100k", ["full", "bad_image", "no_similarity"], config_dict=config,
        variants_path=str(variants_file))
    return outcomes, table, tmp / "results"


def test_variants_run_tagged_and_a_bad_one_fails_alone(ablation_run):
    outcomes, _table, results = ablation_run
    assert [o.variant.name for o in outcomes] == ["full", "bad_image", "no_similarity"]
    assert [o.status == "ok" for o in outcomes] == [True, False, True]
    assert "image" in outcomes[1].status  # the error names the missing signal
    records = {r["config"]["run_tag"]: r for r in load_results(str(results / "ml-100k"))}
    assert set(records) == {"ablation-full", "ablation-no_similarity"}
    assert all(tables.is_ablation(r) for r in records.values())
    assert records["ablation-full"]["config"]["similarity_attention"] is True
    assert records["ablation-no_similarity"]["config"]["similarity_attention"] is False
    assert records["ablation-no_similarity"]["label"] == "BBQRec-ablation-no_similarity"
    # Both use the same semantic IDs: similarity attention is a stage-2 switch.
    assert (records["ablation-full"]["stage1"]["hash"]
            == records["ablation-no_similarity"]["stage1"]["hash"])


def test_table_has_every_variant_with_change_vs_full(ablation_run):
    outcomes, table, results = ablation_run
    assert table == str(results / "ml-100k" / "ablation.md")
    text = open(table, encoding="utf-8").read()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"full", "no_similarity", "bad_image"} <= set(rows)
    header = rows["variant"]
    full, variant = rows["full"], rows["no_similarity"]
    recall = outcomes[2].record["test"]["recall@10"]
    assert variant[header.index("test R@10")] == f"{recall:.4f}"
    reference = outcomes[0].record["test"]["recall@10"]
    assert full[header.index("ΔR@10 vs full")] == ("+0.00%" if reference else "n/a")
    expected = f"{(recall - reference) / reference * 100:+.2f}%" if reference else "n/a"
    assert variant[header.index("ΔR@10 vs full")] == expected
    assert rows["bad_image"][header.index("status")].startswith("failed: ValueError")
    assert "--run_tag=ablation-no_similarity --similarity_attention=False" in \
        variant[header.index("command")]
    with open(results / "ml-100k" / "ablation.csv", newline="", encoding="utf-8") as f:
        assert [row[0] for row in csv.reader(f)] == ["variant", "full", "bad_image",
                                                     "no_similarity"]


def test_drop_signal_variants_follow_the_modalities(tmp_path):
    specs = ablation.load_variant_specs()
    names = [v.name for v in ablation.expand_variants(specs, ["id", "text", "image"])]
    assert names[:6] == ["full", "no_mim", "no_rec", "no_shared_codebook", "no_similarity",
                         "inherit"]
    variants = {v.name: v for v in ablation.expand_variants(specs, ["id", "text", "image"])}
    assert variants["no_text"].config == {"signals": ["id", "image"]}
    assert variants["no_id"].config == {"signals": ["text", "image"]}
    assert "no_category" not in variants
    assert [v.name for v in ablation.expand_variants(specs, None)][-1] == "inherit"  # TIGER
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablation.select_variants(list(variants.values()), ["full", "no_sound"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("ablations:\n  - name: no_x\n    drop_signal: true\n")
    with pytest.raises(ValueError, match="{signal}"):
        ablation.load_variant_specs(str(broken))


def test_cli_variant_overrides_win_over_shared_flags(ml100k_root, tmp_path, capsys):
    seen = []

    def fake_run(model, dataset, config_file_list, config_dict, argv):
        seen.append((config_dict, argv))
        raise RuntimeError("not training in this test")

    outcomes, table = ablation.run_ablations(
        "ml-100k", ["no_mim"], argv=[f"--data_path={ml100k_root}", "--use_mim=True",
                                     f"--results_dir={tmp_path}", "--epochs=1"],
        runner=fake_run)
    (config_dict, argv), = seen
    assert config_dict == {"use_mim": False, "run_tag": "ablation-no_mim"}
    assert "--use_mim=True" not in argv and "--epochs=1" in argv
    assert outcomes[0].status == "failed: RuntimeError: not training in this test"
    assert os.path.isfile(table) and table.startswith(str(tmp_path))
