"""Every shipped sweep file loads, validates and says how to run it, so a broken YAML fails CI."""

from __future__ import annotations

from pathlib import Path

import pytest

import sweeps
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.params import grid_points

SWEEP_FILES = sorted(Path(sweeps.__file__).parent.glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.name for p in SWEEP_FILES])
def test_shipped_sweep_file_validates(path, monkeypatch):
    # The paper's benchmarks have a Hub source; loading a spec checks that they have one and downloads nothing.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    lines = path.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert any("safetytax sweep" in line for line in header), (
        f"{path.name} must begin with a comment giving the command that runs it")
    spec = load_spec(path)
    assert spec.search_space and len(spec.objectives) >= 2
    if spec.sampler == "grid":
        assert spec.num_samples <= grid_points(spec.search_space)


def test_embedded_default_matches_the_issue():
    spec = load_spec(TINY_SPEC)
    assert spec.base.model == "tiny://lrm"
    assert (spec.base.data.path, spec.base.data.format) == ("tiny://directrefusal.jsonl", "directrefusal")
    reasoning = spec.base.reasoning_data
    assert (reasoning.path, reasoning.format, reasoning.response_column, reasoning.thinking_column) == (
        "tiny://reasoning.jsonl", "pairs", "answer", "thinking")
    assert spec.base.finetune == "lora"
    assert {"tiny-arith", "tiny-harmful", "tiny-xstest"} <= set(spec.evaluation.benchmarks)
    assert spec.evaluation.judge == "refusal-patterns"
    assert spec.sampler == "auto" and spec.initial_points == [] and spec.num_samples >= 8
    assert {"data.size", "train.learning_rate", "train.epochs", "reasoning_mix"} <= set(spec.search_space)
    assert spec.directions() == {"harmful_score": "min", "reasoning_accuracy": "max"}
