"""Replica failures mid-evaluation: requests are re-sent, and a run that cannot finish raises (real Ray Serve)."""

from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from evaluators.config import EvalConfig  # noqa: E402
from evaluators.service import EvaluationIncomplete, EvaluatorService  # noqa: E402
from trainables.schema import build  # noqa: E402




def make_cfg(port: int, **overrides) -> EvalConfig:
    # Two batches of four long replies: the first batch is still generating when the replica is killed.
    data = {"benchmarks": ["tiny-arith"], "limit": 8, "http_port": port, "cache_dir": None,
            "num_cpus_per_replica": 0.25, "max_batch_size": 4, "generation": {"max_new_tokens": 200}}
    data.update(overrides)
    return build(EvalConfig, data)


def kill_replica_once_busy(svc: EvaluatorService, killed: dict) -> threading.Thread:
    """Start a thread that kills the generator replica as soon as a new request reaches it."""
    handle = serve.get_app_handle(svc.app_name)
    before = handle.stats.remote().result()

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = handle.stats.remote().result()
            if now["requests_started"] > before["requests_started"]:
                ray.kill(ray.get_actor(now["actor_name"], namespace="serve"), no_restart=True)
                killed["pid"] = now["pid"]
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_replica_has_its_requests_retried(http_port, lively_model_dir, tmp_path):
    with EvaluatorService(make_cfg(http_port, max_retries=3), str(lively_model_dir)) as svc:
        reference = svc.evaluate(out_dir=tmp_path / "reference")
        killed: dict = {}
        watcher = kill_replica_once_busy(svc, killed)
        result = svc.evaluate(out_dir=tmp_path / "killed")
        watcher.join()
        replacement = serve.get_app_handle(svc.app_name).stats.remote().result()
    assert "pid" in killed and replacement["pid"] != killed["pid"]
    # Greedy replies from the replacement replica are the replies an undisturbed run gives.
    assert result.sample_files["tiny-arith"].read_text() == reference.sample_files["tiny-arith"].read_text()
    assert result.metrics == reference.metrics


def test_when_retries_run_out_the_run_raises_and_reports_nothing(http_port, lively_model_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    with EvaluatorService(make_cfg(http_port, max_retries=0, cache_dir=str(cache_dir)), str(lively_model_dir)) as svc:
        svc.start()  # the replica must exist before the watcher looks for it
        killed: dict = {}
        watcher = kill_replica_once_busy(svc, killed)
        with pytest.raises(EvaluationIncomplete, match="benchmark tiny-arith.*max_retries"):
            svc.evaluate(out_dir=tmp_path / "out")
        watcher.join()
    assert "pid" in killed
    assert not (tmp_path / "out" / "tiny-arith.jsonl").exists()
    assert not cache_dir.exists() or not any(cache_dir.rglob("metrics.json"))
