"""Reading a stage-2 (RecBole model) checkpoint: weights-only, with the identity checks.

The trainers write these files (``trainer.py``); ``recommend.py``, the trainers' test step and
stage 1 (item embeddings of a trained SASRec) read them here. Stage 1's own tokenizer
checkpoints are read by ``tokenizers.trainer.load_tokenizer_checkpoint``.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from recbole_bbqrec.errors import CheckpointError


def load_model_checkpoint(path: str, device="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Three failures, three messages: a file that is not a checkpoint at all (truncated, random
    bytes, another format) is "corrupt or not a checkpoint"; one that needs to unpickle Python
    objects (plain RecBole's) is refused as such; one without a state dict is not ours.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    # torch.save writes a zip archive; a cut-off copy loses the archive's central directory.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is corrupt or not a checkpoint (not a complete torch "
                              f"archive: truncated by an interrupted copy, or another kind of "
                              f"file). Use another checkpoint or re-train.")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower() and "weights_only" not in str(err):
            raise CheckpointError(f"{path} is corrupt or not a checkpoint: {err}") from err
        raise CheckpointError(
            f"Refusing to load {path}: it is not a weights-only checkpoint (it would need to "
            f"unpickle Python objects, e.g. one written by plain RecBole). Re-train with "
            f"recbole_bbqrec, or convert it in a trusted session. Cause: {err}") from err
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is a torch file but not a recbole_bbqrec checkpoint (no "
                              f"state_dict); give a saved/*.pth written by a run.")
    return checkpoint


def check_checkpoint_model(checkpoint: dict, model, checkpoint_file: str) -> None:
    """The checkpoint was trained for ``model``'s class (else load_state_dict fails with a wall
    of missing keys, or worse, loads a same-shaped foreign model)."""
    recorded = (checkpoint.get("config") or {}).get("model")
    expected = type(model).__name__
    if isinstance(recorded, str) and recorded.lower() != expected.lower():
        raise CheckpointError(f"{checkpoint_file} holds a {recorded} model, not {expected}: "
                              f"give the checkpoint of a {expected} run (or run {recorded}).")


def load_model_weights(model, checkpoint_file: str, device="cpu") -> dict:
    """Load a weights-only checkpoint into ``model`` after the identity checks (its model
    class, then the model's own ``check_checkpoint_meta``, e.g. BBQRec's semantic-ID hash);
    returns the checkpoint."""
    checkpoint = load_model_checkpoint(checkpoint_file, device)
    check_checkpoint_model(checkpoint, model, checkpoint_file)
    check = getattr(model, "check_checkpoint_meta", None)
    if callable(check):
        check(checkpoint.get("meta", {}), checkpoint_file)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return checkpoint
