"""No repeated work and where the time goes: exact repeats reuse a result, cached evaluations skip Serve, phases add up."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sweeps import tracking
from sweeps.report import describe_time, orchestration_share, trial_records, SweepLayout
from sweeps.trial import REUSED_TAG, _reuse, find_repeat, same_settings
from trainables.align import phase_seconds

PARAMS = {"name": "tiny-t1", "data.size": "30", "train.learning_rate": "0.002", "train.seed": "0"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real SQLite store with one sweep and one finished trial, t1."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    client = tracking.client(tracking.check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db"))
    experiment = tracking.experiment_id(client, "speed-test")
    parent = tracking.start_sweep_run(client, experiment, str(tmp_path / "tune"), "sweep", {}).info.run_id
    first = tracking.trial_run(client, experiment, parent, "t1", run_name="tiny-t1").info.run_id
    tracking.log_params(client, first, PARAMS)
    tracking.log_metrics(client, first, {"harmful_score": 12.5, "reasoning_accuracy": 70.0, "time/trial_s": 40.0,
                                         "time/train_train_steps_s": 10.0, "time/evaluation_generation_s": 6.0})
    client.set_tag(first, "checkpoint_dir", "/runs/t1/final")
    client.set_terminated(first, "FINISHED")
    objectives = [SimpleNamespace(name="harmful_score"), SimpleNamespace(name="reasoning_accuracy")]
    context = SimpleNamespace(experiment_id=experiment, parent_run_id=parent, spec=SimpleNamespace(objectives=objectives))
    return client, context, first


def test_a_repeated_point_with_the_same_seed_reuses_the_recorded_result(sweep):
    client, context, first = sweep
    repeat = tracking.trial_run(client, context.experiment_id, context.parent_run_id, "t2",
                                run_name="tiny-t2").info.run_id
    params = {**PARAMS, "name": "tiny-t2"}
    earlier = find_repeat(client, context, repeat, params)
    assert earlier is not None and earlier.info.run_id == first
    # Another seed, or another value of any field, is another point: it trains.
    assert find_repeat(client, context, repeat, {**params, "train.seed": "1"}) is None
    assert not same_settings(PARAMS, {**PARAMS, "data.size": "60"})

    metrics = _reuse(client, repeat, earlier)
    assert metrics == {"harmful_score": 12.5, "reasoning_accuracy": 70.0}  # no time/ metrics: it took none
    run = client.get_run(repeat)
    assert run.data.tags[REUSED_TAG] == "t1" and run.data.tags["checkpoint_dir"] == "/runs/t1/final"
    assert run.data.metrics["harmful_score"] == 12.5


def test_the_orchestration_share_is_the_time_neither_training_nor_generating(sweep):
    client, context, _ = sweep
    layout = SweepLayout({"harmful_score": "min", "reasoning_accuracy": "max"}, {}, [])
    trials = trial_records(client, context.experiment_id, context.parent_run_id, layout)
    assert trials[0]["seconds"]["trial"] == 40.0
    # 40 s in the trial, 10 s of training steps, 6 s of generation: 24 of 40 s are orchestration.
    assert orchestration_share(trials) == pytest.approx(0.6)
    assert "orchestration share 60%" in describe_time(trials)
    assert orchestration_share([{"seconds": {}}]) is None


def test_phase_seconds_split_a_fit_by_the_workers_clock_readings():
    final = {"timing/worker_started_at": 105.0, "timing/model_load_s": 2.0, "timing/checkpoint_save_s": 0.5,
             "timing/report_started_at": 118.0}
    phases = phase_seconds(final, [{"epoch_seconds": 6.0}, {"epoch_seconds": 4.0}], fit_start=100.0, fit_end=119.0)
    assert phases == {"ray_train": 19.0, "train_steps": 10.0, "startup": 5.0, "model_load": 2.0, "checkpoint": 1.5}
    # A final report without the readings still gives what the driver knows.
    assert phase_seconds({}, [], fit_start=0.0, fit_end=3.0) == {"ray_train": 3.0, "train_steps": 0.0}


def test_a_fully_cached_evaluation_answers_without_starting_ray(tiny_model_dir, tmp_path):
    import ray

    from evaluators.cache import ResultCache
    from evaluators.config import EvalConfig
    from evaluators.metrics import summarize
    from evaluators.service import EvaluatorService

    if ray.is_initialized():
        pytest.skip("a Ray started by another test is running in this process")
    cfg = EvalConfig(benchmarks=["tiny-arith"], judge="refusal-patterns", limit=4, cache_dir=tmp_path / "cache")
    service = EvaluatorService(cfg, str(tiny_model_dir))
    from evaluators.benchmarks import get_benchmark

    benchmark = get_benchmark("tiny-arith")
    identity, cache = service._identity(str(tiny_model_dir), None)
    key = service._result_key(identity, "tiny-arith", benchmark, benchmark.load(4), 4)
    records = [{"id": str(i), "correct": i < 3, "incoherent": False} for i in range(4)]
    ResultCache(cfg.cache_dir).put(key, summarize("reasoning", records), records, {})
    with service:
        result = service.evaluate(out_dir=tmp_path / "out")
    assert not ray.is_initialized()
    assert result.cached and result.reasoning_accuracy == 75.0
    assert json.loads((tmp_path / "out" / "tiny-arith.jsonl").read_text().splitlines()[0]) == records[0]
