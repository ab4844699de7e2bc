"""The supervised fine-tuning loop in plain torch, shared by Ray Train workers and in-process runs.

Nothing here imports Ray: the same loop runs in a Ray Train worker (which wraps the model for data
parallelism and reports to Ray) and in `train_in_process` (benchmarks, GPU checks without a cluster).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable

import torch
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from trainables.checkpoints import ResumeState, TrainLog, rng_state, save_checkpoint, set_rng_state
from trainables.config import AlignConfig
from trainables.dtypes import resolve_dtype
from trainables.formats import IGNORE_INDEX, Example, get_format, tokenize_example
from trainables.schema import ConfigError

Features = list[dict[str, list[int]]]


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
    if stop_after_epoch is not None and not cfg.train.save_every_epoch:
        raise ValueError("stop_after_epoch needs train.save_every_epoch: the paused run continues from that checkpoint")
    recipe = _SFTRecipe(model, features, cfg, device=device, pad_id=pad_id, rank=rank, world_size=world_size,
                        progress=progress, on_step=on_step, on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint,
                        report_interval_s=report_interval_s)
    recipe.setup(resume)
    if recipe.finished_before(stop_after_epoch):
        return recipe.log
    for epoch in recipe.epochs_left():
        recipe.train_epoch(epoch)
        recipe.end_epoch(epoch)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break  # paused after its checkpoint; the next stage resumes from it
    return recipe.log


class _SFTRecipe:
    """One worker's SFT loop as named steps: `setup` (data, schedule, optimiser, resumed state), `train_epoch`
    (optimiser steps, each read back and reported by `_settle`), and `end_epoch` (epoch metrics, then a checkpoint
    or a report). `run_training` drives them; the order of every seeded draw is the loop's contract with resume."""

    def __init__(self, model: torch.nn.Module, features: Features, cfg: AlignConfig, *, device: torch.device,
                 pad_id: int, rank: int, world_size: int, progress: bool, on_step, on_epoch_end, on_checkpoint,
                 report_interval_s: float):
        self.model, self.features, self.cfg, self.train = model, features, cfg, cfg.train
        self.device, self.pad_id, self.rank, self.world_size = device, pad_id, rank, world_size
        self.progress, self.report_interval_s = progress, report_interval_s
        self.on_step, self.on_epoch_end, self.on_checkpoint = on_step, on_epoch_end, on_checkpoint

    # --- setup -------------------------------------------------------------------------------------------------

    def setup(self, resume: ResumeState | None) -> None:
        """Build the data loader, schedule and optimiser, seed this worker, and take up `resume` when given."""
        train, features, device = self.train, self.features, self.device
        self.sampler = DistributedSampler(features, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                          seed=train.seed)
        # Its own generator: by default each new iterator draws a seed from the global RNG, which would
        # shift dropout masks after a resume mid-epoch.
        # Pinned batches on a GPU, so their copies to the device are asynchronous (`non_blocking` below).
        self.loader = DataLoader(features, batch_size=train.per_device_batch_size, sampler=self.sampler,
                                 collate_fn=partial(collate, pad_id=self.pad_id), generator=torch.Generator(),
                                 pin_memory=device.type == "cuda")
        self.per_epoch = steps_per_epoch(len(features), self.world_size, self.cfg)
        self.total_steps = min(train.epochs * self.per_epoch, train.max_steps or math.inf)
        self.optimizer = build_optimizer(self.model, self.cfg)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(train.scheduler, self.optimizer,
                                       num_warmup_steps=round(train.warmup_ratio * self.total_steps),
                                       num_training_steps=self.total_steps)
        self.autocast = (partial(torch.autocast, "cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext)
        self.distributed = self.world_size > 1 and torch.distributed.is_initialized()
        self.log = TrainLog(num_examples=len(features), world_size=self.world_size, total_steps=self.total_steps)
        self.log_every = max(1, self.total_steps // 25)
        if train.compile:
            self.model.compile()  # in place: the module, its state dict and its checkpoints keep their names
        torch.manual_seed(train.seed + self.rank)  # dropout masks differ across workers, as their data does
        self.step, self.epoch_losses, self.epoch_tokens = 0, [], 0.0
        self.resumed_at_end = resume is not None and resume.step >= self.total_steps
        if resume is not None and not self.resumed_at_end:
            self.optimizer.load_state_dict(resume.optimizer)
            self.scheduler.load_state_dict(resume.scheduler)
            set_rng_state(resume.rng)
            self.log, self.step = resume.log, resume.step
            self.epoch_losses, self.epoch_tokens = resume.epoch_losses, resume.epoch_tokens
            self.log.resumed_at_steps.append(self.step)
        elif self.resumed_at_end:
            self.log = resume.log  # the checkpoint is the end of training; nothing is left to do
        self.unreported, self.last_report = [], time.perf_counter()
        # On a GPU the loop reads each step's totals back one step late: the host then queues step s+1 (and
        # copies its pinned batch) while the device still runs step s, instead of idling at a per-step sync.
        # Steps that save a checkpoint or end an epoch are read at once. On a CPU every step is read at once.
        self.deferred = defers_readback(device)
        self.pending: list[_PendingStep] = []
        self.settled_at = time.perf_counter()

    def finished_before(self, stop_after_epoch: int | None) -> bool:
        """Return True when nothing is left to train: the resumed checkpoint ends the run, or ends this stage
        (a retried stage that was trained before: its checkpoint is the latest)."""
        return self.resumed_at_end or (stop_after_epoch is not None
                                       and self.step >= stop_after_epoch * self.per_epoch)

    def epochs_left(self) -> range:
        """Put the model in training mode and return the epochs that remain (from the resumed one on)."""
        self.model.train()
        return range(self.step // self.per_epoch, math.ceil(self.total_steps / self.per_epoch))

    def state(self, final: bool = False) -> ResumeState:
        """Return what a restart needs to continue from this step exactly; a final state keeps no optimiser."""
        return ResumeState(step=self.step, log=self.log, epoch_losses=list(self.epoch_losses),
                           epoch_tokens=self.epoch_tokens, rng=rng_state(),
                           optimizer=None if final else self.optimizer.state_dict(),
                           scheduler=None if final else self.scheduler.state_dict())

    # --- train ----------------------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> None:
        """Take this epoch's optimiser steps (those not taken before a resume), until the epoch or the run ends."""
        train = self.train
        self.sampler.set_epoch(epoch)
        done_in_epoch = self.step - epoch * self.per_epoch  # optimiser steps of this epoch already taken
        self.epoch_start = time.perf_counter()
        if done_in_epoch == 0:
            self.epoch_losses, self.epoch_tokens = [], 0.0
        groups = islice(_micro_batch_groups(self.loader, train.gradient_accumulation_steps), done_in_epoch, None)
        for index, group in enumerate(groups, start=done_in_epoch):
            step_start = time.perf_counter()
            totals, learning_rate = self._optimizer_step(group)
            self.step += 1
            epoch_ends = index + 1 == self.per_epoch or self.step == self.total_steps
            save_every = train.save_every_steps
            checkpoint = bool(self.on_checkpoint and save_every and self.step % save_every == 0 and not epoch_ends)
            if self.pending:  # the step before this one: finished on the device by now, or nearly
                self._settle()
            self.pending.append(_PendingStep(self.step, epoch + 1, learning_rate, step_start, totals, checkpoint))
            if not self.deferred or checkpoint or epoch_ends:
                self._settle()
            if self.step == self.total_steps:
                break

    def _optimizer_step(self, group: list[dict]) -> tuple[torch.Tensor, float]:
        """Run one optimiser step over a group of micro-batches; return its totals (on the device) and its rate."""
        model, device, train = self.model, self.device, self.train
        # loss, input tokens (no padding), examples of this step on this worker, and whether rank 0
        # wants to report; summed over workers below, so every worker reports at the same steps.
        # Filled on the device (a tensor built from host values would be a synchronous copy).
        report_due = self.rank == 0 and time.perf_counter() - self.last_report >= self.report_interval_s
        totals = torch.zeros(4, device=device, dtype=torch.float64)
        totals[3].fill_(float(report_due))
        for micro, batch in enumerate(group):
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            # Gradients are all-reduced once per optimiser step, on the last micro-batch only.
            is_last = micro == len(group) - 1
            wrapped = isinstance(model, (DistributedDataParallel, FullyShardedDataParallel))
            sync = model.no_sync() if wrapped and not is_last else contextlib.nullcontext()
            with sync:
                with self.autocast():
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
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.distributed:
            torch.distributed.all_reduce(totals)
        return totals, learning_rate

    def _settle(self) -> None:
        """Read back the pending step's totals (the loop's one host sync per step), then log and report it."""
        taken = self.pending.pop()
        loss_value, tokens, examples, report_due = taken.totals.tolist()
        now = time.perf_counter()
        seconds, self.settled_at = now - max(taken.started, self.settled_at), now
        loss_value /= self.world_size
        metrics = {"step": taken.step, "epoch": taken.epoch, "loss": loss_value, "learning_rate": taken.learning_rate,
                   "tokens_per_s": tokens / seconds, "examples_per_s": examples / seconds}
        self.log.step_losses.append(loss_value)
        self.epoch_losses.append(loss_value)
        self.epoch_tokens += tokens
        if self.progress and self.rank == 0 and (taken.step % self.log_every == 0 or taken.step == self.total_steps):
            # sys.stdout, not print: Ray Train patches print in workers and the line would show twice.
            sys.stdout.write(f"step {taken.step}/{self.total_steps}  epoch {taken.epoch}  loss {loss_value:.4f}  "
                             f"lr {taken.learning_rate:.2e}  {metrics['examples_per_s']:.1f} examples/s\n")
            sys.stdout.flush()
        self.unreported.append(metrics)
        if taken.checkpoint:
            self._checkpoint(metrics, self.state(), f"step_{taken.step}")
        elif self.on_step and report_due:
            self.on_step(self.unreported)
            self._reported()

    # --- checkpoint -----------------------------------------------------------------------------------------

    def end_epoch(self, epoch: int) -> None:
        """Log the epoch's metrics, then save a checkpoint when one is due, else report the epoch."""
        train, step = self.train, self.step
        seconds = time.perf_counter() - self.epoch_start
        self.log.epoch_metrics.append({"epoch": epoch + 1, "steps": len(self.epoch_losses),
                                       "epoch_loss": sum(self.epoch_losses) / len(self.epoch_losses),
                                       "tokens_per_s": self.epoch_tokens / seconds, "epoch_seconds": seconds})
        is_last = step == self.total_steps
        save_every = train.save_every_steps
        if self.on_checkpoint and (is_last or train.save_every_epoch or (save_every and step % save_every == 0)):
            name = "final" if is_last else f"epoch_{epoch + 1}" if train.save_every_epoch else f"step_{step}"
            self._checkpoint(self.log.epoch_metrics[-1], self.state(final=is_last), name)
        elif self.on_epoch_end:
            self.on_epoch_end(self.log, is_last, self.unreported)
            self._reported()

    def _checkpoint(self, metrics: dict, state: ResumeState, name: str) -> None:
        self.on_checkpoint(self.log, metrics, self.unreported, state, name)
        self._reported()

    def _reported(self) -> None:
        self.unreported, self.last_report = [], time.perf_counter()


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
