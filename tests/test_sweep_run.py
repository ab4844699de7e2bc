"""Real sweeps on CPU: Ray Tune + Optuna run trials, Ray Train trains, Serve evaluates, MLflow records the front.

Each test runs one or more real sweeps (tens of seconds to minutes each on 2 cores), so all are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from sweep_helpers import random_model_spec, store_overrides
from sweeps import tracking
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.pareto import hypervolume, pareto_front
from sweeps.provenance import CHANGES_TAG, PROVENANCE_FILE
from sweeps.report import FRONT_CSV, PLOT_HTML, PLOT_PNG
from sweeps.runner import run_sweep
from trainables.schema import ConfigError

pytestmark = pytest.mark.slow


def test_three_trial_sweep_on_the_tiny_lrm(tmp_path, monkeypatch):
    from trainables.tiny.lrm import ensure_tiny_lrm

    ensure_tiny_lrm()  # built once per machine (minutes), then cached
    monkeypatch.chdir(tmp_path)
    spec = load_spec(TINY_SPEC, [
        *store_overrides(tmp_path, "tiny-test"), "num_samples=3", "max_concurrent_trials=2",
        "base.train.max_steps=4", "evaluation.limit=12", "evaluation.generation.max_new_tokens=96"])

    outcome = run_sweep(spec, verbose=0)

    assert outcome.finished
    client = tracking.client(outcome.tracking_uri)
    runs = client.search_runs([outcome.experiment_id])
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert len({c.data.tags[tracking.TRIAL_ID_TAG] for c in children}) == 3

    # The parent: resolved config, the base model's point, the front's artifacts and hypervolume.
    assert parent.data.params["base.model"] == "tiny://lrm"
    # What auto chose for 3 trials, and why, where a reviewer of the run finds it.
    assert parent.data.tags["sampler"] == "Gaussian process (GPSampler, log EHVI) (2 random trials first)"
    assert parent.data.tags["sampler_reason"].startswith("auto: 3 trials")
    lr_low, lr_high = spec.search_space["train.learning_rate"].loguniform
    assert json.loads(parent.data.params["search_space.train.learning_rate.loguniform"]) == [lr_low, lr_high]
    for name in ("harmful_score", "reasoning_accuracy"):
        assert 0 <= parent.data.metrics[f"base_model/{name}"] <= 100
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {PLOT_PNG, PLOT_HTML, FRONT_CSV, "config.yaml", "base_model_samples", PROVENANCE_FILE} <= artifacts
    # What produced the readings: the software, the judge's rules, the items asked, the base model.
    record = json.loads(tracking.artifact_local_path(client, parent.info.run_id, PROVENANCE_FILE).read_text())
    import transformers

    assert record["environment"]["packages"]["transformers"] == transformers.__version__
    assert parent.data.tags["provenance.transformers"] == transformers.__version__
    assert record["evaluation"]["base_model"]["tiny_seed"] == 0 and record["evaluation"]["base_model"]["content_hash"]
    assert {b["name"]: b["items"] for b in record["evaluation"]["benchmarks"]} == {
        "tiny-arith": 12, "tiny-harmful": 12, "tiny-xstest": 12}
    assert [j["name"] for j in record["evaluation"]["judges"]] == spec.evaluation.judge_names()
    assert outcome.plot.is_file()

    # Each child: its sampled params, the loss curve, metrics, per-sample JSONL, the checkpoint.
    points = []
    for child in children:
        params, metrics, tags = child.data.params, child.data.metrics, child.data.tags
        assert child.info.status == "FINISHED" and tags["attempts"] == "1"
        assert int(params["data.size"]) in spec.search_space["data.size"].choice
        assert lr_low <= float(params["train.learning_rate"]) <= lr_high
        epochs_low, epochs_high = spec.search_space["train.epochs"].int_range
        assert epochs_low <= int(params["train.epochs"]) <= epochs_high
        assert params["model"] == "tiny://lrm" and params["finetune"] == "lora"
        losses = client.get_metric_history(child.info.run_id, "train_loss")
        assert [m.step for m in losses] == list(range(1, len(losses) + 1)) and 1 <= len(losses) <= 4
        assert {"harmful_score", "reasoning_accuracy", "refusal_rate", "tiny-arith/accuracy",
                "tiny-harmful/harmful_score", "tiny-xstest/refusal_rate"} <= set(metrics)
        samples = {f.path for f in client.list_artifacts(child.info.run_id, "samples")}
        assert {"samples/tiny-arith.jsonl", "samples/tiny-harmful.jsonl", "samples/tiny-xstest.jsonl"} <= samples
        assert (Path(tags["checkpoint_dir"]) / "adapter_config.json").is_file()
        trial_record = json.loads(tracking.artifact_local_path(client, child.info.run_id, PROVENANCE_FILE).read_text())
        assert trial_record["environment"]["packages"]["torch"] and len(trial_record["scored_model_hash"]) == 64
        points.append({"run_id": child.info.run_id, **metrics})

    # Tags agree with the front computed from the recorded metrics; the hypervolume matches too.
    directions = spec.directions()
    front = {points[i]["run_id"] for i in pareto_front(points, directions)}
    assert {c.info.run_id for c in children if c.data.tags[tracking.PARETO_TAG] == "true"} == front
    assert parent.data.metrics["hypervolume"] == pytest.approx(
        hypervolume([p for p in points if p["run_id"] in front], directions))

    # Starting the same sweep again, without --resume, is refused before Ray starts.
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(spec, verbose=0)


def test_two_runs_of_the_same_sweep_record_identical_trials(tmp_path, tiny_assets, tiny_model_dir, monkeypatch):
    """Seeded search, data order and training: a rerun samples the same points, trains to the same losses and reads
    the same objectives (speed work must never change a reading). NSGA-II's second generation depends on the
    first one's readings, so the third trial checks those too. The first run trains on Ray Train workers, the
    second in local mode, so the check also covers where training runs."""
    data = random_model_spec(tiny_assets, tiny_model_dir, num_samples=3, max_concurrent_trials=2)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))

    def run(folder: Path, num_workers: int) -> list[tuple]:
        folder.mkdir()
        monkeypatch.chdir(folder)
        overrides = [*store_overrides(folder, "repeat-test"), f"base.scaling.num_workers={num_workers}"]
        outcome = run_sweep(load_spec(tmp_path / "sweep.yaml", overrides), verbose=0)
        assert outcome.finished
        client = tracking.client(outcome.tracking_uri)
        trials = []
        for trial in outcome.trials:
            losses = [m.value for m in sorted(client.get_metric_history(trial["run_id"], "train_loss"),
                                              key=lambda m: m.step)]
            readings = {k: trial[k] for k in ("harmful_score", "reasoning_accuracy")}
            trials.append((json.dumps(trial["params"], sort_keys=True), json.dumps(readings, sort_keys=True), losses))
        return sorted(trials)

    first, second = run(tmp_path / "workers", 1), run(tmp_path / "local", 0)
    assert len(first) == 3 and all(losses for _, _, losses in first)
    assert second == first


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_assets, tiny_model_dir, monkeypatch):
    # A model folder with a config.json passes the schema, but nothing in it loads: the trial fails at run time.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    monkeypatch.chdir(tmp_path)
    data = random_model_spec(tiny_assets, tiny_model_dir, sampler="grid", max_failures=1,
                             search_space={"model": {"choice": [str(tiny_model_dir), str(broken)]}})
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "sweep.yaml", store_overrides(tmp_path, "failure-test"))

    outcome = run_sweep(spec, verbose=0)

    assert outcome.finished
    by_model = {t["params"]["model"]: t for t in outcome.trials}
    good, bad = by_model[str(tiny_model_dir)], by_model[str(broken)]
    assert good["status"] == "FINISHED" and bad["status"] == "FAILED"
    client = tracking.client(outcome.tracking_uri)
    failed = client.get_run(bad["run_id"])
    assert "run_alignment" in failed.data.tags[tracking.ERROR_TAG]  # the traceback of where it failed
    assert bad["error"]  # its last line, shown by `safetytax pareto`
    assert failed.data.tags["attempts"] == "2"  # the first try and one retry (max_failures=1)
    assert failed.data.tags[tracking.PARETO_TAG] == "false"
    # A failed trial is never on the front; the good one is, unless its random-weights model's replies
    # read as babble (collapsed), which keeps it off too.
    expected = [] if good.get("collapsed") else [good["trial_id"]]
    assert [outcome.trials[i]["trial_id"] for i in outcome.front] == expected


def _finished_trial_runs(db: Path) -> list[tuple[str, int]]:
    """Return (run id, end time) of FINISHED trial runs, reading the store without touching its schema."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(
                "select r.run_uuid, r.end_time from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'safetytax.role' and t.value = 'trial' and r.status = 'FINISHED'").fetchall()
    except sqlite3.Error:  # not created yet
        return []


