"""One sweep trial: apply the sampled point, run safety SFT, evaluate the checkpoint, record it, report the objectives.

The trial is a Tune function trainable. It reports to Tune with every objective (Tune checks each result
for them): once at the end, or with evaluate_epochs every or fidelity once per epoch, training one epoch
per stage so that an early-stopping scheduler can end it at an epoch (`sweeps.early_stopping`); with
racing, each evaluation may stop after a slice (`evaluators.racing`). Its MLflow child run is found by trial id before it is
created, so a retried or resumed trial continues its own run; a trial whose run already finished
(the driver died before Tune saved that) reports the recorded metrics instead of training again.
"""

from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.metrics import HEADLINES
from sweeps import early_stopping, provenance, tracking
from sweeps.points import apply_point
from sweeps.replicates import combine_readings
from sweeps.spec import SweepSpec
from trainables.private_apis import HEAD_NODE_RESOURCE

CHECKPOINT_TAG = "checkpoint_dir"
ATTEMPTS_TAG = "attempts"
RESUMED_TAG = "train.resumed_at_steps"
# In a trial's result when it only repeats what MLflow already holds (the driver died before Tune saved it).
RECORDED_FLAG = "from_record"
REUSED_TAG = "reused_from"  # the trial id whose recorded result this trial reuses (an exact repeat)
# Where the trial's Train workers ran: the Ray node id, and its node type as cluster.yaml labels it.
NODE_ID_TAG, NODE_TYPE_TAG = "node_id", "node_type"
NODE_TYPE_LABEL = "safetytax/node-type"


@dataclass
class TrialContext:
    """What every trial of one sweep shares: the spec, the running evaluator service and the MLflow parent run."""

    spec: SweepSpec
    service: Any  # evaluators.service.EvaluatorService, started by the driver; a pickled copy reaches its apps
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def result_metrics(result) -> dict[str, float]:
    """Return an EvalResult's headline numbers (with NAME_ci_low, NAME_ci_high and NAME_n), its incoherent
    rate and collapsed flag (1.0 or 0.0), and the per-benchmark metrics as BENCHMARK/NAME, flat."""
    metrics: dict[str, object] = {name: getattr(result, name) for name in HEADLINES}
    for name, reading in result.readings.items():
        metrics.update(reading.flat(name))
    metrics["incoherent_rate"], metrics["collapsed"] = result.incoherent_rate, float(result.collapsed)
    for benchmark, values in result.metrics.items():
        for key, value in values.items():
            metrics[f"{benchmark}/{key}"] = value
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def trial_config(spec: SweepSpec, point: dict[str, Any], trial_id: str):
    """Return the AlignConfig of one trial: the base with the sampled point, named after the trial."""
    cfg = apply_point(spec.base, point, spec.search_space)
    if spec.evaluate_epochs != "last":  # each epoch's checkpoint is kept, to be evaluated
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_every_epoch": True})})
    return cfg.model_copy(update={"name": f"{spec.name}-{trial_id}"})


def bundle_params(spec: SweepSpec, point: dict[str, Any]) -> dict[str, str]:
    """Return {searched path: bundle name} for the bundles of a point; their fields are logged as usual."""
    return {path: str(value) for path, value in point.items() if spec.search_space[path].bundles}


