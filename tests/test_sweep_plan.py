"""`safetytax sweep CONFIG --dry-run`: every shipped sweep prints its plan and what it needs, and nothing starts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray

import sweeps
from sweeps.cli import main
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.resources import parameters_from_name

SWEEP_DIR = Path(sweeps.__file__).parent
SWEEP_FILES = sorted(SWEEP_DIR.glob("*.yaml"))
GPU_DAY = 8 * 24  # the LoRA sweep's budget: 8 GPUs for a day


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch, tmp_path):
    # The paper's data and benchmarks are on the Hub: a dry run notes them without downloading anything.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)  # relative stores of tiny.yaml would land here, if anything were created


def dry_run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["sweep", *argv, "--dry-run"])
    out, err = capsys.readouterr()
    return code, out, err


def value_after(label: str, text: str) -> float:
    return float(re.search(rf"{re.escape(label)}\s*([\d.]+)", text).group(1))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.name for p in SWEEP_FILES])
def test_every_shipped_sweep_prints_its_plan_without_starting_anything(path, capsys, tmp_path):
    code, out, err = dry_run(capsys, str(path))
    assert code == 0, err
    spec = load_spec(path)
    trials = f"{spec.num_samples} trial" + ("s" if spec.num_samples != 1 else "")
    assert f"{trials}, at most {spec.max_concurrent_trials} at once" in out
    for searched in spec.search_space:
        assert f"  {searched}: " in out
    train_gpus = spec.base.scaling.num_workers * (1 if spec.base.scaling.use_gpu else 0)
    if spec.base.scaling.local_mode:  # the tiny sweeps: each trial trains in its own process
        assert "(it trains in its own process: Ray Train's local mode" in out
        assert "train workers: none (base.scaling.num_workers: 0)" in out
    else:
        assert f"train workers: {spec.base.scaling.num_workers} x " in out
        assert f"= {train_gpus:g} GPU" in out
    assert "GPUs:" in out and "not checked: " in out
    assert not ray.is_initialized()
    assert list(tmp_path.iterdir()) == []  # no MLflow store, Tune folder or Optuna database was created


def test_the_paper_points_need_eight_training_gpus_and_list_what_they_hold():
    for name in ("paper_directrefusal.yaml", "paper_safechain.yaml"):
        spec = load_spec(SWEEP_DIR / name)
        assert spec.num_samples == 1 and spec.sampler == "grid"  # the paper's single point
        cfg = spec.base
        assert (cfg.model, cfg.finetune, cfg.scaling.num_workers, cfg.scaling.use_gpu) == (
            "simplescaling/s1.1-32B", "full", 8, True)
        assert cfg.train.fsdp and cfg.train.gradient_checkpointing
        assert (cfg.train.learning_rate, cfg.train.epochs, cfg.train.scheduler) == (5e-5, 5, "cosine")
        assert (cfg.train.adam_beta1, cfg.train.adam_beta2, cfg.train.weight_decay) == (0.9, 0.95, 1e-4)
        assert (cfg.train.max_seq_length, cfg.train.per_device_batch_size) == (32768, 1)
        assert cfg.data.size == 1000
        evaluation = spec.evaluation
        assert evaluation.benchmarks == ["aime24", "math500", "gpqa_diamond", "beavertails"]
        assert (evaluation.backend, evaluation.judge, evaluation.generation.max_new_tokens) == ("vllm", "beaver-dam", 5000)
        assert evaluation.vllm.lora_dir is None and evaluation.generation.thinking_prefill
        assert spec.mlflow.tracking_uri == "http://127.0.0.1:5000"
        assert spec.resources_per_trial["node:__internal_head__"] > 0
        assert spec.storage_path.startswith("s3://") and cfg.storage_path.startswith("s3://")
        assert spec.optuna.storage is not None
    assert load_spec(SWEEP_DIR / "paper_safechain.yaml").base.data.model_dump(include={"path", "format", "label"}) == {
        "path": "UWNSL/SafeChain", "format": "safechain", "label": "vanilla_harmful"}


def test_a_full_finetuning_plan_counts_the_checkpoints_own_evaluator(capsys):
    code, out, _ = dry_run(capsys, str(SWEEP_DIR / "paper_directrefusal.yaml"))
    assert code == 0
    assert "8 x {CPU: 8, GPU: 1} = 8 GPUs, 64 CPUs; full fine-tuning, FSDP, gradient checkpointing" in out
    assert "~30 GiB per worker (32B parameters" in out  # 8 bytes of bf16 state a parameter, sharded 8 ways
    assert "vllm, 1 replica x 4 GPUs (tensor parallel 4)" in out
    assert "its own deployment of 4 GPUs while it is scored" in out
    assert "beaver-dam (PKU-Alignment/beaver-dam-7b): 1 replica x 1 GPU" in out
    # 8 training GPUs, then 4 for the checkpoint; 4 + 1 held for the whole sweep.
    assert "GPUs: 8 per trial at its peak; the sweep at most 13" in out
    assert "not checked: data TianshengHuang/DirectRefusal" in out


def test_the_epochs_grid_is_listed_in_full_for_either_dataset(capsys):
    code, out, _ = dry_run(capsys, str(SWEEP_DIR / "paper_epochs.yaml"))
    assert code == 0
    assert "grid: 5 points, every point" in out
    assert [int(e) for e in re.findall(r"^\s+train\.epochs=(\d)$", out, re.MULTILINE)] == [1, 2, 3, 4, 5]
    # The header's SafeChain command: the same grid on the other dataset, as its own sweep.
    header = (SWEEP_DIR / "paper_epochs.yaml").read_text().split("\nname:")[0]
    overrides = re.search(r"safetytax sweep sweeps/paper_epochs\.yaml \\\n#\s+(.*)", header).group(1).split()
    code, out, err = dry_run(capsys, str(SWEEP_DIR / "paper_epochs.yaml"), *overrides)
    assert code == 0, err
    assert "sweep paper-epochs-safechain" in out and "data: UWNSL/SafeChain" in out and "grid: 5 points" in out


def test_the_lora_sweep_fits_eight_gpus_for_a_day(capsys):
    spec = load_spec(SWEEP_DIR / "lora_r1_7b.yaml")
    assert spec.base.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and spec.base.reasoning_format == "r1"
    assert spec.base.finetune == "lora"
    assert {"data.size", "train.learning_rate", "train.epochs", "reasoning_mix"} <= set(spec.search_space)
    code, out, _ = dry_run(capsys, str(SWEEP_DIR / "lora_r1_7b.yaml"))
    assert code == 0
    assert value_after("the sweep at most", out) <= 8
    assert value_after("GPU-hours in all:", out) <= GPU_DAY
    assert float(re.search(r"duration: .* = ([\d.]+) h;", out).group(1)) <= 24


def test_an_estimate_becomes_gpu_hours_and_its_absence_is_said(capsys):
    code, out, _ = dry_run(capsys, "estimate.gpu_hours_per_trial=0.5", "estimate.hours_per_trial=0.25",
                           "num_samples=9", "max_concurrent_trials=2")
    assert code == 0
    assert "GPU-hours of the trials: 9 x 0.5 = 4.5" in out
    assert "duration: 5 rounds of 2 trials x 0.25 h = 1.25 h" in out  # ceil(9 / 2) rounds
    code, out, _ = dry_run(capsys)
    assert "GPU-hours: no estimate" in out


def test_local_data_is_checked_and_a_too_small_file_is_named(capsys, tmp_path):
    rows = tmp_path.parent / f"{tmp_path.name}-refusals.jsonl"  # outside the folder that must stay empty
    rows.write_text("".join(json.dumps({"prompt": f"harmful request {i}", "response": "I cannot help with that."})
                            + "\n" for i in range(20)))
    local = [f"base.data.path={rows}", "base.data.format=pairs", "base.reasoning_data=null",
             "search_space.reasoning_mix=null", "initial_points=[]"]
    code, out, err = dry_run(capsys, *local, "search_space.data.size={choice: [10, 20]}")
    assert code == 0, err
    assert f"checked: data: the largest data the search can ask for loads ({rows})" in out
    code, _, err = dry_run(capsys, *local, "search_space.data.size={choice: [10, 40]}")
    assert code == 2 and "data.size: 40 rows asked for" in err and "only 20 rows" in err
    assert not ray.is_initialized()


def test_bad_input_fails_the_dry_run_as_it_would_fail_the_sweep(capsys):
    code, _, err = dry_run(capsys, "base.scaling.num_workers=1",
                           "base.scaling.resources_per_worker={CPU: 1, GPU: 1}")  # GPUs without use_gpu
    assert code == 2 and "base.scaling" in err and "use_gpu" in err
    code, _, err = dry_run(capsys, "base.scaling.resources_per_worker={CPU: 1, GPU: 1}")  # tiny.yaml's local mode
    assert code == 2 and "base.scaling" in err and "set num_workers: 1 or more to train on GPUs" in err
    code, _, err = dry_run(capsys, "--resume")
    assert code == 2 and "--resume: no sweep state" in err
    code, _, err = dry_run(capsys, "search_space.train.epochs.int=[0, 2]")
    assert code == 2 and "search_space.train.epochs" in err
    assert not ray.is_initialized()


def test_memory_is_estimated_from_the_size_in_the_name(capsys):
    assert parameters_from_name("simplescaling/s1.1-32B") == 32e9
    assert parameters_from_name("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == 7e9
    assert parameters_from_name("Qwen/Qwen2.5-0.5B-Instruct") == 0.5e9
    assert parameters_from_name("TianshengHuang/s1k") is None
    assert parameters_from_name("mistralai/Mixtral-8x7B-v0.1") is None  # a size it cannot read is not guessed
    code, out, _ = dry_run(capsys, str(SWEEP_DIR / "paper_directrefusal.yaml"), "base.model=TianshengHuang/s1k")
    assert code == 0 and "training memory: unknown (the name TianshengHuang/s1k states no size" in out


def test_overrides_may_follow_options_and_unknown_options_are_still_errors(capsys):
    code = main(["sweep", str(TINY_SPEC), "--dry-run", "num_samples=5", "max_concurrent_trials=1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "5 trials, at most 1 at once" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(TINY_SPEC), "--dry-run", "--no-such-option"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_reading_every_epoch_and_stopping_early_are_priced_from_the_evaluation_share(capsys):
    spec = str(Path(sweeps.__file__).parent / "lora_r1_7b.yaml")
    assert main(["sweep", spec, "evaluate_epochs=every", "early_stopping={grace_epochs: 2}",
                 "estimate.gpu_hours_per_trial=2", "estimate.gpu_hours_per_evaluation=0.5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # Epochs are searched up to 3: at most 2 more evaluations a trial, 40 trials.
    assert "GPU-hours of the trials: 40 x (2 + 2 more evaluations x 0.5) = 120" in out
    assert "early_stopping: from epoch 2" in out
    # Stopped at epoch 2 of 3: 1.5 x 2/3 of training + 2 evaluations = 2 GPU-hours, 1 less than run to the end.
    assert "a trial stopped at epoch 2 of 3 costs 1.5 x 2/3 of training + 2 x 0.5 of evaluation = 2 GPU-hours, 1 less" \
        in out
    assert main(["sweep", str(Path(sweeps.__file__).parent / "paper_directrefusal.yaml"), "racing=true", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "racing: an evaluation stopped after its first of 4 slices costs 1 GPU-hours, 3 less than a full one" in out
