"""One safety-alignment run on Ray Train: `run_alignment(cfg)` returns a checkpoint the evaluators can load.

The driver resolves the model, loads and tokenizes the data and checks them before Ray starts, so bad
input costs seconds, not a cluster start-up. Workers run the loop of `trainables.sft` data-parallel
(DDP, or FSDP for full fine-tuning on GPUs), report the loss of every step (in batches, every couple of
seconds) and metrics per epoch, and save
an HF-format checkpoint: a peft adapter for LoRA, full weights and tokenizer otherwise.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from trainables.config import AlignConfig, check_model_path
from trainables.data import load_examples, mix_reasoning
from trainables.schema import ConfigError
from trainables.sft import Features, load_tokenizer, read_training_log, tokenize_examples


# Ray Train's controller takes one report per worker each time it polls them (every 2 s unless set
# otherwise); a worker that reports faster blocks. So step losses are reported in batches this often.
REPORT_INTERVAL_S = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0))
NODE_ID_KEY = "node_id"  # in each epoch's report: the Ray node the reporting worker runs on


@dataclass
class AlignmentResult:
    """A finished alignment run: where its checkpoint is and how training went."""

    checkpoint_dir: Path  # local; a peft adapter (finetune lora) or a full model (finetune full)
    finetune: str
    base_model: str  # the resolved base model: a local directory or a Hub id
    step_losses: list[float]
    epoch_metrics: list[dict]
    num_examples: int
    # The same checkpoint in remote storage (s3://, gs://), for readers on other nodes; None when local.
    checkpoint_uri: str | None = None
    train_node_id: str | None = None  # the Ray node rank 0 trained on (a cluster's GPU node)


@dataclass
class PreparedRun:
    """What the driver hands the workers: the resolved model and the tokenized training examples."""

    model_path: str
    features: Features
    pad_id: int


def resolve_model(model: str) -> str:
    """Return the model as workers load it: tiny:// built and resolved, local paths absolute, Hub ids as given."""
    if model.startswith("tiny://"):
        from trainables.tiny.lrm import resolve_tiny_path  # builds the tiny LRM on first use (minutes)

        model = str(resolve_tiny_path(model))
    path = Path(model).expanduser()
    if path.exists():
        model = str(path.resolve())
    try:
        check_model_path(model)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    return model


def prepare_run(cfg: AlignConfig) -> PreparedRun:
    """Return the resolved model and tokenized data of `cfg`; raise ConfigError on bad input, before Ray starts."""
    model_path = resolve_model(cfg.model)
    examples = load_examples(cfg.data)
    if cfg.reasoning_mix > 0:
        examples = mix_reasoning(examples, load_examples(cfg.reasoning_data), cfg.reasoning_mix, cfg.train.seed)
    try:
        tokenizer = load_tokenizer(model_path, cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model: cannot load a tokenizer from {model_path}: {err}") from None
    features = tokenize_examples(tokenizer, examples, cfg.reasoning_format, cfg.train.max_seq_length)
    return PreparedRun(model_path, features, tokenizer.pad_token_id)


def run_alignment(cfg: AlignConfig, *, progress: bool = True) -> AlignmentResult:
    """Return the result of safety SFT on Ray Train; starts a local Ray if none is running.

    Inside a Tune trial the trainer's reports stay with Ray Train (no callback forwards them), so the
    trial reports only the objectives it computes from the returned checkpoint.
    """
    run = prepare_run(cfg)
    import pyarrow.fs
    import ray
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init()
    # A unique name per call: Ray Train resumes a run whose name already exists in storage.
    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    storage_path = cfg.storage_path or str(cfg.output_dir)
    if "://" not in storage_path:
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg, "run": run, "progress": progress},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker=cfg.scaling.resources_per_worker),
        # Ray Train logs every report at INFO; the workers print their own progress instead.
        run_config=RunConfig(name=run_name, storage_path=storage_path, logging_config=LoggingConfig("WARNING")),
    )
    result = trainer.fit()
    checkpoint = result.checkpoint
    checkpoint_uri = None
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        checkpoint_dir = Path(checkpoint.path)
    else:  # s3:// or gs://: the evaluators need a local copy
        checkpoint_dir = Path(checkpoint.to_directory(str(cfg.output_dir / run_name / "final")))
        checkpoint_uri = f"{storage_path.split('://')[0]}://{checkpoint.path}"
    log = read_training_log(checkpoint_dir)
    return AlignmentResult(checkpoint_dir=checkpoint_dir, finetune=cfg.finetune, base_model=run.model_path,
                           step_losses=log.step_losses, epoch_metrics=log.epoch_metrics,
                           num_examples=log.num_examples, checkpoint_uri=checkpoint_uri,
                           train_node_id=(result.metrics or {}).get(NODE_ID_KEY))


def _cpu_threads() -> int:
    """Return how many torch threads this worker may use: the CPUs Ray reserved for it, at least one."""
    import ray

    reserved = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, min(os.cpu_count() or 1, int(reserved)))


def _train_worker(config: dict) -> None:
    """Ray Train's per-worker loop: load, wrap for data parallelism, train, report and save."""
    import ray.train
    import torch
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model

    from trainables import fsdp, sft

    # Workers log every report at INFO whatever RunConfig's LoggingConfig says; our progress lines replace them.
    # Train V2's report logger is named after its source file, not its module, so name both.
    from ray.train.v2._internal.execution import context as train_context

    for name in ("ray.train", train_context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg: AlignConfig = config["cfg"]
    run: PreparedRun = config["run"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(_cpu_threads())
    device = get_device()
    tokenizer = sft.load_tokenizer(run.model_path, cfg.trust_remote_code)

    if cfg.train.fsdp and world_size > 1:
        model = fsdp.load_for_fsdp(run.model_path, rank=rank, dtype=sft.compute_dtype(device),
                                   trust_remote_code=cfg.trust_remote_code)
        model = sft.prepare_for_training(model, cfg)
        layers = fsdp.decoder_layer_classes(model)
        model = prepare_model(model, move_to_device=False, parallel_strategy="fsdp",
                              parallel_strategy_kwargs=fsdp.fsdp_kwargs(model, device, weights_on_rank0_only=True))
        if cfg.train.gradient_checkpointing:
            fsdp.apply_activation_checkpointing(model, layers)
    else:
        model = prepare_model(sft.load_model(run.model_path, cfg, device))

    node_id = ray.get_runtime_context().get_node_id()  # returned with the result: where the trial trained

    def on_step(steps: list[dict]) -> None:
        ray.train.report({**steps[-1], "step_losses": [s["loss"] for s in steps]})

    def on_epoch_end(log: sft.TrainLog, is_last: bool, steps: list[dict]) -> None:
        # The epoch's report also carries the loss of the steps since the last step report.
        metrics = {**log.epoch_metrics[-1], "step_losses": [s["loss"] for s in steps], NODE_ID_KEY: node_id}
        if not (is_last or cfg.train.save_every_epoch):
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            sft.save_checkpoint(model, tokenizer, directory, cfg, log, rank)  # collective under FSDP
            checkpoint = Checkpoint.from_directory(directory) if rank == 0 else None
            name = "final" if is_last else f"epoch_{metrics['epoch']}"
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    sft.run_training(model, run.features, cfg, device=device, pad_id=run.pad_id, rank=rank, world_size=world_size,
                     progress=config["progress"], on_step=on_step, on_epoch_end=on_epoch_end,
                     report_interval_s=REPORT_INTERVAL_S)
