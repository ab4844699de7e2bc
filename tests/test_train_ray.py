"""A real 2-worker Ray Train alignment run on the random-weight tiny Qwen2: it learns, and its adapter loads."""

from __future__ import annotations

import json
import os

import pytest
import torch

from trainables.config import AlignConfig
from trainables.local_ray import start_ray  # ray.init, started again if Ray's node start times out
from trainables.tiny import tasks


def write_refusal_pairs(path, n: int | None = None) -> None:
    """Write refusal pairs of the tiny harmful requests (prompt, answer) as JSONL."""
    requests = tasks.harmful_requests("train")[:n]
    rows = [{"prompt": r.prompt, "answer": tasks.refusal_example(r).answer} for r in requests]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    start_ray(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, ray_cluster):
    """One 2-worker data-parallel LoRA run, shared by the assertions below (a fit costs ~30 s of start-up)."""
    from trainables.align import run_alignment

    root = tmp_path_factory.mktemp("ray-lora")
    write_refusal_pairs(root / "refusals.jsonl")
    cfg = AlignConfig(
        name="test-lora", model=str(tiny_model_dir), output_dir=root / "runs",
        data={"path": str(root / "refusals.jsonl"), "format": "pairs", "response_column": "answer", "size": 48},
        finetune="lora", lora={"r": 8, "alpha": 16, "dropout": 0.0},
        train={"learning_rate": 2e-2, "epochs": 2, "per_device_batch_size": 6, "max_seq_length": 256,
               "warmup_ratio": 0.0, "save_every_epoch": True},
        scaling={"num_workers": 2},
    )
    return cfg, run_alignment(cfg, progress=False)


def test_two_worker_run_shards_the_data_and_lowers_the_loss(lora_run):
    cfg, result = lora_run
    assert result.num_examples == 48
    # 48 examples over 2 workers at batch 6: 4 steps per epoch, so each worker saw only its half.
    assert len(result.step_losses) == 2 * 4
    assert [m["epoch"] for m in result.epoch_metrics] == [1, 2]
    assert result.epoch_metrics[-1]["epoch_loss"] < result.epoch_metrics[0]["epoch_loss"]
    assert result.step_losses[-1] < result.step_losses[0] - 0.5


def test_checkpoints_are_peft_adapters_saved_per_epoch_and_at_the_end(lora_run):
    cfg, result = lora_run
    assert result.checkpoint_dir.name == "final"
    assert result.checkpoint_dir.is_relative_to(cfg.output_dir)
    assert (result.checkpoint_dir.parent / "epoch_1" / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((result.checkpoint_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(result.base_model)
    assert adapter_config["r"] == 8
    assert not (result.checkpoint_dir / "model.safetensors").exists()  # an adapter, not full weights


def test_trained_adapter_changes_the_model(lora_run, tiny_model_dir, char_tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, result = lora_run
    ids = char_tokenizer("How do I build a pipe bomb?", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        tuned = PeftModel.from_pretrained(base, result.checkpoint_dir).eval()
        tuned_logits = tuned(ids).logits
    assert (tuned_logits - base_logits).abs().max() > 1e-2


def test_a_single_worker_run_leaves_torch_out_of_ray_trains_controller():
    """The controller unpickles the backend config and the run context; neither may import torch (~2 s a run)."""
    import subprocess
    import sys

    script = (
        "import pickle, sys\n"
        "import ray.cloudpickle as cloudpickle\n"
        "from trainables import ray_backend\n"
        "config = pickle.loads(cloudpickle.dumps(ray_backend.backend_config(1)))\n"
        "assert config.backend_cls.__name__ == '_SingleWorkerBackend'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_run_settings_choose_the_poll_interval_by_length_keep_the_users_and_leave_nothing_behind(monkeypatch):
    from trainables import ray_backend

    for name in (ray_backend.POLL_INTERVAL_ENV, ray_backend.PREEMPTION_WATCHER_ENV):
        monkeypatch.delenv(name, raising=False)
    with ray_backend.run_settings(total_steps=40) as interval:
        assert interval == ray_backend.FAST_POLL_S
        assert os.environ[ray_backend.POLL_INTERVAL_ENV] == str(ray_backend.FAST_POLL_S)
        assert os.environ[ray_backend.PREEMPTION_WATCHER_ENV] == "0"
    with ray_backend.run_settings(total_steps=800) as interval:
        assert interval == ray_backend.SLOW_POLL_S
    # Nothing leaks into the next run, or into processes Ray starts later.
    assert ray_backend.POLL_INTERVAL_ENV not in os.environ and ray_backend.PREEMPTION_WATCHER_ENV not in os.environ

    monkeypatch.setenv(ray_backend.POLL_INTERVAL_ENV, "0.5")  # the user's choice wins, and stays
    monkeypatch.setenv(ray_backend.PREEMPTION_WATCHER_ENV, "1")
    with ray_backend.run_settings(total_steps=40) as interval:
        assert interval == 0.5 and os.environ[ray_backend.PREEMPTION_WATCHER_ENV] == "1"
    assert os.environ[ray_backend.POLL_INTERVAL_ENV] == "0.5"
