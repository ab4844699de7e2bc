"""Ray Train settings that cut the fixed cost of each alignment run; imported only where a run starts.

- The controller polls its workers every `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` (2 s by default), and a
  run passes through several states one poll apart; at 0.1 s that saves 5 to 8 s per run on 2 cores
  (docs/benchmarks.md). A value the user set is kept.
- One worker needs no process group: nothing is all-reduced, and `prepare_model` does not wrap it.
  Skipping gloo's rendezvous saves its round trips; two or more workers get Ray's own set-up.
"""

from __future__ import annotations

import os

from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # read by Ray Train's controller, propagated to workers
POLL_INTERVAL_S = "0.1"


def set_poll_interval() -> float:
    """Return the controller's poll interval in seconds, setting this module's default unless the user chose one."""
    os.environ.setdefault(POLL_INTERVAL_ENV, POLL_INTERVAL_S)
    return float(os.environ[POLL_INTERVAL_ENV])


class _SingleWorkerBackend(_TorchBackend):
    """Ray's torch backend, without a process group when the worker group has one worker."""

    def on_start(self, worker_group, backend_config) -> None:
        if len(worker_group) > 1:
            super().on_start(worker_group, backend_config)
            return
        worker_group.execute(_set_torch_distributed_env_vars)  # RANK, LOCAL_RANK, ... as torchrun sets them

    def on_shutdown(self, worker_group, backend_config) -> None:
        if len(worker_group) > 1:
            super().on_shutdown(worker_group, backend_config)


class SingleWorkerTorchConfig(TorchConfig):
    """TorchConfig whose backend skips the process group for a single worker."""

    @property
    def backend_cls(self):
        return _SingleWorkerBackend
