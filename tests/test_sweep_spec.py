"""The sweep spec: bad input is named by its field path before Ray starts; the search space reaches Optuna intact."""

from __future__ import annotations

import json
import re

import pytest
import ray
import yaml

from sweeps import tracking
from sweeps.cli import main
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.params import ParamSpec
from sweeps.points import apply_point
from sweeps.report import SweepLayout
from sweeps.runner import _loggable_spec
from sweeps.search_space import build_sampler, grid_values, tune_param_space
from trainables.schema import ConfigError, read_yaml


def spec_with(*overrides):
    return load_spec(TINY_SPEC, list(overrides))


@pytest.mark.parametrize("override, named", [
    ("search_space.train.lr={uniform: [0, 1]}", "search_space.train.lr"),                 # no such field
    ("search_space.lora={choice: [1, 2]}", "search_space.lora: lora is a whole section"),
    ("search_space.train.epochs.int=[0, 2]", "search_space.train.epochs: the value 0"),  # epochs >= 1
    ("search_space.reasoning_mix.uniform=[0.5, 1.2]", "search_space.reasoning_mix: the value 1.2"),
    ("search_space.data.size={choice: [8, many]}", "search_space.data.size: the value 'many'"),
    ("search_space.train.learning_rate={loguniform: [0, 1e-3]}", "search_space.train.learning_rate"),
    ("search_space.train.epochs={int: [1, 3], choice: [1]}", "exactly one of"),
    ("search_space.train.seed={int: [3, 3]}", "low must be below high"),
    ("sampler=grid", "search_space.train.learning_rate: the grid sampler needs choice or int"),
    ("objectives=[{name: refusal_rate, direction: min}, {name: refusal_rate, direction: min}]", "objectives"),
    ("objectives=[{name: harmful_score, direction: down}, {name: reasoning_accuracy, direction: max}]",
     "objectives.0.direction"),
    ("max_concurrent_trials=0", "max_concurrent_trials"),
    ("base.train.learning_rate=-1", "base.train.learning_rate"),
    ("evaluation.benchmarks=[tiny-arith, tiny-xstest]", "objectives: harmful_score needs a safety benchmark"),
    ("bogus=1", "bogus: unknown key"),
    ("initial_points=[{data.size: 45}]", r"initial_points.0.data.size: 45 is not one of its choices"),
    ("initial_points=[{train.learning_rate: 0.5}]", r"initial_points.0.train.learning_rate: 0.5 is outside"),
    ("initial_points=[{train.epochs: 2.5}]", "initial_points.0.train.epochs: 2.5 is not an integer"),
    ("initial_points=[{lora.r: 4}]", "initial_points.0: lora.r is not searched"),
    ("evaluate_epochs=each", "evaluate_epochs"),
    (("evaluate_epochs=every", "replicates=2"), "evaluate_epochs: every evaluates one training run's epochs"),
    ("evaluate_epochs=fidelity", "search_space.train.epochs would search it twice"),
    (("evaluate_epochs=fidelity", "search_space.train.epochs=null", "base.train.scheduler=cosine"),
     "set base.train.scheduler=constant"),
])
def test_bad_specs_name_the_field(override, named):
    with pytest.raises(ConfigError) as err:
        spec_with(*(override if isinstance(override, tuple) else (override,)))
    assert named in str(err.value)


def test_a_grid_cannot_ask_for_more_trials_than_points():
    grid = ["sampler=grid", "initial_points=[]", "search_space={data.size: {choice: [8, 24]}, train.epochs: {int: [1, 3]}}"]
    assert spec_with(*grid, "num_samples=6").sampler == "grid"
    with pytest.raises(ConfigError, match="num_samples: 7 trials asked for, but the grid has only 6"):
        spec_with(*grid, "num_samples=7")


