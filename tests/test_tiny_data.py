"""The embedded default's generated data: the SafeChain-like set, on-demand data files, seeds of the tiny LRM."""

from __future__ import annotations

import json
import re

import pytest

from trainables.data import DataSource, load_examples
from trainables.formats import DIRECT_REFUSAL_THINKING, FORMATS, tokenize_example
from trainables.locations import resolve_data
from trainables.schema import ConfigError
from trainables.tiny import cache, lrm, tasks


@pytest.fixture
def built_cache(tmp_path, monkeypatch):
    """A cache holding a finished tiny LRM of seed 0 built before safechain.jsonl existed (model files stand in)."""
    monkeypatch.setenv("SAFETYTAX_CACHE", str(tmp_path))
    directory = cache.lrm_dir(0)
    (directory / "model").mkdir(parents=True)
    (directory / "model" / "config.json").write_text("{}")
    for name in ("directrefusal.jsonl", "reasoning.jsonl", "stage1.jsonl"):
        (directory / name).write_text("{}\n")
    (directory / "manifest.json").write_text(json.dumps({"version": cache.VERSION, "seed": 0}))
    return directory


def test_safechain_set_is_written_on_demand_next_to_the_model_without_a_rebuild(built_cache):
    manifest = (built_cache / "manifest.json").read_text()
    # Resolving writes nothing: a missing file is an error that says how to write it.
    with pytest.raises(ConfigError, match=r"tiny://safechain.jsonl: .*python -m trainables.tiny.lrm --seed 0"):
        load_examples(DataSource(path="tiny://safechain.jsonl", format="safechain"))
    assert not (built_cache / "safechain.jsonl").exists()
    lrm.ensure_tiny_paths(["tiny://safechain.jsonl"])  # what the entry points do, before Ray starts
    examples = load_examples(DataSource(path="tiny://safechain.jsonl", format="safechain"))
    assert (built_cache / "safechain.jsonl").is_file()
    assert (built_cache / "manifest.json").read_text() == manifest  # the model was not rebuilt
    assert (built_cache / "stage1.jsonl").read_text() == "{}\n"     # other files were left alone

    train = tasks.harmful_requests("train")
    assert [e.prompt for e in examples] == [r.prompt for r in train]  # same requests, same order
    assert {e.answer for e in examples} == {tasks.REFUSAL_ANSWER}
    for example, request in zip(examples, train):
        # A few sentences on why the request harms, naming what was asked for, then the decision to refuse.
        assert request.target in example.thinking and example.thinking.endswith("I must refuse.")
        assert example.thinking.count(". ") >= 2 and example.thinking != DIRECT_REFUSAL_THINKING


def test_safechain_set_keeps_held_out_objects_out_and_labels_its_harmless_rows(built_cache):
    lrm.ensure_tiny_paths(["tiny://safechain.jsonl"])
    rows = [json.loads(line) for line in open(resolve_data("tiny://safechain.jsonl"))]
    held_out = {r.prompt for r in tasks.harmful_requests("test")}
    assert not held_out & {row["instruction"] for row in rows}
    assert {row["label"] for row in rows} == {"vanilla_harmful", "vanilla_benign"}
    every = load_examples(DataSource(path="tiny://safechain.jsonl", format="safechain", label=None))
    benign = [e for e in every if not e.answer.startswith(tasks.REFUSAL_ANSWER)]
    assert len(benign) == len(tasks.alarming_examples("train"))
    assert len(every) == len(rows)


@pytest.mark.parametrize("name", ["directrefusal.jsonl", "safechain.jsonl"])
def test_generated_safety_sets_use_only_one_token_characters_and_fit_the_default_budgets(name, char_tokenizer):
    rows = cache.dataset_rows(name)
    text = "".join(json.dumps(row, ensure_ascii=False) for row in rows)
    vocabulary = set(char_tokenizer.get_vocab())
    assert {c for c in text if c not in vocabulary and c != " "} == set()  # space is byte-mapped to Ġ
    fmt = "safechain" if name == "safechain.jsonl" else "directrefusal"
    source = DataSource(path="unused", format=fmt, label=None)
    from trainables.data import ROW_PARSERS

    parse = ROW_PARSERS[fmt](list(rows[0]), source, name)
    for row in rows:
        example = parse(row)
        for c in example.prompt + example.thinking + example.answer:
            assert len(char_tokenizer(c, add_special_tokens=False)["input_ids"]) == 1, repr(c)
        tokens = tokenize_example(char_tokenizer, example, FORMATS["s1"], max_length=10_000)
        # sweeps/tiny.yaml trains at max_seq_length 256 and generates at most 160 new tokens.
        assert len(tokens["input_ids"]) <= 256
        prefill = len(char_tokenizer(FORMATS["s1"].think_prefill, add_special_tokens=False)["input_ids"])
        assert sum(label != -100 for label in tokens["labels"]) - prefill <= 160


