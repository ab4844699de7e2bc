"""Run a sweep: check everything, start the evaluator once, search with Tune + Optuna, and log the front to MLflow.

Order matters for the user: the spec, the tracking store, the resume state and the data are checked
before Ray starts; the base model is evaluated once (the front's reference point, "epoch 0"); then
Tune runs the trials; at the end (or after Ctrl-C) the Pareto front of every finished trial is
computed from MLflow, the source of truth across resumes, and logged to the parent run.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from sweeps import provenance, tracking
from sweeps.preflight import check_data, check_resume_state, data_paths
from sweeps.resources import trial_resources
from sweeps.ray_secrets import stop_tune_copying_credentials
from sweeps.readings import format_reading
from sweeps.report import SweepLayout, base_point, describe_sweep, record_front, tag_experiment, trial_records
from sweeps.search_space import build_searcher, check_study_storage, fail_orphan_trials, tune_param_space
from sweeps.spec import SweepSpec
from sweeps.early_stopping import STOPPED_EPOCH_TAG, STOPPED_REASON_TAG
from sweeps.trial import EPOCH_KEY, RECORDED_FLAG, TrialContext, result_metrics, run_trial
from trainables.local_ray import init_local_ray, started_here
from trainables.private_apis import extend_search_state
from trainables.credentials import is_credential
from trainables.schema import ConfigError

# Save Tune's experiment state at least this often (seconds), so a killed driver loses almost nothing.
STATE_SAVE_PERIOD_S = "1"


@dataclass
class SweepOutcome:
    """What a sweep left behind: where its records are and what its front is."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: list[dict] = field(default_factory=list)
    front: list[int] = field(default_factory=list)
    hypervolume: float = 0.0
    base: dict[str, float] = field(default_factory=dict)
    plot: Path | None = None
    finished: bool = False


# Fields a resumed sweep may change: Tune restores its own copies of the first ones, and the rest
# only say how to run the same trials (ports, timeouts, retries), not what they measure.
RESUMABLE_CHANGES = ("num_samples", "max_concurrent_trials", "max_failures", "resources_per_trial",
                     "evaluation.http_", "evaluation.request_timeout_s", "evaluation.max_retries",
                     "evaluation.num_replicas", "evaluation.cache_dir", "estimate.")


def _spec_changes(spec_params: dict[str, str], logged: dict[str, str]) -> list[str]:
    keys = set(spec_params) | set(logged)
    return sorted(k for k in keys if not k.startswith(RESUMABLE_CHANGES) and spec_params.get(k) != logged.get(k))


def _check_resumed_environment(client, experiment_id: str, experiment_path: str, record: dict,
                               accept_changes: bool) -> list[str]:
    """Return the accepted changes since the resumed sweep's recorded provenance; ConfigError when not accepted."""
    found = tracking.find_sweep_run(client, experiment_id, experiment_path)
    if found is None:
        return []
    return provenance.check_resume(client, found.info.run_id, record, accept_changes)


def _open_parent(client, spec: SweepSpec, experiment_id: str, resume: bool, spec_params: dict[str, str]) -> str:
    """Return the parent run id: the sweep's existing run on resume, a new one otherwise."""
    found = tracking.find_sweep_run(client, experiment_id, spec.experiment_path) if resume else None
    if found is not None:
        changed = _spec_changes(spec_params, found.data.params)
        if changed:
            raise ConfigError(f"--resume: the spec differs from the one this sweep started with, in "
                              f"{', '.join(changed[:8])}; resume with the original spec, or start a new sweep "
                              f"with another name")
        client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    choice = spec.sampler_choice()
    run = tracking.start_sweep_run(client, experiment_id, spec.experiment_path, run_name=f"sweep-{spec.name}",
                                   tags={"objectives": ", ".join(f"{o.name} {o.direction}" for o in spec.objectives),
                                         "sampler": choice.describe(), "sampler_reason": choice.reason})
    tracking.log_params(client, run.info.run_id, spec_params)
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "config.yaml"
        resolved.write_text(yaml.safe_dump(_loggable_spec(spec), sort_keys=False))
        tracking.log_artifact(client, run.info.run_id, resolved)
    return run.info.run_id