def node_type(node_id: str) -> str:
    """Return the cluster node type of a Ray node: its safetytax/node-type label, "head", or "unlabelled"."""
    import ray

    for node in ray.nodes():
        if node["NodeID"] == node_id:
            labels = node.get("Labels") or {}
            if NODE_TYPE_LABEL in labels:
                return labels[NODE_TYPE_LABEL]
            return "head" if HEAD_NODE_RESOURCE in node.get("Resources", {}) else "unlabelled"
    return "unknown"


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Train and evaluate one sampled point; report the objectives to Tune once."""
    from ray import tune

    from transformers.utils import logging as transformers_logging

    # A trial loads its model at every stage and every adapter it scores: a progress bar for each, from every
    # trial at once, would bury the sweep's own lines in the driver's console.
    transformers_logging.disable_progress_bar()
    spec = context.spec
    trial_id = tune.get_context().get_trial_id()
    point = {path: config[path] for path in spec.search_space}
    client = tracking.client(context.tracking_uri)
    run = tracking.trial_run(client, context.experiment_id, context.parent_run_id, trial_id,
                             run_name=f"{spec.name}-{trial_id}")
    run_id = run.info.run_id
    recorded = run.data.metrics
    if run.info.status == "FINISHED" and all(o.name in recorded for o in spec.objectives):
        tune.report({**recorded, "mlflow_run_id": run_id, RECORDED_FLAG: True})
        return

    client.update_run(run_id, status="RUNNING")
    # Retries (max_failures) and resumed runs show up here rather than as extra runs.
    attempt = int(run.data.tags.get(ATTEMPTS_TAG, "0")) + 1
    client.set_tag(run_id, ATTEMPTS_TAG, str(attempt))
    tracking.archive_error(client, run, attempt - 1)
    try:
        metrics = _train_and_evaluate(spec, context, point, trial_id, client, run_id)
    except (KeyboardInterrupt, SystemExit):
        if early_stopping.was_stopped(client.get_run(run_id).data.tags):  # its last epoch's readings stand
            client.set_terminated(run_id, status="FINISHED")
        else:  # the sweep was stopped; --resume runs this trial again
            client.set_terminated(run_id, status="KILLED")
        raise
    except Exception as err:
        tracking.mark_failed(client, run_id, "".join(traceback.format_exception(err)))
        raise
    client.set_terminated(run_id, status="FINISHED")
    tune.report({**metrics, "mlflow_run_id": run_id})


def _train_and_evaluate(spec: SweepSpec, context: TrialContext, point: dict[str, Any], trial_id: str, client,
                        run_id: str) -> dict[str, float]:
    seconds: dict[str, float] = {}
    trial_start = time.perf_counter()
    cfg = trial_config(spec, point, trial_id)
    with _timed(seconds, "mlflow"):
        params = {**tracking.flatten_params(cfg.model_dump(mode="json")), **bundle_params(spec, point)}
        tracking.log_params(client, run_id, params)
        client.set_tag(run_id, "searched", ", ".join(f"{k}={v}" for k, v in point.items()))
        earlier = find_repeat(client, context, run_id, params)
    if earlier is not None:
        return _reuse(client, run_id, earlier)
    replicates = replicate_configs(cfg, spec.replicates)
    try:
        readings = [_train_and_evaluate_once(spec, context, replicate, trial_id, client, run_id, k, len(replicates),
                                             seconds) for k, replicate in enumerate(replicates)]
    except SystemExit:  # Tune ended the trial at a report: the sweep stopped, or the scheduler stopped this trial
        if early_stopping.was_stopped(client.get_run(run_id).data.tags):
            _record_stopped(client, run_id, seconds, time.perf_counter() - trial_start)
        raise
    metrics = combine_readings(readings, HEADLINES)
    # A point is collapsed when any of its seeds collapsed: the mean of a broken model's readings is no reading.
    collapsed = any(r.get("collapsed") for r in readings)
    if "collapsed" in metrics:
        metrics["collapsed"] = float(collapsed)
    with _timed(seconds, "mlflow"):
        client.set_tag(run_id, tracking.COLLAPSED_TAG, "true" if collapsed else "false")
        # With every epoch evaluated, the last epoch's readings sit at its step: MLflow's latest value of each.
        tracking.log_new_metrics(client, run_id, metrics, step=int(metrics.get(EPOCH_KEY, 0)))
    seconds["trial"] = time.perf_counter() - trial_start
    tracking.log_metrics(client, run_id, {f"{tracking.TIME_PREFIX}{phase}_s": value for phase, value in seconds.items()})
    return metrics


EPOCH_KEY = early_stopping.EPOCH_KEY  # in a trial's reports with every epoch read: the epoch whose checkpoint it is


def _record_stopped(client, run_id: str, seconds: dict[str, float], trial_seconds: float) -> None:
    """Record what a trial stopped early leaves: its collapse flag (of its last epoch read) and its time by phase."""
    history = client.get_metric_history(run_id, "collapsed")
    if history:
        last = max(history, key=lambda m: m.step)
        client.set_tag(run_id, tracking.COLLAPSED_TAG, "true" if last.value else "false")
    times = {**seconds, "trial": trial_seconds}
    tracking.log_metrics(client, run_id, {f"{tracking.TIME_PREFIX}{phase}_s": value for phase, value in times.items()})


def replicate_configs(cfg, replicates: int) -> list:
    """Return the configs of a trial's replicates: training seeds train.seed, train.seed + 1, ... (one: cfg itself)."""
    if replicates == 1:
        return [cfg]
    return [cfg.model_copy(update={"name": f"{cfg.name}-seed{cfg.train.seed + k}",
                                   "train": cfg.train.model_copy(update={"seed": cfg.train.seed + k})})
            for k in range(replicates)]


