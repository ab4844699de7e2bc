"""Optuna samplers that pickle: Tune saves its searcher, sampler included, with the experiment's state.

Optuna 5.1's genetic samplers hold a `threading.Lock`, which cannot be pickled, so Tune fails when it
first saves the Tuner ("cannot pickle '_thread.lock' object"). These subclasses drop every lock from
the pickled state and give the unpickled sampler fresh ones (`trainables.private_apis`, where the
reliance on Optuna's private state is fenced). Samplers without locks pickle exactly as before.
"""

from __future__ import annotations

import optuna

from trainables.private_apis import LocksRecreatedOnUnpickle as _LocksRecreatedOnUnpickle


class NSGAIISampler(_LocksRecreatedOnUnpickle, optuna.samplers.NSGAIISampler):
    """NSGA-II, picklable."""


class TPESampler(_LocksRecreatedOnUnpickle, optuna.samplers.TPESampler):
    """Multi-objective TPE, picklable."""


class GPSampler(_LocksRecreatedOnUnpickle, optuna.samplers.GPSampler):
    """The Gaussian-process sampler, picklable."""


class RandomSampler(_LocksRecreatedOnUnpickle, optuna.samplers.RandomSampler):
    """Random search, picklable."""


class GridSampler(_LocksRecreatedOnUnpickle, optuna.samplers.GridSampler):
    """The grid, picklable."""