def _loggable_spec(spec: SweepSpec) -> dict:
    """Return the resolved spec as plain data, without credentials (the same filter as params)."""
    data = spec.model_dump(mode="json", by_alias=True)
    data["mlflow"]["tracking_uri"] = tracking.redact_uri(data["mlflow"]["tracking_uri"])
    if data["optuna"]["storage"] is not None:
        data["optuna"]["storage"] = tracking.redact_uri(data["optuna"]["storage"])

    def scrub(node):
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items() if not is_credential(k)}
        return [scrub(v) for v in node] if isinstance(node, list) else node

    return scrub(data)


def _evaluate_base(client, service, parent_run_id: str, objectives: list[str], out_dir: Path) -> dict[str, float]:
    """Return the base model's metrics, evaluating it once per sweep (a resumed sweep reuses the logged ones)."""
    base = base_point(client.get_run(parent_run_id).data.metrics)
    if all(name in base for name in objectives):
        return base
    evaluation = service.evaluate(out_dir=out_dir)
    base = result_metrics(evaluation)
    tracking.log_metrics(client, parent_run_id, {f"base_model/{k}": v for k, v in base.items()})
    for path in evaluation.sample_files.values():
        if Path(path).is_file():
            tracking.log_artifact(client, parent_run_id, path, "base_model_samples")
    return base


