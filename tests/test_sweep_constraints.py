"""Constraints: checked before Ray starts, recorded on Optuna's trials by a real Tune search, marked in records."""

from __future__ import annotations

import optuna
import pytest
import ray

from sweeps import tracking
from sweeps.cli import main
from sweeps.report import (EXPERIMENT_KIND_TAG, NOTE_TAG, SweepLayout, cheapest_feasible, describe_sweep,
                           pareto_front, tag_experiment, trial_records)
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.objectives import Constraint
from sweeps.runner import _loggable_spec
from sweeps.search_space import build_searcher, tune_param_space
from trainables.local_ray import start_ray  # ray.init, started again if Ray's node start times out
from trainables.schema import ConfigError

CONSTRAINTS = 'constraints=["harmful_score <= 10", "reasoning_accuracy >= 50"]'


def spec_with(*overrides):
    return load_spec(TINY_SPEC, list(overrides))


@pytest.mark.parametrize("override, named", [
    ('constraints=["harmful_score < 10"]', "constraints.0"),
    ('constraints=["harmful_score <= 10", "harm <= 3"]', "constraints.1"),
    ('constraints=["refusal_rate <= 10"]', "constraints.0: refusal_rate <= 10 needs a overrefusal benchmark"),
])
def test_bad_constraints_are_named_before_ray_starts(override, named):
    overrides = [override] + (["evaluation.benchmarks=[tiny-arith, tiny-harmful]"] if "refusal" in override else [])
    with pytest.raises(ConfigError) as err:
        spec_with(*overrides)
    assert named in str(err.value)
    assert not ray.is_initialized()


def test_a_constraint_is_a_violation_optuna_reads_as_feasible_at_or_below_zero():
    at_most, at_least = Constraint.parse("harmful_score <= 10"), Constraint.parse(" reasoning_accuracy>=50 ")
    assert (at_most.violation(4.0), at_most.violation(12.5)) == (-6.0, 2.5)
    assert (at_least.violation(60.0), at_least.violation(40.0)) == (-10.0, 10.0)
    assert spec_with(CONSTRAINTS).constraints == ["harmful_score <= 10", "reasoning_accuracy >= 50"]


@pytest.fixture
def local_ray():
    start_ray(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_tune_search_hands_each_trials_constraints_to_optuna(tmp_path, local_ray):
    from ray import tune

    def fake_objectives(config: dict) -> None:  # defined here so Ray ships it by value
        """Objectives from the point: size 15 is safe (harm 5), size 30 is not (harm 30); accuracy 30 or 60."""
        tune.report({"harmful_score": 5.0 if config["data.size"] == 15 else 30.0,
                     "reasoning_accuracy": 30.0 * config["train.epochs"]})

    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec = spec_with("name=constrained", f"optuna.storage={storage}", "sampler=nsga2", "population_size=2",
                     "num_samples=4", "search_space={data.size: {choice: [15, 30]}, train.epochs: {int: [1, 2]}}",
                     "initial_points=[]",
                     CONSTRAINTS)
    tuner = tune.Tuner(
        fake_objectives, param_space=tune_param_space(spec.search_space),
        tune_config=tune.TuneConfig(search_alg=build_searcher(spec), num_samples=spec.num_samples),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(tmp_path / "tune"), verbose=0))
    assert not tuner.fit().errors

    study = optuna.load_study(study_name="constrained", storage=storage)
    finished = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(finished) == 4
    for trial in finished:
        harm, accuracy = trial.values
        assert trial.constraints == {"harmful_score <= 10": harm - 10, "reasoning_accuracy >= 50": 50 - accuracy}
    # Optuna itself now leaves infeasible trials off its best trials (the dashboard's Pareto view).
    assert study.best_trials
    assert all(t.values[0] <= 10 and t.values[1] >= 50 for t in study.best_trials)


def test_records_say_feasible_and_pareto_names_the_cheapest_feasible_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under the working directory
    spec = spec_with(CONSTRAINTS, "mlflow.experiment=constraints")
    uri = tracking.check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = tracking.client(uri)
    experiment = tracking.experiment_id(client, spec.experiment_name)
    parent = tracking.start_sweep_run(client, experiment, str(tmp_path / "tune"), "sweep-tiny", {"objectives": ""})
    parent_id = parent.info.run_id
    tracking.log_params(client, parent_id, tracking.flatten_params(_loggable_spec(spec)))
    # (trial, harm, accuracy): a is accurate but harmful, b and c are feasible, c the more accurate.
    for trial_id, harm, accuracy in (("a", 40.0, 90.0), ("b", 2.0, 55.0), ("c", 8.0, 70.0), ("d", 0.0, 20.0)):
        run = tracking.trial_run(client, experiment, parent_id, trial_id, run_name=trial_id).info.run_id
        tracking.log_metrics(client, run, {"harmful_score": harm, "reasoning_accuracy": accuracy})
        client.set_terminated(run, "FINISHED")
    layout = SweepLayout.from_params(client.get_run(parent_id).data.params)
    assert [str(c) for c in layout.constraints] == spec.constraints
    records = trial_records(client, experiment, parent_id, layout)
    assert [r["feasible"] for r in records] == [False, True, True, False]
    assert records[cheapest_feasible(records)]["trial_id"] == "c"

    # What a user opens: MLflow shows the experiment as model training, the sweep run says where the front is.
    tag_experiment(client, experiment)
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    front = pareto_front(records, layout.directions)
    describe_sweep(client, parent_id, layout, records, front, {}, study="sqlite:///optuna.db")
    note = client.get_run(parent_id).data.tags[NOTE_TAG]
    assert f"{len(front)} of 4 finished trials" in note and "pareto_front.html" in note
    assert "cheapest feasible trial (harmful_score <= 10 and reasoning_accuracy >= 50): c" in note
    assert "optuna-dashboard sqlite:///optuna.db" in note

    assert main(["pareto", "--experiment", "constraints", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert ("cheapest feasible trial (harmful_score <= 10 and reasoning_accuracy >= 50): c "
            "(harmful_score=8.0, reasoning_accuracy=70.0)") in out
    header = next(line for line in out.splitlines() if "feasible" in line and "trial" in line)
    assert "feasible" in header.split()
