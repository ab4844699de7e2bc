"""One safety-alignment run on Ray Train: `run_alignment(cfg)` returns a checkpoint the evaluators can load.

The driver resolves the model, loads and tokenizes the data and checks them before Ray starts, so bad
input costs seconds, not a cluster start-up. Workers run the loop of `trainables.sft` data-parallel
(DDP, or FSDP for full fine-tuning on GPUs), report the loss of every step (in batches, every couple of
seconds) and metrics per epoch, and save
an HF-format checkpoint: a peft adapter for LoRA, full weights and tokenizer otherwise.

With `scaling.num_workers: 0` the same loop runs in Ray Train's local mode, in the calling process (a
sweep's trial): no worker group to start, which is most of a short run's cost on CPU. `trainables.local_mode`
keeps its checkpoints in the run's storage so that a retry resumes, as a worker group's would.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from trainables.config import AlignConfig
from trainables.data import training_examples
from trainables.locations import resolve_model
from trainables.schema import ConfigError
from trainables.checkpoints import read_training_log
from trainables.sft import Features, load_tokenizer, steps_per_epoch, tokenize_examples
from trainables.train_session import TrainSession, session_class


# Ray Train's controller takes one report per worker each time it polls them (trainables.ray_backend
# sets the poll interval); a worker that reports faster blocks. So step losses are reported in batches,
# one batch per poll interval and at least this far apart.
MIN_REPORT_INTERVAL_S = 0.5
NODE_ID_KEY = "node_id"  # in each checkpoint report: the Ray node the reporting worker runs on


@dataclass
class AlignmentResult:
    """A finished alignment run: where its checkpoint is and how training went."""

    checkpoint_dir: Path  # local; a peft adapter (finetune lora) or a full model (finetune full)
    finetune: str
    base_model: str  # the resolved base model: a local directory or a Hub id
    step_losses: list[float]
    epoch_metrics: list[dict]
    num_examples: int
    resumed_at_steps: list[int]  # where a restarted run picked up from a checkpoint; empty when it never stopped
    # The same checkpoint in remote storage (s3://, gs://), for readers on other nodes; None when local.
    checkpoint_uri: str | None = None
    # Where the run's wall time went, in seconds, by phase (see phase_seconds).
    phase_seconds: dict[str, float] = field(default_factory=dict)
    train_node_id: str | None = None  # the Ray node rank 0 trained on (a cluster's GPU node)
    finished: bool = True  # False for a stage (`until_epoch`) that paused before the run's last step


@dataclass
class PreparedRun:
    """What the driver hands the workers: the resolved model and the tokenized training examples."""

    model_path: str
    features: Features
    pad_id: int


def prepare_run(cfg: AlignConfig) -> PreparedRun:
    """Return the resolved model and tokenized data of `cfg`; raise ConfigError on bad input, before Ray starts."""
    model_path = resolve_model(cfg.model)  # a tiny:// model must be built already: see trainables.locations
    examples = training_examples(cfg.data, cfg.reasoning_data, cfg.reasoning_mix, cfg.train.seed)
    try:
        tokenizer = load_tokenizer(model_path, cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model: cannot load a tokenizer from {model_path}: {err}") from None
    features = tokenize_examples(tokenizer, examples, cfg.reasoning_format, cfg.train.max_seq_length)
    return PreparedRun(model_path, features, tokenizer.pad_token_id)


def unique_run_name(name: str) -> str:
    """Return `name` with a timestamp and a random suffix: a run of its own, never one resumed from storage."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_alignment(cfg: AlignConfig, *, progress: bool = True, run_name: str | None = None,
                  until_epoch: int | None = None) -> AlignmentResult:
    """Return the result of safety SFT on Ray Train; starts a local Ray if none is running (local mode needs none).

    Ray Train continues a run whose name already has checkpoints in storage: a Tune trial passes a
    name fixed by its trial id, so its retry resumes from the last checkpoint (Ray's Train-inside-Tune
    pattern). Without `run_name` the run gets a unique one. Inside a Tune trial the trainer's reports
    stay with Ray Train (no callback forwards them), so the trial reports only the objectives it
    computes from the returned checkpoint.

    `until_epoch=K` (with train.save_every_epoch) trains one stage: the run pauses after epoch K, and the
    next call with the same `run_name` and K+1 resumes it exactly (`sft.run_training`'s stop_after_epoch),
    so a sweep can read each epoch before paying for the next. Its result is epoch K's checkpoint.
    """
    prepare_start = time.time()
    run = prepare_run(cfg)
    prepared = time.time()
    import pyarrow.fs
    from ray.train import LoggingConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from trainables import ray_backend

    mode = session_class(cfg)
    mode.ensure_ray()
    run_name = run_name or unique_run_name(cfg.name)
    storage_path = cfg.storage_path or str(cfg.output_dir)
    if "://" not in storage_path:
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    total_steps = min(cfg.train.epochs * steps_per_epoch(len(run.features), cfg.scaling.world_size, cfg),
                      cfg.train.max_steps or math.inf)
    with ray_backend.run_settings(total_steps) as poll_interval_s:
        job = {"cfg": cfg, "run": run, "progress": progress, "run_name": run_name, "storage_path": storage_path,
               "report_interval_s": max(poll_interval_s, MIN_REPORT_INTERVAL_S), "until_epoch": until_epoch}
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"job": mode.pass_job(job)},
            torch_config=ray_backend.backend_config(cfg.scaling.world_size),
            scaling_config=_scaling_config(cfg),
            # Ray Train logs every report at INFO; the workers print their own progress instead.
            run_config=RunConfig(name=run_name, storage_path=storage_path, logging_config=LoggingConfig("WARNING")),
        )
        fit_start = time.time()
        result = trainer.fit()
        fit_end = time.time()
    metrics, checkpoint = mode.read_result(result)
    checkpoint_uri = None
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        checkpoint_dir = Path(checkpoint.path)
    else:  # s3:// or gs://: the evaluators need a local copy
        checkpoint_dir = Path(checkpoint.to_directory(str(cfg.output_dir / run_name / Path(checkpoint.path).name)))
        checkpoint_uri = f"{storage_path.split('://')[0]}://{checkpoint.path}"
    log = read_training_log(checkpoint_dir)
    if until_epoch is not None and len(log.epoch_metrics) > until_epoch:
        # A retried stage whose run went further before: its result is its own epoch's checkpoint.
        checkpoint_dir = _epoch_checkpoint(checkpoint, cfg, run_name, until_epoch)
        checkpoint_uri = f"{checkpoint_uri.rsplit('/', 1)[0]}/epoch_{until_epoch}" if checkpoint_uri else None
        log = read_training_log(checkpoint_dir)
    phases = phase_seconds(metrics, log.epoch_metrics, fit_start=fit_start, fit_end=fit_end)
    phases["prepare"] = prepared - prepare_start
    return AlignmentResult(checkpoint_dir=checkpoint_dir, finetune=cfg.finetune,
                           base_model=run.model_path,
                           step_losses=log.step_losses, epoch_metrics=log.epoch_metrics,
                           num_examples=log.num_examples, resumed_at_steps=log.resumed_at_steps,
                           checkpoint_uri=checkpoint_uri, phase_seconds=phases,
                           train_node_id=metrics.get(NODE_ID_KEY),
                           finished=len(log.step_losses) >= log.total_steps)


