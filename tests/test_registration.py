"""Datasets and trainers are found along the model class's MRO; ``decoding`` scopes the beam."""

from types import SimpleNamespace

import pytest
from recbole.utils import ModelType

from recbole_bbqrec import trainer as trainer_module
from recbole_bbqrec import utils
from recbole_bbqrec.data import dataset as dataset_module
from recbole_bbqrec.model.sequential_recommender.bbqrec import BBQRec
from recbole_bbqrec.trainer import BBQRecTrainer, get_trainer


class WiderBBQRec(BBQRec):
    """A user's subclass: registers nothing."""


def test_a_subclass_of_bbqrec_gets_its_dataset_and_trainer(monkeypatch):
    real_get_model = utils.get_model
    monkeypatch.setattr(utils, "get_model",
                        lambda name: WiderBBQRec if name == "WiderBBQRec" else real_get_model(name))
    assert get_trainer(ModelType.SEQUENTIAL, "WiderBBQRec") is BBQRecTrainer
    config = {"model": "WiderBBQRec", "MODEL_TYPE": ModelType.SEQUENTIAL}
    assert utils.get_dataset_class(config) is dataset_module.BBQRecDataset
    assert utils.plugin_class_for(WiderBBQRec, trainer_module, "Trainer") is BBQRecTrainer


def test_tiger_and_recbole_models_resolve_by_the_same_rule():
    assert get_trainer(ModelType.SEQUENTIAL, "TIGER") is BBQRecTrainer
    assert not hasattr(trainer_module, "TIGERTrainer") and not hasattr(dataset_module, "TIGERDataset")
    config = {"model": "TIGER", "MODEL_TYPE": ModelType.SEQUENTIAL}
    assert utils.get_dataset_class(config) is dataset_module.BBQRecDataset
    sasrec = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(sasrec, trainer_module.SafeCheckpointMixin) and sasrec is not BBQRecTrainer
    config = {"model": "SASRec", "MODEL_TYPE": ModelType.SEQUENTIAL}
    assert utils.get_dataset_class(config).__name__ == "SequentialDataset"
    assert {"BBQRec", "TIGER", "NOVA", "SASRecF"} <= set(utils.plugin_model_names())


def test_decoding_sets_the_beam_for_a_block_and_restores_it():
    model = SimpleNamespace(active_beam_size=20, max_topk=10)
    with BBQRec.decoding(model, beam_size=50, topk=30):
        assert (model.active_beam_size, model.max_topk) == (50, 30)
        with BBQRec.decoding(model, beam_size=40):  # nested: topk kept
            assert (model.active_beam_size, model.max_topk) == (40, 30)
        assert (model.active_beam_size, model.max_topk) == (50, 30)
    assert (model.active_beam_size, model.max_topk) == (20, 10)
    with pytest.raises(RuntimeError, match="inside"):
        with BBQRec.decoding(model, beam_size=64):
            raise RuntimeError("inside the block")
    assert (model.active_beam_size, model.max_topk) == (20, 10)  # restored after the error
    with pytest.raises(ValueError, match="cannot rank more items"):
        with BBQRec.decoding(model, beam_size=5):
            pass
    assert (model.active_beam_size, model.max_topk) == (20, 10)
