"""Provenance records: what they hold, and which differences count as able to move a reading."""

from __future__ import annotations

import copy
import json

import pytest

from evaluators.benchmarks import get_benchmark
from evaluators.config import EvalConfig
from evaluators.provenance import (base_model_record, evaluation_changes, evaluation_provenance, items_hash,
                                   judge_record, model_record)
from sweeps.provenance import changes, describe
from trainables.provenance import environment, reading_changes, summary


def test_the_environment_names_the_software_and_the_machine():
    import transformers

    env = environment()
    json.dumps(env)  # plain JSON, for an MLflow artifact
    assert env["packages"]["torch"] and "vllm" in env["packages"]  # vllm: None where it is not installed
    assert env["packages"]["transformers"] == transformers.__version__
    assert env["project"]["version"] and env["python"] and env["os"] and env["cpu"]
    assert env["gpu"] is None or env["gpu"]["count"] >= 1
    # Run from a checkout, the commit and whether it has uncommitted changes.
    assert env["project"]["commit"] is None or len(env["project"]["commit"]) == 40
    assert "transformers " + transformers.__version__ in summary(env)


def test_only_packages_that_move_readings_refuse_a_resume():
    env = environment()
    newer = copy.deepcopy(env)
    newer["packages"]["transformers"] = "99.0"
    newer["packages"]["mlflow"] = "99.0"  # records, never reads: not a change that moves a reading
    newer["project"]["commit"] = "0" * 40
    assert reading_changes(env, newer) == [f"transformers: {env['packages']['transformers']} -> 99.0"]
    assert reading_changes(env, env) == []


def test_items_hash_follows_the_items_actually_loaded():
    harmful = get_benchmark("tiny-harmful")
    assert items_hash(harmful.load(None)) == items_hash(harmful.load(None))
    assert items_hash(harmful.load(10)) != items_hash(harmful.load(None))


def test_judge_records_hash_the_rules_and_leave_credentials_out(tmp_path):
    plain = judge_record("refusal-patterns", {})
    assert len(plain["rules_hash"]) == 64 and plain["model"]["path"] is None
    # beaver-dam's rules include its threshold; its model is a local folder here, so its content is hashed.
    (tmp_path / "config.json").write_text("{}")
    strict = judge_record("beaver-dam", {"model_path": str(tmp_path), "threshold": 0.3, "hf_token": "hf_x"})
    loose = judge_record("beaver-dam", {"model_path": str(tmp_path), "threshold": 0.5})
    assert strict["rules_hash"] != loose["rules_hash"]
    assert strict["model"]["content_hash"] == loose["model"]["content_hash"] is not None
    assert "hf_token" not in strict["options"] and "hf_x" not in json.dumps(strict)
    # llama-guard's rules are its model's chat template: another template, another hash.
    (tmp_path / "chat_template.jinja").write_text("{{ messages }} policy A")
    first = judge_record("llama-guard", {"model_path": str(tmp_path)})["rules_hash"]
    (tmp_path / "chat_template.jinja").write_text("{{ messages }} policy B")
    assert judge_record("llama-guard", {"model_path": str(tmp_path)})["rules_hash"] != first


def test_a_hub_model_not_on_this_machine_has_no_hash_and_no_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = model_record("nobody/no-such-judge-model")
    assert record == {"path": "nobody/no-such-judge-model", "revision": None, "content_hash": None}


def test_base_model_record_keeps_the_tiny_seed():
    assert base_model_record("tiny://lrm?seed=2", "abc")["tiny_seed"] == 2
    assert base_model_record("tiny://lrm", "abc")["tiny_seed"] == 0
    assert "tiny_seed" not in base_model_record("/models/s1", None)


@pytest.fixture
def evaluation() -> dict:
    cfg = EvalConfig.model_validate({"benchmarks": ["tiny-arith", "tiny-harmful"], "limit": 8})
    loaded = {name: (get_benchmark(name), get_benchmark(name).load(cfg.limit)) for name in cfg.benchmarks}
    return evaluation_provenance(cfg, loaded, "tiny://lrm", "f" * 64)


def test_evaluation_changes_name_the_benchmark_the_judge_and_the_base_model(evaluation):
    assert [b["items"] for b in evaluation["benchmarks"]] == [8, 8]
    assert evaluation["benchmarks"][1]["source"].startswith("generated")
    assert evaluation_changes(evaluation, evaluation) == []
    moved = copy.deepcopy(evaluation)
    moved["benchmarks"][1]["items_hash"] = "0" * 64
    moved["judges"][0]["rules_hash"] = "1" * 64
    moved["base_model"]["content_hash"] = "2" * 64
    found = evaluation_changes(evaluation, moved)
    assert [line.split(":")[0] for line in found] == ["benchmark tiny-harmful items",
                                                      "judge refusal-patterns rules", "base model"]


def test_sweep_changes_and_the_pareto_line(evaluation):
    record = {"recorded_at": "now", "environment": environment(), "evaluation": evaluation}
    assert changes(record, record) == []
    line = describe(record)
    assert line.startswith("provenance: safetytax") and "refusal-patterns (rules" in line
    assert "tiny-harmful (8 items" in line
    assert describe(None).startswith("provenance: none recorded")
