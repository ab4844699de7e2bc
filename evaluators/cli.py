"""`safetytax evaluate`: score one model (or a LoRA adapter on it) on benchmarks through Ray Serve, print a table."""

from __future__ import annotations

import argparse

from evaluators.config import EvalConfig
from trainables.schema import apply_overrides, build, field_help, read_yaml

METRIC_ORDER = ("accuracy", "harmful_score", "harmful_score_plus", "refusal_rate")


def register(subparsers) -> None:
    """Add the `evaluate` subcommand to the `safetytax` parser's subparsers."""
    options = "\n".join(f"  {key} (default {default}): {text}" for key, default, text in field_help(EvalConfig))
    parser = subparsers.add_parser(
        "evaluate",
        help="Score a model's reasoning accuracy and harmful score through Ray Serve and print a table.",
        description="Generate replies in Ray Serve and score them. Config keys (set in --config or as key=value):\n"
                    + options,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="tiny://lrm",
                        help="Model folder, hub id, or tiny://lrm (the embedded default, built on first use).")
    parser.add_argument("--adapter", help="LoRA adapter folder to apply to --model (a LoRA run's checkpoint).")
    parser.add_argument("--benchmarks",
                        help="Comma-separated benchmark names, e.g. tiny-arith,tiny-harmful or math500,beavertails; "
                             "file:PATH#COLUMN scores a CSV/JSONL of prompts. Default: the config's benchmarks.")
    parser.add_argument("--limit", type=int, help="Samples per benchmark (a quick run); default: each benchmark's set.")
    parser.add_argument("--judge", help="Safety judge: refusal-patterns (default), beaver-dam or llama-guard.")
    parser.add_argument("--backend", choices=["transformers", "vllm"], help="Generator backend (default transformers).")
    parser.add_argument("--config", help="EvalConfig YAML file; the options above override it.")
    parser.add_argument("--out-dir", help="Folder for the per-sample JSONL files (default: a new temporary folder).")
    parser.add_argument("--no-cache", action="store_true", help="Evaluate even when a cached result exists.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="Dotted config overrides parsed as YAML, e.g. generation.max_new_tokens=256.")
    parser.set_defaults(func=evaluate_command)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Return the EvalConfig of the YAML file, the key=value overrides and the named options, validated."""
    data = apply_overrides(read_yaml(args.config) if args.config else {}, args.overrides)
    if args.benchmarks:
        data["benchmarks"] = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    for key in ("limit", "judge", "backend"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.no_cache:
        data["cache_dir"] = None
    return build(EvalConfig, data, source=args.config or "(command line)")


def format_table(result) -> str:
    """Return the per-benchmark metrics as an aligned text table, with the headline numbers below."""
    columns = [m for m in METRIC_ORDER if any(m in row for row in result.metrics.values())]
    header = ["benchmark", *columns, "n"]
    rows = [[name, *(_cell(metrics.get(m)) for m in columns), str(metrics.get("n", ""))]
            for name, metrics in result.metrics.items()]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    headlines = {"reasoning_accuracy": result.reasoning_accuracy, "harmful_score": result.harmful_score,
                 "harmful_score_plus": result.harmful_score_plus, "refusal_rate": result.refusal_rate}
    lines.append("")
    lines.append("  ".join(f"{key}={_cell(value)}" for key, value in headlines.items() if value is not None))
    lines.append(f"judge={result.judge}  cached={result.cached}  model_hash={result.model_hash[:12]}")
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def evaluate_command(args: argparse.Namespace) -> int:
    """Run the `evaluate` subcommand and return its exit code (ConfigError propagates to the CLI's handler)."""
    cfg = config_from_args(args)
    from evaluators.service import EvaluatorService  # imports Ray and torch only once the input is valid

    with EvaluatorService(cfg, args.model) as service:
        result = service.evaluate(adapter=args.adapter, out_dir=args.out_dir)
    print(format_table(result))
    for name, path in result.sample_files.items():
        print(f"samples {name}: {path}")
    return 0
