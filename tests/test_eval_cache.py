"""The result cache: content hashes, atomic entries, and a hit that generates nothing (without Ray)."""

from __future__ import annotations

import json

import pytest

from evaluators import cache as cache_module
from evaluators.benchmarks import get_benchmark
from evaluators.cache import ResultCache, content_hash, model_hash, result_key
from evaluators.judges import get_judge
from evaluators.metrics import headlines
from evaluators.runner import run_benchmark, score_replies
from trainables.formats import FORMATS


def make_folder(root, files: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_content_hash_follows_bytes_and_names_not_location(tmp_path):
    a = make_folder(tmp_path / "a", {"config.json": b"{}", "model.safetensors": b"\x00\x01"})
    b = make_folder(tmp_path / "b", {"config.json": b"{}", "model.safetensors": b"\x00\x01"})
    assert content_hash(a) == content_hash(b)
    (b / "model.safetensors").write_bytes(b"\x00\x02")
    assert content_hash(a) != content_hash(b)
    c = make_folder(tmp_path / "c", {"config.json": b"{}", "weights.safetensors": b"\x00\x01"})
    assert content_hash(a) != content_hash(c)


def test_an_adapter_is_hashed_together_with_its_base(tmp_path):
    base1 = make_folder(tmp_path / "base1", {"config.json": b"1"})
    base2 = make_folder(tmp_path / "base2", {"config.json": b"2"})
    adapter = make_folder(tmp_path / "adapter", {"adapter_config.json": b"{}"})
    digest1, digest2 = content_hash(base1), content_hash(base2)
    assert model_hash(digest1, adapter) != model_hash(digest2, adapter)
    assert model_hash(digest1, adapter) != model_hash(digest1) == digest1


def test_put_then_get_round_trips(tmp_path):
    cache = ResultCache(tmp_path)
    key = result_key(model="m", benchmark="tiny-arith", limit=3)
    assert cache.get(key) is None
    cache.put(key, {"accuracy": 50.0, "n": 2}, [{"id": "1"}, {"id": "2"}], about={"benchmark": "tiny-arith"})
    metrics, samples = cache.get(key)
    assert metrics == {"accuracy": 50.0, "n": 2}
    assert [json.loads(line)["id"] for line in samples.read_text().splitlines()] == ["1", "2"]
    assert result_key(model="m", benchmark="tiny-arith", limit=4) != key


def test_a_crash_while_storing_leaves_no_entry(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)

    def crash(*args):
        raise KeyboardInterrupt("killed while storing")

    monkeypatch.setattr(cache_module.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("ab" * 32, {"accuracy": 1.0, "n": 1}, [{"id": "1"}], about={})
    assert cache.get("ab" * 32) is None
    assert list((tmp_path / "ab").iterdir()) == []  # the staging folder is gone too
    monkeypatch.undo()
    cache.put("ab" * 32, {"accuracy": 1.0, "n": 1}, [{"id": "1"}], about={})
    assert cache.get("ab" * 32)[0] == {"accuracy": 1.0, "n": 1}


def test_caching_off_stores_nothing(tmp_path):
    cache = ResultCache(None)
    assert cache.put("k", {"n": 1}, [], about={}) is None and cache.get("k") is None


def test_a_cache_hit_generates_nothing(tmp_path):
    benchmark = get_benchmark("tiny-arith")
    samples = benchmark.load(3)
    calls = []

    def generate(prompts):
        calls.append(len(prompts))
        return ["<|im_start|>think\n...<|im_start|>answer\nAnswer: " + str(s.reference) for s in samples]

    cache = ResultCache(tmp_path / "cache")
    args = dict(fmt=FORMATS["s1"], judges=lambda: None, cache=cache, key="k" * 64, about={})
    first = run_benchmark(benchmark, samples, generate, out_file=tmp_path / "one.jsonl", **args)
    second = run_benchmark(benchmark, samples, generate, out_file=tmp_path / "two.jsonl", **args)
    assert calls == [3]
    assert first[0]["accuracy"] == 100.0 and first[0]["n"] == 3 and first[1] is False
    assert second == (first[0], True)
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "two.jsonl").read_text()


def test_records_carry_answer_grade_verdict_and_refusal():
    fmt = FORMATS["s1"]
    arith = get_benchmark("tiny-arith")
    sample = arith.load(1)[0]
    [record] = score_replies(arith, [sample], [f"<|im_start|>think\nx<|im_start|>answer\nAnswer: {sample.reference}"],
                             fmt, None)
    assert record["answer"] == f"Answer: {sample.reference}" and record["correct"] is True
    assert record["extracted"] == sample.reference

    harmful = get_benchmark("tiny-harmful")
    samples = harmful.load(2)
    outputs = ["<|im_start|>think\nI should not answer this question!<|im_start|>answer\nAnswer: I'm sorry, but I "
               "cannot help with that.", "<|im_start|>think\nok<|im_start|>answer\nAnswer: Sure! Step 1: go go go go"]
    refused, complied = score_replies(harmful, samples, outputs, fmt, {"refusal-patterns": get_judge("refusal-patterns")})
    assert (refused["flagged"], complied["flagged"]) == (False, True)
    assert (refused["incoherent"], complied["incoherent"]) == (False, True)
    assert set(complied) >= {"id", "prompt", "output", "answer", "flagged", "incoherent", "categories"}

    xstest = get_benchmark("tiny-xstest")
    [record] = score_replies(xstest, xstest.load(1), ["<|im_start|>think\nhm<|im_start|>answer\nAnswer: I cannot."],
                             fmt, None)
    assert record["refused"] is True


def test_headlines_average_over_benchmarks_of_a_kind():
    metrics = {"a": {"accuracy": 20.0, "n": 10}, "b": {"accuracy": 40.0, "n": 10},
               "h": {"harmful_score": 10.0, "harmful_score_plus": 15.0, "n": 20}}
    kinds = {"a": "reasoning", "b": "reasoning", "h": "safety"}
    top = headlines(metrics, kinds)
    assert (top["harmful_score"], top["harmful_score_plus"], top["reasoning_accuracy"], top["refusal_rate"]) == (
        10.0, 15.0, 30.0, None)
    assert top["reasoning_accuracy_n"] == 20 and top["reasoning_accuracy_ci_low"] < 30.0 < top["reasoning_accuracy_ci_high"]
