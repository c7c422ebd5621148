"""The feature-fused baselines (GRU4RecF, SASRecF, NOVA-BERT): their building blocks, and one
epoch of each on real ml-100k with its preprocessed feature matrices."""

import pytest
import torch

from recbole_bbqrec.modules.dense_features import DenseItemFeatures, RecBoleFeatureSeqAdapter
from recbole_bbqrec.modules.nova_attention import NonInvasiveLayer, SideInfoFusion
from recbole_bbqrec.quick_start import run
from recbole_bbqrec.checkpoints import load_model_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(7, 12, generator=g)
    text[0] = 0  # padding row
    image = torch.randn(7, 5, generator=g)
    image[0] = 0
    return [text, image]


def test_dense_features_shapes_and_frozen_tables():
    layer = DenseItemFeatures(_features(), out_dim=8)
    item_seq = torch.tensor([[1, 2, 0], [6, 5, 4]])
    out = layer(item_seq)
    assert out.shape == (2, 3, 2, 8)  # [B, L, modalities, H]
    out.sum().backward()
    # the pretrained matrices are buffers: not trained, not saved, but moved with the module
    assert not any("table" in name for name, _ in layer.named_parameters())
    assert not any("table" in key for key in layer.state_dict())
    assert all(p.grad is not None for p in layer.projections.parameters())
    # different items get different features (the rows are really looked up)
    assert not torch.allclose(out[1, 0], out[1, 1])


def test_recbole_adapter_returns_recbole_dicts():
    sparse, dense = RecBoleFeatureSeqAdapter(_features(), out_dim=4)(None, torch.tensor([[1, 2]]))
    assert sparse == {"item": None}
    assert dense["item"].shape == (1, 2, 2, 4)


def test_dense_features_reject_bad_matrices():
    with pytest.raises(ValueError, match="at least one feature matrix"):
        DenseItemFeatures([], out_dim=4)
    with pytest.raises(ValueError, match="number of items"):
        DenseItemFeatures([torch.zeros(5, 3), torch.zeros(6, 3)], out_dim=4)


@pytest.mark.parametrize("mode", ["add", "concat", "gating"])
def test_fusion_modes_give_hidden_width(mode):
    fusion = SideInfoFusion(hidden_size=6, n_side=3, mode=mode)
    assert fusion(torch.randn(2, 4, 6), torch.randn(2, 4, 3, 6)).shape == (2, 4, 6)


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="fusion must be one of"):
        SideInfoFusion(hidden_size=6, n_side=1, mode="multiply")


def _layer(fusion="gating"):
    torch.manual_seed(0)
    return NonInvasiveLayer(hidden_size=8, n_heads=2, inner_size=16, n_side=2, fusion=fusion,
                            hidden_dropout=0.0, attn_dropout=0.0).eval()


@pytest.mark.parametrize("fusion", ["add", "concat", "gating"])
def test_side_information_steers_attention_but_never_enters_values(fusion):
    layer, mask = _layer(fusion), torch.zeros(1, 1, 5, 5)
    # identical items: whatever the attention weights, every position averages the same
    # value vector, so side information cannot change the output (it is non-invasive)
    same_items = torch.randn(1, 1, 8).expand(1, 5, 8)
    out_a = layer(same_items, torch.randn(1, 5, 2, 8), mask)
    out_b = layer(same_items, torch.randn(1, 5, 2, 8), mask)
    assert torch.allclose(out_a, out_b, atol=1e-6)
    # distinct items: side information re-weights attention, so the output moves
    items = torch.randn(1, 5, 8)
    assert not torch.allclose(layer(items, torch.randn(1, 5, 2, 8), mask),
                              layer(items, torch.randn(1, 5, 2, 8), mask), atol=1e-4)


def test_padding_mask_hides_padded_positions():
    layer, items, side = _layer(), torch.randn(1, 4, 8), torch.randn(1, 4, 2, 8)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 3] = -10000.0  # position 3 is padding
    changed = items.clone()
    changed[0, 3] += 5.0
    assert torch.allclose(layer(items, side, mask)[0, :3], layer(changed, side, mask)[0, :3],
                          atol=1e-5)


TINY = {"epochs": 1, "show_progress": False, "state": "WARNING", "train_batch_size": 512,
        "eval_batch_size": 512}
TINY_SIZES = {
    "SASRecF": {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64},
    "GRU4RecF": {"embedding_size": 32, "hidden_size": 32},
    "NOVA": {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64},
}


@pytest.mark.parametrize("model", ["SASRecF", "GRU4RecF", "NOVA"])
def test_one_epoch_on_ml100k_with_features(model, ml100k_root, tmp_path):
    config = {**TINY, **TINY_SIZES[model], "data_path": ml100k_root,
              "checkpoint_dir": str(tmp_path / "saved"), "results_dir": str(tmp_path / "results")}
    record = run(model=model, dataset="ml-100k", config_dict=config)
    test = record["test"]
    assert set(test) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    # better than random ranking of 1,349 items (10 / 1349 = 0.0074)
    assert test["recall@10"] > 0.015
    state = load_model_checkpoint(record["checkpoint"])["state_dict"]
    feature_keys = [k for k in state if "projections" in k]
    assert feature_keys, "the feature projections must be trained and saved"
    assert not any("table_" in k for k in state), "the frozen matrices must not be saved"


def test_nova_mask_token_carries_no_features(ml100k_root):
    from recbole_bbqrec.quick_start import build_config
    from recbole_bbqrec.utils import create_dataset, get_model

    config = build_config("NOVA", "ml-100k", config_dict={**TINY_SIZES["NOVA"],
                                                          "data_path": ml100k_root})
    dataset = create_dataset(config)
    model = get_model("NOVA")(config, dataset)
    table = model.feature_layer.tables()[0]
    assert table.shape[0] == model.n_items + 1  # catalogue + BERT4Rec's mask token
    assert torch.count_nonzero(table[model.mask_token]) == 0
    assert torch.count_nonzero(table[1:model.n_items]) > 0


def test_missing_modality_names_the_files(ml100k_root, tmp_path):
    config = {**TINY, **TINY_SIZES["SASRecF"], "data_path": ml100k_root, "modalities": ["image"],
              "checkpoint_dir": str(tmp_path / "saved"), "results_dir": str(tmp_path / "results")}
    with pytest.raises(FileNotFoundError, match=r"Modalities \['image'\].*no feature file"):
        run(model="SASRecF", dataset="ml-100k", config_dict=config)