def _train_and_evaluate_once(spec: SweepSpec, context: TrialContext, cfg, trial_id: str, client, run_id: str,
                             k: int, replicates: int, seconds: dict[str, float]) -> dict[str, float]:
    """Return one replicate's readings after training and scoring it; with replicates, its records carry seed<k>/.

    Its time by phase is added to `seconds` (summed over replicates). With evaluate_epochs every or fidelity
    the run is trained one epoch at a time (`run_alignment(until_epoch=)`, an exact pause): each epoch is read,
    logged at its step and reported to Tune (training_iteration = epoch) before the next is paid for, so a
    scheduler can stop the trial there (`sweeps.early_stopping`).
    """
    prefix = f"seed{k}/" if replicates > 1 else ""
    out_dir = Path(cfg.output_dir) / "evaluations" / spec.name / trial_id / prefix.rstrip("/")
    if spec.evaluate_epochs == "last":
        aligned = _train(cfg, client, run_id, k, prefix, replicates, seconds)
        return _read_final(spec, context, aligned, client, run_id, k, prefix, out_dir, seconds)
    from ray import tune

    epoch, planned_pauses = 0, set()
    while True:
        epoch += 1
        before = dict(seconds)
        aligned = _train(cfg, client, run_id, k, prefix, replicates, seconds, until_epoch=epoch,
                         planned_pauses=planned_pauses)
        planned_pauses.add(len(aligned.step_losses))
        if aligned.finished:  # the last epoch (train.epochs, or fewer under train.max_steps)
            metrics = _read_final(spec, context, aligned, client, run_id, k, prefix, out_dir / f"epoch_{epoch}",
                                  seconds)
            metrics[EPOCH_KEY] = float(epoch)
            _log_epoch_seconds(client, run_id, epoch, before, seconds)
            return metrics
        reading = {**result_metrics(_evaluate(spec, context, aligned, aligned.checkpoint_dir,
                                              out_dir / f"epoch_{epoch}", seconds, client, run_id)),
                   EPOCH_KEY: float(epoch)}
        with _timed(seconds, "mlflow"):
            tracking.log_new_metrics(client, run_id, reading, step=epoch)
            _log_epoch_seconds(client, run_id, epoch, before, seconds)
        tune.report({**reading, "mlflow_run_id": run_id})  # a scheduler that stops the trial ends it here




def _log_epoch_seconds(client, run_id: str, epoch: int, before: dict[str, float], after: dict[str, float]) -> None:
    """Log the seconds this epoch's stage added to each phase (training, generation, judging) at step `epoch`."""
    spent = {phase: after[phase] - before.get(phase, 0.0) for phase in after}
    phases = {"train": spent.get("train_ray_train", 0.0) + spent.get("train_prepare", 0.0),
              "generation": spent.get("evaluation_generation", 0.0),
              "judging": spent.get("evaluation_other", 0.0)}
    tracking.log_new_metrics(client, run_id, {f"{tracking.EPOCH_TIME_PREFIX}{name}_s": value for name, value in phases.items()},
                             step=epoch)


