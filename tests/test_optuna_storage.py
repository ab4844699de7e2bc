"""Optuna RDB storage: a real Tune + Optuna search writes its study to SQLite, and bad storage is named before Ray starts."""

from __future__ import annotations

import optuna
import pytest
import ray
import yaml

from sweeps import tracking
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.runner import _loggable_spec
from sweeps.search_space import build_searcher, check_study_storage, tune_param_space
from trainables.local_ray import start_ray  # ray.init, started again if Ray's node start times out
from trainables.schema import ConfigError

SMALL_GRID = "search_space={data.size: {choice: [15, 30]}, train.epochs: {int: [1, 2]}}"
NO_START = "initial_points=[]"  # the default sweep's points set fields this space does not search


def spec_with(*overrides):
    return load_spec(TINY_SPEC, list(overrides))


@pytest.fixture
def local_ray():
    start_ray(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_a_tune_search_writes_its_study_to_sqlite(tmp_path, local_ray):
    from ray import tune

    def fake_objectives(config: dict) -> None:  # defined here so Ray ships it by value to its workers
        """A trial without training: objectives that depend on the point, so the study's values can be checked."""
        tune.report({"harmful_score": float(config["data.size"]), "reasoning_accuracy": 10.0 * config["train.epochs"]})

    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec = spec_with("name=stored", f"optuna.storage={storage}", "sampler=grid", "num_samples=4", SMALL_GRID, NO_START)
    tuner = tune.Tuner(
        fake_objectives,
        param_space=tune_param_space(spec.search_space),
        tune_config=tune.TuneConfig(search_alg=build_searcher(spec), num_samples=spec.num_samples),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(tmp_path / "tune"), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors

    study = optuna.load_study(study_name="stored", storage=storage)  # what optuna-dashboard would open
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    finished = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    points = sorted((t.params["data.size"], t.params["train.epochs"]) for t in finished)
    assert points == [(15, 1), (15, 2), (30, 1), (30, 2)]  # the grid, each point once
    for trial in finished:
        assert trial.values == [float(trial.params["data.size"]), 10.0 * trial.params["train.epochs"]]

    # The study now holds trials: a new sweep under its name is refused, a resumed one may go on.
    with pytest.raises(ConfigError, match="optuna.study_name: study 'stored' already holds 4 trials"):
        check_study_storage(spec.optuna.storage, spec.study_name, resume=False)
    check_study_storage(spec.optuna.storage, spec.study_name, resume=True)


def test_storage_problems_are_named_before_ray_starts(tmp_path):
    fresh = spec_with("name=fresh", f"optuna.storage=sqlite:///{tmp_path}/optuna.db")
    check_study_storage(fresh.optuna.storage, fresh.study_name, resume=False)  # an empty database suits a new sweep
    with pytest.raises(ConfigError, match="--resume: study 'fresh' is not in optuna.storage"):
        check_study_storage(fresh.optuna.storage, fresh.study_name, resume=True)
    missing_folder = spec_with(f"optuna.storage=sqlite:///{tmp_path}/nowhere/optuna.db")
    with pytest.raises(ConfigError, match="optuna.storage: .*folder .*nowhere does not exist"):
        check_study_storage(missing_folder.optuna.storage, missing_folder.study_name, resume=False)
    assert not ray.is_initialized()


@pytest.mark.parametrize("storage, named", [
    ("not a url", "optuna.storage"),
    ("sqlite://", "in-memory SQLite"),
    ("'sqlite:///:memory:'", "in-memory SQLite"),  # quoted: the override value is read as YAML
])
def test_bad_storage_urls_are_config_errors(storage, named):
    with pytest.raises(ConfigError) as err:
        spec_with(f"optuna.storage={storage}")
    assert "optuna.storage" in str(err.value) and named in str(err.value)


def test_storage_defaults_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_with()
    # The embedded default keeps its study next to mlflow.db, named after the sweep, for optuna-dashboard.
    assert spec.optuna.storage == f"sqlite:///{tmp_path}/optuna.db" and spec.study_name == spec.name
    assert spec_with("optuna.storage=null").optuna.storage is None  # in Tune's state only
    relative = spec_with("optuna.storage=sqlite:///optuna.db", "optuna.study_name=other")
    assert relative.optuna.storage == f"sqlite:///{tmp_path}/optuna.db"  # trials run in other directories
    assert relative.study_name == "other"


def test_a_storage_password_stays_out_of_mlflow():
    spec = spec_with("optuna.storage=postgresql://sweeper:hunter2@db.example.com/optuna")
    params = tracking.flatten_params(_loggable_spec(spec))
    assert params["optuna.storage"] == "postgresql://sweeper:***@db.example.com/optuna"
    assert "hunter2" not in yaml.safe_dump(_loggable_spec(spec)) and "hunter2" not in yaml.safe_dump(params)
