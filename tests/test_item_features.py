"""The feature loader the model stages use: validation errors and alignment to RecBole ids."""

from __future__ import annotations

import numpy as np
import pytest

from recbole_bbqrec.data.item_features import ItemFeatures, align_to_recbole, load_item_features


def write_features(folder, name="Toy", modality="text", tokens=("a", "b", "c"), matrix=None, mask=None):
    folder.mkdir(parents=True, exist_ok=True)
    matrix = np.arange(len(tokens) * 4, dtype=np.float32).reshape(len(tokens), 4) if matrix is None else matrix
    mask = np.ones(len(tokens), dtype=bool) if mask is None else mask
    (folder / f"{name}.item_ids.txt").write_text("".join(t + "\n" for t in tokens))
    np.save(folder / f"{name}.{modality}.npy", matrix)
    np.save(folder / f"{name}.{modality}.mask.npy", mask)
    return matrix, mask


def test_loads_from_out_dir_or_dataset_folder(tmp_path):
    matrix, _ = write_features(tmp_path / "Toy")
    for data_dir in (tmp_path, tmp_path / "Toy"):
        feats = load_item_features(str(data_dir), "Toy", "text", expected_dim=4)
        assert feats.item_tokens == ["a", "b", "c"] and feats.dim == 4
        np.testing.assert_array_equal(feats.matrix, matrix)
        assert feats.matrix.dtype == np.float32 and feats.mask.dtype == np.bool_


def test_missing_file_says_how_to_make_it(tmp_path):
    write_features(tmp_path / "Toy")
    with pytest.raises(FileNotFoundError) as err:
        load_item_features(str(tmp_path), "Toy", "image")
    message = str(err.value)
    assert str(tmp_path / "Toy" / "Toy.image.npy") in message
    assert "python -m recbole_bbqrec.preprocess --dataset Toy" in message


def test_rows_must_match_item_list(tmp_path):
    write_features(tmp_path / "Toy", matrix=np.zeros((2, 4), dtype=np.float32), mask=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="2 rows but .* lists 3 items"):
        load_item_features(str(tmp_path), "Toy", "text")


def test_width_mismatch_names_both_widths(tmp_path):
    write_features(tmp_path / "Toy")
    with pytest.raises(ValueError, match="4-d but 384-d were expected"):
        load_item_features(str(tmp_path), "Toy", "text", expected_dim=384)


def test_nan_rows_are_named(tmp_path):
    matrix = np.ones((3, 4), dtype=np.float32)
    matrix[1, 2] = np.nan
    matrix[2, 0] = np.inf
    write_features(tmp_path / "Toy", matrix=matrix)
    with pytest.raises(ValueError) as err:
        load_item_features(str(tmp_path), "Toy", "text")
    assert "row 1 (b), row 2 (c)" in str(err.value) and "row 0" not in str(err.value)


def test_bad_mask_rejected(tmp_path):
    write_features(tmp_path / "Toy", mask=np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="bool mask"):
        load_item_features(str(tmp_path), "Toy", "text")


def test_align_to_recbole_reorders_and_pads():
    feats = ItemFeatures(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2), np.array([True, False, True]))
    id_tokens = np.array(["[PAD]", "c", "a", "b"])
    matrix, mask = align_to_recbole(feats, id_tokens)
    np.testing.assert_array_equal(matrix, [[0, 0], [4, 5], [0, 1], [2, 3]])
    assert mask.tolist() == [False, True, True, False]
    assert matrix.dtype == np.float32


def test_align_rejects_items_without_features():
    feats = ItemFeatures(["a"], np.ones((1, 2), dtype=np.float32), np.ones(1, dtype=bool))
    with pytest.raises(ValueError, match="1 of 3 RecBole items have no feature row .*zzz"):
        align_to_recbole(feats, ["[PAD]", "a", "zzz"])