def _train(cfg, client, run_id: str, k: int, prefix: str, replicates: int, seconds: dict[str, float],
           until_epoch: int | None = None, planned_pauses: set[int] = frozenset()):
    """Return the AlignmentResult of training `cfg` (to `until_epoch`, a stage) and record how training went."""
    from trainables.align import run_alignment

    # Named after the trial (and seed), so a retry or a resumed sweep continues this run from its last checkpoint.
    aligned = run_alignment(cfg, progress=False, run_name=cfg.name, until_epoch=until_epoch)
    for phase, value in aligned.phase_seconds.items():
        seconds[f"train_{phase}"] = seconds.get(f"train_{phase}", 0.0) + value
    mlflow_start = time.perf_counter()
    if aligned.train_node_id:
        client.set_tag(run_id, NODE_ID_TAG, aligned.train_node_id)
        client.set_tag(run_id, NODE_TYPE_TAG, node_type(aligned.train_node_id))
    client.set_tag(run_id, CHECKPOINT_TAG if k == 0 else f"{prefix}{CHECKPOINT_TAG}", str(aligned.checkpoint_dir))
    if replicates > 1:
        client.set_tag(run_id, f"{prefix}train.seed", str(cfg.train.seed))
    # A stage continues where the one before paused: only a resume elsewhere is a restart worth recording.
    restarts = [step for step in aligned.resumed_at_steps if step not in planned_pauses]
    if restarts:
        client.set_tag(run_id, f"{prefix}{RESUMED_TAG}", ", ".join(map(str, restarts)))
    # An earlier attempt (or stage) may have logged some of these already: each step is logged once.
    tracking.log_curve(client, run_id, f"{prefix}train_loss", aligned.step_losses)
    for epoch in aligned.epoch_metrics:
        step = int(epoch.get("epoch", 0))
        tracking.log_new_metrics(client, run_id, {f"{prefix}train/{name}": v for name, v in epoch.items()
                                                  if name != "epoch"}, step=step)
    tracking.log_new_metrics(client, run_id, {f"{prefix}num_examples": aligned.num_examples})
    seconds["mlflow"] = seconds.get("mlflow", 0.0) + time.perf_counter() - mlflow_start
    return aligned


def _read_final(spec: SweepSpec, context: TrialContext, aligned, client, run_id: str, k: int, prefix: str,
                out_dir: Path, seconds: dict[str, float]) -> dict[str, float]:
    """Return the readings of the run's final checkpoint, recording its judge, provenance and sample files."""
    evaluation = _evaluate(spec, context, aligned, aligned.checkpoint_dir, out_dir, seconds, client, run_id, full=True)
    metrics = result_metrics(evaluation)
    with _timed(seconds, "mlflow"):
        client.set_tag(run_id, "judge", evaluation.judge)
        if k == 0:  # the process and machine that trained and scored this trial, which may not be the driver's
            provenance.log_record(client, run_id, provenance.trial_record(evaluation.model_hash))
        for path in evaluation.sample_files.values():
            if Path(path).is_file():
                tracking.log_artifact(client, run_id, path, f"samples/{prefix}".rstrip("/"))
    return metrics


