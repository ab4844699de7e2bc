"""The evaluator through real Ray Serve on 127.0.0.1: LoRA variants of one base, batching, budget forcing, caching.

All tests share one Ray instance and one base-model deployment (module-scoped) to save start-up time.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from evaluators.config import EvalConfig  # noqa: E402
from evaluators.judges import llama_guard_prompt  # noqa: E402
from evaluators.served_judges import guard_requests  # noqa: E402
from evaluators.service import EvaluatorService, GenerationTimeout  # noqa: E402
from trainables.formats import FORMATS  # noqa: E402
from trainables.schema import ConfigError, build  # noqa: E402

S1 = FORMATS["s1"]


def make_adapter(model_dir, out_dir, seed: int):
    """Save a random LoRA adapter (init_lora_weights=False, so it changes the model's replies)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir


def make_cfg(port: int, cache_dir=None, **overrides) -> EvalConfig:
    data = {"benchmarks": ["tiny-arith", "tiny-harmful"], "limit": 4, "http_port": port,
            "cache_dir": str(cache_dir) if cache_dir else None, "num_cpus_per_replica": 0.25,
            "max_batch_size": 8, "generation": {"max_new_tokens": 24}}
    data.update(overrides)
    return build(EvalConfig, data)


@pytest.fixture(scope="module")
def service(http_port, lively_model_dir, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("eval-cache")
    with EvaluatorService(make_cfg(http_port, cache_dir), str(lively_model_dir)) as svc:
        yield svc


def stats(svc: EvaluatorService) -> dict:
    return serve.get_app_handle(svc.app_name).stats.remote().result()


def read_records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_deployment_serves_two_adapters_and_loads_the_base_once(service, lively_model_dir, tmp_path):
    adapter_a = make_adapter(lively_model_dir, tmp_path / "a", seed=1)
    adapter_b = make_adapter(lively_model_dir, tmp_path / "b", seed=2)
    base = service.evaluate(out_dir=tmp_path / "base")
    a = service.evaluate(adapter=str(adapter_a), out_dir=tmp_path / "ra")
    b = service.evaluate(adapter=str(adapter_b), out_dir=tmp_path / "rb")
    outputs = {name: [r["output"] for r in read_records(result.sample_files["tiny-arith"])]
               for name, result in [("base", base), ("a", a), ("b", b)]}
    assert outputs["a"] != outputs["b"] and outputs["a"] != outputs["base"] and outputs["b"] != outputs["base"]
    assert len({base.model_hash, a.model_hash, b.model_hash}) == 3
    counters = stats(service)
    assert counters["base_loads"] == 1 and counters["adapter_loads"] == 2
    # The base reply is the same after adapters were loaded: they are switched off for base requests.
    again = service.evaluate(benchmarks=["tiny-arith"], out_dir=tmp_path / "again")
    assert [r["output"] for r in read_records(again.sample_files["tiny-arith"])] == outputs["base"]


def test_batched_replies_equal_one_at_a_time_greedy_replies(service):
    handle = serve.get_app_handle(service.app_name)
    prompts = [f"<|im_start|>user\nWhat is {i * 137} + {i}?{'!' * i}<|im_end|>\n<|im_start|>assistant\n"
               for i in range(8)]
    requests = [{"prompt": p, "max_tokens": 20, "temperature": 0.0, "stop": ["<|im_end|>"]} for p in prompts]
    before = len(stats(service)["batch_sizes"])
    batched = [r.result()["choices"][0]["text"] for r in [handle.completions.remote(q) for q in requests]]
    single = [handle.completions.remote(q).result()["choices"][0]["text"] for q in requests]
    sizes = stats(service)["batch_sizes"][before:]
    assert max(sizes) > 1 and sizes[-len(requests):] == [1] * len(requests)
    assert batched == single
    assert len(set(single)) > 1  # the prompts lead to different replies, so padding mistakes would show


def test_thinking_budget_forces_the_answer_marker(http_port, lively_model_dir, tmp_path):
    cfg = make_cfg(http_port, benchmarks=["tiny-arith"], generation={"max_new_tokens": 20, "thinking_budget": 5})
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        result = svc.evaluate(out_dir=tmp_path)
    for record in read_records(result.sample_files["tiny-arith"]):
        thinking, answer = S1.split(record["output"])
        assert answer is not None and record["answer"] == answer
        assert len(thinking) <= 5  # five character tokens, then the forced <|im_start|>answer
        assert record["output"].startswith(S1.think_prefill)


def test_a_cache_hit_does_no_generation(service, tmp_path):
    first = service.evaluate(benchmarks=["tiny-harmful"], limit=3, out_dir=tmp_path / "first")
    started = stats(service)["requests_started"]
    second = service.evaluate(benchmarks=["tiny-harmful"], limit=3, out_dir=tmp_path / "second")
    assert stats(service)["requests_started"] == started
    assert second.cached and second.metrics == first.metrics
    assert second.sample_files["tiny-harmful"].read_text() == first.sample_files["tiny-harmful"].read_text()
    other_limit = service.evaluate(benchmarks=["tiny-harmful"], limit=2, out_dir=tmp_path / "third")
    assert not other_limit.cached and stats(service)["requests_started"] > started


def test_result_has_headlines_judge_and_per_sample_rows(service, tmp_path):
    result = service.evaluate(benchmarks=["tiny-arith", "tiny-harmful", "tiny-xstest"], limit=2, out_dir=tmp_path)
    assert result.judge == "refusal-patterns"
    assert result.reasoning_accuracy == result.metrics["tiny-arith"]["accuracy"]
    assert result.harmful_score == result.metrics["tiny-harmful"]["harmful_score"]
    assert result.refusal_rate == result.metrics["tiny-xstest"]["refusal_rate"]
    harmful = read_records(result.sample_files["tiny-harmful"])
    assert len(harmful) == 2 and {"flagged", "incoherent", "categories", "answer"} <= set(harmful[0])
    assert "correct" in read_records(result.sample_files["tiny-arith"])[0]
    assert "refused" in read_records(result.sample_files["tiny-xstest"])[0]


def test_http_proxy_answers_on_localhost(service, http_port):
    body = {"prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "max_tokens": 4}
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/{service.app_name}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert EvalConfig().http_host == "127.0.0.1"


def test_a_full_weights_model_gets_its_own_app_for_the_call(service, char_tokenizer, tmp_path):
    from trainables.tiny.model import build_tiny_model

    build_tiny_model(char_tokenizer, seed=7, initializer_range=0.3).save_pretrained(tmp_path / "full")
    char_tokenizer.save_pretrained(tmp_path / "full")
    loads = stats(service)["base_loads"]
    result = service.evaluate(model=str(tmp_path / "full"), benchmarks=["tiny-arith"], limit=2, out_dir=tmp_path)
    assert result.metrics["tiny-arith"]["n"] == 2
    apps = serve.status().applications
    assert service.app_name in apps and not any("-model-" in name for name in apps)
    assert stats(service)["base_loads"] == loads


def test_a_generation_timeout_names_the_benchmark_and_setting(http_port, lively_model_dir):
    cfg = make_cfg(http_port, benchmarks=["tiny-arith"], request_timeout_s=0.001)
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        with pytest.raises(GenerationTimeout, match="benchmark tiny-arith.*request_timeout_s=0.001"):
            svc.evaluate()


@pytest.mark.parametrize("overrides, message", [
    ({"benchmarks": ["tiny-arith", "mmlu"]}, "unknown benchmark 'mmlu'; known: tiny-arith, aime24"),
    ({"judge": "gpt-judge"}, "unknown judge 'gpt-judge'; known: refusal-patterns"),
    ({"benchmarks": ["file:/nonexistent/prompts.csv#question"]}, "prompts.csv"),
])
def test_bad_input_fails_before_serve_starts_an_app(http_port, lively_model_dir, overrides, message):
    apps = set(serve.status().applications)
    with pytest.raises(ConfigError, match=message):
        EvaluatorService(make_cfg(http_port, **overrides), str(lively_model_dir))
    assert set(serve.status().applications) == apps


def test_model_paths_that_do_not_load_are_named(http_port, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"model {tmp_path / 'empty'}: .*has no config.json"):
        EvaluatorService(make_cfg(http_port), str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="does not exist"):
        EvaluatorService(make_cfg(http_port), str(tmp_path / "missing"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        EvaluatorService(make_cfg(http_port), "nobody-here/not-a-cached-model")


def test_an_adapter_folder_without_adapter_config_is_named(service, tmp_path):
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        service.evaluate(adapter=str(tmp_path))


def test_real_benchmark_samples_run_end_to_end(http_port, lively_model_dir, shared_data, tmp_path):
    cfg = make_cfg(http_port, benchmarks=["math500", "aime24", "beavertails", "xstest"], limit=2,
                   data_dir=str(shared_data), generation={"max_new_tokens": 16})
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        result = svc.evaluate(out_dir=tmp_path)
    assert {name: m["n"] for name, m in result.metrics.items()} == {"math500": 2, "aime24": 2, "beavertails": 2,
                                                                    "xstest": 2}
    first_problem = json.loads((shared_data / "math500_test.jsonl").read_text().splitlines()[0])["problem"]
    assert first_problem in read_records(result.sample_files["math500"])[0]["prompt"]
    for value in (result.reasoning_accuracy, result.harmful_score, result.harmful_score_plus, result.refusal_rate):
        assert 0.0 <= value <= 100.0


def test_cli_prints_a_table_of_metrics(http_port, lively_model_dir, tmp_path, capsys):
    import argparse

    from evaluators import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--model", str(lively_model_dir), "--benchmarks", "tiny-arith,tiny-harmful",
                              "--limit", "2", "--no-cache", "--out-dir", str(tmp_path), f"http_port={http_port}",
                              "num_cpus_per_replica=0.25", "generation.max_new_tokens=12"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["benchmark", "accuracy", "harmful_score", "harmful_score_plus", "incoherent_rate", "n"]
    assert lines[1].startswith("tiny-arith") and lines[1].split()[-1] == "2"
    assert lines[2].startswith("tiny-harmful") and "judge=refusal-patterns" in "\n".join(lines)
    assert (tmp_path / "tiny-harmful.jsonl").is_file()


def tiny_moderation_model(path, tokenizer, flagged_category: str):
    """Save a 14-label classifier that puts `flagged_category` above 0.5 for every pair (beaver-dam's shape)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from evaluators.beaver_dam import CATEGORIES

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=len(CATEGORIES),
                         id2label=dict(enumerate(CATEGORIES)), label2id={c: i for i, c in enumerate(CATEGORIES)},
                         problem_type="multi_label_classification", pad_token_id=tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        # Zero attention and MLP outputs and every embedding but EOS: the pooled state is EOS's alone.
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[tokenizer.eos_token_id] = 1.0
        model.score.weight.zero_()
        model.score.weight[CATEGORIES.index(flagged_category)] = 0.5
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_beaver_dam_runs_as_its_own_deployment(http_port, lively_model_dir, char_tokenizer, tmp_path):
    theft = "financial_crime,property_crime,theft"
    judge_model = tiny_moderation_model(tmp_path / "judge", char_tokenizer, theft)
    cfg = make_cfg(http_port, benchmarks=["tiny-harmful"], limit=3, judge="beaver-dam", judge_num_gpus=0,
                   judge_options={"model_path": str(judge_model), "dtype": "float32"})
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        svc.start()  # evaluate() would start it on first need; started here to see the judge's own app
        assert svc.judge_apps["beaver-dam"] in serve.status().applications
        result = svc.evaluate(out_dir=tmp_path / "out")
    # The lively model's random replies may read as babble; harmful_score counts only the coherent ones.
    assert result.judge == "beaver-dam" and result.metrics["tiny-harmful"]["harmful_score_plus"] == 100.0
    for record in read_records(result.sample_files["tiny-harmful"]):
        assert record["flagged"] is True and len(record["categories"]) == 14
        assert record["categories"][theft] > 0.5 and record["categories"]["self_harm"] == pytest.approx(0.5)
    assert svc.judge_apps["beaver-dam"] not in serve.status().applications


def test_two_judges_score_the_same_replies(http_port, lively_model_dir, char_tokenizer, tmp_path):
    from evaluators.stats import agreement

    judge_model = tiny_moderation_model(tmp_path / "judge", char_tokenizer, "financial_crime,property_crime,theft")
    cfg = make_cfg(http_port, benchmarks=["tiny-harmful"], limit=4, judges=["beaver-dam", "refusal-patterns"],
                   judge_num_gpus=0, judge_options={"beaver-dam": {"model_path": str(judge_model), "dtype": "float32"}})
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        result = svc.evaluate(out_dir=tmp_path / "out")
    metrics = result.metrics["tiny-harmful"]
    records = read_records(result.sample_files["tiny-harmful"])
    beaver = [r["verdicts"]["beaver-dam"]["flagged"] for r in records]
    patterns = [r["verdicts"]["refusal-patterns"]["flagged"] for r in records]
    assert all(beaver) and [r["flagged"] for r in records] == beaver  # the first judge is the objective's
    coherent = [not r["incoherent"] for r in records]
    assert metrics["harmful_score/beaver-dam"] == 100.0 * sum(b and c for b, c in zip(beaver, coherent)) / 4
    assert metrics["harmful_score/refusal-patterns"] == 100.0 * sum(p and c for p, c in zip(patterns, coherent)) / 4
    assert metrics["harmful_score"] == metrics["harmful_score/beaver-dam"]
    percent, kappa = agreement(beaver, patterns)
    assert metrics["judge_agreement/beaver-dam_vs_refusal-patterns"] == percent
    assert metrics["judge_kappa/beaver-dam_vs_refusal-patterns"] == kappa
    assert result.judges == ["beaver-dam", "refusal-patterns"] and result.judge == "beaver-dam"


LLAMA_GUARD_TEMPLATE = Path(__file__).parent / "assets" / "llama_guard_3_chat_template.jinja"


def tiny_guard_model(path: Path, char_tokenizer, verdict: str | None) -> Path:
    """A Llama (Llama Guard 3's architecture) with Llama Guard 3's prompt format, answering `verdict` greedily.

    With attention and MLP outputs zeroed and one-hot embeddings, each position's logits depend on its own
    token alone, so lm_head is a table of next tokens: the prompt's last character starts `verdict`, each
    of its characters leads to the next, its last one to the end of the turn. verdict None: random weights,
    whose reply is neither 'safe' nor 'unsafe'.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(char_tokenizer)
    config = LlamaConfig(vocab_size=vocab, hidden_size=288, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         eos_token_id=char_tokenizer.eos_token_id, pad_token_id=char_tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if verdict is not None:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.model.embed_tokens.weight.zero_()
            model.model.embed_tokens.weight.copy_(torch.eye(vocab, 288))
            model.lm_head.weight.zero_()
            ids = [char_tokenizer.convert_tokens_to_ids(c) for c in ["\n", *verdict]]
            for current, following in zip(ids, [*ids[1:], char_tokenizer.eos_token_id]):
                model.lm_head.weight[following, current] = 1.0
    model.save_pretrained(path)
    char_tokenizer.chat_template = LLAMA_GUARD_TEMPLATE.read_text()
    try:
        char_tokenizer.save_pretrained(path)
    finally:
        from trainables.tiny.tokenizer import CHAT_TEMPLATE

        char_tokenizer.chat_template = CHAT_TEMPLATE
    return path


def test_llama_guard_runs_through_serve_as_a_sweep_runs_it(http_port, lively_model_dir, char_tokenizer, tmp_path):
    # Its model served as a generator app, prompted through its own chat template, its replies parsed.
    unsafe = tiny_guard_model(tmp_path / "guard-unsafe", char_tokenizer, "unsafe")
    cfg = make_cfg(http_port, benchmarks=["tiny-harmful"], limit=3, judge="llama-guard",
                   judge_options={"model_path": str(unsafe)})
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        svc.start()
        assert svc.judge_apps["llama-guard"] in serve.status().applications
        prompt = guard_requests(svc._tokenizer(str(unsafe)), [llama_guard_prompt("q", "a")])[0]["prompt"]
        assert "Provide your safety assessment for ONLY THE LAST Agent message" in prompt and "\nAgent: a\n" in prompt
        result = svc.evaluate(out_dir=tmp_path / "out")
    assert result.judge == "llama-guard" and result.metrics["tiny-harmful"]["harmful_score_plus"] == 100.0
    assert all(record["flagged"] is True for record in read_records(result.sample_files["tiny-harmful"]))


def test_a_judge_reply_that_does_not_parse_fails_the_evaluation_instead_of_counting_as_safe(
        http_port, lively_model_dir, char_tokenizer, tmp_path):
    babbling = tiny_guard_model(tmp_path / "guard-random", char_tokenizer, None)
    cfg = make_cfg(http_port, benchmarks=["tiny-harmful"], limit=2, judge="llama-guard",
                   judge_options={"model_path": str(babbling)})
    with EvaluatorService(cfg, str(lively_model_dir)) as svc:
        with pytest.raises(ValueError, match="neither 'safe' nor 'unsafe'"):
            svc.evaluate(out_dir=tmp_path / "out")


def test_a_raced_evaluation_stops_after_a_slice_and_a_later_one_generates_only_the_rest(service, tmp_path):
    from evaluators.racing import Race, slice_order

    plain = service.evaluate(benchmarks=["tiny-arith", "tiny-harmful"], limit=8, out_dir=tmp_path / "plain")
    seen = []
    started = stats(service)["requests_started"]
    raced = service.evaluate(benchmarks=["tiny-arith", "tiny-harmful"], limit=8, out_dir=tmp_path / "raced",
                             race=Race(4, lambda result: seen.append(dict(result.counts)) or "ruled out"))
    first_slice = stats(service)["requests_started"] - started
    assert raced.race_stop == {"slices_read": 1, "slices": 4, "reason": "ruled out"}
    # The reading keeps its honest n: the 2 items of the first slice of each benchmark, a seeded random pair.
    assert seen == [{"harmful_score": 2, "harmful_score_plus": 2, "reasoning_accuracy": 2}]
    assert raced.counts["harmful_score"] == 2 and raced.counts["reasoning_accuracy"] == 2
    plain_rows = read_records(plain.sample_files["tiny-harmful"])
    raced_rows = read_records(raced.sample_files["tiny-harmful"])
    assert [r["id"] for r in raced_rows] == [plain_rows[i]["id"] for i in slice_order("tiny-harmful", 8, 4)[0]]
    assert first_slice > 0

    # Completed later: the first slice's replies come from the cache; the whole reads as the plain evaluation.
    started = stats(service)["requests_started"]
    complete = service.evaluate(benchmarks=["tiny-arith", "tiny-harmful"], limit=8, out_dir=tmp_path / "complete",
                                race=Race(4, lambda result: None))
    rest = stats(service)["requests_started"] - started
    assert complete.race_stop is None and complete.counts["harmful_score"] == 8
    assert [r["output"] for r in read_records(complete.sample_files["tiny-harmful"])] == [r["output"] for r in plain_rows]
    assert complete.metrics == plain.metrics
    assert 0 < rest
    started = stats(service)["requests_started"]
    again = service.evaluate(benchmarks=["tiny-arith", "tiny-harmful"], limit=8, out_dir=tmp_path / "again",
                             race=Race(4, lambda result: None))
    assert stats(service)["requests_started"] == started and again.metrics == plain.metrics
