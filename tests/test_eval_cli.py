"""`safetytax evaluate`: options become a validated EvalConfig, and bad input fails before Ray starts."""

from __future__ import annotations

import argparse

import pytest

from evaluators import cli
from evaluators.runner import EvalResult
from trainables.schema import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["evaluate", *argv])


def test_options_and_overrides_build_the_config(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("judge: beaver-dam\nlimit: 50\ngeneration:\n  max_new_tokens: 64\n")
    args = parse("--config", str(config), "--benchmarks", "tiny-arith, file:p.csv#question", "--limit", "3",
                 "--backend", "vllm", "--no-cache", "generation.thinking_budget=16")
    cfg = cli.config_from_args(args)
    assert cfg.benchmarks == ["tiny-arith", "file:p.csv#question"] and cfg.limit == 3 and cfg.backend == "vllm"
    assert cfg.judge == "beaver-dam" and cfg.cache_dir is None
    assert cfg.generation.max_new_tokens == 64 and cfg.generation.thinking_budget == 16
    assert args.model == "tiny://lrm"


def test_every_option_has_help():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    evaluate = sub.choices["evaluate"]
    assert all(action.help for action in evaluate._actions)
    assert "generation.thinking_budget" in evaluate.description


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "limit: Input should be greater than 0"),
    (["--judge", "gpt-judge"], "unknown judge 'gpt-judge'; known: refusal-patterns, beaver-dam, llama-guard"),
    (["--benchmarks", "tiny-arith,mmlu"], "unknown benchmark 'mmlu'"),
    (["generation.top_k=5"], "generation.top_k: unknown key"),
])
def test_bad_input_is_a_config_error_before_ray_starts(argv, message, tiny_model_dir):
    import ray

    args = parse("--model", str(tiny_model_dir), *argv)
    with pytest.raises(ConfigError, match=message):
        args.func(args)
    assert not ray.is_initialized()


def test_table_lists_metrics_and_headlines(tmp_path):
    result = EvalResult(metrics={"tiny-arith": {"accuracy": 87.5, "n": 8},
                                 "tiny-harmful": {"harmful_score": 25.0, "harmful_score_plus": 37.5, "n": 8}},
                        harmful_score=25.0, harmful_score_plus=37.5, reasoning_accuracy=87.5, refusal_rate=None,
                        judge="refusal-patterns", sample_files={}, cached=True, model_hash="ab" * 32)
    lines = cli.format_table(result).splitlines()
    assert lines[0].split() == ["benchmark", "accuracy", "harmful_score", "harmful_score_plus", "n"]
    assert lines[1].split() == ["tiny-arith", "87.5", "-", "-", "8"]
    assert lines[2].split() == ["tiny-harmful", "-", "25.0", "37.5", "8"]
    assert "reasoning_accuracy=87.5" in lines[4] and "refusal_rate" not in lines[4]
    assert "judge=refusal-patterns" in lines[5] and "cached=True" in lines[5]
