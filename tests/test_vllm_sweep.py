"""The embedded default sweep with evaluation.backend=vllm, end to end on CPU, with the front in MLflow.

Trials' LoRA checkpoints are published to a local S3 bucket (moto on 127.0.0.1) and scored by the one
vLLM engine the sweep's evaluator holds. Fewer trials and samples than the default, same code path.
"""

from __future__ import annotations

import pytest
from s3_server import s3_server  # noqa: F401 - module fixture
from sweep_helpers import store_overrides
from vllm_support import CPU_ENGINE, requires_vllm

from sweeps import tracking
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.report import FRONT_CSV, PLOT_PNG
from sweeps.runner import run_sweep

pytestmark = [requires_vllm, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_the_default_sweep_on_the_vllm_backend(s3_server, tmp_path, monkeypatch):  # noqa: F811
    from trainables.tiny.lrm import ensure_tiny_lrm

    ensure_tiny_lrm()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    lora_dir = s3_server.create_bucket("sweep") + "/adapters"
    engine = CPU_ENGINE["engine_kwargs"]
    spec = load_spec(TINY_SPEC, [
        *store_overrides(tmp_path, "tiny-vllm"), "num_samples=2", "population_size=2", "max_concurrent_trials=1",
        "base.train.max_steps=4", "evaluation.limit=12", "evaluation.generation.max_new_tokens=96",
        "evaluation.backend=vllm", "evaluation.dtype=float32", f"evaluation.vllm.lora_dir={lora_dir}",
        # Half a CPU for the engine: the sweep's Ray has the machine's 2, and training needs one.
        "evaluation.vllm.placement_bundles=[{CPU: 0.5}]", f"evaluation.vllm.engine_kwargs={engine}",
        f"evaluation.vllm.max_model_len={CPU_ENGINE['max_model_len']}",
        f"evaluation.vllm.max_lora_rank={CPU_ENGINE['max_lora_rank']}"])

    outcome = run_sweep(spec, verbose=0)

    assert outcome.finished
    client = tracking.client(outcome.tracking_uri)
    runs = client.search_runs([outcome.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        assert 0 <= child.data.metrics["harmful_score"] <= 100 and 0 <= child.data.metrics["reasoning_accuracy"] <= 100
    assert parent.data.params["evaluation.backend"] == "vllm"
    assert parent.data.metrics["base_model/reasoning_accuracy"] >= 50
    assert {PLOT_PNG, FRONT_CSV} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    # Each trial's adapter was published to the bucket and scored from there.
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket="sweep", Prefix="adapters/")["Contents"]]
    assert len({k.split("/")[1] for k in keys if k.endswith("/adapter_config.json")}) == 2