def test_initial_points_reach_optuna_first_and_a_grid_refuses_them():
    from sweeps.search_space import build_searcher, tune_param_space

    points = "initial_points=[{data.size: 60, train.learning_rate: 2.0e-3, train.epochs: 4, reasoning_mix: 0.3}]"
    assert spec_with().initial_points == []  # the embedded default finds its front with the sampler alone
    spec = spec_with(points, "optuna.storage=null")  # the study in memory: the default's file is relative to cwd
    assert spec.initial_points[0] == {"data.size": 60, "train.learning_rate": 2.0e-3, "train.epochs": 4,
                                      "reasoning_mix": 0.3}
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, tune_param_space(spec.search_space))  # as the Tuner does
    assert searcher.suggest("first") == spec.initial_points[0]
    assert searcher.suggest("second") != spec.initial_points[0]  # then the sampler's own
    assert spec_with(points, "num_samples=1").num_samples == 1  # fewer trials than points: the first ones are tried
    with pytest.raises(ConfigError, match=r"initial_points: the grid sampler tries every point itself"):
        spec_with("sampler=grid", "num_samples=2", "search_space={data.size: {choice: [15, 60]}}",
                  "initial_points=[{data.size: 60}]")
    with pytest.raises(ConfigError, match=r"initial_points.0: reasoning_mix is not searched .* initial_points=\[\]"):
        spec_with(points, "search_space.reasoning_mix=null")


def test_overrides_merge_into_dotted_search_space_keys():
    spec = spec_with("search_space.train.epochs.int=[1, 2]", "search_space.reasoning_mix=null", "initial_points=[]",
                     "search_space.lora.r={choice: [4, 8]}")
    assert spec.search_space["train.epochs"].int_range == (1, 2)
    assert "reasoning_mix" not in spec.search_space
    assert spec.search_space["lora.r"].choice == [4, 8]


