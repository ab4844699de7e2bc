"""A full fine-tuning checkpoint served by vLLM straight from a bucket (`model_source` as a bucket URI).

Its own module, so its engine starts after test_vllm_serve's engine is gone (one engine at a time).
The checkpoint is the tiny LRM with its weights moved (a stand-in for a full fine-tuning trial); the
transformers backend reads the same weights from the local folder, and the readings must agree.
"""

from __future__ import annotations

import json

import pytest
from s3_server import s3_server  # noqa: F401 - module fixture
from test_vllm_serve import make_cfg, tiny_lrm  # noqa: F401 - tiny_lrm is a fixture
from vllm_support import engine_replicas, requires_vllm, start_ray, stop_ray, wilson_interval

from evaluators.service import EvaluatorService

pytestmark = [requires_vllm, pytest.mark.slow, pytest.mark.timeout(1800)]


def make_checkpoint(base_dir, out_dir, seed: int = 7):
    """Save the base model with every weight matrix moved by noise of a fifth of its spread."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.add_(0.2 * param.std() * torch.randn_like(param))
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


def test_a_full_fine_tuning_checkpoint_is_served_from_the_bucket(s3_server, tiny_lrm, tmp_path):  # noqa: F811
    import pyarrow.fs

    local = make_checkpoint(tiny_lrm, tmp_path / "checkpoint_000003")
    uri = s3_server.create_bucket("trials") + "/sweep-1/trial-7/checkpoint_000003"
    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    pyarrow.fs.copy_files(str(local), path, destination_filesystem=filesystem)

    port = start_ray()
    try:
        with EvaluatorService(make_cfg(port, "vllm", None), uri) as svc:
            svc.start()  # evaluate() would start it on first need; started here to count the engines first
            assert len(engine_replicas(svc.app_name)) == 1
            served = svc.evaluate(out_dir=tmp_path / "vllm")
        with EvaluatorService(make_cfg(port, "transformers", None), tiny_lrm) as svc:
            base = svc.evaluate(benchmarks=["tiny-arith"], out_dir=tmp_path / "base")
            reference = svc.evaluate(model=str(local), out_dir=tmp_path / "transformers")
    finally:
        stop_ray()
    assert served.metrics["tiny-arith"]["n"] == reference.metrics["tiny-arith"]["n"]
    for name, metrics in reference.metrics.items():
        for metric, value in metrics.items():
            if metric != "n":
                low, high = wilson_interval(round(value * metrics["n"] / 100), metrics["n"])
                assert low - 1e-6 <= served.metrics[name][metric] <= high + 1e-6, (name, metric, served.metrics,
                                                                                  reference.metrics)
    ours, theirs, bases = (replies(r) for r in (served, reference, base))
    same = sum(a == b for a, b in zip(ours, theirs))
    # The bucket's weights, not the base model's: the replies are the checkpoint's, not the base's.
    assert same >= 0.8 * len(ours) and same > sum(a == b for a, b in zip(ours, bases)), (same, len(ours))


def replies(result) -> list[str]:
    return [json.loads(line)["output"] for line in result.sample_files["tiny-arith"].read_text().splitlines()]
