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

from evaluators.metrics import CI_HIGH, CI_LOW, HEADLINES
from sweeps import tracking
from sweeps.search_space import apply_point
from sweeps.spec import SweepSpec

CHECKPOINT_TAG = "checkpoint_dir"
ATTEMPTS_TAG = "attempts"
# Where the trial's Train workers ran: the Ray node id, and its node type as cluster.yaml labels it.
NODE_ID_TAG, NODE_TYPE_TAG = "node_id", "node_type"
NODE_TYPE_LABEL = "safetytax/node-type"
HEAD_RESOURCE = "node:__internal_head__"


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
        metrics[name + "_n"] = n
    metrics["incoherent_rate"], metrics["collapsed"] = result.incoherent_rate, float(result.collapsed)
    for benchmark, values in result.metrics.items():
        for key, value in values.items():
            metrics[f"{benchmark}/{key}"] = value
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def trial_config(spec: SweepSpec, point: dict[str, Any], trial_id: str):
    """Return the AlignConfig of one trial: the base with the sampled point, named after the trial."""
    cfg = apply_point(spec.base, point)
    return cfg.model_copy(update={"name": f"{spec.name}-{trial_id}"})


def node_type(node_id: str) -> str:
    """Return the cluster node type of a Ray node: its safetytax/node-type label, "head", or "unlabelled"."""
    import ray

    for node in ray.nodes():
        if node["NodeID"] == node_id:
            labels = node.get("Labels") or {}
            if NODE_TYPE_LABEL in labels:
                return labels[NODE_TYPE_LABEL]
            return "head" if HEAD_RESOURCE in node.get("Resources", {}) else "unlabelled"
    return "unknown"


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
        tune.report({**recorded, "mlflow_run_id": run_id})
        return

    client.update_run(run_id, status="RUNNING")
    # Retries (max_failures) and resumed runs show up here rather than as extra runs.
    client.set_tag(run_id, ATTEMPTS_TAG, str(int(run.data.tags.get(ATTEMPTS_TAG, "0")) + 1))
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
    from trainables.align import run_alignment

    cfg = trial_config(spec, point, trial_id)
    tracking.log_params(client, run_id, tracking.flatten_params(cfg.model_dump(mode="json")))
    client.set_tag(run_id, "searched", ", ".join(f"{k}={v}" for k, v in point.items()))

    aligned = run_alignment(cfg, progress=False)
    client.set_tag(run_id, CHECKPOINT_TAG, str(aligned.checkpoint_dir))
    if aligned.train_node_id:
        client.set_tag(run_id, NODE_ID_TAG, aligned.train_node_id)
        client.set_tag(run_id, NODE_TYPE_TAG, node_type(aligned.train_node_id))
    tracking.log_curve(client, run_id, "train_loss", aligned.step_losses)
    for epoch in aligned.epoch_metrics:
        step = int(epoch.get("epoch", 0))
        tracking.log_metrics(client, run_id, {f"train/{k}": v for k, v in epoch.items() if k != "epoch"}, step=step)
    tracking.log_metrics(client, run_id, {"num_examples": aligned.num_examples})

    out_dir = Path(cfg.output_dir) / "evaluations" / spec.name / trial_id
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
    tracking.log_metrics(client, run_id, metrics)
    client.set_tag(run_id, "judge", evaluation.judge)
    client.set_tag(run_id, tracking.COLLAPSED_TAG, "true" if evaluation.collapsed else "false")
    for path in evaluation.sample_files.values():
        if Path(path).is_file():
            tracking.log_artifact(client, run_id, path, "samples")
    return metrics
