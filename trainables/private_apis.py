"""Every private API of Ray and Optuna the project uses, fenced in one place (Ray 2.60, Optuna 5).

Each use says why no public API does the job. `tests/test_private_apis.py` checks every one against the
installed versions and fails naming the version and the entry here when one moves, so an upgrade breaks
one test with a clear message instead of a sweep in the middle of its night.

It sits in the lowest layer because both upper ones call it; it imports Ray and Optuna only inside the
functions, so importing it costs nothing.
"""

from __future__ import annotations

import threading
from typing import Any

# Ray gives the head node this resource (`node:__internal_head__`, one unit) and nothing else has it:
# asking for a sliver of it is the only way to place a trial's driver on the head node, and its presence
# is how a node is recognised as the head in `ray.nodes()`.
HEAD_NODE_RESOURCE = "node:__internal_head__"

# Ray Train V2's placement-group cleaner logs under its module's name; without the dashboard (which a
# local session does not start) it warns on every run that the state API is unreachable.
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"

# Optuna's RDBStorage pickles its state as a dict whose "url" entry is the database URL, password and all;
# the sweep's storage redacts that one entry (sweeps/study_storage.py). No public hook changes what pickles.
RDB_STORAGE_STATE_URL = "url"

# Tune's saved searcher state: a cloudpickled dict beside the experiment, keyed as below.
SEARCH_STATE_FILES = "search_gen_state-*.json"
SEARCH_STATE_TOTAL, SEARCH_STATE_FINISHED = "total_samples", "finished"


def train_report_logger_names() -> tuple[str, ...]:
    """Return the logger names Ray Train's workers log every `train.report` under, to quiet them.

    Train V2's report logger is named after its source file, not its module, and that file is private
    (`ray.train.v2._internal.execution.context`); `ray.train` is the public half.
    """
    from ray.train.v2._internal.execution import context

    return ("ray.train", context.__file__)


def existing_cluster_address() -> str | None:
    """Return the address of the Ray cluster `ray.init()` would join here (RAY_ADDRESS, `ray start`), or None.

    Ray's own lookup (`ray._private.services.canonicalize_bootstrap_address`): no public API says, before
    `ray.init`, whether it would join a cluster or start one.
    """
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(None)


def stop_tune_propagating(names: tuple[str, ...]) -> None:
    """Take `names` out of the environment variables Tune copies into every trial actor's runtime_env.

    Tune keeps the list in `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`, with no setting for it.
    """
    from ray.tune.execution import class_cache

    for name in names:
        class_cache.ENV_VARS_TO_PROPAGATE.discard(name)


def extend_search_state(experiment_path: str, num_samples: int) -> int | None:
    """Raise the sample count in a saved experiment's search state to `num_samples`; return the old count, or None.

    Tune restores its own count on resume and ignores a new num_samples, and offers no way to change it;
    editing the saved state (a cloudpickled dict, written atomically by Tune) lets a resumed sweep add
    trials. Works on local folders and on buckets alike, through pyarrow's file systems.
    """
    import fnmatch

    import pyarrow.fs
    import ray.cloudpickle as cloudpickle

    filesystem, folder = pyarrow.fs.FileSystem.from_uri(experiment_path)
    files = [info for info in filesystem.get_file_info(pyarrow.fs.FileSelector(folder))
             if fnmatch.fnmatch(info.base_name, SEARCH_STATE_FILES)]
    if not files:
        return None
    newest = max(files, key=lambda info: info.mtime_ns or 0).path
    with filesystem.open_input_stream(newest) as stream:
        state = cloudpickle.loads(stream.read())
    old = state[SEARCH_STATE_TOTAL]
    if num_samples <= old:
        return None
    state[SEARCH_STATE_TOTAL] = num_samples
    state[SEARCH_STATE_FINISHED] = False  # set when the count was reached; a grid sampler sets it again
    with filesystem.open_output_stream(newest) as stream:
        stream.write(cloudpickle.dumps(state))
    return old


def optuna_trial_to_tell(search: Any, trial_id: str) -> Any | None:
    """Return the Optuna trial Tune's `OptunaSearch` holds for `trial_id` and has not yet told, or None.

    OptunaSearch keeps them in `_ot_trials` and `_completed_trials`; constraints must be set on that trial
    before OptunaSearch tells the study, and it exposes no hook between the two.
    """
    trial = search._ot_trials.get(trial_id)
    return None if trial is None or trial_id in search._completed_trials else trial


def fail_study_trial(storage: Any, trial: Any) -> None:
    """Mark a FrozenTrial of an RDB study FAIL. Storage calls take the storage's own trial id
    (`FrozenTrial._trial_id`): a frozen trial's public `number` counts within its study, not the storage."""
    from optuna.trial import TrialState

    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def reread_ray_config() -> None:
    """Make this process read Ray's per-process config (RAY_AUTH_MODE among it) from the environment again.

    Ray reads it once per process (`ray._raylet.Config.initialize`); a process that imported Ray before
    RAY_AUTH_MODE was set would otherwise send no token. Ray calls the same when it turns token auth on.
    """
    from ray._raylet import Config

    Config.initialize("")


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class LocksRecreatedOnUnpickle:
    """Mixin for an Optuna sampler: pickle without its locks, and give the unpickled sampler fresh ones.

    Optuna 5's genetic samplers hold a `threading.Lock` in their private state, which cannot be pickled,
    and Tune pickles the searcher, sampler included, with the experiment. A lock guards only in-process
    caches, so nothing of the search is lost; a sampler without locks pickles exactly as before.
    """

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
