"""What a fault leaves in the records, checked against real stores without a sweep: MLflow on SQLite,
an Optuna study on SQLite, and the error messages of bad input and of a run-time failure."""

from __future__ import annotations

import argparse

import optuna
import pytest

from evaluators.dispatch import GenerationTimeout
from sweeps import cli, tracking
from sweeps.loader import load_spec
from sweeps.search_space import fail_orphan_trials
from trainables.schema import ConfigError, RunFailure


@pytest.fixture
def store(tmp_path):
    client = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracking.experiment_id(client, "records")
    parent = tracking.start_sweep_run(client, experiment, str(tmp_path), "sweep-records", tags={})
    return client, experiment, parent.info.run_id


def test_a_retry_logs_each_step_once_and_keeps_the_earlier_error_apart(store):
    client, experiment, parent = store
    run = tracking.trial_run(client, experiment, parent, "t1", run_name="records-t1")
    run_id = run.info.run_id
    # Attempt 1 logged the first steps and a metric, then died.
    tracking.log_curve(client, run_id, "train_loss", [3.0, 2.5])
    tracking.log_new_metrics(client, run_id, {"num_examples": 16})
    tracking.mark_failed(client, run_id, "Traceback ...\nActorDiedError: the actor is dead")

    # Attempt 2 (resumed) logs the whole curve and the same metrics again.
    tracking.archive_error(client, client.get_run(run_id), attempt=1)
    tracking.log_curve(client, run_id, "train_loss", [3.0, 2.5, 2.0, 1.5])
    tracking.log_new_metrics(client, run_id, {"num_examples": 16, "harmful_score": 10.0})
    client.set_terminated(run_id, status="FINISHED")

    history = client.get_metric_history(run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.5)]
    assert len(client.get_metric_history(run_id, "num_examples")) == 1
    tags = client.get_run(run_id).data.tags
    assert tracking.ERROR_TAG not in tags
    assert tags["error.attempt1"].endswith("the actor is dead")


def test_interrupted_trials_end_killed_and_finished_ones_stay_finished(store):
    client, experiment, parent = store
    done = tracking.trial_run(client, experiment, parent, "done", run_name="records-done")
    client.set_terminated(done.info.run_id, status="FINISHED")
    running = tracking.trial_run(client, experiment, parent, "cut", run_name="records-cut")

    assert tracking.end_running_trials(client, experiment, parent) == ["cut"]
    assert client.get_run(running.info.run_id).info.status == "KILLED"
    assert client.get_run(done.info.run_id).info.status == "FINISHED"


def test_trials_a_killed_driver_left_running_in_the_study_are_failed(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    spec = load_spec(None, [f"optuna.storage={url}"])
    study = optuna.create_study(study_name=spec.study_name, storage=url, directions=["minimize", "maximize"])
    study.tell(study.ask(), [1.0, 2.0])
    study.ask()  # asked for, never run: what a driver killed between ask and Tune's save leaves behind

    assert fail_orphan_trials(spec.optuna.storage, spec.study_name) == 1
    assert [t.state.name for t in optuna.load_study(study_name=spec.study_name, storage=url).trials] == \
        ["COMPLETE", "FAIL"]


def test_a_validation_error_quotes_the_value_and_names_the_override_or_the_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_spec(None, ['objectives=[{"name": "harmfulness", "direction": "min"}]'])
    assert "objectives.0.name" in str(err.value) and "'harmfulness'" in str(err.value)
    assert 'from the override objectives=[{"name": "harmfulness"' in str(err.value)

    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text("base:\n  model: tiny://lrm\n  data: {path: x.jsonl}\n  train: {epochs: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(spec_file)
    assert f"base.train.epochs: Input should be greater than or equal to 1; got 0 in {spec_file}" in str(err.value)


def test_a_generation_timeout_exits_1_with_what_to_do_not_2(monkeypatch, capsys):
    assert issubclass(GenerationTimeout, RunFailure) and not issubclass(GenerationTimeout, ConfigError)

    def timed_out(args):
        raise GenerationTimeout("benchmark tiny-arith: a request to Serve took longer than request_timeout_s=1s; "
                                "raise request_timeout_s")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=timed_out, command="sweep")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == cli.EXIT_RUN_FAILED == 1
    assert "failed: benchmark tiny-arith" in capsys.readouterr().err
