"""Config: RecBole's ``Config`` that also knows the plugin's models and YAML files.

Layering, lowest to highest priority (later wins):
  RecBole overall -> RecBole model -> RecBole dataset -> RecBole quick-start defaults
  -> plugin ``properties/overall.yaml`` -> plugin ``properties/model/<Model>.yaml``
  -> plugin ``properties/dataset/<dataset>.yaml`` -> user config files -> config dict
  -> command line.

Deliberate differences from RecBole:
- the command line is read from an explicit ``argv`` list (``run_recbole_bbqrec.py`` passes
  ``sys.argv[1:]``), never implicitly from ``sys.argv``, so tests and library callers are not
  reconfigured by whatever flags started the process (pytest's, Ray's ...);
- nothing is ever passed to ``eval``: RecBole evaluates every string of the command line and of
  ``config_dict`` as Python, so a results JSON or checkpoint fed back through ``config_dict``
  (``recommend --run``) could run code. Strings go through ``literal_value`` (numbers,
  booleans, lists, dicts, None; anything else stays the string), and YAML is read with a safe
  loader (RecBole's FullLoader builds Python objects from ``!!python/name`` tags);
- a key that no RecBole or plugin YAML defines is an error naming the closest known key
  (``allow_unknown_keys: True`` turns it into a warning), and impossible values (``epochs=0``,
  negative sizes, beam < max(topk), path separators in ``run_tag`` ...) are refused before
  any work (``config_checks.py``).
"""

from __future__ import annotations

import ast
import difflib
import glob
import os
import re
from logging import getLogger

import yaml
from recbole.config import Config as RecBoleConfig

from recbole_bbqrec.config_checks import check_config
from recbole_bbqrec.errors import ConfigError, ConfigKeyError
from recbole_bbqrec.utils import get_model

# Keys RecBole reads without defining them in any YAML, plus run-time ones it sets itself.
_RUNTIME_KEYS = {
    "model", "dataset", "config_files", "local_rank", "nproc", "world_size", "offset", "ip",
    "port", "single_spec", "device", "eval_type", "MODEL_TYPE", "MODEL_INPUT_TYPE",
    "eval_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args", "neg_sampling",
    "eval_setting", "loss_type", "benchmark_filename", "train_stage", "pre_model_path",
    "save_step", "hidden_size", "n_layers", "n_heads", "dropout_prob", "embedding_size",
}


def load_yaml_section(path: str, key: str, kind: type, shape: str):
    """The top-level ``key:`` of a properties YAML, which must be a ``kind`` (list / dict);
    ``shape`` words the expected entries for the error."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    section = data.get(key) if isinstance(data, dict) else None
    if not isinstance(section, kind):
        raise ValueError(f"{path}: expected a top-level `{key}:` {shape}")
    return section


def value_in_config_files(paths: list[str], key: str, default=None):
    """``key`` as a run given these YAML config files sees it: the last file that sets it
    wins (Config merges them in order); ``default`` if none does."""
    value = default
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if isinstance(data, dict) and key in data:
            value = data[key]
    return value


def properties_dir() -> str:
    """Where the plugin's YAML files live: the checkout's ``properties/`` or the installed copy."""
    here = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.join(os.path.dirname(here), "properties")
    if os.path.isdir(os.path.join(checkout, "model")):
        return checkout
    import recbole_bbqrec.properties as installed  # installed as package data by setup.py

    return os.path.dirname(installed.__file__)


def _yaml_keys(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return set(data) if isinstance(data, dict) else set()


def known_config_keys() -> set[str]:
    """Every key defined by a RecBole YAML or a plugin YAML, plus RecBole's run-time keys."""
    import recbole

    recbole_props = os.path.join(os.path.dirname(recbole.__file__), "properties")
    keys = set(_RUNTIME_KEYS)
    for root in (recbole_props, properties_dir()):
        for path in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True):
            if os.sep + "hyper" + os.sep in path or path.endswith(("compare_sets.yaml", "ablations.yaml")):
                continue  # search spaces and run sets, not config keys
            keys |= _yaml_keys(path)
    return keys


# Types a converted string may become; anything else (complex, bytes, sets) stays the string.
_LITERAL_TYPES = (bool, int, float, str, list, tuple, dict)
# RecBole's float resolver: YAML 1.1 reads ``1e-4`` (no dot) as a string; RecBole, and so every
# existing config file, reads it as a float.
_YAML_FLOAT = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def literal_value(text: str):
    """A command-line (or hand-written) string as the value it spells, never run as code.

    ``"5"`` -> 5, ``"1e-3"`` -> 0.001, ``"[5, 10]"`` -> [5, 10], ``"true"``/``"False"`` -> bool,
    ``"None"`` -> None, ``"{'LS': 'valid_and_test'}"`` -> dict; anything that is not a Python
    literal (``"SASRec"``, ``"__import__('os')..."``) is returned unchanged.
    """
    stripped = text.strip()
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if value is None or isinstance(value, _LITERAL_TYPES):
        return value
    return text


class SafeConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) with RecBole's float resolver."""


SafeConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT,
                                       list("-+0123456789."))


