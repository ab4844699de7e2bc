"""Early stopping across objectives (sweeps.early_stopping): the dominance rule with intervals, the scheduler's
decisions, the spec's refusals, and a real sweep whose trials are stopped at an epoch."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from ray.tune.schedulers import TrialScheduler

from sweeps import tracking
from sweeps.early_stopping import (STOPPED_EPOCH_TAG, STOPPED_REASON_TAG, DominatedTrialStopper, dominating_point,
                                   stop_reason)
from sweep_helpers import random_model_spec, store_overrides
from sweeps.loader import load_spec
from sweeps.runner import run_sweep
from trainables.schema import ConfigError

SAFETY_TAX = {"harmful_score": "min", "reasoning_accuracy": "max"}


def reading(harm, accuracy, harm_ci=None, accuracy_ci=None, **extra):
    out = {"harmful_score": harm, "reasoning_accuracy": accuracy, **extra}
    if harm_ci:
        out.update(harmful_score_ci_low=harm_ci[0], harmful_score_ci_high=harm_ci[1])
    if accuracy_ci:
        out.update(reasoning_accuracy_ci_low=accuracy_ci[0], reasoning_accuracy_ci_high=accuracy_ci[1])
    return out


def test_a_reading_is_ruled_out_only_when_a_point_beats_the_best_end_of_every_interval():
    point = {"trial_id": "a", "harmful_score": 10.0, "reasoning_accuracy": 80.0}
    # Means dominated, but the intervals reach past the point: the benefit of the doubt goes to the trial.
    assert dominating_point(reading(30.0, 60.0, (8.0, 50.0), (40.0, 78.0)), [point], SAFETY_TAX) is None
    assert dominating_point(reading(30.0, 60.0, (15.0, 50.0), (40.0, 85.0)), [point], SAFETY_TAX) is None
    # The whole box is dominated: stop.
    assert dominating_point(reading(30.0, 60.0, (15.0, 50.0), (40.0, 75.0)), [point], SAFETY_TAX) is point
    # Ties on both best ends are not dominance; a tie on one and better on the other is.
    assert dominating_point(reading(30.0, 60.0, (10.0, 50.0), (40.0, 80.0)), [point], SAFETY_TAX) is None
    assert dominating_point(reading(30.0, 60.0, (10.0, 50.0), (40.0, 79.0)), [point], SAFETY_TAX) is point
    # Without intervals the values themselves are compared.
    assert dominating_point(reading(12.0, 79.0), [point], SAFETY_TAX) is point
    assert "dominated" in stop_reason(reading(12.0, 79.0), [point], SAFETY_TAX, stop_collapsed=True)
    assert stop_reason(reading(90.0, 1.0, collapsed=1.0), [], SAFETY_TAX, stop_collapsed=True).startswith("collapsed")
    assert stop_reason(reading(90.0, 1.0, collapsed=1.0), [], SAFETY_TAX, stop_collapsed=False) is None


def test_the_scheduler_stops_at_an_epoch_only_past_its_grace_and_counts_each_epoch_with_fidelity():
    stopper = DominatedTrialStopper(SAFETY_TAX, epoch_points=True, grace_epochs=2, stop_collapsed=True)
    first, second = SimpleNamespace(trial_id="first"), SimpleNamespace(trial_id="second")
    good = reading(5.0, 90.0, (2.0, 12.0), (82.0, 95.0), epoch=1.0)
    assert stopper.on_trial_result(None, first, good) == TrialScheduler.CONTINUE
    assert stopper.points == [{"trial_id": "first@e1", "harmful_score": 5.0, "reasoning_accuracy": 90.0}]
    bad = reading(60.0, 40.0, (45.0, 72.0), (30.0, 52.0))
    assert stopper.on_trial_result(None, second, {**bad, "epoch": 1.0}) == TrialScheduler.CONTINUE  # grace
    assert stopper.on_trial_result(None, second, {**bad, "epoch": 2.0}) == TrialScheduler.STOP
    assert stopper.stopped["second"][0] == 2 and "first@e1" in stopper.stopped["second"][1]
    # A collapsed reading is never a point of the front.
    stopper.on_trial_result(None, SimpleNamespace(trial_id="third"), reading(0.0, 99.0, epoch=1.0, collapsed=1.0))
    assert [p["trial_id"] for p in stopper.points] == ["first@e1", "second@e1", "second@e2"]

    # With evaluate_epochs every, only a finished trial's last reading is a point.
    stopper = DominatedTrialStopper(SAFETY_TAX, epoch_points=False)
    stopper.on_trial_result(None, first, good)
    assert stopper.points == []
    stopper.on_trial_complete(None, first, good)
    assert stopper.on_trial_result(None, second, {**bad, "epoch": 1.0}) == TrialScheduler.STOP


@pytest.mark.parametrize("override, field", [
    (["early_stopping=true"], "early_stopping: a trial can only be stopped at an epoch it reads"),
    # One objective is refused by every sweep (objectives needs two), so no scheduler ever runs on one.
    (["early_stopping=true", "evaluate_epochs=every", "objectives=[{name: harmful_score, direction: min}]"],
     "objectives: List should have at least 2 items"),
    (["early_stopping={grace_epochs: 9}", "evaluate_epochs=every"], "early_stopping.grace_epochs"),
])
def test_bad_early_stopping_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        load_spec(None, override)


def test_the_cli_refuses_early_stopping_without_epoch_readings_before_ray_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", "early_stopping=true", "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "early_stopping" in done.stderr and "evaluate_epochs=every" in done.stderr


def test_a_trial_stopped_at_an_epoch_keeps_its_readings_and_says_why(tmp_path, tiny_assets, tiny_model_dir, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under the working directory
    # The random-weight model replies with noise, so its first epoch is flagged collapsed: stop_collapsed stops
    # every trial there, and the run must show it (tags, status, one epoch read, Tune's last result).
    data = random_model_spec(tiny_assets, tiny_model_dir, num_samples=2, evaluate_epochs="every",
                             early_stopping={"grace_epochs": 1, "stop_collapsed": True},
                             search_space={"data.size": {"choice": [8, 16]}})
    data["base"]["train"].update(epochs=3, max_steps=None, scheduler="constant")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "sweep.yaml", store_overrides(tmp_path, "stopping-test"))

    outcome = run_sweep(spec, verbose=0)

    assert outcome.finished
    client = tracking.client(outcome.tracking_uri)
    children = tracking.trial_runs(client, outcome.experiment_id, outcome.parent_run_id)
    assert len(children) == 2
    printed = capsys.readouterr().out
    for child in children:
        collapsed = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "collapsed")}
        assert collapsed[1] == 1.0, "the random model's first epoch is expected to read as collapsed"
        assert sorted(collapsed) == [1]  # epochs 2 and 3 were never trained nor read
        assert child.info.status == "FINISHED"
        assert child.data.tags[STOPPED_EPOCH_TAG] == "1" and child.data.tags[STOPPED_REASON_TAG].startswith("collapsed")
        assert child.data.tags[tracking.COLLAPSED_TAG] == "true"
        assert child.data.metrics["time/trial_s"] > 0
        checkpoint = child.data.tags["checkpoint_dir"]
        assert checkpoint.endswith("epoch_1"), checkpoint
        trial_id = child.data.tags[tracking.TRIAL_ID_TAG]
        assert f"trial {trial_id} stopped at epoch 1 (collapsed" in printed
    assert [t["stopped_at"] for t in outcome.trials] == [1, 1]
    # What the user reads: the table marks them, and the compute line says what stopping saved, which the
    # parent run also holds (two epochs left of three, each priced at the trial's own epoch).
    from sweeps.report import describe_compute, front_table

    assert front_table(outcome.trials, outcome.front, spec.directions(), [], {}).count("stopped early at epoch 1") == 2
    assert "early stopping stopped 2, saving" in describe_compute(outcome.trials)
    parent = client.get_run(outcome.parent_run_id).data.metrics
    assert parent["trials_stopped_early"] == 2 and parent["compute_saved_s"] > 0
    assert parent["compute_saved_s"] == pytest.approx(sum(t["saved_s"] for t in outcome.trials))
    for result_file in (tmp_path / "tune").rglob("result.json"):
        results = [json.loads(line) for line in result_file.read_text().splitlines()]
        assert [r["epoch"] for r in results] == [1.0]


def test_racing_rules_an_evaluation_out_against_the_points_recorded_in_mlflow(tmp_path):
    from sweeps.trial import TrialContext, _race

    spec = load_spec(None, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "racing={slices: 3}"])
    client = tracking.client(spec.mlflow.tracking_uri)
    experiment_id = tracking.experiment_id(client, "racing-test")
    parent = tracking.start_sweep_run(client, experiment_id, str(tmp_path / "sweep"), run_name="sweep-racing",
                                    tags={}).info.run_id
    context = TrialContext(spec=spec, service=None, tracking_uri=spec.mlflow.tracking_uri,
                           experiment_id=experiment_id, parent_run_id=parent)
    assert _race(spec, context).rule(result_of(60.0, (45.0, 72.0), 40.0, (30.0, 52.0))) is None  # no point yet

    done = tracking.trial_run(client, experiment_id, parent, "done", run_name="done").info.run_id
    tracking.log_metrics(client, done, {"harmful_score": 5.0, "reasoning_accuracy": 90.0})
    client.set_tag(done, tracking.COLLAPSED_TAG, "false")
    client.set_terminated(done, status="FINISHED")
    race = _race(spec, context)
    assert race.slices == 3
    assert "dominated" in race.rule(result_of(60.0, (45.0, 72.0), 40.0, (30.0, 52.0)))
    assert race.rule(result_of(60.0, (4.0, 72.0), 40.0, (30.0, 52.0))) is None  # its interval still reaches it


def result_of(harm, harm_ci, accuracy, accuracy_ci):
    from evaluators.reading import Reading
    from evaluators.runner import EvalResult

    return EvalResult(metrics={}, harmful_score=harm, harmful_score_plus=harm, reasoning_accuracy=accuracy,
                      refusal_rate=None, judge="refusal-patterns", sample_files={}, cached=False, model_hash="m",
                      readings={"harmful_score": Reading(harm, *harm_ci, 20),
                                "harmful_score_plus": Reading(harm, *harm_ci, 20),
                                "reasoning_accuracy": Reading(accuracy, *accuracy_ci, 20)})


@pytest.mark.parametrize("override, field", [
    (["racing=true", "evaluation.cache_dir=null"], "racing: each slice's replies are cached"),
    (["racing=true", "replicates=2"], "racing: the intervals of replicates=2"),
    (["racing={slices: 1}"], "racing.slices"),
])
def test_bad_racing_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        load_spec(None, override)
