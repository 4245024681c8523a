"""`instill predict` and `instill eval`.

    instill predict config.yaml [key=value ...] [--input FILE] [--model auto|base|tuned] [--output DIR]
    instill eval    config.yaml [key=value ...] [--input FILE] [--model auto|base|tuned] [--output DIR] [--compare base]
                    [--benchmarks NAMES [--limit N]]

Both read the training config (do_train is ignored) and write to output_dir/eval/ unless --output says otherwise.
"""

from __future__ import annotations

import argparse


def _config(args: argparse.Namespace):
    from instill.config import build_config, load_yaml

    # Evaluation never trains: without this, an eval-only config would need `dataset` for do_train's sake.
    return build_config({**load_yaml(args.config), "do_train": False}, args.overrides, source=str(args.config))


def _predict(args: argparse.Namespace) -> int:
    from instill.evaluate.runner import run

    run(_config(args), args.input, args.output, args.model, with_metrics=False)
    return 0


def _eval(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.limit is not None and not (args.benchmarks or config.eval.task):
        from instill.errors import ConfigError

        raise ConfigError("--limit goes with --benchmarks (eval_max_samples=N limits the eval task)")
    if args.benchmarks or config.eval.task:  # standard benchmarks (LLaMA-Factory eval YAMLs set `task`)
        from instill.evaluate.benchmarks import run_benchmarks

        run_benchmarks(config, args.benchmarks, args.limit, args.compare == "base", args.model, args.output)
        return 0
    from instill.evaluate.runner import run

    run(config, args.input, args.output, args.model, compare_base=args.compare == "base")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML file with LLaMA-Factory style keys (the one you trained with)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="override config keys")
    parser.add_argument("--input", metavar="FILE",
                        help="rows to run instead of eval_dataset (json/jsonl/csv/parquet; openai, sharegpt or alpaca)")
    parser.add_argument("--model", choices=("auto", "base", "tuned"), default="auto",
                        help="auto: the tuned model if there is one (adapter_name_or_path or output_dir), else the base")
    parser.add_argument("--output", metavar="DIR", help="where to write (default: output_dir/eval)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `instill predict` and `instill eval`."""
    predict = subparsers.add_parser(
        "predict", help="write predictions.jsonl for eval_dataset (or --input)",
        epilog="examples:\n  instill predict examples/demo_lora.yaml eval_dataset=demo_headlines_test val_size=0\n"
               "  instill predict my.yaml --input rows.jsonl --output out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(predict)
    predict.set_defaults(func=_predict)

    evaluate = subparsers.add_parser(
        "eval", help="predictions + task metrics (metrics.json, confusion matrix)",
        epilog="examples:\n  instill eval examples/demo_lora.yaml --compare base val_size=0 eval_dataset=demo_headlines_test "
               "eval_task=classification eval_mode=score labels=sports,business,science,politics\n"
               "  instill eval my.yaml --model base eval_max_samples=100\n"
               "  instill eval my.yaml --benchmarks mmlu,gsm8k --limit 100 --compare base benchmark_dir=benchmarks/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(evaluate)
    evaluate.add_argument("--compare", choices=("base",),
                          help="also run the base model and print base vs tuned side by side (comparison.json)")
    evaluate.add_argument("--benchmarks", metavar="NAMES",
                          help="standard benchmarks through lm-eval instead of the eval task, e.g. mmlu,cmmlu,gsm8k "
                               "(data: benchmark_dir; writes benchmarks.json)")
    evaluate.add_argument("--limit", type=int, metavar="N", help="with --benchmarks: at most N questions per task")
    evaluate.set_defaults(func=_eval)
