"""The `safetytax` command: train, evaluate, sweep and pareto.

Each layer registers its own subcommands; this module only wires them together and turns bad input
(ConfigError) into exit code 2 with the message, before any expensive work has started.
"""

from __future__ import annotations

import argparse
import sys

from trainables.schema import ConfigError, RunFailure

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every layer's subcommands registered."""
    from evaluators import cli as evaluate_cli
    from sweeps import commands as sweep_cli
    from trainables import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="safetytax",
        description="Map the Safety Tax: safety-align a reasoning model and measure what it costs in reasoning.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cli.register(sub)
    evaluate_cli.register(sub)
    sweep_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    parser = build_parser()
    # Overrides may follow options (`sweep x.yaml --resume num_samples=12`); argparse alone stops the
    # positional list at the first option, and parse_intermixed_args does not support subcommands.
    args, extra = parser.parse_known_args(argv)
    words = getattr(args, "trailing_words", None)
    if extra and (words is None or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, words).extend(extra)
    try:
        return args.func(args) or 0
    except ConfigError as err:
        print(f"safetytax {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailure as err:
        print(f"safetytax {args.command}: failed: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print(f"\nsafetytax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
