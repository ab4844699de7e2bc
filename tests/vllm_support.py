"""Shared pieces of the vLLM tests: the skip when vLLM is absent, a Ray sized for a CPU engine, CPU engine settings.

vLLM engine starts are heavy (tens of seconds, a few GiB), so each vLLM test module starts one Ray,
one Serve and as few engines as it can, and reuses them across its tests.
"""

from __future__ import annotations

import logging
import os

import pytest
from conftest import free_port

from evaluators.stats import wilson_interval  # noqa: F401 - the tests use the readings' own interval
from trainables.local_ray import start_ray as start_local_ray  # ray.init, again if the node start times out


def _vllm_missing() -> str | None:
    try:
        import ray.serve.llm  # noqa: F401 - fails without vLLM, or with a torchvision built for another torch
        import vllm  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means these tests cannot run here
        return f"vLLM is not importable here ({type(err).__name__}: {err}); CI runs these tests in .venv-vllm"
    return None


VLLM_MISSING = _vllm_missing()
requires_vllm = pytest.mark.skipif(VLLM_MISSING is not None, reason=VLLM_MISSING or "")

# vLLM on CPU: float32 (the tiny LRM's dtype, and what the transformers backend uses on CPU), no
# compiled graphs (each would cost minutes on 2 cores), and one CPU bundle instead of Ray Serve LLM's GPU.
CPU_ENGINE = {"placement_bundles": [{"CPU": 1}], "max_model_len": 512, "max_lora_rank": 8,
              "engine_kwargs": {"enforce_eager": True}}


def start_ray() -> int:
    """Start a local Ray and Serve for vLLM on a free 127.0.0.1 port, and return the port.

    Logical CPUs, not cores: the engine's bundle, its replica and a transformers replica must all fit.
    """
    from ray import serve

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default would take far more
    port = free_port()
    start_local_ray(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


def stop_ray() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def engine_replicas(app_name: str) -> list[str]:
    """Return the names of the live vLLM engine replicas (LLMServer) of a Serve app."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names if a["namespace"] == "serve" and f"::{app_name}#" in a["name"]
                  and "LLMServer" in a["name"])