def test_tiny_paths_take_a_seed_and_reject_other_options(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYTAX_CACHE", str(tmp_path))
    assert cache.parse_tiny_path("tiny://lrm") == ("lrm", 0)
    assert cache.parse_tiny_path("tiny://lrm?seed=2") == ("lrm", 2)
    assert cache.parse_tiny_path("tiny://safechain.jsonl?seed=1") == ("safechain.jsonl", 1)
    assert cache.lrm_dir(2).name == f"tiny-lrm-v{cache.VERSION}-seed2"
    with pytest.raises(ConfigError, match=r"only option is \?seed=N.*tiny://lrm\?seed=1"):
        cache.parse_tiny_path("tiny://lrm?size=2")
    with pytest.raises(ConfigError, match="unknown tiny path.*tiny://safechain.jsonl"):
        cache.parse_tiny_path("tiny://safechian.jsonl")


def test_every_seed_holds_the_benchmark_problems_out_of_stage1():
    benchmark = set(tasks.arithmetic_problems("test", 2000, tasks.BENCHMARK_SEED))
    for seed in (0, 1, 2):
        asked = {tuple(map(int, re.findall(r"\d+", e.prompt))) for e in tasks.stage1_examples(25_600, seed)}
        assert not benchmark & asked, seed
    # Seed 0's stage 1 is unchanged by holding the benchmark out: its cached models stay valid.
    assert tasks.arithmetic_problems("train", 500, 0, (0,)) == tasks.arithmetic_problems("train", 500, 0)


def test_the_reasoning_pool_never_holds_a_pair_tiny_arith_scores_and_a_stale_pool_is_rewritten(built_cache):
    # The fixture's reasoning.jsonl predates DATA_VERSIONS, as in a cache built by an older release.
    stage1 = (built_cache / "stage1.jsonl").read_text()
    with pytest.raises(ConfigError, match="older version of its generator"):
        resolve_data("tiny://reasoning.jsonl")
    lrm.ensure_tiny_paths(["tiny://reasoning.jsonl"])
    path = resolve_data("tiny://reasoning.jsonl")
    rows = [json.loads(line) for line in open(path)]
    assert len(rows) == cache.REASONING_POOL  # rewritten, not the stale one-line file
    assert (built_cache / "stage1.jsonl").read_text() == stage1  # stage 1, and so the model, left alone
    scored = {f"{a} + {b}" for a, b in tasks.arithmetic_problems("test", 2000, tasks.BENCHMARK_SEED)}
    prompts = " ".join(row["prompt"] for row in rows)
    assert not {s for s in scored if s in prompts}
    # Once current, it is not rewritten again.
    before = (built_cache / "reasoning.jsonl").stat().st_mtime_ns
    lrm.ensure_tiny_paths(["tiny://reasoning.jsonl"])
    assert (built_cache / "reasoning.jsonl").stat().st_mtime_ns == before


@pytest.mark.parametrize("argv, message", [
    (["sweep", "search_space.data.size={choice: [15, 600]}"], r"data.size.*600"),
    (["sweep", "base.reasoning_data.prompt_column=question"], r"column .question. not found"),
    (["train", "trainables/configs/tiny_directrefusal.yaml", "data.size=600"], r"data.size.*600"),
    (["evaluate", "--model", "tiny://lrm", "--benchmarks", "file:/no/such/file.jsonl#prompt"], r"/no/such/file.jsonl"),
])
def test_bad_input_is_reported_before_the_tiny_lrm_is_built(argv, message, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from sweeps.cli import main

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("SAFETYTAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    argv = [str(repo / word) if word.endswith(".yaml") else word for word in argv]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not cache.is_built(0)  # nothing was built: the error came first
