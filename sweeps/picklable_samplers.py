"""Optuna samplers that pickle: Tune saves its searcher, sampler included, with the experiment's state.

Optuna 5.1's genetic samplers hold a `threading.Lock`, which cannot be pickled, so Tune fails when it
first saves the Tuner ("cannot pickle '_thread.lock' object"). These subclasses drop every lock from
the pickled state and give the unpickled sampler fresh ones. A lock guards only in-process caches, so
nothing of the search is lost; samplers without locks pickle exactly as before.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _LocksRecreatedOnUnpickle:
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dropped_locks"] = {name: isinstance(value, type(threading.RLock()))
                                     for name, value in state.items() if isinstance(value, _LOCK_TYPES)}
        for name in state["_dropped_locks"]:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for name, reentrant in state.pop("_dropped_locks", {}).items():
            state[name] = threading.RLock() if reentrant else threading.Lock()
        self.__dict__.update(state)


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
