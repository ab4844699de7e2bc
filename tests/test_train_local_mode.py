"""Ray Train's local mode (`scaling.num_workers: 0`): the loop runs in the calling process and trains exactly
as one worker does; its checkpoints reach the run's storage (a folder or a bucket), and a run stopped by a
fault resumes from the last complete one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from s3_server import s3_server  # noqa: F401 - the fixture
from tests.test_train_ray import write_refusal_pairs
from trainables import local_mode
from trainables.config import AlignConfig
from trainables.local_ray import start_ray  # ray.init, started again if Ray's node start times out


def lora_config(root: Path, tiny_model_dir: Path, num_workers: int, **train) -> AlignConfig:
    """Return a LoRA run over 24 refusals at batch 4 (6 steps an epoch, 2 epochs) with LoRA dropout on."""
    if not (root / "refusals.jsonl").exists():
        write_refusal_pairs(root / "refusals.jsonl", 24)
    return AlignConfig(
        name="local", model=str(tiny_model_dir), output_dir=root / "runs",
        data={"path": str(root / "refusals.jsonl"), "format": "pairs", "response_column": "answer"},
        finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.2},  # dropout on: the RNG state matters
        train={"learning_rate": 5e-3, "epochs": 2, "per_device_batch_size": 4, "max_seq_length": 256,
               "warmup_ratio": 0.2, **train},
        scaling={"num_workers": num_workers, "resources_per_worker": {"CPU": 1}},
    )


def adapter_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint_dir / "adapter_model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = adapter_weights(a), adapter_weights(b)
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


@pytest.mark.slow  # one worker-group fit (~15 s of start-up) against one local-mode fit
def test_local_mode_trains_exactly_as_one_worker_does_without_starting_ray(tmp_path, tiny_model_dir):
    import ray

    from trainables.align import run_alignment

    local = run_alignment(lora_config(tmp_path, tiny_model_dir, 0, save_every_epoch=True), progress=False)
    assert not ray.is_initialized()  # local mode needs no Ray session, and starts none
    run_dir = local.checkpoint_dir.parent
    assert local.checkpoint_dir.name == "final"
    assert sorted(p.name for p in run_dir.iterdir()) == ["epoch_1", "final", local_mode.LATEST_FILE]
    assert json.loads((run_dir / local_mode.LATEST_FILE).read_text()) == {"name": "final"}
    assert local.train_node_id is None and local.resumed_at_steps == []
    assert {"startup", "model_load", "train_steps", "checkpoint"} <= local.phase_seconds.keys()

    start_ray(num_cpus=2, include_dashboard=False)
    try:
        worker = run_alignment(lora_config(tmp_path, tiny_model_dir, 1, save_every_epoch=True), progress=False)
    finally:
        ray.shutdown()
    assert len(local.step_losses) == 12
    assert local.step_losses == worker.step_losses  # bit for bit
    assert local.epoch_metrics[-1]["epoch_loss"] == worker.epoch_metrics[-1]["epoch_loss"]
    assert_same_weights(local.checkpoint_dir, worker.checkpoint_dir)


@pytest.mark.slow  # three local-mode runs of 12 steps
def test_a_local_run_stopped_by_a_fault_resumes_from_its_last_complete_checkpoint(tmp_path, tiny_model_dir,
                                                                                  monkeypatch):
    from trainables.align import run_alignment

    cfg = lora_config(tmp_path, tiny_model_dir, 0, save_every_steps=4)
    undisturbed = run_alignment(cfg, progress=False, run_name="undisturbed")

    real_persist = local_mode.persist

    def fail_at_step_8(directory, storage_path, run_name, name):
        if name == "step_8":  # the copy dies half-way: one file of the checkpoint arrived
            target = Path(storage_path) / run_name / name
            target.mkdir(parents=True)
            (target / "adapter_model.safetensors").write_bytes(b"partial")
            raise OSError("the disk went away")
        return real_persist(directory, storage_path, run_name, name)

    monkeypatch.setattr(local_mode, "persist", fail_at_step_8)
    with pytest.raises(OSError, match="the disk went away"):
        run_alignment(cfg, progress=False, run_name="retried")
    assert local_mode.latest(str(cfg.output_dir), "retried").path.endswith("/step_4")
    monkeypatch.setattr(local_mode, "persist", real_persist)

    retried = run_alignment(cfg, progress=False, run_name="retried")  # what a retried sweep trial does
    assert retried.resumed_at_steps == [4]
    assert retried.step_losses == undisturbed.step_losses
    assert_same_weights(retried.checkpoint_dir, undisturbed.checkpoint_dir)


@pytest.mark.slow  # a local-mode run of 6 steps against a bucket server
def test_local_mode_keeps_its_checkpoints_in_a_bucket(tmp_path, tiny_model_dir, s3_server):  # noqa: F811
    from trainables.align import run_alignment

    s3_server.create_bucket("runs")
    cfg = lora_config(tmp_path, tiny_model_dir, 0, epochs=1)
    cfg = cfg.model_copy(update={"storage_path": "s3://runs/local"})
    result = run_alignment(cfg, progress=False, run_name="bucket")
    assert result.checkpoint_uri == "s3://runs/local/bucket/final"
    assert result.checkpoint_dir.is_relative_to(cfg.output_dir)  # the local copy the evaluators read
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket="runs")["Contents"]}
    assert {"local/bucket/final/adapter_model.safetensors", f"local/bucket/{local_mode.LATEST_FILE}"} <= keys

    # Run again under its name, as a retried trial would: it finds the final checkpoint in the bucket and
    # trains nothing more.
    again = run_alignment(cfg, progress=False, run_name="bucket")
    assert again.checkpoint_uri == result.checkpoint_uri and again.step_losses == result.step_losses
    assert {o["Key"] for o in s3_server.client().list_objects_v2(Bucket="runs")["Contents"]} == keys