class TrialRecorder(tune.Callback):
    """Tune callback in the driver: prints a line per finished trial and records failed trials in MLflow.

    A trial that dies (a killed worker, an out-of-memory kill) cannot mark its own run, so the driver
    does, with Tune's error text. It holds only plain data: Tune pickles it with the sweep's state.
    """

    def __init__(self, sweep_name: str, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 searched: list[str], directions: dict[str, str], num_samples: int):
        self.sweep_name = sweep_name
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.searched, self.directions, self.num_samples = searched, directions, num_samples
        self.done = 0

    def _line(self, trial, what: str) -> str:
        self.done += 1
        point = ", ".join(f"{k}={_short(trial.config.get(k))}" for k in self.searched)
        return f"[{self.done}/{self.num_samples}] trial {trial.trial_id} {what} ({point})"

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        scores = ", ".join(f"{name}={format_reading(result, name)}" for name in self.directions if name in result)
        scores += " (collapsed: mostly incoherent replies)" if result.get("collapsed") else ""
        if result.get(RECORDED_FLAG):  # finished before the restart; Tune had not saved that yet
            print(f"trial {trial.trial_id} was already recorded: {scores}", flush=True)
            return
        stopped = self._stopped(result)
        what = f"stopped at epoch {stopped[0]} ({stopped[1]})" if stopped else "finished"
        print(self._line(trial, f"{what}: {scores}"), flush=True)

    def _stopped(self, result: dict) -> tuple[str, str] | None:
        """Return (epoch, reason) when the early-stopping scheduler stopped the trial of `result`, else None."""
        if EPOCH_KEY not in result or "mlflow_run_id" not in result:
            return None
        tags = tracking.client(self.tracking_uri).get_run(result["mlflow_run_id"]).data.tags
        return (tags[STOPPED_EPOCH_TAG], tags[STOPPED_REASON_TAG]) if STOPPED_EPOCH_TAG in tags else None

    def _record_failure(self, trial, only_if_unrecorded: bool) -> str:
        """Mark the trial's MLflow run FAILED with Tune's error text; return the text."""
        error = str(trial.get_error() or "the trial failed without an error message")
        client = tracking.client(self.tracking_uri)
        run = tracking.trial_run(client, self.experiment_id, self.parent_run_id, trial.trial_id,
                                 run_name=f"{self.sweep_name}-{trial.trial_id}")
        if only_if_unrecorded and run.info.status != "RUNNING":  # the trial recorded its own error
            return error
        tracking.log_params(client, run.info.run_id,
                            tracking.flatten_params({k: trial.config.get(k) for k in self.searched}))
        tracking.mark_failed(client, run.info.run_id, error)
        return error

    def on_trial_recover(self, iteration, trials, trial, **info):
        # A trial whose own process died (local mode trains there) left its run RUNNING and no error; the
        # retry archives what is recorded here as error.attempt<N>, as it does a failure the trial caught.
        self._record_failure(trial, only_if_unrecorded=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = self._record_failure(trial, only_if_unrecorded=False)
        last_line = error.strip().splitlines()[-1] if error.strip() else ""
        print(self._line(trial, f"FAILED after retries: {last_line}"), flush=True)

    def get_state(self) -> dict:
        return {"done": self.done}

    def set_state(self, state: dict) -> None:
        self.done = state.get("done", 0)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# Tune's saved search state: the newest file of this pattern holds the sample count it stops at.
def _scheduler(spec: SweepSpec, context: TrialContext):
    """Return the early-stopping scheduler the spec asks for (`sweeps.early_stopping`), or None (Tune's FIFO)."""
    if spec.early_stopping is None:
        return None
    from sweeps.early_stopping import DominatedTrialStopper

    return DominatedTrialStopper(spec.directions(), epoch_points=spec.evaluate_epochs == "fidelity",
                                 grace_epochs=spec.early_stopping.grace_epochs,
                                 stop_collapsed=spec.early_stopping.stop_collapsed,
                                 tracking_uri=context.tracking_uri, experiment_id=context.experiment_id,
                                 parent_run_id=context.parent_run_id)


def _tuner(spec: SweepSpec, context: TrialContext, resume: bool, verbose: int):
    stop_tune_copying_credentials()  # else Ray's runtime_env_agent.log holds the AWS secret
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), trial_resources(spec.resources_per_trial, spec.base))
    if resume:
        old = extend_search_state(spec.experiment_path, spec.num_samples)
        if old is not None:
            print(f"resuming with num_samples={spec.num_samples}: {spec.num_samples - old} trials more than the "
                  f"{old} the sweep started with", flush=True)
        return tune.Tuner.restore(spec.experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(spec.search_space),
        tune_config=tune.TuneConfig(search_alg=build_searcher(spec), num_samples=spec.num_samples,
                                    scheduler=_scheduler(spec, context),
                                    max_concurrent_trials=spec.max_concurrent_trials,
                                    # A finished trial's process runs the next trial: its imports (torch, MLflow,
                                    # the evaluators) are paid once per slot, not once per trial.
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=spec.storage_path, verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[TrialRecorder(spec.name, context.tracking_uri, context.experiment_id,
                                     context.parent_run_id, list(spec.search_space), spec.directions(),
                                     spec.num_samples)],
        ),
    )


