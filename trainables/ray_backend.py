"""Ray Train settings that cut the fixed cost of each alignment run; imported only where a run starts.

Every alignment run starts Ray Train's controller and its helper actors, each a fresh Python process on
the node, so what each of them imports and waits for is paid again by every trial (docs/benchmarks.md,
"Ray Train's fixed cost"):

- The controller polls its workers every `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` (2 s by default), and a
  run passes through several states one poll apart; at 0.1 s that saves 5 to 8 s per run on 2 cores.
  Long runs poll every second instead: each poll also costs the training loop a little.
- Ray Train's preemption watcher is one more actor process per run, and only logs spot-instance
  preemption notices; it is off unless `RAY_TRAIN_ENABLE_PREEMPTION_WATCHER` is set (a retried trial
  resumes from its checkpoint either way).
- One worker needs no process group: nothing is all-reduced, and `prepare_model` does not wrap it.
  Its backend config (`SingleWorkerConfig`) is also free of torch at import: the controller unpickles
  the backend config, and Ray's `TorchConfig` module imports torch there (about 2 s per run).
  Two or more workers get Ray's own `TorchConfig`.

A value the user set in the environment is always kept. This module must not import torch: a test checks it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig

POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # read by Ray Train's controller, propagated to workers
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# A run passes through a handful of controller states one poll apart, so short runs want fast polls; but
# every poll is a call into the worker, which costs a training step about 8% at 0.1 s (the tiny LRM's
# stage 1 on 2 cores: 0.27 s a step at 0.1 s, 0.25 s at 1 s). Runs of more steps than this poll every second.
FAST_POLL_S, SLOW_POLL_S, FAST_POLL_MAX_STEPS = 0.1, 1.0, 200


def poll_interval(total_steps: int) -> float:
    """Return the controller's poll interval for a run of `total_steps` steps: the user's, else this module's choice."""
    if POLL_INTERVAL_ENV in os.environ:
        return float(os.environ[POLL_INTERVAL_ENV])
    return FAST_POLL_S if total_steps <= FAST_POLL_MAX_STEPS else SLOW_POLL_S


@contextlib.contextmanager
def run_settings(total_steps: int):
    """Set Ray Train's environment for one run (poll interval, no preemption watcher) and yield the poll interval.

    Ray Train reads these when `fit()` starts its controller; they are restored afterwards, so that they
    neither leak into the next run nor into processes Ray starts later. Values the user set are kept.
    """
    interval = poll_interval(total_steps)
    settings = {POLL_INTERVAL_ENV: str(interval), PREEMPTION_WATCHER_ENV: "0"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update({name: value for name, value in settings.items() if saved[name] is None})
    try:
        yield interval
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def backend_config(num_workers: int) -> BackendConfig:
    """Return the Train backend config for `num_workers` workers: torch-free for one, Ray's TorchConfig for more."""
    if num_workers == 1:
        return SingleWorkerConfig()
    from ray.train.torch import TorchConfig

    return TorchConfig()


def _set_worker_env() -> None:
    """Set the torchrun variables (RANK, LOCAL_RANK, ...) as Ray's torch backend does.

    Ray's backend also sets ACCELERATE_TORCH_DEVICE, which needs torch; `_CudaDeviceContext` sets it when
    the loop starts, where torch is imported anyway.
    """
    import ray.train

    context = ray.train.get_context()
    os.environ.update(LOCAL_RANK=str(context.get_local_rank()), LOCAL_WORLD_SIZE=str(context.get_local_world_size()),
                      NODE_RANK=str(context.get_node_rank()), RANK=str(context.get_world_rank()),
                      WORLD_SIZE=str(context.get_world_size()))


class _CudaDeviceContext:
    """Select the worker's GPU around the training function (what Ray's TorchConfig context does)."""

    def __enter__(self):
        import torch
        from ray.train.torch import get_device

        device = get_device()
        os.environ["ACCELERATE_TORCH_DEVICE"] = str(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)

    def __exit__(self, *exc):
        return False


class _SingleWorkerBackend(Backend):
    """Ray Train backend of a one-worker group: the torchrun variables, no process group."""

    share_cuda_visible_devices = True

    def on_start(self, worker_group, backend_config) -> None:
        worker_group.execute(_set_worker_env)


@dataclass
class SingleWorkerConfig(BackendConfig):
    """Backend config of a one-worker run; `backend` is there because TorchTrainer reads and sets it."""

    backend: str | None = None

    @property
    def backend_cls(self):
        return _SingleWorkerBackend

    @property
    def train_func_context(self):
        return _CudaDeviceContext
