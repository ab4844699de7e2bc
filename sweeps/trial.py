"""One sweep trial: apply the sampled point, run safety SFT, evaluate the checkpoint, record it, report the objectives.

The trial is a Tune function trainable. It reports to Tune exactly once, at the end, with every
objective (Tune checks each result for them). Its MLflow child run is found by trial id before it is
created, so a retried or resumed trial continues its own run; a trial whose run already finished
(the driver died before Tune saved that) reports the recorded metrics instead of training again.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.metrics import CI_HIGH, CI_LOW, COUNT, HEADLINES
from sweeps import tracking
from sweeps.replicates import combine_readings
from sweeps.search_space import apply_point
from sweeps.spec import SweepSpec

CHECKPOINT_TAG = "checkpoint_dir"
ATTEMPTS_TAG = "attempts"
RESUMED_TAG = "train.resumed_at_steps"
# In a trial's result when it only repeats what MLflow already holds (the driver died before Tune saved it).
RECORDED_FLAG = "from_record"


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
    for name, (low, high) in result.intervals.items():
        metrics[name + CI_LOW], metrics[name + CI_HIGH] = low, high
    for name, n in result.counts.items():
        metrics[name + COUNT] = n
    metrics["incoherent_rate"], metrics["collapsed"] = result.incoherent_rate, float(result.collapsed)
    for benchmark, values in result.metrics.items():
        for key, value in values.items():
            metrics[f"{benchmark}/{key}"] = value
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def trial_config(spec: SweepSpec, point: dict[str, Any], trial_id: str):
    """Return the AlignConfig of one trial: the base with the sampled point, named after the trial."""
    cfg = apply_point(spec.base, point, spec.search_space)
    return cfg.model_copy(update={"name": f"{spec.name}-{trial_id}"})


def bundle_params(spec: SweepSpec, point: dict[str, Any]) -> dict[str, str]:
    """Return {searched path: bundle name} for the bundles of a point; their fields are logged as usual."""
    return {path: str(value) for path, value in point.items() if spec.search_space[path].bundles}


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Train and evaluate one sampled point; report the objectives to Tune once."""
    from ray import tune

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
    except (KeyboardInterrupt, SystemExit):  # the sweep was stopped; --resume runs this trial again
        client.set_terminated(run_id, status="KILLED")
        raise
    except Exception as err:
        tracking.mark_failed(client, run_id, "".join(traceback.format_exception(err)))
        raise
    client.set_terminated(run_id, status="FINISHED")
    tune.report({**metrics, "mlflow_run_id": run_id})


def _train_and_evaluate(spec: SweepSpec, context: TrialContext, point: dict[str, Any], trial_id: str, client,
                        run_id: str) -> dict[str, float]:
    cfg = trial_config(spec, point, trial_id)
    tracking.log_params(client, run_id, {**tracking.flatten_params(cfg.model_dump(mode="json")),
                                         **bundle_params(spec, point)})
    client.set_tag(run_id, "searched", ", ".join(f"{k}={v}" for k, v in point.items()))
    replicates = replicate_configs(cfg, spec.replicates)
    readings = [_train_and_evaluate_once(spec, context, replicate, trial_id, client, run_id, k, len(replicates))
                for k, replicate in enumerate(replicates)]
    metrics = combine_readings(readings, HEADLINES)
    # A point is collapsed when any of its seeds collapsed: the mean of a broken model's readings is no reading.
    collapsed = any(r.get("collapsed") for r in readings)
    if "collapsed" in metrics:
        metrics["collapsed"] = float(collapsed)
    client.set_tag(run_id, tracking.COLLAPSED_TAG, "true" if collapsed else "false")
    tracking.log_new_metrics(client, run_id, metrics)
    return metrics


def replicate_configs(cfg, replicates: int) -> list:
    """Return the configs of a trial's replicates: training seeds train.seed, train.seed + 1, ... (one: cfg itself)."""
    if replicates == 1:
        return [cfg]
    return [cfg.model_copy(update={"name": f"{cfg.name}-seed{cfg.train.seed + k}",
                                   "train": cfg.train.model_copy(update={"seed": cfg.train.seed + k})})
            for k in range(replicates)]


def _train_and_evaluate_once(spec: SweepSpec, context: TrialContext, cfg, trial_id: str, client, run_id: str,
                             k: int, replicates: int) -> dict[str, float]:
    """Return one replicate's readings after training and scoring it; with replicates, its records carry seed<k>/."""
    from trainables.align import run_alignment

    prefix = f"seed{k}/" if replicates > 1 else ""
    # Named after the trial (and seed), so a retry or a resumed sweep continues this run from its last checkpoint.
    aligned = run_alignment(cfg, progress=False, run_name=cfg.name)
    client.set_tag(run_id, CHECKPOINT_TAG if k == 0 else f"{prefix}{CHECKPOINT_TAG}", str(aligned.checkpoint_dir))
    if replicates > 1:
        client.set_tag(run_id, f"{prefix}train.seed", str(cfg.train.seed))
    if aligned.resumed_at_steps:
        client.set_tag(run_id, f"{prefix}{RESUMED_TAG}", ", ".join(map(str, aligned.resumed_at_steps)))
    # An earlier attempt may have logged some of these already: each step is logged once.
    tracking.log_curve(client, run_id, f"{prefix}train_loss", aligned.step_losses)
    for epoch in aligned.epoch_metrics:
        step = int(epoch.get("epoch", 0))
        tracking.log_new_metrics(client, run_id, {f"{prefix}train/{name}": v for name, v in epoch.items()
                                                  if name != "epoch"}, step=step)
    tracking.log_new_metrics(client, run_id, {f"{prefix}num_examples": aligned.num_examples})

    out_dir = Path(cfg.output_dir) / "evaluations" / spec.name / trial_id / prefix.rstrip("/")
    if aligned.finetune == "lora":
        evaluation = context.service.evaluate(adapter=str(aligned.checkpoint_dir), out_dir=out_dir)
    elif spec.evaluation.backend == "vllm" and aligned.checkpoint_uri:
        # vLLM replicas run on GPU nodes that cannot see this node's disk; they read the bucket copy.
        evaluation = context.service.evaluate(model=aligned.checkpoint_uri, out_dir=out_dir)
    else:
        evaluation = context.service.evaluate(model=str(aligned.checkpoint_dir), out_dir=out_dir)
    metrics = result_metrics(evaluation)
    missing = [o.name for o in spec.objectives if o.name not in metrics]
    if missing:
        raise RuntimeError(f"the evaluation reported no {', '.join(missing)}; check evaluation.benchmarks")
    client.set_tag(run_id, "judge", evaluation.judge)
    for path in evaluation.sample_files.values():
        if Path(path).is_file():
            tracking.log_artifact(client, run_id, path, f"samples/{prefix}".rstrip("/"))
    return metrics
