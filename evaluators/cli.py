"""`safetytax evaluate`: score one model (or a LoRA adapter on it) on benchmarks through Ray Serve, print a table."""

from __future__ import annotations

import argparse

from evaluators.config import EvalConfig
from evaluators.metrics import HEADLINES
from evaluators.reading import Reading, is_interval_key
from trainables.schema import apply_overrides, build, field_help, read_yaml

METRIC_ORDER = ("accuracy", "harmful_score", "harmful_score_plus", "refusal_rate", "incoherent_rate")


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
    """Return the per-benchmark metrics with their 95% intervals as an aligned table, the headline numbers below."""
    columns = [m for m in METRIC_ORDER if any(m in row for row in result.metrics.values())]
    extra = sorted({k for row in result.metrics.values() for k in row
                    if k.startswith(("harmful_score/", "judge_agreement/", "judge_kappa/")) and not is_interval_key(k)})
    header = ["benchmark", *columns, *extra, "n"]
    rows = [[name, *(_reading(metrics, m) for m in [*columns, *extra]), str(metrics.get("n", ""))]
            for name, metrics in result.metrics.items()]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.append("")
    for name in HEADLINES:
        reading = result.readings.get(name)
        if reading is not None:
            lines.append(f"{name} = {reading.text()}  (n={'?' if reading.n is None else reading.n})")
    if result.incoherent_rate is not None:
        lines.append(f"incoherent_rate = {result.incoherent_rate:.1f}" + ("  COLLAPSED: most replies are not "
                                                                         "language" if result.collapsed else ""))
    lines.append(f"judge={', '.join(result.judges or [result.judge])}  cached={result.cached}  "
                 f"model_hash={result.model_hash[:12]}  intervals: 95% Wilson")
    return "\n".join(lines)


def _reading(metrics: dict, name: str) -> str:
    if name not in metrics:
        return "-"
    if name.startswith("judge_kappa/"):
        return f"{metrics[name]:.2f}"
    reading = Reading.read(metrics, name)
    return "-" if reading is None else reading.text()


def evaluate_command(args: argparse.Namespace) -> int:
    """Run the `evaluate` subcommand and return its exit code (ConfigError propagates to the CLI's handler)."""
    cfg = config_from_args(args)
    from evaluators.service import EvaluatorService  # imports Ray and torch only once the input is valid
    from trainables.tiny.lrm import ensure_tiny_paths, tiny_build_pending

    if tiny_build_pending([args.model]):  # minutes of building follow: check the benchmarks and judges first
        EvaluatorService.check_inputs(cfg)
    ensure_tiny_paths([args.model])  # builds the tiny LRM on first use, before Ray starts
    with EvaluatorService(cfg, args.model) as service:
        result = service.evaluate(adapter=args.adapter, out_dir=args.out_dir)
    print(format_table(result))
    for name, path in result.sample_files.items():
        print(f"samples {name}: {path}")
    return 0
