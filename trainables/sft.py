"""The supervised fine-tuning loop in plain torch, shared by Ray Train workers and in-process runs.

Nothing here imports Ray: the same loop runs in a Ray Train worker (which wraps the model for data
parallelism and reports to Ray) and in `train_in_process` (benchmarks, GPU checks without a cluster).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable

import torch
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from trainables.config import AlignConfig
from trainables.dtypes import resolve_dtype
from trainables.formats import IGNORE_INDEX, Example, get_format, tokenize_example
from trainables.schema import ConfigError

TRAINING_LOG = "training_log.json"  # written into every checkpoint, so a checkpoint says how it was made
Features = list[dict[str, list[int]]]


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


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
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


def tokenize_examples(tokenizer, examples: list[Example], reasoning_format: str, max_seq_length: int) -> Features:
    """Return input_ids and labels (prompt masked) of every example; raise ConfigError if none has a reply token.

    Examples whose prompt alone fills max_seq_length teach nothing (every label is masked) and make
    the mean loss NaN, so they are dropped.
    """
    fmt = get_format(reasoning_format)
    features = [tokenize_example(tokenizer, ex, fmt, max_seq_length) for ex in examples]
    trainable = [f for f in features if any(label != IGNORE_INDEX for label in f["labels"])]
    if not trainable:
        raise ConfigError(f"train.max_seq_length={max_seq_length} cuts every example before its reply starts; "
                          f"raise train.max_seq_length")
    return trainable


def collate(features: Features, pad_id: int) -> dict[str, torch.Tensor]:
    """Return a right-padded batch: pad positions get pad_id, attention 0 and label IGNORE_INDEX."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def load_tokenizer(model_path: str, trust_remote_code: bool = False):
    """Return the model's tokenizer with a pad token (EOS stands in when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compute_dtype(device: torch.device) -> torch.dtype:
    """Return the dtype training computes in on `device` (`trainables.dtypes`, auto)."""
    return resolve_dtype("auto", device.type)


def load_model(model_path: str, cfg: AlignConfig, device: torch.device) -> torch.nn.Module:
    """Return the base model on `device`, wrapped with a fresh LoRA adapter when cfg.finetune is lora."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=compute_dtype(device), trust_remote_code=cfg.trust_remote_code
    ).to(device)
    return prepare_for_training(model, cfg)


def prepare_for_training(model: torch.nn.Module, cfg: AlignConfig) -> torch.nn.Module:
    """Return `model` ready for the loop: cache off, gradient checkpointing if asked, LoRA adapter if lora."""
    model.config.use_cache = False
    if cfg.train.gradient_checkpointing and not cfg.train.fsdp:  # FSDP wraps decoder layers itself
        # transformers 5.2x renamed it; older 5.x (as on the GPU image) has only the old name.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    if cfg.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.train.seed)  # same adapter initialisation on every worker
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model


def build_optimizer(model: torch.nn.Module, cfg: AlignConfig) -> torch.optim.AdamW:
    """Return AdamW over the trainable parameters; biases and norm weights are not decayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        # By name, not shape: FSDP flattens the parameters it shards.
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (cfg.train.adam_beta1, cfg.train.adam_beta2)
    # The fused CUDA kernel updates every parameter in one launch (+1.6% tokens/s at 0.5B, docs/benchmarks.md).
    fused = True if all(p.is_cuda for p in decay + no_decay) else None
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.train.learning_rate, betas=betas, fused=fused)


def steps_per_epoch(num_examples: int, world_size: int, cfg: AlignConfig) -> int:
    """Return optimiser steps per epoch on each worker (DistributedSampler pads the shards to equal size)."""
    batches = math.ceil(math.ceil(num_examples / world_size) / cfg.train.per_device_batch_size)
    return math.ceil(batches / cfg.train.gradient_accumulation_steps)


@dataclass
class _PendingStep:
    """An optimiser step taken whose totals (loss, tokens, examples, report flag) are still on the device."""

    step: int
    epoch: int
    learning_rate: float
    started: float
    totals: torch.Tensor
    checkpoint: bool  # a step_N checkpoint is due once it is read


def defers_readback(device: torch.device) -> bool:
    """Return whether the loop reads each step's totals back one step late on `device` (GPUs: see run_training)."""
    return device.type == "cuda"


