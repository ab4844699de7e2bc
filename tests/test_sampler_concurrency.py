"""Each sampler through Ray's OptunaSearch as Tune drives it with max_concurrent_trials > 1: proposals made while
other trials are still running, and exact repeats, which a sweep reuses."""

from __future__ import annotations

import pytest

from sweeps.loader import TINY_SPEC, load_spec
from sweeps.search_space import build_searcher, tune_param_space

CONTINUOUS = "search_space={train.learning_rate: {loguniform: [1.0e-3, 6.0e-3]}, reasoning_mix: {uniform: [0.1, 0.4]}}"
DISCRETE = "search_space={data.size: {choice: [15, 60]}, train.epochs: {int: [2, 3]}}"


def searcher_for(*overrides: str):
    spec = load_spec(TINY_SPEC, ["initial_points=[]", "optuna.storage=null", "name=concurrent", *overrides])
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, tune_param_space(spec.search_space))  # as the Tuner does
    return searcher


def readings(config: dict) -> dict:
    """A smooth trade-off: more learning rate, less harm and less accuracy; more mix, more of both."""
    lr, mix = config["train.learning_rate"], config["reasoning_mix"]
    return {"harmful_score": max(0.0, 100 - 20_000 * lr + 40 * mix), "reasoning_accuracy": 100 - 8_000 * lr + 30 * mix}


@pytest.mark.parametrize("sampler", ["auto", "gp", "tpe", "nsga2", "random"])
def test_proposals_made_while_trials_run_differ(sampler):
    searcher = searcher_for(CONTINUOUS, f"sampler={sampler}", "num_samples=12", "population_size=4",
                            "startup_trials=2")
    for k in range(4):  # past every sampler's random start
        searcher.on_trial_complete(f"t{k}", readings(searcher.suggest(f"t{k}")))
    # Two slots free at once: the second proposal is made while the first is still running.
    first, second = searcher.suggest("t4"), searcher.suggest("t5")
    assert first != second
    searcher.on_trial_complete("t5", readings(second))  # trials may finish out of order
    searcher.on_trial_complete("t4", readings(first))
    assert searcher.suggest("t6") is not None


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_a_repeated_proposal_over_a_small_discrete_space_is_told_again(sampler, tmp_path):
    import optuna

    # Four points and eight trials: repeats must come, and each is told (the sweep reuses a repeat's readings).
    storage = f"sqlite:///{tmp_path}/optuna.db"
    searcher = searcher_for(DISCRETE, f"sampler={sampler}", "num_samples=8", "startup_trials=2",
                            f"optuna.storage={storage}")
    proposals = []
    for k in range(8):
        config = searcher.suggest(f"t{k}")
        proposals.append(tuple(sorted(config.items())))
        searcher.on_trial_complete(f"t{k}", {"harmful_score": 10.0 * config["train.epochs"],
                                             "reasoning_accuracy": float(config["data.size"])})
    assert len(set(proposals)) < len(proposals)
    study = optuna.load_study(study_name="concurrent", storage=storage)
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 8


def test_auto_runs_the_grid_over_a_space_no_larger_than_the_budget_and_refuses_more_trials():
    from trainables.schema import ConfigError

    spec = load_spec(TINY_SPEC, ["initial_points=[]", DISCRETE, "num_samples=4"])
    assert spec.sampler_choice().name == "grid" and "4 points" in spec.sampler_choice().reason
    assert load_spec(TINY_SPEC, ["initial_points=[]", DISCRETE, "num_samples=3"]).sampler_choice().name == "gp"
    with pytest.raises(ConfigError, match=r"num_samples: the search space has only 4 points .* set num_samples=4"):
        load_spec(TINY_SPEC, ["initial_points=[]", DISCRETE, "num_samples=8"])