def _evaluate(spec: SweepSpec, context: TrialContext, aligned, checkpoint: Path, out_dir: Path,
              seconds: dict[str, float], client, run_id: str, full: bool = False):
    """Return the EvalResult of one checkpoint of the trial; `full`: the final one, which may be read from a bucket.

    With racing, the evaluation may stop after a slice; the run is then tagged with where and why."""
    race = _race(spec, context) if spec.racing is not None else None
    with _timed(seconds, "evaluation"):
        if aligned.finetune == "lora":
            evaluation = context.service.evaluate(adapter=str(checkpoint), out_dir=out_dir, race=race)
        else:  # the final checkpoint may also sit in a bucket; the service knows which copy its replicas read
            source = context.service.checkpoint_source(str(checkpoint), aligned.checkpoint_uri if full else None)
            evaluation = context.service.evaluate(model=source, out_dir=out_dir, race=race)
    if evaluation.race_stop is not None:
        stop = evaluation.race_stop
        client.set_tag(run_id, RACED_TAG, f"after {stop['slices_read']} of {stop['slices']} slices: {stop['reason']}")
        # What the slices left unread would have cost, at the pace of those read (sweeps.report sums it).
        spent = sum(evaluation.phase_seconds.values())
        seconds[tracking.RACING_SAVED] = seconds.get(tracking.RACING_SAVED, 0.0) + spent * (
            stop["slices"] - stop["slices_read"]) / stop["slices_read"]
    for phase, value in evaluation.phase_seconds.items():
        seconds[f"evaluation_{phase}"] = seconds.get(f"evaluation_{phase}", 0.0) + value
    missing = [o.name for o in spec.objectives if o.name not in result_metrics(evaluation)]
    if missing:
        raise RuntimeError(f"the evaluation reported no {', '.join(missing)}; check evaluation.benchmarks")
    return evaluation


RACED_TAG = "racing.stopped"  # where and why a raced evaluation of the trial stopped


def _race(spec: SweepSpec, context: TrialContext):
    """Return the Race of one evaluation: the spec's slices, and the early-stopping rule against the sweep's points
    recorded in MLflow now (never on collapse: a partial reading's collapse flag is too noisy to act on)."""
    from evaluators.racing import Race
    from sweeps.report import SweepLayout, trial_records

    client = tracking.client(context.tracking_uri)
    records = trial_records(client, context.experiment_id, context.parent_run_id, SweepLayout.from_spec(spec))
    directions = spec.directions()
    points = [r for r in records if r["status"] == "FINISHED" and not r.get("collapsed")
              and all(r.get(name) is not None for name in directions)]
    return Race(spec.racing.slices,
                lambda result: early_stopping.stop_reason(result_metrics(result), points, directions, False))


@contextmanager
def _timed(seconds: dict[str, float], phase: str):
    """Add the wall time of the block to seconds[phase]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start


def same_settings(params: dict[str, str], other: dict[str, str]) -> bool:
    """Return whether two trials' logged configs train the same thing (they differ only in their names)."""
    return {k: v for k, v in params.items() if k != "name"} == {k: v for k, v in other.items() if k != "name"}


def find_repeat(client, context: TrialContext, run_id: str, params: dict[str, str]):
    """Return a finished earlier trial of this sweep with exactly these settings (seed included), or None."""
    objectives = [o.name for o in context.spec.objectives]
    for run in tracking.trial_runs(client, context.experiment_id, context.parent_run_id):
        if (run.info.run_id != run_id and run.info.status == "FINISHED" and REUSED_TAG not in run.data.tags
                and all(name in run.data.metrics for name in objectives) and same_settings(params, run.data.params)):
            return run
    return None


def _reuse(client, run_id: str, earlier) -> dict[str, float]:
    """Record an earlier trial's result as this trial's (its checkpoint and metrics), saying so; return the metrics."""
    metrics = {k: v for k, v in earlier.data.metrics.items() if not k.startswith((tracking.TIME_PREFIX, "train"))}
    tracking.log_metrics(client, run_id, metrics)
    client.set_tag(run_id, REUSED_TAG, earlier.data.tags.get(tracking.TRIAL_ID_TAG, earlier.info.run_id))
    for tag in (CHECKPOINT_TAG, "judge", tracking.COLLAPSED_TAG):
        if tag in earlier.data.tags:
            client.set_tag(run_id, tag, earlier.data.tags[tag])
    print(f"trial repeats {earlier.data.tags.get(tracking.TRIAL_ID_TAG)} exactly; reusing its result", flush=True)
    return metrics