def _scaling_config(cfg: AlignConfig):
    """Return Ray Train's ScalingConfig of `cfg`, without the notice Ray logs at INFO on every local-mode run."""
    from ray.train import ScalingConfig

    notices = logging.getLogger("ray.train.v2.api.config")
    level = notices.level
    notices.setLevel(logging.WARNING)
    try:
        return ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                             resources_per_worker=cfg.scaling.resources_per_worker)
    finally:
        notices.setLevel(level)


# Keys of the final report that carry the worker's clock readings (seconds since the epoch, or durations).
WORKER_TIMING_KEYS = ("timing/worker_started_at", "timing/model_load_s", "timing/checkpoint_save_s",
                      "timing/report_started_at")


def _epoch_checkpoint(checkpoint, cfg: AlignConfig, run_name: str, epoch: int) -> Path:
    """Return the local folder of the run's `epoch_N` checkpoint, beside `checkpoint` in the run's storage."""
    import pyarrow.fs

    source = f"{checkpoint.path.rsplit('/', 1)[0]}/epoch_{epoch}"
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(source)
    local = cfg.output_dir / run_name / f"epoch_{epoch}"  # s3:// or gs://: the evaluators read a local copy
    local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(source, str(local), source_filesystem=checkpoint.filesystem,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())
    return local


def phase_seconds(final_metrics: dict, epoch_metrics: list[dict], *, fit_start: float, fit_end: float) -> dict:
    """Return {phase: seconds} of one fit: start-up, model load, training steps, checkpoint, and the whole fit.

    - startup: controller, worker group and process group, until the worker's loop starts;
    - model_load: loading the model (and wrapping it) in the worker;
    - train_steps: the epochs' wall time (steps and their batched reports);
    - checkpoint: saving the final checkpoint, its upload through the final report, and shutdown.
    Phases the worker did not time (an older worker, a missing report) are left out.
    """
    phases = {"ray_train": fit_end - fit_start,
              "train_steps": sum(m.get("epoch_seconds", 0.0) for m in epoch_metrics)}
    if all(key in final_metrics for key in WORKER_TIMING_KEYS):
        phases["startup"] = final_metrics["timing/worker_started_at"] - fit_start
        phases["model_load"] = final_metrics["timing/model_load_s"]
        phases["checkpoint"] = final_metrics["timing/checkpoint_save_s"] + fit_end - final_metrics[
            "timing/report_started_at"]
    return phases