class Config(RecBoleConfig):
    """RecBole ``Config`` with plugin model lookup, plugin YAML layers and explicit argv.

    Args:
        model: model name (plugin or RecBole) or class; ``None`` reads it from the inputs.
        dataset: dataset name; ``None`` reads it from the inputs.
        config_file_list: user YAML files.
        config_dict: user parameters.
        argv: command-line arguments (``--key=value``); ``None`` means none are read.
        typed_config_dict: ``config_dict`` holds values read back from JSON or a checkpoint:
            take them as they are (default: strings are parsed as literals, e.g. "1e-4").
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None,
                 argv: list[str] | None = None, typed_config_dict: bool = False):
        self._argv = list(argv) if argv is not None else []
        # config_dict values read back from JSON or a checkpoint already have their types
        # (a recorded string stays a string); hand-written ones may be text ("1e-4", "[5]").
        self._typed_config_dict = typed_config_dict
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list,
                         config_dict=config_dict)
        self._check_unknown_keys()
        check_config(self.final_config_dict)

    # --- RecBole hooks -------------------------------------------------------------------
    def _build_yaml_loader(self):
        return SafeConfigLoader

    def _convert_config_dict(self, config_dict):
        # RecBole's version calls eval() on every string; this one parses literals only.
        return {key: literal_value(value) if isinstance(value, str) else value
                for key, value in config_dict.items()}

    def _load_variable_config_dict(self, config_dict):
        if not config_dict:
            return {}
        if self._typed_config_dict:
            return dict(config_dict)
        return self._convert_config_dict(config_dict)

    def _load_config_files(self, file_list):
        file_config_dict = {}
        for path in file_list or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Config file not found: {path}")
            with open(path, encoding="utf-8") as f:
                try:
                    data = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as err:
                    raise ConfigError(f"{path} is not a plain YAML mapping of config keys "
                                      f"(Python tags are refused): {err}") from err
            if data is None:
                continue
            if not isinstance(data, dict):
                raise ConfigError(f"{path} must be a YAML mapping of config keys, got "
                                  f"{type(data).__name__}.")
            file_config_dict.update(data)
        return file_config_dict

    def _load_cmd_line(self):
        cmd_config_dict, unrecognized = {}, []
        for arg in self._argv:
            if not arg.startswith("--") or len(arg[2:].split("=", 1)) != 2:
                unrecognized.append(arg)
                continue
            name, value = arg[2:].split("=", 1)
            if name in cmd_config_dict and cmd_config_dict[name] != value:
                raise ConfigError(f"Command-line argument '--{name}' is given twice with "
                                  f"different values ({cmd_config_dict[name]!r}, {value!r}).")
            cmd_config_dict[name] = value
        if unrecognized:
            getLogger().warning("command line args [%s] will not be used in RecBole",
                                " ".join(unrecognized))
        return self._convert_config_dict(cmd_config_dict)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigKeyError("model needs to be given in one of: the model argument, "
                                     "a config file, the config dict, or the command line "
                                     "(--model=)")
        if isinstance(model, str):
            final_model, final_model_class = model, get_model(model)
        else:
            final_model, final_model_class = model.__name__, model
        final_dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if final_dataset is None:
            raise ConfigKeyError("dataset needs to be given in one of: the dataset argument, "
                                 "a config file, the config dict, or the command line "
                                 "(--dataset=)")
        return final_model, final_model_class, final_dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        root = properties_dir()
        # A plugin model inherits its parents' YAML: TIGER extends BBQRec's defaults,
        # SASRecBCE RecBole's SASRec.yaml.
        import recbole

        recbole_models = os.path.join(os.path.dirname(recbole.__file__), "properties", "model")
        model_files = []
        lineage = []
        for cls in reversed(model_class.__mro__):
            if cls.__module__.startswith("recbole_bbqrec."):
                lineage.append(cls.__name__)
                model_files.append(os.path.join(root, "model", f"{cls.__name__}.yaml"))
            elif cls.__module__.startswith("recbole.model.") and cls.__name__ != model:
                model_files.append(os.path.join(recbole_models, f"{cls.__name__}.yaml"))
        if model not in lineage:
            model_files.append(os.path.join(root, "model", f"{model}.yaml"))
        for path in (os.path.join(root, "overall.yaml"), *model_files,
                     os.path.join(root, "dataset", f"{dataset}.yaml")):
            if os.path.isfile(path):
                self._update_internal_config_dict(path)

    def _init_device(self):
        # RecBole's asks for NCCL + CUDA under torch.distributed and ignores use_gpu; ours also
        # runs ranks on CPUs with gloo (recbole_bbqrec/distributed.py)
        from recbole_bbqrec.distributed import init_device

        init_device(self.final_config_dict)

    def _set_default_parameters(self):
        super()._set_default_parameters()
        # RecBole points ml-100k at the copy inside its wheel; the plugin reads the
        # preprocessed copy under data_path (same interactions plus the text features).
        if self.dataset == "ml-100k":
            root = self.external_config_dict.get("data_path",
                                                 self.internal_config_dict["data_path"])
            self.final_config_dict["data_path"] = os.path.join(root, self.dataset)

    # --- plugin additions ----------------------------------------------------------------
    def _check_unknown_keys(self) -> None:
        """A key no YAML defines is almost always a typo (``--epoch=1`` would otherwise train
        for the default 200 epochs): an error naming the closest known key, unless the
        config sets ``allow_unknown_keys: True`` (keys read only by your own code)."""
        known = known_config_keys()
        unknown = sorted(set(self.external_config_dict) - known)
        self.unknown_keys = unknown
        if not unknown:
            return
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        if self.final_config_dict.get("allow_unknown_keys") is True:
            getLogger().warning(
                "Unknown config key(s) %s: no RecBole or recbole_bbqrec YAML defines them; "
                "kept because allow_unknown_keys=True.", ", ".join(hints))
            return
        raise ConfigError(f"Unknown config key(s) {', '.join(hints)}: no RecBole or "
                          f"recbole_bbqrec YAML defines them. Fix the name, or set "
                          f"allow_unknown_keys=True to pass keys that only your own code reads.")

    def plain_dict(self) -> dict:
        """The final config as JSON/weights-only-safe plain data (enums and devices as str)."""
        return to_plain(self.final_config_dict)


def to_plain(value):
    """Recursively convert config values to str/int/float/bool/None/list/dict."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
