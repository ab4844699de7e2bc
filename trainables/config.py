"""The alignment run's typed config: model, data, LoRA or full fine-tuning, optimiser, scaling and storage.

`AlignConfig` is what `safetytax train CONFIG.yaml` loads and what a sweep trial edits. Every field has
help text, and impossible values fail at load time with the field's dotted name in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from trainables.data import DataSource
from trainables.locations import check_model_location
from trainables.schema import Strict


class LoraSettings(Strict):
    """LoRA adapter settings (used when finetune is lora)."""

    r: int = Field(16, ge=1, description="LoRA rank: the inner dimension of each low-rank update.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator; updates are scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input, in [0, 1).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt (e.g. [q_proj, v_proj]), or all-linear for every "
                                  "linear layer except the output head.")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one module, or be all-linear")
        return value


class TrainSettings(Strict):
    """Optimiser, schedule and loop settings of the supervised fine-tuning."""

    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW.")
    epochs: int = Field(3, ge=1, description="Passes over the alignment data.")
    per_device_batch_size: int = Field(4, ge=1, description="Examples per micro-batch on each worker.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches summed into one optimiser step; "
                                                                   "global batch = this x batch size x workers.")
    max_seq_length: int = Field(4096, ge=8, description="Tokens kept per example (prompt + reply); longer "
                                                        "examples are cut at the end.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay; biases and norms are never decayed.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1, in [0, 1).")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2, in [0, 1).")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate schedule after warm-up (transformers.get_scheduler names).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of all optimiser steps spent warming up "
                                                              "linearly from 0 (ignored by constant).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null disables "
                                                               "clipping.")
    seed: int = Field(0, description="Seed of data order, LoRA initialisation and dropout.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                                            "memory, about a third more compute.")
    fsdp: bool = Field(False, description="Shard parameters, gradients and optimiser state across GPU workers "
                                          "(FSDP FULL_SHARD); full fine-tuning on GPUs only.")
    save_every_epoch: bool = Field(False, description="Also save a checkpoint at the end of every epoch, not "
                                                      "only at the end of training.")
    save_every_steps: int | None = Field(
        None, ge=1, description="Also save a checkpoint every this many optimiser steps, so a retried trial or "
                                "a restarted run resumes near where it stopped (useful with few, long epochs); "
                                "null saves only at epoch ends (save_every_epoch) and at the end.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps even if epochs "
                                                          "remain; null runs every epoch.")
    compile: bool = Field(False, description="Compile the model with torch.compile before training: faster "
                                             "steps on GPUs (36.6% against 28.0% MFU on the 0.5B check, "
                                             "docs/benchmarks.md) after a compile of a minute or so; off "
                                             "by default, since on CPU and for short runs the compile costs "
                                             "more than it saves.")


class ScalingSettings(Strict):
    """How many Ray Train workers run and what each reserves."""

    num_workers: int = Field(1, ge=0, description="Data-parallel workers (one per GPU on GPU clusters). 0 is Ray "
                                                  "Train's local mode, CPU only: the loop runs in the calling "
                                                  "process (a sweep's trial, which then reserves "
                                                  "resources_per_worker), with no worker processes to start.")
    use_gpu: bool = Field(False, description="Give each worker a GPU and train in bf16; off trains in float32 "
                                             "on CPU with gloo.")
    resources_per_worker: dict[str, float] | None = Field(
        None, description="Ray resources each worker reserves, e.g. {CPU: 2} or {CPU: 8, GPU: 1}; null uses "
                          "Ray's default (1 CPU, plus 1 GPU with use_gpu). CPU workers use as many torch "
                          "threads as CPUs reserved.")

    @property
    def local_mode(self) -> bool:
        """Whether the loop runs in the calling process (Ray Train's local mode) rather than in workers."""
        return self.num_workers == 0

    @property
    def world_size(self) -> int:
        """How many processes train: the workers, or the calling process alone in local mode."""
        return max(1, self.num_workers)

    @field_validator("resources_per_worker")
    @classmethod
    def _non_negative(cls, value):
        for name, amount in (value or {}).items():
            if amount < 0:
                raise ValueError(f"{name} must be >= 0, got {amount}")
        return value

    @model_validator(mode="after")
    def _local_mode_runs_on_cpu(self) -> "ScalingSettings":
        if self.local_mode and (self.use_gpu or (self.resources_per_worker or {}).get("GPU")):
            raise ValueError("num_workers: 0 (Ray Train's local mode) trains on CPU in the calling process; set "
                             "num_workers: 1 or more to train on GPUs")
        return self


class AlignConfig(Strict):
    """One safety-alignment run (the paper's stage 2): which model, which data, and how to fine-tune it."""

    name: str = Field("align", min_length=1, description="Run name; Ray Train's run folder and the checkpoint "
                                                         "folder start with it.")
    model: str = Field(description="Base model: a local Hugging Face directory, a Hub id (needs network), or "
                                   "tiny://lrm for the embedded tiny reasoning model (built on first use).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the model; only for models "
                                                       "you trust.")
    reasoning_format: Literal["s1", "r1"] = Field(
        "s1", description="How thinking and answer are marked in the reply: s1 (<|im_start|>think … "
                          "<|im_start|>answer, the paper's) or r1 (<think> … </think>).")
    data: DataSource = Field(description="The safety alignment data (e.g. DirectRefusal, SafeChain) and its "
                                         "size N.")
    reasoning_data: DataSource | None = Field(None, description="Stage-1 style reasoning examples to mix in; "
                                                                "needed when reasoning_mix > 0.")
    reasoning_mix: float = Field(0.0, ge=0, lt=1, description="Fraction of the training examples drawn from "
                                                              "reasoning_data, in [0, 1); softens the Safety Tax.")
    finetune: Literal["lora", "full"] = Field("lora", description="lora trains a peft adapter; full trains "
                                                                  "every weight.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Optimiser and loop settings.")
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="Ray Train workers.")
    output_dir: Path = Field(Path("safetytax_runs"), validate_default=True,
                             description="Local folder for run folders and the final checkpoint; relative paths "
                                         "are resolved against the working directory at load time.")
    storage_path: str | None = Field(None, description="Ray Train storage_path: a local folder, s3://bucket/"
                                                       "prefix or gs://bucket/prefix; null uses output_dir. "
                                                       "Remote checkpoints are downloaded into output_dir.")

    @field_validator("model")
    @classmethod
    def _model_directory_has_config(cls, value: str) -> str:
        check_model_location(value)
        return value

    @field_validator("reasoning_mix")
    @classmethod
    def _mix_needs_reasoning_data(cls, value: float, info) -> float:
        if value > 0 and info.data.get("reasoning_data") is None:
            raise ValueError(f"reasoning_mix={value} needs reasoning_data (a DataSource of reasoning examples); "
                             "set reasoning_data or reasoning_mix: 0")
        return value

    @field_validator("output_dir")
    @classmethod
    def _absolute_output_dir(cls, value: Path) -> Path:
        # Ray workers and Tune trials change their working directory, so resolve while it is the user's.
        return value.expanduser().resolve()

    @field_validator("storage_path")
    @classmethod
    def _absolute_local_storage(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return value
        return str(Path(value).expanduser().resolve())

    @model_validator(mode="after")
    def _fsdp_needs_full_finetune_on_gpus(self) -> "AlignConfig":
        if self.train.fsdp and self.finetune != "full":
            raise ValueError("train.fsdp needs finetune: full (LoRA adapters are small enough for plain data "
                             "parallelism); set train.fsdp: false or finetune: full")
        if self.train.fsdp and not self.scaling.use_gpu:
            raise ValueError("train.fsdp needs scaling.use_gpu: true (FSDP shards across GPUs); set "
                             "train.fsdp: false to train on CPU")
        return self