def _train_worker(config: dict) -> dict | None:
    """Ray Train's per-worker loop: set up, train, report and save, as its session (`train_session`) says.

    In local mode it returns its last report and checkpoint instead (trainables.local_mode).
    """
    started_at = time.time()
    import ray
    import torch

    from trainables import checkpoints, fsdp, sft
    from trainables.private_apis import train_report_logger_names

    # Workers log every report at INFO whatever RunConfig's LoggingConfig says; our progress lines replace them.
    for name in train_report_logger_names():
        logging.getLogger(name).setLevel(logging.WARNING)
    config = config["job"] if isinstance(config["job"], dict) else ray.get(config["job"])
    cfg: AlignConfig = config["cfg"]
    run: PreparedRun = config["run"]

    # Setup: the session, the model with its resumed weights, wrapped for data parallelism.
    session: TrainSession = session_class(cfg)(cfg, config["storage_path"], config["run_name"])
    rank, world_size = session.rank, session.world_size
    torch.set_num_threads(session.cpu_threads(cfg))
    device = session.device()
    tokenizer = sft.load_tokenizer(run.model_path, cfg.trust_remote_code)
    sharded = cfg.train.fsdp and world_size > 1
    if sharded:
        model = sft.prepare_for_training(fsdp.load_for_fsdp(run.model_path, rank=rank, dtype=sft.compute_dtype(device),
                                                             trust_remote_code=cfg.trust_remote_code), cfg)
    else:
        model = sft.load_model(run.model_path, cfg, device)
    # Before wrapping: DDP and FSDP start from rank 0's weights.
    # A stage of a run paused on purpose (until_epoch) resumes quietly; any other resume is announced.
    resume = _restore(model, session.latest_checkpoint(), cfg, rank, world_size,
                      announce=config.get("until_epoch") is None)
    if sharded:
        layers = fsdp.decoder_layer_classes(model)
        model = session.prepare(model, move_to_device=False, parallel_strategy="fsdp",
                                parallel_strategy_kwargs=fsdp.fsdp_kwargs(model, device, weights_on_rank0_only=True))
        if cfg.train.gradient_checkpointing:
            fsdp.apply_activation_checkpointing(model, layers)
    else:
        model = session.prepare(model)
    timing = {"timing/worker_started_at": started_at, "timing/model_load_s": time.time() - started_at}
    # Returned with the result: where the trial trained (none when local mode runs without Ray).
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

    def on_checkpoint(log: checkpoints.TrainLog, metrics: dict, steps: list[dict], state: checkpoints.ResumeState,
                      name: str):
        with tempfile.TemporaryDirectory() as directory:
            save_start = time.time()
            checkpoints.save_checkpoint(model, tokenizer, directory, cfg, log, rank, resume=state)  # collective under FSDP
            metrics = {**metrics, "step_losses": [s["loss"] for s in steps], NODE_ID_KEY: node_id}
            if name == "final":  # the driver turns these into the run's phase times
                metrics.update(timing, **{"timing/checkpoint_save_s": time.time() - save_start,
                                          "timing/report_started_at": time.time()})
            session.save(metrics, directory, name)

    # Train, checkpointing as the run goes.
    sft.run_training(model, run.features, cfg, device=device, pad_id=run.pad_id, rank=rank, world_size=world_size,
                     progress=config["progress"], on_step=session.on_step, on_epoch_end=session.on_epoch_end,
                     on_checkpoint=on_checkpoint, report_interval_s=config["report_interval_s"], resume=resume,
                     stop_after_epoch=config.get("until_epoch"))
    return session.outcome()


def _restore(model, checkpoint, cfg: AlignConfig, rank: int, world_size: int, announce: bool = True):
    """Return this worker's ResumeState from `checkpoint`, the run's last (weights loaded into `model`), or None.

    Under FSDP only rank 0 holds real weights before wrapping; the others receive them from it.
    """
    import sys

    from trainables import checkpoints

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = checkpoints.read_resume_state(directory, rank)
        if state is None:  # a checkpoint from before resume states existed: nothing to continue from
            return None
        if state.log.world_size != world_size:
            raise RuntimeError(f"the last checkpoint was written by {state.log.world_size} workers, this run has "
                               f"{world_size}; resume with scaling.num_workers={state.log.world_size}")
        if not (cfg.train.fsdp and world_size > 1 and rank != 0):
            checkpoints.restore_weights(model, directory, cfg)
    if rank == 0 and announce:
        # Always printed, quiet or not: the run's log shows where a retry picked up.
        sys.stdout.write(f"resuming from checkpoint {Path(checkpoint.path).name} at step {state.step}/"
                         f"{state.log.total_steps}\n")
        sys.stdout.flush()
    return state
