"""Small sweeps for the tests that run one: where their records go, and a spec over the random tiny model."""

from __future__ import annotations

from pathlib import Path

from conftest import free_port


def store_overrides(tmp_path: Path, experiment: str) -> list[str]:
    """Overrides that keep every output of a sweep inside `tmp_path`."""
    return [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"mlflow.experiment={experiment}",
            f"storage_path={tmp_path}/tune", f"base.output_dir={tmp_path}/runs",
            f"evaluation.cache_dir={tmp_path}/eval-cache", f"evaluation.http_port={free_port()}"]


def random_model_spec(tiny_assets: Path, tiny_model_dir: Path, **fields) -> dict:
    """A small sweep over the random-weight tiny model: plumbing at minimum cost per trial."""
    spec = {
        "name": "plumbing",
        "base": {
            "model": str(tiny_model_dir),
            "data": {"path": str(tiny_assets / "refusals.jsonl"), "format": "directrefusal"},
            "reasoning_data": {"path": str(tiny_assets / "reasoning.jsonl"), "format": "pairs",
                               "response_column": "answer", "thinking_column": "thinking"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"learning_rate": 1e-3, "epochs": 1, "per_device_batch_size": 8, "max_seq_length": 128,
                      "max_steps": 2},
            # Local mode, as the tiny sweeps: a worker group's start-up would be most of each trial's time.
            # The worker-kill test and the cluster rehearsal run Train workers.
            "scaling": {"num_workers": 0, "resources_per_worker": {"CPU": 1}},
        },
        "evaluation": {"benchmarks": ["tiny-arith", "tiny-harmful"], "limit": 3,
                       "generation": {"max_new_tokens": 16}, "num_cpus_per_replica": 0},
        "search_space": {"data.size": {"choice": [8, 16]}, "train.learning_rate": {"loguniform": [1e-4, 1e-2]}},
        "num_samples": 2,
        "max_concurrent_trials": 1,
        "population_size": 2,
    }
    spec.update(fields)
    return spec