def _micro_batch_groups(loader, size: int):
    iterator = iter(loader)
    while group := list(islice(iterator, size)):
        yield group


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def run_training(
    model: torch.nn.Module,
    features: Features,
    cfg: AlignConfig,
    *,
    device: torch.device,
    pad_id: int,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    on_step: Callable[[list[dict]], None] | None = None,
    on_epoch_end: Callable[[TrainLog, bool, list[dict]], None] | None = None,
    on_checkpoint: Callable[[TrainLog, dict, list[dict], ResumeState, str], None] | None = None,
    report_interval_s: float = 0.0,
    resume: ResumeState | None = None,
    stop_after_epoch: int | None = None,
) -> TrainLog:
    """Return the TrainLog of SFT on `features`; this worker trains on its 1/world_size shard of each epoch.

    Callbacks run on every worker at the same steps, so that callers can report and save collectively:
    `on_step(steps)` with the metrics of each step since its last call, once `report_interval_s` has
    passed on rank 0; after every epoch either `on_epoch_end(log, is_last, steps)` with the steps not yet passed
    to on_step, or, when a checkpoint is due, `on_checkpoint(log, metrics, steps, state, name)`, which
    also runs every train.save_every_steps steps. Its name is `final` at the end, else `epoch_N` or
    `step_N`. With `resume` (a ResumeState from a checkpoint) the loop continues where that one stopped:
    same optimiser, schedule, data position and RNG, so the result equals an uninterrupted run.

    `stop_after_epoch=K` pauses the run after epoch K's checkpoint (`epoch_K`, with train.save_every_epoch):
    the schedule still spans every epoch of `cfg`, and a later call resumed from that checkpoint goes on
    exactly as if it had never paused. A run resumed at or past epoch K returns at once.
    """
    train = cfg.train
    if stop_after_epoch is not None and not train.save_every_epoch:
        raise ValueError("stop_after_epoch needs train.save_every_epoch: the paused run continues from that checkpoint")
    sampler = DistributedSampler(features, num_replicas=world_size, rank=rank, shuffle=True, seed=train.seed)
    # Its own generator: by default each new iterator draws a seed from the global RNG, which would
    # shift dropout masks after a resume mid-epoch.
    # Pinned batches on a GPU, so their copies to the device are asynchronous (`non_blocking` below).
    loader = DataLoader(features, batch_size=train.per_device_batch_size, sampler=sampler,
                        collate_fn=partial(collate, pad_id=pad_id), generator=torch.Generator(),
                        pin_memory=device.type == "cuda")
    per_epoch = steps_per_epoch(len(features), world_size, cfg)
    total_steps = min(train.epochs * per_epoch, train.max_steps or math.inf)
    optimizer = build_optimizer(model, cfg)
    from transformers import get_scheduler

    scheduler = get_scheduler(train.scheduler, optimizer,
                              num_warmup_steps=round(train.warmup_ratio * total_steps), num_training_steps=total_steps)
    autocast = (partial(torch.autocast, "cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext)
    distributed = world_size > 1 and torch.distributed.is_initialized()
    log = TrainLog(num_examples=len(features), world_size=world_size, total_steps=total_steps)
    log_every = max(1, total_steps // 25)
    if train.compile:
        model.compile()  # in place: the module, its state dict and its checkpoints keep their names
    torch.manual_seed(train.seed + rank)  # dropout masks differ across workers, as their data does
    step, epoch_losses, epoch_tokens = 0, [], 0.0
    if resume is not None:
        if resume.step >= total_steps:
            return resume.log  # the checkpoint is the end of training; nothing is left to do
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        _set_rng_state(resume.rng)
        log, step, epoch_losses, epoch_tokens = resume.log, resume.step, resume.epoch_losses, resume.epoch_tokens
        log.resumed_at_steps.append(step)
    if stop_after_epoch is not None and step >= stop_after_epoch * per_epoch:
        return log  # this stage was trained before (a retried trial): its checkpoint is the latest

    def state(final: bool = False) -> ResumeState:
        return ResumeState(step=step, log=log, epoch_losses=list(epoch_losses), epoch_tokens=epoch_tokens,
                           rng=_rng_state(), optimizer=None if final else optimizer.state_dict(),
                           scheduler=None if final else scheduler.state_dict())

    model.train()
    unreported, last_report = [], time.perf_counter()
    save_every = train.save_every_steps
    # On a GPU the loop reads each step's totals back one step late: the host then queues step s+1 (and
    # copies its pinned batch) while the device still runs step s, instead of idling at a per-step sync.
    # Steps that save a checkpoint or end an epoch are read at once. On a CPU every step is read at once.
    deferred = defers_readback(device)
    pending: list[_PendingStep] = []
    settled_at = time.perf_counter()

    def settle() -> None:
        """Read back the pending step's totals (the loop's one host sync per step), then log and report it."""
        nonlocal epoch_tokens, unreported, last_report, settled_at
        taken = pending.pop()
        loss_value, tokens, examples, report_due = taken.totals.tolist()
        now = time.perf_counter()
        seconds, settled_at = now - max(taken.started, settled_at), now
        loss_value /= world_size
        metrics = {"step": taken.step, "epoch": taken.epoch, "loss": loss_value, "learning_rate": taken.learning_rate,
                   "tokens_per_s": tokens / seconds, "examples_per_s": examples / seconds}
        log.step_losses.append(loss_value)
        epoch_losses.append(loss_value)
        epoch_tokens += tokens
        if progress and rank == 0 and (taken.step % log_every == 0 or taken.step == total_steps):
            # sys.stdout, not print: Ray Train patches print in workers and the line would show twice.
            sys.stdout.write(f"step {taken.step}/{total_steps}  epoch {taken.epoch}  loss {loss_value:.4f}  "
                             f"lr {taken.learning_rate:.2e}  {metrics['examples_per_s']:.1f} examples/s\n")
            sys.stdout.flush()
        unreported.append(metrics)
        if taken.checkpoint:
            on_checkpoint(log, metrics, unreported, state(), f"step_{taken.step}")
            unreported, last_report = [], time.perf_counter()
        elif on_step and report_due:
            on_step(unreported)
            unreported, last_report = [], time.perf_counter()

    for epoch in range(step // per_epoch, math.ceil(total_steps / per_epoch)):
        sampler.set_epoch(epoch)
        done_in_epoch = step - epoch * per_epoch  # optimiser steps of this epoch already taken before a resume
        epoch_start = time.perf_counter()
        if done_in_epoch == 0:
            epoch_losses, epoch_tokens = [], 0.0
        groups = islice(_micro_batch_groups(loader, train.gradient_accumulation_steps), done_in_epoch, None)
        for index, group in enumerate(groups, start=done_in_epoch):
            step_start = time.perf_counter()
            # loss, input tokens (no padding), examples of this step on this worker, and whether rank 0
            # wants to report; summed over workers below, so every worker reports at the same steps.
            # Filled on the device (a tensor built from host values would be a synchronous copy).
            report_due = rank == 0 and time.perf_counter() - last_report >= report_interval_s
            totals = torch.zeros(4, device=device, dtype=torch.float64)
            totals[3].fill_(float(report_due))
            for micro, batch in enumerate(group):
                batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
                # Gradients are all-reduced once per optimiser step, on the last micro-batch only.
                is_last = micro == len(group) - 1
                wrapped = isinstance(model, (DistributedDataParallel, FullyShardedDataParallel))
                sync = model.no_sync() if wrapped and not is_last else contextlib.nullcontext()
                with sync:
                    with autocast():
                        loss = model(**batch).loss / len(group)
                    loss.backward()
                examples_in_batch = torch.full((), len(batch["input_ids"]), device=device, dtype=torch.float64)
                totals[:3] += torch.stack([loss.detach().double(), batch["attention_mask"].sum().double(),
                                           examples_in_batch])
            if train.max_grad_norm is not None:
                if isinstance(model, FullyShardedDataParallel):  # the norm spans every shard
                    model.clip_grad_norm_(train.max_grad_norm)
                else:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if distributed:
                torch.distributed.all_reduce(totals)
            step += 1
            epoch_ends = index + 1 == per_epoch or step == total_steps
            checkpoint = bool(on_checkpoint and save_every and step % save_every == 0 and not epoch_ends)
            if pending:  # the step before this one: finished on the device by now, or nearly
                settle()
            pending.append(_PendingStep(step, epoch + 1, learning_rate, step_start, totals, checkpoint))
            if not deferred or checkpoint or epoch_ends:
                settle()
            if step == total_steps:
                break
        seconds = time.perf_counter() - epoch_start
        log.epoch_metrics.append({"epoch": epoch + 1, "steps": len(epoch_losses),
                                  "epoch_loss": sum(epoch_losses) / len(epoch_losses),
                                  "tokens_per_s": epoch_tokens / seconds, "epoch_seconds": seconds})
        is_last = step == total_steps
        if on_checkpoint and (is_last or train.save_every_epoch or (save_every and step % save_every == 0)):
            name = "final" if is_last else f"epoch_{epoch + 1}" if train.save_every_epoch else f"step_{step}"
            on_checkpoint(log, log.epoch_metrics[-1], unreported, state(final=is_last), name)
            unreported, last_report = [], time.perf_counter()
        elif on_epoch_end:
            on_epoch_end(log, is_last, unreported)
            unreported, last_report = [], time.perf_counter()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break  # paused after its checkpoint; the next stage resumes from it
    return log


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
    _unwrapped(model).save_pretrained(directory, state_dict=state_dict)
    if cfg.finetune == "full":
        tokenizer.save_pretrained(directory)
    log.write(directory)


def train_in_process(cfg: AlignConfig, features: Features, model_path: str, *, checkpoint_dir: str | Path | None = None,
                     progress: bool = True) -> tuple[torch.nn.Module, TrainLog]:
    """Return (trained model, TrainLog) of one worker's loop run here, without Ray; saves when checkpoint_dir is set.

    Used by the throughput benchmark and by GPU checks; `run_alignment` is the product path.
    """
    device = torch.device("cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model_path, cfg.trust_remote_code)
    model = load_model(model_path, cfg, device)
    log = run_training(model, features, cfg, device=device, pad_id=tokenizer.pad_token_id, progress=progress)
    if checkpoint_dir is not None:
        save_checkpoint(model, tokenizer, checkpoint_dir, cfg, log)
    return model, log
