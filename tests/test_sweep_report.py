"""The front as MLflow records it, on a real SQLite store filled with hand-made trials (no Ray needed)."""

from __future__ import annotations

import csv

import pytest

from sweeps import tracking
from sweeps.cli import main
from sweeps.report import (FRONT_CSV, PLOT_HTML, PLOT_PNG, SweepLayout, describe_target, front_table, in_target,
                           record_front, trial_records)
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.runner import _loggable_spec

# (trial id, harmful score, reasoning accuracy, data size); None marks a failed trial.
TRIALS = [
    ("t1", 80.0, 90.0, 8),    # on the front: most accurate
    ("t2", 10.0, 60.0, 48),   # on the front: safest
    ("t3", 50.0, 70.0, 24),   # dominated by nothing? (10, 60) and (80, 90) do not dominate it: on the front
    ("t4", 60.0, 65.0, 24),   # dominated by t3
    ("t5", None, None, 48),   # failed
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store holding one sweep: parent run with the tiny spec's params, five child runs.

    Module-scoped because creating an MLflow SQLite store takes seconds; tests only add tags and artifacts.
    """
    tmp_path = tmp_path_factory.mktemp("mlflow")
    # The store is made in its own folder: MLflow puts a SQLite store's artifacts under the working directory.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        uri = tracking.check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
        client = tracking.client(uri)
        spec = load_spec(TINY_SPEC, ["mlflow.experiment=report-test"])
        experiment = tracking.experiment_id(client, spec.experiment_name)
        parent = tracking.start_sweep_run(client, experiment, str(tmp_path / "tune" / "tiny"), "sweep-tiny", {})
        parent_id = parent.info.run_id
        tracking.log_params(client, parent_id, tracking.flatten_params(_loggable_spec(spec)))
        tracking.log_metrics(client, parent_id, {"base_model/harmful_score": 95.0, "base_model/reasoning_accuracy": 92.0})
        for trial_id, harmful, accuracy, size in TRIALS:
            run_id = tracking.trial_run(client, experiment, parent_id, trial_id, run_name=f"tiny-{trial_id}").info.run_id
            tracking.log_params(client, run_id, {"data.size": str(size), "train.learning_rate": "0.001",
                                                 "train.epochs": "2", "reasoning_mix": "0.1"})
            if harmful is None:
                tracking.mark_failed(client, run_id, "Traceback ...\nRuntimeError: worker died")
            else:
                tracking.log_metrics(client, run_id, {"harmful_score": harmful, "reasoning_accuracy": accuracy})
                if trial_id == "t2":  # a newer run: its readings carry n and a 95% interval
                    tracking.log_metrics(client, run_id, {"harmful_score_ci_low": 1.8, "harmful_score_ci_high": 40.4,
                                                          "harmful_score_n": 10})
                client.set_tag(run_id, tracking.COLLAPSED_TAG, "true" if trial_id == "t4" else "false")
                client.set_terminated(run_id, "FINISHED")
        yield uri, client, spec, experiment, parent_id


def test_child_runs_are_found_by_trial_id_not_duplicated(store):
    uri, client, spec, experiment, parent_id = store
    again = tracking.trial_run(client, experiment, parent_id, "t2", run_name="tiny-t2")
    assert again.info.run_id == tracking.trial_run(client, experiment, parent_id, "t2").info.run_id
    assert len(tracking.trial_runs(client, experiment, parent_id)) == len(TRIALS)
    assert tracking.trial_run(client, experiment, parent_id, "never-ran") is None


def test_record_front_tags_runs_and_logs_artifacts(store):
    uri, client, spec, experiment, parent_id = store
    layout = SweepLayout.from_spec(spec)
    trials = trial_records(client, experiment, parent_id, layout)
    assert [t["trial_id"] for t in trials] == [t[0] for t in TRIALS]
    assert trials[4]["status"] == "FAILED" and trials[4]["error"] == "RuntimeError: worker died"
    assert "harmful_score" not in trials[4]

    # Intervals and the collapsed tag come from MLflow; group and feasibility are set here. The CSV keeps them all.
    assert trials[1]["harmful_score_n"] == 10 and trials[3]["collapsed"] is True
    trials[1].update(group="safechain", feasible=True)
    front, volume, plot = record_front(client, parent_id, layout, trials,
                                       {"harmful_score": 95.0, "reasoning_accuracy": 92.0}, title="tiny")
    assert [trials[i]["trial_id"] for i in front] == ["t1", "t2", "t3"]
    # Staircase against (100, 0): accuracy 60 over harm 10..50, 70 over 50..80, 90 over 80..100.
    assert volume == pytest.approx(40 * 60 + 30 * 70 + 20 * 90)
    tags = {t["trial_id"]: client.get_run(t["run_id"]).data.tags[tracking.PARETO_TAG] for t in trials}
    assert tags == {"t1": "true", "t2": "true", "t3": "true", "t4": "false", "t5": "false"}
    parent = client.get_run(parent_id)
    assert parent.data.metrics["hypervolume"] == pytest.approx(volume)
    assert parent.data.metrics["trials_failed"] == 1
    # Base (95, 92): the target is harm <= 47.5 with accuracy >= 87, which no trial reaches.
    assert parent.data.metrics["trials_in_target"] == 0
    assert parent.data.tags["target"].endswith("no trial reaches it")
    assert {PLOT_PNG, PLOT_HTML, FRONT_CSV} <= {f.path for f in client.list_artifacts(parent_id)}
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (plot.parent / PLOT_HTML).read_text()
    assert "plotly" in html and "base model" in html and "<script src=\"http" not in html  # self-contained
    with (plot.parent / FRONT_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial_id"] for r in rows] == ["t1", "t2", "t3"]
    assert rows[1]["data.size"] == "48" and float(rows[1]["harmful_score"]) == 10.0
    assert (rows[1]["harmful_score_ci_low"], rows[1]["harmful_score_ci_high"], rows[1]["harmful_score_n"]) == (
        "1.8", "40.4", "10")
    assert (rows[1]["group"], rows[1]["feasible"], rows[0]["group"], rows[0]["harmful_score_ci_low"]) == (
        "safechain", "yes", "-", "")


def test_pareto_command_prints_the_front_and_the_plot_path(store, capsys, tmp_path, monkeypatch):
    uri, client, spec, experiment, parent_id = store
    monkeypatch.chdir(tmp_path)
    assert main(["pareto", "--experiment", "report-test", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    starred = [line.split()[1] for line in out.splitlines() if line.startswith("*")]
    assert starred == ["t1", "t2", "t3"]
    assert "base model" in out and "RuntimeError: worker died" in out
    t2 = next(line for line in out.splitlines() if line.startswith("*") and line.split()[1] == "t2")
    assert "10.0 [1.8–40.4] n=10" in t2
    t4 = next(line for line in out.splitlines() if line.split()[:1] == ["t4"])
    assert "yes" in t4.split() and "1 collapsed (mostly incoherent replies)" in out
    plot_line = next(line for line in out.splitlines() if line.startswith("plot: "))
    assert (tmp_path / plot_line[len("plot: "):].strip()).is_file()
    # The last line opens the parent run's own page; with no constraints, no line names a "feasible" trial.
    assert out.splitlines()[-1] == (f"the sweep's run: http://127.0.0.1:5000/#/experiments/"
                                    f"{client.get_experiment_by_name('report-test').experiment_id}/runs/{parent_id}")
    assert "feasible" not in out

    assert main(["pareto", "--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_target_region_is_half_the_harm_at_most_five_points_of_reasoning_lost():
    base = {"harmful_score": 60.0, "reasoning_accuracy": 90.0}
    trials = [{"trial_id": "in", "harmful_score": 30.0, "reasoning_accuracy": 85.0},      # on both bounds
              {"trial_id": "harm", "harmful_score": 31.0, "reasoning_accuracy": 99.0},    # not half the harm
              {"trial_id": "tax", "harmful_score": 0.0, "reasoning_accuracy": 84.9},      # too much reasoning lost
              {"trial_id": "failed"}]
    assert in_target(trials, base) == [0]
    assert describe_target(trials, base).endswith("reached by in")
    assert in_target(trials, {}) == [] and "no base-model point" in describe_target(trials, {})


def _table(trials, front, base, directions=None):
    text = front_table(trials, front, directions or {"harmful_score": "min", "reasoning_accuracy": "max"},
                       ["data.size"], base)
    lines = text.splitlines()
    return lines[0].split("  "), {line.split()[1] if line.startswith("*") else line.split()[0]: line
                                  for line in lines[1:-1]}, lines[-1]


def test_table_shows_intervals_with_n_and_the_trials_tags():
    def reading(name, value, low, high, n):
        return {name: value, f"{name}_ci_low": low, f"{name}_ci_high": high, f"{name}_n": n}

    trials = [
        {"trial_id": "t1", "status": "FINISHED", "params": {"data.size": 15}, "group": "directrefusal",
         "feasible": True, "collapsed": False, **reading("harmful_score", 4.2, 1.1, 20.2, 24),
         **reading("reasoning_accuracy", 53.3, 36.1, 69.8, 30)},
        {"trial_id": "t2", "status": "FINISHED", "params": {"data.size": 60}, "group": "safechain",
         "feasible": False, "collapsed": True, **reading("harmful_score", 70.8, 50.8, 85.1, 24),
         **reading("reasoning_accuracy", 8.0, 2.2, 25.0, 25)},
        {"trial_id": "t3", "status": "FAILED", "params": {"data.size": 30}, "error": "RuntimeError: worker died"},
    ]
    base = {**reading("harmful_score", 45.8, 27.9, 64.9, 24), "reasoning_accuracy": 96.7}
    header, rows, summary = _table(trials, [0], base)
    header = [cell.strip() for cell in header if cell.strip()]
    # Every trial counts 24 harmful prompts, so n goes in the header; accuracy's n differs, so it goes per cell.
    assert header == ["trial", "harmful_score (n=24)", "reasoning_accuracy", "group", "feasible", "collapsed",
                      "data.size", "status"]
    assert "4.2 [1.1–20.2]" in rows["t1"] and "53.3 [36.1–69.8] n=30" in rows["t1"]
    assert rows["t1"].startswith("*") and "directrefusal" in rows["t1"] and " yes " in rows["t1"]
    assert "safechain" in rows["t2"] and " no " in rows["t2"] and rows["t2"].split().count("yes") == 1
    assert "RuntimeError: worker died" in rows["t3"]
    assert "45.8 [27.9–64.9]" in rows["base"] and "96.7 " in rows["base"]
    assert "1 collapsed (mostly incoherent replies)" in summary and "95% interval" in summary


def test_table_of_old_records_has_no_interval_or_tag_columns():
    trials = [{"trial_id": "t1", "status": "FINISHED", "params": {"data.size": 15}, "harmful_score": 10.0,
               "reasoning_accuracy": 60.0}]
    header, rows, summary = _table(trials, [0], {"harmful_score": 80.0, "reasoning_accuracy": 90.0})
    assert [cell.strip() for cell in header if cell.strip()] == ["trial", "harmful_score", "reasoning_accuracy",
                                                                  "data.size", "status"]
    assert "[" not in rows["t1"] and "10.0" in rows["t1"]
    assert summary == "1 of 1 trials on the Pareto front (*)"
    # Checked for collapse, none collapsed: no empty column, and the summary says so.
    header, rows, summary = _table([{**trials[0], "collapsed": False}], [0], {})
    assert "collapsed" not in " ".join(header) and summary.endswith("; none collapsed")


def test_progress_line_of_a_finished_trial_shows_its_intervals_and_collapse(capsys):
    from types import SimpleNamespace

    from sweeps.runner import TrialRecorder

    recorder = TrialRecorder("tiny", "sqlite:///unused.db", "0", "parent", ["data.size"],
                             {"harmful_score": "min", "reasoning_accuracy": "max"}, num_samples=2)
    result = {"harmful_score": 70.8, "harmful_score_ci_low": 50.8, "harmful_score_ci_high": 85.1,
              "reasoning_accuracy": 8.0, "collapsed": 1.0}
    recorder.on_trial_complete(0, [], SimpleNamespace(trial_id="t3", config={"data.size": 60}, last_result=result))
    line = capsys.readouterr().out.strip()
    assert line.startswith("[1/2] trial t3 finished: harmful_score=70.8 [50.8–85.1], reasoning_accuracy=8.0")
    assert "(collapsed: mostly incoherent replies)" in line and "data.size=60" in line


def test_a_tracking_server_link_keeps_its_host_and_drops_its_credentials():
    from sweeps.tracking import run_link

    assert run_link("https://user:hunter2@mlflow.example.com:8443/", "7", "abc") == (
        "https://mlflow.example.com:8443/#/experiments/7/runs/abc")
    assert run_link("sqlite:////tmp/mlflow.db", "1", "r") == "http://127.0.0.1:5000/#/experiments/1/runs/r"