def run_sweep(spec: SweepSpec, *, resume: bool = False, verbose: int = 1, accept_changes: bool = False) -> SweepOutcome:
    """Run (or resume) the sweep and return its outcome; ConfigError on bad input before Ray starts.

    A resume whose environment changed in a way that can move readings is refused (`sweeps.provenance`)
    unless `accept_changes`, which records the change in the sweep's run.
    """
    check_resume_state(spec, resume)
    tracking_uri = tracking.check_tracking_uri(tracking.credentials_to_env(spec.mlflow.tracking_uri))
    check_study_storage(spec.optuna.storage, spec.study_name, resume)
    import ray

    from evaluators.service import EvaluatorService
    from trainables.tiny.lrm import ensure_tiny_data, ensure_tiny_paths, tiny_build_pending

    ray_was_running = ray.is_initialized()
    tiny_paths = [spec.base.model, *data_paths(spec.base, spec.search_space)]
    ensure_tiny_data(tiny_paths)  # seconds: the generated data files, so the data can be checked now
    check_data(spec.base, spec.search_space)
    if tiny_build_pending(tiny_paths):  # minutes of building follow: check the evaluation's inputs first
        EvaluatorService.check_inputs(spec.evaluation)
    ensure_tiny_paths(tiny_paths)  # the only build: resolving never trains
    service = None
    try:
        service = EvaluatorService(spec.evaluation, spec.base.model)  # reads every benchmark's data: seconds
        record = provenance.sweep_record(service)  # hashes the base model, once per sweep
        client = tracking.client(tracking_uri)
        experiment_id = tracking.experiment_id(client, spec.experiment_name)
        accepted = _check_resumed_environment(client, experiment_id, spec.experiment_path, record,
                                              accept_changes) if resume else []
        if not ray.is_initialized():
            init_local_ray(configure_logging=False)
        service.start()

        tag_experiment(client, experiment_id)
        spec_params = tracking.flatten_params(_loggable_spec(spec))
        parent_run_id = _open_parent(client, spec, experiment_id, resume, spec_params)
        if resume and provenance.recorded(client, parent_run_id) is not None:
            provenance.record_resume(client, parent_run_id, record, accepted)
        else:
            provenance.log_record(client, parent_run_id, record)
        base = _evaluate_base(client, service, parent_run_id, list(spec.directions()),
                              Path(spec.base.output_dir) / "evaluations" / spec.name / "base_model")
        print("base model: " + ", ".join(f"{o.name}={format_reading(base, o.name)}" for o in spec.objectives),
              flush=True)

        context = TrialContext(spec=spec, service=service, tracking_uri=tracking_uri,
                               experiment_id=experiment_id, parent_run_id=parent_run_id)
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_PERIOD_S)
        started = time.monotonic()
        results = _tuner(spec, context, resume, verbose).fit()
        # After Ctrl-C, Tune returns normally; unfinished trials are those with neither metrics nor an error.
        finished = len(results) >= spec.num_samples and all(
            r.error is not None or all(o.name in (r.metrics or {}) for o in spec.objectives) for r in results)
        # Ctrl-C stops trials without letting them end their runs; --resume runs them again.
        tracking.end_running_trials(client, experiment_id, parent_run_id, status="KILLED")
        if finished:
            fail_orphan_trials(spec.optuna.storage, spec.study_name)
        outcome = SweepOutcome(tracking_uri, experiment_id, parent_run_id, base=base, finished=finished)
        layout = SweepLayout.from_spec(spec)
        outcome.trials = trial_records(client, experiment_id, parent_run_id, layout)
        outcome.front, outcome.hypervolume, outcome.plot = record_front(client, parent_run_id, layout,
                                                                        outcome.trials, base, title=spec.name)
        describe_sweep(client, parent_run_id, layout, outcome.trials, outcome.front, base,
                       study=tracking.redact_uri(spec.optuna.storage) if spec.optuna.storage else None)
        tracking.log_metrics(client, parent_run_id, {"sweep_minutes": (time.monotonic() - started) / 60})
        client.set_terminated(parent_run_id, status="FINISHED" if finished else "KILLED")
        return outcome
    finally:
        if not ray_was_running and ray.is_initialized() and started_here():
            # The session this sweep started on this machine ends, and Serve and its apps with it. Deleting the
            # apps and then serve.shutdown() would print Serve's log of each step, and kill Serve's controller
            # while its proxies' long polls are in flight: Ray prints each failed poll ("(raylet) Task
            # ServeController.listen_for_change failed … killed by ray.kill") around the summary.
            ray.shutdown()
        else:  # a cluster outlives the sweep: it keeps nothing of it, so idle nodes can go back
            if service is not None:
                service.shutdown()
            if not ray_was_running and ray.is_initialized():
                from ray import serve

                serve.shutdown()
                ray.shutdown()
