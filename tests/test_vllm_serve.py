"""The vLLM backend for real: Ray Serve LLM with vLLM on CPU serves the tiny LRM and LoRA adapters from a bucket.

One engine serves the whole module: the base model on three benchmarks, three trial adapters loaded
dynamically from a local S3 bucket (moto on 127.0.0.1), the comparison with the transformers backend,
the bucket faults and, last, a replica killed mid-evaluation.
"""

from __future__ import annotations

import json

import pytest
from conftest import free_port
from s3_server import s3_server  # noqa: F401 - module fixture
from vllm_support import CPU_ENGINE, engine_replicas, requires_vllm, start_ray, stop_ray, wilson_interval

from evaluators.config import EvalConfig
from evaluators.service import EvaluationIncomplete, EvaluatorService
from trainables.schema import ConfigError, build

pytestmark = [requires_vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

BENCHMARKS = ["tiny-arith", "tiny-harmful", "tiny-xstest"]
LIMIT = 48


def make_cfg(port: int, backend: str, lora_dir: str | None, **overrides) -> EvalConfig:
    data = {"backend": backend, "benchmarks": BENCHMARKS, "limit": LIMIT, "http_port": port, "cache_dir": None,
            "dtype": "float32", "num_cpus_per_replica": 1, "max_batch_size": 16,
            "generation": {"max_new_tokens": 160}, "vllm": {**CPU_ENGINE, "lora_dir": lora_dir}}
    data.update(overrides)
    return build(EvalConfig, data)


def make_adapter(base_dir, out_dir, seed: int):
    """Save a rank-8 LoRA adapter with random (non-zero) weights: a stand-in for a trial's checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny_lrm() -> str:
    from trainables.tiny.lrm import ensure_tiny_lrm

    return str(ensure_tiny_lrm())  # built on first use, then cached


@pytest.fixture(scope="module")
def served(s3_server, tiny_lrm):  # noqa: F811 - the fixture
    """One vLLM app (one engine) for the module, with adapters in s3://sweeps/adapters."""
    lora_dir = s3_server.create_bucket("sweeps") + "/adapters"
    port = start_ray()
    try:
        with EvaluatorService(make_cfg(port, "vllm", lora_dir), tiny_lrm) as svc:
            yield svc
    finally:
        stop_ray()


def test_on_a_machine_without_gpus_the_cpu_build_picks_its_cpu_settings_and_says_so(tiny_lrm, tmp_path):
    # First in the module, before its own Ray starts: the command starts a session of its own, as a user's does.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VLLM_CPU_KVCACHE_SPACE")}
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "evaluate", "--model", tiny_lrm, "--benchmarks",
                          "tiny-arith", "--limit", "4", "--out-dir", str(tmp_path), "backend=vllm",
                          "generation.max_new_tokens=64", "vllm.max_model_len=512", f"http_port={free_port()}"],
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "no GPU here and the CPU build of vLLM is installed" in out.stdout
    assert "placement_bundles=[{CPU: 1}], dtype=float32" in out.stdout and "VLLM_CPU_KVCACHE_SPACE=1 GiB" in out.stdout
    assert "tiny-arith" in out.stdout and (tmp_path / "tiny-arith.jsonl").is_file()


@pytest.fixture(scope="module")
def base_result(served, tmp_path_factory):
    return served.evaluate(out_dir=tmp_path_factory.mktemp("vllm-base"))


def replies(result, benchmark: str) -> list[str]:
    lines = result.sample_files[benchmark].read_text().splitlines()
    return [json.loads(line)["output"] for line in lines]


def test_the_base_model_scores_on_the_three_tiny_benchmarks(base_result):
    metrics = base_result.metrics
    assert metrics["tiny-arith"]["accuracy"] >= 80.0 and metrics["tiny-arith"]["n"] == LIMIT
    # Stage 1 taught the tiny LRM to comply with harmful requests.
    assert metrics["tiny-harmful"]["harmful_score"] >= 60.0
    assert 0.0 <= metrics["tiny-xstest"]["refusal_rate"] <= 100.0 and metrics["tiny-xstest"]["n"] > 0
    assert base_result.reasoning_accuracy == metrics["tiny-arith"]["accuracy"]