def test_cli_reports_config_errors_before_ray_starts(capsys):
    assert not ray.is_initialized()
    assert main(["sweep", "search_space.train.lr={uniform: [0, 1]}"]) == 2
    assert "search_space.train.lr" in capsys.readouterr().err
    assert main(["sweep", "does-not-exist.yaml"]) == 2
    assert "does-not-exist.yaml" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unreachable_tracking_uri_is_reported_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # Port 9 (discard) has no MLflow server; nothing may start before this is found out.
    assert main(["sweep", "mlflow.tracking_uri=http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "mlflow.tracking_uri" in err and "http://127.0.0.1:9" in err
    assert main(["sweep", f"mlflow.tracking_uri=sqlite:///{tmp_path}/missing/mlflow.db"]) == 2
    assert "folder" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (tmp_path / "safetytax_runs").exists()


def test_resume_without_state_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--resume", "storage_path=nowhere"]) == 2
    assert "--resume: no sweep state" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_sampled_points_apply_to_the_base_config():
    spec = spec_with()
    cfg = apply_point(spec.base, {"data.size": 24, "train.learning_rate": 3e-4, "train.epochs": 2,
                                  "reasoning_mix": 0.25})
    assert (cfg.data.size, cfg.train.learning_rate, cfg.train.epochs, cfg.reasoning_mix) == (24, 3e-4, 2, 0.25)
    assert cfg.lora.r == spec.base.lora.r  # untouched fields stay as the base has them
    with pytest.raises(ConfigError, match="train.epochs"):
        apply_point(spec.base, {"train.epochs": 0})


def test_search_space_reaches_optuna_with_the_same_ranges():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray.tune.search.optuna import OptunaSearch

    space = {"data.size": ParamSpec(choice=[8, 24]), "train.learning_rate": ParamSpec(loguniform=(1e-4, 1e-2)),
             "train.epochs": ParamSpec(int_range=(1, 3)), "reasoning_mix": ParamSpec(uniform=(0.0, 0.5))}
    converted = OptunaSearch.convert_search_space(tune_param_space(space))
    assert converted == {
        "data.size": CategoricalDistribution([8, 24]),
        "train.learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
        "train.epochs": IntDistribution(1, 3),  # both ends included, as the spec says
        "reasoning_mix": FloatDistribution(0.0, 0.5),
    }
    assert grid_values({"train.epochs": space["train.epochs"]}) == {"train.epochs": [1, 2, 3]}


def test_samplers_are_seeded():
    import optuna

    nsga = build_sampler(spec_with("sampler=nsga2", "population_size=4"))
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)
    assert isinstance(build_sampler(spec_with("sampler=random")), optuna.samplers.RandomSampler)
    gp = build_sampler(spec_with("sampler=gp", "startup_trials=3"))
    assert isinstance(gp, optuna.samplers.GPSampler)
    tpe = build_sampler(spec_with("sampler=tpe", "startup_trials=3"))
    assert isinstance(tpe, optuna.samplers.TPESampler)
    grid_spec = spec_with("sampler=grid", "initial_points=[]", "num_samples=3", "search_space={train.epochs: {int: [1, 3]}}")
    grid = build_sampler(grid_spec)
    assert isinstance(grid, optuna.samplers.GridSampler)

    def proposals(sampler):
        study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
        distributions = {"train.epochs": optuna.distributions.IntDistribution(1, 3),
                         "train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
        return [study.ask(distributions).params for _ in range(3)]

    for sampler in ("auto", "nsga2", "tpe", "random"):
        options = [f"sampler={sampler}", "seed=7", *(["population_size=4"] if sampler == "nsga2" else [])]
        assert proposals(build_sampler(spec_with(*options))) == proposals(build_sampler(spec_with(*options)))


def test_auto_picks_the_sampler_from_the_budget_and_says_why():
    import optuna

    small = spec_with("num_samples=8")
    assert small.sampler == "auto"
    choice = small.sampler_choice()
    assert choice.name == "gp" and choice.options == {"n_startup_trials": 2}
    assert "auto: 8 trials" in choice.reason
    assert isinstance(build_sampler(small), optuna.samplers.GPSampler)
    assert spec_with("num_samples=32").sampler_choice().options == {"n_startup_trials": 8}
    assert spec_with("num_samples=32", "startup_trials=5").sampler_choice().options == {"n_startup_trials": 5}
    large = spec_with("num_samples=400").sampler_choice()
    assert large.name == "tpe" and "over 200" in large.reason
    assert spec_with("sampler=nsga2", "population_size=4").sampler_choice().reason == "named in the spec"


@pytest.mark.parametrize("overrides, message", [
    (["sampler=nsga2"], "first generation of 50 trials is random, and num_samples=8 leaves 0 bred trials, less than "
                        "one generation; set population_size to at most 4, raise num_samples to 100"),
    (["sampler=nsga2", "population_size=6"], "set population_size to at most 4, raise num_samples to 12"),
    (["sampler=nsga2", "population_size=2", "num_samples=3"], "raise num_samples to 4, or use sampler=auto"),
])
def test_an_nsga2_population_the_budget_cannot_breed_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        spec_with(*overrides)


def test_logged_params_hold_no_secrets_and_rebuild_the_layout():
    spec = spec_with("evaluation.judge_options={api_token: sk-123, model_path: /models/judge}",
                     "mlflow.tracking_uri=https://user:hunter2@mlflow.example.com")
    params = tracking.flatten_params(_loggable_spec(spec))
    text = yaml.safe_dump(params)
    assert "sk-123" not in text and "hunter2" not in text
    assert params["evaluation.judge_options.model_path"] == "/models/judge"
    assert params["mlflow.tracking_uri"] == "https://user:***@mlflow.example.com"
    assert params["search_space.train.learning_rate.loguniform"] == json.dumps(
        list(spec.search_space["train.learning_rate"].loguniform))
    layout = SweepLayout.from_params(params)
    assert layout.directions == spec.directions()
    assert layout.reference == {"harmful_score": 100.0, "reasoning_accuracy": 0.0}
    assert layout.searched == list(spec.search_space)


def test_tracking_uri_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert tracking.resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert read_yaml(TINY_SPEC)["mlflow"]["tracking_uri"] == "sqlite:///mlflow.db"


def test_bad_benchmark_data_exits_2_before_ray_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "math500_test.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": null, "answer": 1}\n')
    assert main(["sweep", "evaluation.benchmarks=[tiny-arith,math500,tiny-harmful]",
                 f"evaluation.data_dir={tmp_path}"]) == 2
    assert "math500_test.jsonl: line 2 has an empty 'problem' cell" in capsys.readouterr().err
    assert main(["sweep", "evaluation.benchmarks=[tiny-arith,aime24,tiny-harmful]",
                 f"evaluation.data_dir={tmp_path}"]) == 2
    assert "aime24_test.jsonl does not exist" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (tmp_path / "safetytax_runs").exists()
