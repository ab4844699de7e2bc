"""What a training run writes into each checkpoint and reads back: its log, each worker's resume state, the weights.

A checkpoint is an HF-format folder (a peft adapter for LoRA, full weights plus tokenizer otherwise) with
`training_log.json`, which says how it was made, and one resume state per worker, which lets a restart
continue bit for bit: same optimiser, schedule, data position and RNG.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn.parallel import DistributedDataParallel

from trainables.config import AlignConfig


TRAINING_LOG = "training_log.json"  # written into every checkpoint, so a checkpoint says how it was made


@dataclass
class TrainLog:
    """What one training run did: the loss of every optimiser step and a summary of every epoch."""

    num_examples: int
    world_size: int
    total_steps: int
    step_losses: list[float] = field(default_factory=list)
    epoch_metrics: list[dict] = field(default_factory=list)
    resumed_at_steps: list[int] = field(default_factory=list)  # where each restart picked up from a checkpoint

    def write(self, directory: Path) -> None:
        (Path(directory) / TRAINING_LOG).write_text(json.dumps(asdict(self), indent=1))


def read_training_log(directory: str | Path) -> TrainLog:
    """Return the TrainLog saved in a checkpoint directory."""
    return TrainLog(**json.loads((Path(directory) / TRAINING_LOG).read_text()))


@dataclass
class ResumeState:
    """Where the loop stood when a checkpoint was saved: enough for a restart to continue bit for bit.

    Each worker saves its own (its RNG differs, and under FSDP so does its optimiser shard). The final
    checkpoint saves no optimiser or scheduler: a restart there has nothing left to train.
    """

    step: int
    log: TrainLog
    epoch_losses: list[float]  # of the epoch in progress, so its mean covers all of its steps
    epoch_tokens: float
    rng: dict[str, torch.Tensor]
    optimizer: dict | None = None
    scheduler: dict | None = None


def resume_state_file(rank: int) -> str:
    """Return the file name of one worker's ResumeState inside a checkpoint."""
    return f"resume_state_rank{rank}.pt"


def read_resume_state(directory: str | Path, rank: int) -> ResumeState | None:
    """Return the ResumeState that worker `rank` saved in a checkpoint directory, or None if it saved none."""
    path = Path(directory) / resume_state_file(rank)
    if not path.is_file():
        return None
    data = torch.load(path, map_location="cpu", weights_only=False)
    return ResumeState(**{**data, "log": TrainLog(**data["log"])})


def rng_state() -> dict[str, torch.Tensor]:
    """Return this process's RNG state (CPU, and CUDA once it is in use)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Set this process's RNG state from `rng_state()`'s record."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def restore_weights(model: torch.nn.Module, directory: str | Path, cfg: AlignConfig) -> None:
    """Load the trained weights of a checkpoint into `model` (before any DDP/FSDP wrapping)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if cfg.finetune == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(directory / "adapter_model.safetensors"))
        return
    state = {}
    for file in sorted(directory.glob("model*.safetensors")):
        state.update(load_file(file))
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if not state or unexpected:
        raise RuntimeError(f"checkpoint {directory} does not hold this model's weights (unexpected: {unexpected[:3]})")


def save_checkpoint(model: torch.nn.Module, tokenizer, directory: str | Path, cfg: AlignConfig, log: TrainLog,
                    rank: int = 0, resume: ResumeState | None = None) -> None:
    """Write an HF-format checkpoint on rank 0: a peft adapter for LoRA, weights plus tokenizer for full.

    Call it on every rank: with FSDP the full state dict is gathered collectively first. Each rank
    also writes its `resume` state, when given, so a restart can continue from this checkpoint.
    """
    if resume is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save({**asdict(resume), "log": asdict(resume.log)}, Path(directory) / resume_state_file(rank))
    state_dict = None
    if isinstance(model, FullyShardedDataParallel):
        from trainables.fsdp import full_state_dict

        state_dict = full_state_dict(model)
        model = model.module
    if rank != 0:
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unwrapped(model).save_pretrained(directory, state_dict=state_dict)
    if cfg.finetune == "full":
        tokenizer.save_pretrained(directory)
    log.write(directory)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """Return the model inside a DDP wrapper, or the model itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model
