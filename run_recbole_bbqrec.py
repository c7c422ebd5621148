"""Train and test a model with RecBole's flags, e.g.

    python run_recbole_bbqrec.py                                # BBQRec on ml-100k
    python run_recbole_bbqrec.py --model=SASRec --dataset=Beauty
    python run_recbole_bbqrec.py --dataset=Beauty --stage=tokenizer --config_files=my.yaml
    python run_recbole_bbqrec.py --dataset=Beauty --nproc=4      # stage 2 on 4 ranks (DDP)

Any ``--key=value`` is a config key (RecBole's or the plugin's, see ``properties/``). The last
line printed is the path of the results JSON.
"""

import argparse
import sys

from recbole_bbqrec import launcher
from recbole_bbqrec.cli import StoreOnce, parse_with_config_keys
from recbole_bbqrec.quick_start import run


def main(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", action=StoreOnce,
                        help="plugin or RecBole model name (default: BBQRec)")
    parser.add_argument("--dataset", "-d", action=StoreOnce, help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", action=StoreOnce, help="space-separated YAML files")
    args, config_keys = parse_with_config_keys(parser, argv)
    # Config also sees this script's own flags as config keys, always as --key=value: the
    # space form ("--dataset Beauty", "-d Beauty") would make it warn that they "will not
    # be used" while they are.
    config_argv = [f"--{name}={value}" for name, value in vars(args).items()
                   if value is not None] + config_keys
    model = "BBQRec" if args.model is None else args.model
    dataset = "ml-100k" if args.dataset is None else args.dataset
    files = args.config_files.strip().split(" ") if args.config_files else None
    if launcher.wants_distributed(config_argv):  # --nproc=N: N ranks (recbole_bbqrec/launcher.py)
        record = launcher.run_distributed(model, dataset, files, config_argv) or {}
    else:
        record = run(model=model, dataset=dataset, config_file_list=files, argv=config_argv)
    path = record.get("result_file") or ""
    if path:
        print(path)
    return path


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)  # expected errors: one line on stderr, exit 2
