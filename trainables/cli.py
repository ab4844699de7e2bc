"""`safetytax train CONFIG.yaml [key=value ...]`: one alignment run on Ray Train, without Tune."""

from __future__ import annotations

import argparse

import yaml

from trainables.config import AlignConfig
from trainables.schema import field_help, load


def register(subparsers) -> None:
    """Add the `train` subcommand to the `safetytax` parser's subparsers."""
    options = "\n".join(f"  {key} (default {default}): {text}" for key, default, text in field_help(AlignConfig))
    parser = subparsers.add_parser(
        "train",
        help="Safety-align a model by SFT on Ray Train and print the checkpoint path.",
        description="Run one safety-alignment SFT run on Ray Train. Config keys (override any with key=value):\n"
                    + options,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="AlignConfig YAML file, e.g. trainables/configs/tiny_directrefusal.yaml.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="Dotted overrides parsed as YAML, e.g. train.learning_rate=5e-5 data.size=200.")
    parser.add_argument("--print-config", action="store_true",
                        help="Print the resolved config (file plus overrides, defaults filled in) and exit.")
    parser.add_argument("--quiet", action="store_true", help="Do not print per-step training progress.")
    parser.set_defaults(func=train_command, trailing_words="overrides")


def train_command(args: argparse.Namespace) -> int:
    """Run the `train` subcommand and return its exit code (ConfigError propagates to the CLI's handler)."""
    cfg = load(AlignConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    from trainables.align import run_alignment  # imports torch and Ray only when a run starts
    from trainables.data import training_examples
    from trainables.tiny.lrm import ensure_tiny_data, ensure_tiny_paths

    tiny_paths = [cfg.model, cfg.data.path, cfg.reasoning_data.path if cfg.reasoning_data else None]
    ensure_tiny_data(tiny_paths)  # seconds; then the data is checked before the model is built (minutes)
    training_examples(cfg.data, cfg.reasoning_data, cfg.reasoning_mix, cfg.train.seed)
    ensure_tiny_paths(tiny_paths)
    result = run_alignment(cfg, progress=not args.quiet)
    losses = result.step_losses
    print(f"trained {result.finetune} on {result.num_examples} examples, {len(losses)} steps, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    print(result.checkpoint_dir)
    return 0
