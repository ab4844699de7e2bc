"""The vLLM backend's LLMConfig and requests, built from plain data and tested without vLLM installed."""

from __future__ import annotations

import importlib.util

import pytest

from evaluators import vllm_backend
from evaluators.config import EvalConfig
from evaluators.generation import ReplyPlanner
from trainables.schema import ConfigError, build

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def make_cfg(**overrides) -> EvalConfig:
    data = {"backend": "vllm", "dtype": "bfloat16", "num_replicas": 2, "max_batch_size": 16,
            "vllm": {"tensor_parallel_size": 2, "max_model_len": 8192, "max_loras": 3, "max_lora_rank": 32,
                     "gpu_memory_utilization": 0.85, "accelerator_type": "H100",
                     "engine_kwargs": {"enforce_eager": True}}}
    data.update(overrides)
    return build(EvalConfig, data)


def test_llm_config_carries_engine_lora_and_deployment_settings():
    config = vllm_backend.build_llm_config(make_cfg(), "/models/s1.1-32B", "s3://bucket/sweep-7/adapters/")
    assert config["model_loading_config"] == {"model_id": "s1.1-32B", "model_source": "/models/s1.1-32B"}
    engine = config["engine_kwargs"]
    assert engine["tensor_parallel_size"] == 2 and engine["max_model_len"] == 8192
    assert engine["dtype"] == "bfloat16" and engine["trust_remote_code"] is False
    assert engine["enable_lora"] is True and engine["max_loras"] == 3 and engine["max_lora_rank"] == 32
    assert engine["gpu_memory_utilization"] == 0.85 and engine["enforce_eager"] is True
    assert config["lora_config"] == {"dynamic_lora_loading_path": "s3://bucket/sweep-7/adapters",
                                     "max_num_adapters_per_replica": 3}
    assert config["accelerator_type"] == "H100"
    assert config["deployment_config"]["num_replicas"] == 2


def test_without_adapters_lora_stays_off():
    config = vllm_backend.build_llm_config(make_cfg(vllm={}), "Qwen/Qwen2.5-0.5B", None)
    assert "lora_config" not in config and "enable_lora" not in config["engine_kwargs"]
    assert "accelerator_type" not in config and "max_model_len" not in config["engine_kwargs"]
    assert config["model_loading_config"]["model_id"] == "Qwen2.5-0.5B"


def test_llm_config_validates_against_ray_serve_llm_schema():
    # Ray's own LLMConfig model validates without vLLM; the public re-export needs vLLM to import.
    schema = pytest.importorskip("ray.llm._internal.serve.core.configs.llm_config")
    config = schema.LLMConfig(**vllm_backend.build_llm_config(make_cfg(), "/models/m", "gs://b/adapters"))
    assert config.lora_config.dynamic_lora_loading_path == "gs://b/adapters"
    assert config.lora_config.max_num_adapters_per_replica == 3
    assert config.engine_kwargs["max_loras"] == 3


def test_a_local_lora_dir_is_a_clear_error():
    with pytest.raises(ConfigError, match="vllm.lora_dir.*cloud storage.*s3://"):
        vllm_backend.build_llm_config(make_cfg(), "/models/m", "/tmp/adapters")


def test_adapter_names_resolve_inside_the_lora_dir():
    assert vllm_backend.adapter_name("s3://b/adapters/trial-3", "s3://b/adapters/") == "trial-3"
    assert vllm_backend.adapter_name("trial-3", "s3://b/adapters") == "trial-3"
    with pytest.raises(ConfigError, match="not a subfolder of vllm.lora_dir"):
        vllm_backend.adapter_name("/local/ckpt/trial-3", "s3://b/adapters")
    with pytest.raises(ConfigError, match="needs vllm.lora_dir"):
        vllm_backend.adapter_name("trial-3", None)


def test_requests_name_the_adapter_and_keep_special_tokens(char_tokenizer):
    cfg = make_cfg(generation={"max_new_tokens": 64, "thinking_budget": 16, "temperature": 0.6, "seed": 3})
    _, request = ReplyPlanner(cfg.generation, char_tokenizer).start("What is 2 + 2?", model="s3://b/a/trial-3")
    body = vllm_backend.vllm_request(request, "s1.1-32B", "trial-3")
    assert body["model"] == "s1.1-32B:trial-3"
    assert body["prompt"].endswith("<|im_start|>think\n") and body["max_tokens"] == 16
    assert body["stop"] == ["<|im_start|>answer", "<|im_end|>"]
    assert body["temperature"] == 0.6 and body["seed"] == 3
    assert body["skip_special_tokens"] is False and body["include_stop_str_in_output"] is False
    assert vllm_backend.vllm_request(request, "s1.1-32B", None)["model"] == "s1.1-32B"


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here, so the app builds")
def test_building_the_app_without_vllm_says_to_install_the_extra():
    with pytest.raises(ConfigError, match="install the vllm extra"):
        vllm_backend.build_app(make_cfg(), "/models/m")


def test_a_local_adapter_is_published_into_the_lora_dir_once(tmp_path):
    """A trial's local LoRA checkpoint is copied under a content-hash name that vLLM can load from."""
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    lora_dir = f"file://{tmp_path / 'bucket' / 'adapters'}"

    name = vllm_backend.publish_adapter(adapter, lora_dir)
    copied = tmp_path / "bucket" / "adapters" / name
    assert (copied / "adapter_model.safetensors").read_bytes() == b"weights"
    assert vllm_backend.publish_adapter(adapter, lora_dir) == name

    (adapter / "adapter_model.safetensors").write_bytes(b"other weights")
    assert vllm_backend.publish_adapter(adapter, lora_dir) != name


def test_placement_bundles_put_the_engine_on_cpu():
    config = vllm_backend.build_llm_config(make_cfg(vllm={"placement_bundles": [{"CPU": 1}]}), "/models/m", None)
    assert config["placement_group_config"] == {"bundles": [{"CPU": 1.0}]}
    assert "placement_group_config" not in vllm_backend.build_llm_config(make_cfg(), "/models/m", None)


def test_the_s3_endpoint_and_cpu_cache_size_reach_the_replicas_but_no_keys(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    env = vllm_backend.build_llm_config(make_cfg(), "/models/m", None)["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_a_checkpoint_in_a_bucket_is_mirrored_from_it():
    """A full fine-tuning checkpoint in S3 is served from the bucket: GPU nodes cannot see the head's disk."""
    cfg = EvalConfig(backend="vllm")
    config = vllm_backend.build_llm_config(cfg, "s3://bucket/sweeps/trial-1/checkpoint_000004", None)
    assert config["model_loading_config"]["model_source"] == {"bucket_uri": "s3://bucket/sweeps/trial-1/checkpoint_000004"}
    assert vllm_backend.build_llm_config(cfg, "org/model", None)["model_loading_config"]["model_source"] == "org/model"