def _tune_saved_statuses(storage: Path) -> list[str]:
    """Return the trial statuses in Tune's newest saved experiment state under `storage` ([] before the first save).

    Tune writes this file as it saves the experiment; `--resume` starts from it, so a kill that follows a
    save with a finished and a running trial leaves exactly that state to resume.
    """
    saved = sorted(storage.glob("*/experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    if not saved:
        return []
    try:
        return [json.loads(trial[0])["status"] for trial in json.loads(saved[-1].read_text())["trial_data"]]
    except (OSError, ValueError, KeyError, IndexError):  # caught mid-write: read the next save
        return []


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# How long Ray's processes may outlive a SIGKILLed driver that started them: its raylet and GCS end at once,
# a worker still registering ends within about 30 s, and its two agents report the raylet's death to the
# gone GCS before they exit, which times out after about a minute (docs/cluster.md). The ceiling leaves room
# for a loaded machine; the test waits for the processes to end, never for the ceiling.
RAY_ORPHANS_END_WITHIN_S = 240


def _running(process: psutil.Process) -> bool:
    """Return whether a process still runs (a zombie waiting for its reaper has ended)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _described(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:80]}"
    except psutil.Error:
        return str(process.pid)


@pytest.mark.parametrize("mode", ["every", "fidelity"])
def test_every_epoch_is_read_reported_to_tune_and_logged_at_its_step(tmp_path, tiny_assets, tiny_model_dir, mode,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under the working directory
    data = random_model_spec(tiny_assets, tiny_model_dir, num_samples=1, evaluate_epochs=mode,
                             search_space={"data.size": {"choice": [16]}})
    data["base"]["train"].update(epochs=3, max_steps=None, scheduler="constant")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "sweep.yaml", store_overrides(tmp_path, "epochs-test"))

    outcome = run_sweep(spec, verbose=0)

    assert outcome.finished
    client = tracking.client(outcome.tracking_uri)
    [child] = tracking.trial_runs(client, outcome.experiment_id, outcome.parent_run_id)
    history = {name: {m.step: m.value for m in client.get_metric_history(child.info.run_id, name)}
               for name in ("harmful_score", "reasoning_accuracy", "harmful_score_n", "epoch")}
    assert sorted(history["epoch"].items()) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert sorted(history["harmful_score"]) == [1, 2, 3] and set(history["harmful_score_n"].values()) == {3.0}
    # The trial's readings are its last epoch's in MLflow; with fidelity each epoch is a point of its own.
    assert child.data.metrics["harmful_score"] == history["harmful_score"][3]
    # Trained one epoch per stage: each epoch's seconds by phase sit at its step, and the planned pauses are
    # not recorded as restarts.
    for phase in ("train", "generation", "judging"):
        steps = {m.step: m.value for m in client.get_metric_history(child.info.run_id, f"epoch_time/{phase}_s")}
        assert sorted(steps) == [1, 2, 3] and all(value > 0 for value in steps.values()), phase
    assert "train.resumed_at_steps" not in child.data.tags
    if mode == "every":
        assert [t["harmful_score"] for t in outcome.trials] == [history["harmful_score"][3]]
    else:
        trial_id = child.data.tags[tracking.TRIAL_ID_TAG]
        assert [(t["trial_id"], t["params"]["train.epochs"], t["harmful_score"]) for t in outcome.trials] == [
            (f"{trial_id}@e{k}", k, history["harmful_score"][k]) for k in (1, 2, 3)]
        assert sum(bool(t["seconds"]) for t in outcome.trials) == 1  # one training run, its time counted once
        collapsed = {m.step: bool(m.value) for m in client.get_metric_history(child.info.run_id, "collapsed")}
        assert [t["collapsed"] for t in outcome.trials] == [collapsed[k] for k in (1, 2, 3)]
        on_front = any(outcome.trials[i]["run_id"] == child.info.run_id for i in outcome.front)
        assert client.get_run(child.info.run_id).data.tags[tracking.PARETO_TAG] == str(on_front).lower()
    # Tune got one result per epoch, with every objective, training_iteration = epoch.
    [result_file] = (tmp_path / "tune").rglob("result.json")
    results = [json.loads(line) for line in result_file.read_text().splitlines()]
    assert [(r["training_iteration"], r["epoch"]) for r in results] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert all({"harmful_score", "reasoning_accuracy"} <= set(r) for r in results)
    assert [r["harmful_score"] for r in results] == [history["harmful_score"][k] for k in (1, 2, 3)]


def test_resume_after_the_driver_is_killed(tmp_path, tiny_assets, tiny_model_dir):
    # In local mode, as sweeps train by default: a trial is in flight for seconds (its actor's start-up, training,
    # evaluation), and the sweep saves Tune's state every second (runner.STATE_SAVE_PERIOD_S), so the state the
    # kill waits for below is saved while it runs.
    data = random_model_spec(tiny_assets, tiny_model_dir, num_samples=3)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    # The study in RDB storage, so what Optuna recorded can be read after the driver dies.
    overrides = [*store_overrides(tmp_path, "resume-test"), f"optuna.storage=sqlite:///{tmp_path}/optuna.db"]
    command = [sys.executable, "-m", "sweeps.cli", "sweep", "sweep.yaml", *overrides, "--quiet"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    # Its own process group, so the driver and the Ray cluster it started die together.
    with (tmp_path / "first.log").open("w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    started: list[psutil.Process] = []
    try:
        # The kill comes at a point the test sees, whatever the machine's speed: Tune has saved a state in
        # which one trial finished and another runs (max_concurrent_trials 1, so the third has not started).
        deadline = time.monotonic() + 900
        while not ({"TERMINATED", "RUNNING"} <= set(statuses := _tune_saved_statuses(tmp_path / "tune"))):
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no saved state with a finished and a running trial: {statuses}"
            time.sleep(0.2)
        started = psutil.Process(driver.pid).children(recursive=True)  # the local Ray it started, and more
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` would
        driver.wait()
        killed_at = time.monotonic()
        finished_before = dict(_finished_trial_runs(tmp_path / "mlflow.db"))
        # Every process of the killed sweep ends by itself (docs/cluster.md, "Ray's own processes").
        ceiling = killed_at + RAY_ORPHANS_END_WITHIN_S
        while (alive := [p for p in started if _running(p)]) and time.monotonic() < ceiling:
            time.sleep(1)
        assert not alive, (f"processes of the killed sweep still run {RAY_ORPHANS_END_WITHIN_S} s after the kill: "
                           f"{[_described(p) for p in alive]}")
        print(f"every process of the killed sweep ended within {time.monotonic() - killed_at:.0f} s")
    finally:
        if _group_alive(driver.pid):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        for process in started:  # ours: this test's driver started them; none may outlive a failure here
            if _running(process):
                process.kill()
    assert 1 <= len(finished_before) <= 2, finished_before  # at most the running trial ended in between

    # A resume where a package that moves readings differs from the recorded one is refused, naming it.
    client = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("resume-test").experiment_id
    parent_id = tracking.latest_sweep_run(client, experiment).info.run_id
    recorded_file = tracking.artifact_local_path(client, parent_id, PROVENANCE_FILE)
    record = json.loads(recorded_file.read_text())
    installed = record["environment"]["packages"]["transformers"]
    record["environment"]["packages"]["transformers"] = "0.0.1"  # as if the sweep had started under another one
    recorded_file.write_text(json.dumps(record))
    refused = subprocess.run([*command, "num_samples=4", "--resume"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"transformers: 0.0.1 -> {installed}" in refused.stderr and "--accept-changes" in refused.stderr

    # Accepted, the resume also extends the sweep by one trial, continuing the same study.
    resumed = subprocess.run([*command, "num_samples=4", "--resume", "--accept-changes"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert client.get_run(parent_id).data.tags[CHANGES_TAG] == f"transformers: 0.0.1 -> {installed}"
    # The session the sweep started ends quietly: no failed Serve polls printed around the summary.
    assert "killed by `ray.kill`" not in resumed.stdout + resumed.stderr
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4, "each trial has exactly one MLflow run, and the extension added one"
    assert len({c.data.tags[tracking.TRIAL_ID_TAG] for c in children}) == 4
    assert "resuming with num_samples=4: 1 trials more than the 3" in resumed.stdout
    # Every trial the study holds ended: the killed driver's in-flight asks are failed, none stays RUNNING.
    import optuna

    study = optuna.load_study(study_name="plumbing", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("COMPLETE") == 4, states
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        if child.info.run_id in finished_before:
            # Not run again: same run, untouched end time, one attempt, one loss value per step.
            assert child.info.end_time == finished_before[child.info.run_id]
            assert child.data.tags["attempts"] == "1"
            steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
            assert steps == sorted(set(steps))
            # Finished before the kill: on resume it is reported as recorded, not as newly finished.
            assert f"trial {child.data.tags[tracking.TRIAL_ID_TAG]} finished" not in resumed.stdout
    assert {PLOT_PNG, FRONT_CSV} <= {f.path for f in client.list_artifacts(parents[0].info.run_id)}
