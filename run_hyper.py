"""Hyper-parameter search with Ray Tune (ASHA early stopping on validation NDCG@10), e.g.

    python run_hyper.py --dataset=ml-100k --model=SASRec --space properties/hyper/sasrec_tiny.yaml --epochs 1
    python run_hyper.py --dataset=Beauty --model=BBQRec --space properties/hyper/bbqrec_lndk.yaml
    python run_hyper.py ... --address auto          # an existing Ray cluster (or ray://host:10001)
    python run_hyper.py ... --address auto --gpus_per_trial 0.5   # two trials per GPU
    python run_hyper.py ... --resume                # continue an interrupted search in --output_dir

Every other ``--key=value`` is a config key shared by all trials (as for run_recbole_bbqrec.py).
Writes ``<output_dir>/trials.csv``, ``sweep.png`` and ``sweep.json``; default output_dir is
``ray_results/<model>-<dataset>-<space>``. On a cluster, every node needs this package
installed and the same data_path / checkpoint_dir / output_dir (a shared file system).
"""

import argparse
import sys

from recbole_bbqrec.cli import parse_with_config_keys
from recbole_bbqrec.experiments.tune import run_search


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="BBQRec", help="plugin or RecBole model name")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--space", required=True, help="search space YAML (properties/hyper/)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (auto, ray://host:10001); default: local Ray")
    parser.add_argument("--num_samples", type=int, default=1,
                        help="samples of the space (grid keys: repeats of the whole grid)")
    parser.add_argument("--max_concurrent", type=int, default=None, help="trials at once")
    parser.add_argument("--cpus_per_trial", type=float, default=1)
    parser.add_argument("--gpus_per_trial", type=float, default=0,
                        help="GPUs per trial, fractions share a card (0.5: two trials per GPU); "
                             "each trial trains on the GPU Ray assigns; 0: CPU only")
    parser.add_argument("--num_cpus", type=int, default=None, help="local Ray CPUs (all)")
    parser.add_argument("--output_dir", default=None, help="default ray_results/<name>")
    parser.add_argument("--resume", action="store_true", help="resume the search in output_dir")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs per trial")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    parser.add_argument("--grace_period", type=int, default=1,
                        help="ASHA: validation rounds before a trial may be stopped")
    parser.add_argument("--reduction_factor", type=int, default=3)
    parser.add_argument("--max_failures", type=int, default=0, help="retries per trial")
    parser.add_argument("--verbose", type=int, default=1, help="Ray Tune verbosity 0-3")
    return parse_with_config_keys(parser, argv)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, config_argv = parse_args(argv)
    files = args.config_files.strip().split(" ") if args.config_files else None
    summary = run_search(
        args.model, args.dataset, args.space, config_file_list=files, argv=config_argv,
        num_samples=args.num_samples, max_concurrent=args.max_concurrent,
        output_dir=args.output_dir, address=args.address, resume=args.resume,
        epochs=args.epochs, cpus_per_trial=args.cpus_per_trial, num_cpus=args.num_cpus,
        gpus_per_trial=args.gpus_per_trial,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor,
        scheduler=args.scheduler, max_failures=args.max_failures, verbose=args.verbose)
    best = summary["best"]
    print(f"{summary['n_trials']} trials ({summary['n_errors']} errored) -> {summary['csv']}")
    if best:
        params = {k: best[k] for k in summary["searched"]}
        print(f"best valid ndcg@10 {best['ndcg@10']:.4f} with {params}")
    if summary["plot"]:
        print(summary["plot"])
    return summary


if __name__ == "__main__":
    from recbole_bbqrec.cli import run_cli

    run_cli(main)  # expected errors: one line on stderr, exit 2
