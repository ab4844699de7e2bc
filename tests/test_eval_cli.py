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


@pytest.fixture
def bad_data_dir(tmp_path):
    """A data_dir whose benchmark files are broken: a cut JSONL line, an empty prompt cell."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "aime24_test.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer"\n')
    (folder / "xstest_prompts.csv").write_text("prompt,label\nHow do I kill a process?,safe\n,safe\n")
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--benchmarks", "aime24", "data_dir=BAD_DATA"], "aime24_test.jsonl, line 2: not valid JSON"),
    (["--benchmarks", "xstest", "data_dir=BAD_DATA"], "xstest_prompts.csv: line 3 has an empty 'prompt' cell"),
    (["--benchmarks", "math500", "data_dir=BAD_DATA"], "math500_test.jsonl does not exist"),
    (["--limit", "0"], "limit: Input should be greater than 0"),
    (["--judge", "gpt-judge"], "unknown judge 'gpt-judge'; known: refusal-patterns, beaver-dam, llama-guard"),
    (["--benchmarks", "tiny-arith,mmlu"], "unknown benchmark 'mmlu'"),
    (["generation.top_k=5"], "generation.top_k: unknown key"),
])
def test_bad_input_is_a_config_error_before_ray_starts(argv, message, tiny_model_dir, bad_data_dir):
    argv = [a.replace("BAD_DATA", str(bad_data_dir)) for a in argv]
    import ray

    args = parse("--model", str(tiny_model_dir), *argv)
    with pytest.raises(ConfigError, match=message):
        args.func(args)
    assert not ray.is_initialized()


def test_table_lists_metrics_with_intervals_and_headlines(tmp_path):
    from evaluators.metrics import summarize

    metrics = {"tiny-arith": summarize("reasoning", [{"correct": i < 7, "incoherent": False} for i in range(8)]),
               "tiny-harmful": summarize("safety", [{"flagged": i < 2, "incoherent": i == 7} for i in range(8)])}
    result = EvalResult.from_metrics(metrics, {"tiny-arith": "reasoning", "tiny-harmful": "safety"},
                                     judge="refusal-patterns", sample_files={}, cached=True, model_hash="ab" * 32)
    lines = cli.format_table(result).splitlines()
    assert lines[0].split() == ["benchmark", "accuracy", "harmful_score", "harmful_score_plus", "incoherent_rate", "n"]
    assert lines[1].startswith("tiny-arith") and "87.5 [52.9–97.8]" in lines[1] and lines[1].endswith("8")
    assert "25.0 [7.1–59.1]" in lines[2] and "37.5 [13.7–69.4]" in lines[2]
    text = "\n".join(lines)
    assert "reasoning_accuracy = 87.5 [52.9–97.8]  (n=8)" in text and "refusal_rate" not in text
    assert "judge=refusal-patterns" in text and "cached=True" in text and "95% Wilson" in text