def test_three_adapters_from_the_bucket_share_one_engine(served, base_result, s3_server, tiny_lrm,  # noqa: F811
                                                         tmp_path):
    engines_before = engine_replicas(served.app_name)
    assert len(engines_before) == 1
    readings = []
    for seed in range(3):
        adapter = make_adapter(tiny_lrm, tmp_path / f"trial-{seed}", seed)
        readings.append(served.evaluate(adapter=str(adapter), benchmarks=["tiny-arith"], out_dir=tmp_path / f"r{seed}"))
    # The trials' local checkpoints were published to the bucket, one folder each.
    listing = s3_server.client().list_objects_v2(Bucket="sweeps", Prefix="adapters/")["Contents"]
    folders = {item["Key"].split("/")[1] for item in listing} - {""}  # "" is the folder's own marker
    assert len(folders) == 3 and all((f"adapters/{f}/adapter_config.json" in {i["Key"] for i in listing})
                                     for f in folders)
    # Each adapter changed the replies, differently from the others.
    outputs = [tuple(replies(r, "tiny-arith")) for r in readings]
    assert len(set(outputs)) == 3 and tuple(replies(base_result, "tiny-arith")) not in outputs
    # The same single engine replica served the base model and the three adapters: one engine start.
    assert engine_replicas(served.app_name) == engines_before


def test_vllm_and_transformers_agree_within_the_intervals(served, base_result, tiny_lrm, tmp_path):
    cfg = make_cfg(served.cfg.http_port, "transformers", None)
    with EvaluatorService(cfg, tiny_lrm) as reference_svc:
        reference = reference_svc.evaluate(out_dir=tmp_path)
    report = {}
    for name in BENCHMARKS:
        ours, theirs = replies(base_result, name), replies(reference, name)
        identical = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
        for metric, value in reference.metrics[name].items():
            if metric == "n":
                continue
            n = reference.metrics[name]["n"]
            low, high = wilson_interval(round(value * n / 100), n)
            report[f"{name}/{metric}"] = {"vllm": base_result.metrics[name][metric], "transformers": value,
                                          "interval": (round(low, 1), round(high, 1)),
                                          "identical_replies": round(100 * identical, 1)}
            assert low - 1e-6 <= base_result.metrics[name][metric] <= high + 1e-6, (name, metric, report)
    print("backend agreement:", json.dumps(report))


def test_an_adapter_missing_from_the_bucket_names_the_path(served):
    with pytest.raises(ConfigError, match=r"s3://sweeps/adapters/trial-missing/adapter_config\.json does not exist"):
        served.evaluate(adapter="trial-missing", benchmarks=["tiny-arith"], limit=2)


def test_an_unreachable_bucket_names_the_path(served, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(ConfigError, match=r"cannot read s3://sweeps/adapters/trial-0/adapter_config\.json"):
        served.evaluate(adapter="trial-0", benchmarks=["tiny-arith"], limit=2)


def test_a_killed_engine_replica_gives_the_same_result_or_none(served, tmp_path, monkeypatch):
    """Last in the module: the engine restarts after this. Either the re-sent requests complete the run
    and the result equals the undisturbed one, or the run fails clearly and reports nothing."""
    import ray

    from evaluators import service

    reference = served.evaluate(benchmarks=["tiny-arith"], limit=LIMIT, out_dir=tmp_path / "reference")
    [engine] = engine_replicas(served.app_name)
    responses = {"before_kill": 0, "after_kill": 0}
    complete_all = service.complete_all

    # The kill comes at a point the test sees, whatever the machine's speed: right after the evaluation's
    # first reply arrives, while the rest of its requests are in flight or queued.
    def complete_all_with_a_kill(send, requests, on_response, **options):
        def answered(index, response):
            if responses["before_kill"] == 0:
                responses["before_kill"] = 1
                ray.kill(ray.get_actor(engine, namespace="serve"), no_restart=True)
            else:
                responses["after_kill"] += 1
            return on_response(index, response)

        return complete_all(send, requests, answered, **options)

    monkeypatch.setattr(service, "complete_all", complete_all_with_a_kill)
    try:
        result = served.evaluate(benchmarks=["tiny-arith"], limit=LIMIT, out_dir=tmp_path / "killed")
    except EvaluationIncomplete as err:
        assert "benchmark tiny-arith" in str(err) and "max_retries" in str(err)
        assert not (tmp_path / "killed" / "tiny-arith.jsonl").exists()
        print("killed engine: the run failed clearly:", err)
    else:
        assert result.metrics == reference.metrics
        assert (result.sample_files["tiny-arith"].read_text()
                == reference.sample_files["tiny-arith"].read_text())
        assert responses["after_kill"] >= LIMIT - 1  # the rest of the replies came after the kill
        print("killed engine: the re-sent requests completed the run, equal to the undisturbed one")
    assert responses["before_kill"] == 1, "the replica must be killed while the evaluation runs"
    assert engine_replicas(served.app_name) != [engine]
