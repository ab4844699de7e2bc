"""Every searcher a spec can build survives the pickling Tune does when it saves the experiment's state."""

from __future__ import annotations

import pytest
from ray import cloudpickle

from sweeps.loader import TINY_SPEC, load_spec
from sweeps.search_space import build_searcher, tune_param_space


@pytest.mark.parametrize("sampler", ["auto", "gp", "random", "nsga2", "tpe", "grid"])
def test_the_searcher_pickles_and_the_restored_one_keeps_suggesting(tmp_path, sampler):
    spec = load_spec(TINY_SPEC, [
        "name=pickled", f"optuna.storage=sqlite:///{tmp_path}/optuna.db", f"sampler={sampler}", "num_samples=4", "population_size=2",
        "search_space={data.size: {choice: [15, 30]}, train.epochs: {int: [1, 2]}}", "initial_points=[]"])
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, tune_param_space(spec.search_space))  # as the Tuner does
    first = searcher.suggest("trial-0")
    searcher.on_trial_complete("trial-0", {"harmful_score": 10.0, "reasoning_accuracy": 50.0})

    restored = cloudpickle.loads(cloudpickle.dumps(searcher))

    assert restored.suggest("trial-1").keys() == first.keys()
