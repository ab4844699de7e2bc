"""Where the training loop runs, behind one small interface: a worker of a Ray Train worker group, or Ray Train's
local mode in the calling process (`scaling.num_workers: 0`, `trainables.local_mode`).

`align` asks the session class for how the driver hands the job over and reads the result back, and the loop asks
its session for its rank, device, threads, last checkpoint, how to wrap the model, how to report progress and how
to save a checkpoint. Each mode answers in one class, so neither `align` nor the loop branches on the mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol

from trainables.config import AlignConfig


class TrainSession(Protocol):
    rank: int
    world_size: int
    # Step and epoch reports feed Ray Train's view of a worker group's run; local mode has no such view (None).
    on_step: Callable[[list[dict]], None] | None
    on_epoch_end: Callable[[Any, bool, list[dict]], None] | None

    def device(self): ...

    def cpu_threads(self, cfg: AlignConfig) -> int: ...

    def latest_checkpoint(self): ...

    def prepare(self, model, **kwargs): ...

    def save(self, metrics: dict, directory: str | Path, name: str) -> None: ...

    def outcome(self) -> dict | None: ...


def _threads(reserved: float) -> int:
    return max(1, min(os.cpu_count() or 1, int(reserved)))


class WorkerGroupSession:
    """One worker of a Ray Train worker group: Ray Train places it, hands it its checkpoint and keeps its reports."""

    def __init__(self, cfg: AlignConfig, storage_path: str, run_name: str):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    @staticmethod
    def ensure_ray() -> None:
        """Start a local Ray when none runs: a worker group needs one."""
        import ray

        if not ray.is_initialized():
            ray.init()

    @staticmethod
    def pass_job(job: dict):
        # Workers get the job through the object store: Ray Train's controller unpickles train_loop_config
        # (it keeps it in its run context), and unpickling the config and data imports the loop's torch.
        import ray

        return ray.put(job)

    @staticmethod
    def read_result(result) -> tuple[dict, Any]:
        """Return (the last report's metrics, the last checkpoint) of a finished fit."""
        return result.metrics or {}, result.checkpoint

    def device(self):
        from ray.train.torch import get_device

        return get_device()

    def cpu_threads(self, cfg: AlignConfig) -> int:
        """The CPUs Ray reserved for this worker, at least one."""
        import ray

        return _threads(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))

    def latest_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def prepare(self, model, **kwargs):
        """Return the model wrapped for data parallelism (DDP, or FSDP with `kwargs`) and moved to the device."""
        from ray.train.torch import prepare_model

        return prepare_model(model, **kwargs)

    def on_step(self, steps: list[dict]) -> None:
        import ray.train

        ray.train.report({**steps[-1], "step_losses": [s["loss"] for s in steps]})

    def on_epoch_end(self, log, is_last: bool, steps: list[dict]) -> None:
        import ray.train

        # The epoch's report also carries the loss of the steps since the last step report.
        ray.train.report({**log.epoch_metrics[-1], "step_losses": [s["loss"] for s in steps]})

    def save(self, metrics: dict, directory: str | Path, name: str) -> None:
        """Report `metrics` with the checkpoint in `directory`: every worker uploads its own resume state, and Ray
        Train merges them into one checkpoint folder called `name`."""
        import ray.train
        from ray.train import Checkpoint

        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(directory)), checkpoint_dir_name=name)

    def outcome(self) -> None:
        return None  # Ray Train holds the reports and checkpoints


class LocalSession:
    """The loop in the caller's process (a sweep's trial): one rank on CPU, its reports and checkpoints kept by a
    `local_mode.LocalRun` and handed back as the loop's return value."""

    rank, world_size = 0, 1
    on_step = on_epoch_end = None

    def __init__(self, cfg: AlignConfig, storage_path: str, run_name: str):
        from trainables.local_mode import LocalRun

        self.run = LocalRun(storage_path, run_name)

    @staticmethod
    def ensure_ray() -> None:
        """Nothing: local mode runs without Ray."""

    @staticmethod
    def pass_job(job: dict) -> dict:
        return job  # no controller to unpickle it, and perhaps no Ray: the loop gets the job as it is

    @staticmethod
    def read_result(result) -> tuple[dict, Any]:
        """Return (the last report's metrics, the last checkpoint), which the loop returned (`trainables.local_mode`)."""
        return result.return_value["metrics"], result.return_value["checkpoint"]

    def device(self):
        import torch

        return torch.device("cpu")

    def cpu_threads(self, cfg: AlignConfig) -> int:
        """What the caller reserved for training: resources_per_worker's CPUs when it is a sweep's trial (default 1)."""
        return _threads((cfg.scaling.resources_per_worker or {}).get("CPU", 1))

    def latest_checkpoint(self):
        return self.run.latest_checkpoint()

    def prepare(self, model, **kwargs):
        return model  # one process and no device to move to: nothing to wrap

    def save(self, metrics: dict, directory: str | Path, name: str) -> None:
        self.run.report(metrics, directory, name)

    def outcome(self) -> dict:
        return self.run.outcome()


def session_class(cfg: AlignConfig) -> type[WorkerGroupSession] | type[LocalSession]:
    """Return the session class of the mode `cfg.scaling` asks for."""
    return LocalSession if cfg.scaling.local_mode else WorkerGroupSession
