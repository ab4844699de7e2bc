"""The dry run of a sweep: its trial plan and what each trial needs, checked without starting anything.

`safetytax sweep CONFIG --dry-run` prints `render_plan(spec)`. Nothing is started or created (no Ray,
Serve, MLflow store or Optuna storage) and nothing is downloaded or built: data is loaded only when it
is a local file or already in the tiny LRM's cache, and the plan lists what it did not check.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from evaluators.placement import placement
from sweeps.cluster_fit import cluster_lines
from sweeps.preflight import check_data, check_resume_state, data_paths
from sweeps.resources import (amounts_text, approx_bytes, count_text, generator_gpus, judge_gpus,
                              parameters_from_name, train_resources, training_memory, trial_resources)
from sweeps.search_space import grid_values
from sweeps.spec import SweepSpec
from sweeps.tracking import redact_uri
from trainables.locations import data_kind, is_tiny, model_kind, tiny_ready

GRID_LINES = 100  # a longer grid is cut in the printout; its size is always given


def search_lines(spec: SweepSpec) -> list[str]:
    """Return the plan's lines on the search: sampler, trials, concurrency, each searched field, and the grid."""
    choice = spec.sampler_choice()
    runs = ""
    if spec.replicates > 1:
        runs = (f", each trained and scored with {spec.replicates} training seeds (train.seed {spec.base.train.seed} "
                f"to {spec.base.train.seed + spec.replicates - 1}): {spec.num_samples * spec.replicates} training "
                "runs and evaluations")
    lines = [f"sampler: {choice.describe()}, seed {spec.seed}" + (f"; {choice.reason}" if spec.sampler == "auto" else ""),
             f"{count_text(spec.num_samples, 'trial')}, at most {spec.max_concurrent_trials} at once{runs}",
             "objectives: " + ", ".join(f"{o.name} {o.direction}" for o in spec.objectives),
             "search space:"]
    for path, param in spec.search_space.items():
        if param.bundles:
            lines.append(f"  {path}: choice of {count_text(len(param.bundles), 'bundle')}")
            lines += [f"    {name}: " + ", ".join(f"{path}.{k}={v}" for k, v in fields.items())
                      for name, fields in param.bundles.items()]
        else:
            lines.append(f"  {path}: {param.kind} {list(param.bounds_or_choices(param.kind))}")
    if spec.evaluate_epochs != "last":
        epochs = _longest_run(spec)
        each = ("each epoch K is a point of its own on the front (the K-epoch run)"
                if spec.evaluate_epochs == "fidelity" else "the trial's readings are its last epoch's")
        lines.append(f"evaluate_epochs: {spec.evaluate_epochs}: each trial evaluates every epoch's checkpoint, up to "
                     f"{count_text(epochs, 'evaluation')} a trial where last evaluates one; {each}. The estimate below "
                     "adds them when estimate.gpu_hours_per_evaluation is set")
    if spec.early_stopping is not None:
        lines.append(f"early_stopping: from epoch {spec.early_stopping.grace_epochs}, a trial stops when a recorded "
                     "point beats the best end of every 95% interval of its readings"
                     + (", or they read collapsed" if spec.early_stopping.stop_collapsed else "")
                     + "; it keeps that epoch's readings (sweeps.early_stopping)")
    if spec.racing is not None:
        lines.append(f"racing: each trial's evaluation is read in {spec.racing.slices} slices and stops after one "
                     "when a recorded point beats the best end of every 95% interval so far (its reading keeps that "
                     "n); the base model is read in full (evaluators.racing)")
    if spec.initial_points:
        lines.append(f"tried first: {count_text(len(spec.initial_points), 'initial point')}"
                     + (", the rest sampled" if len(spec.initial_points) < spec.num_samples else ""))
        lines += ["  " + ", ".join(f"{path}={value}" for path, value in point.items()) for point in spec.initial_points]
    if spec.sampler == "grid":
        values = grid_values(spec.search_space)
        points = list(itertools.product(*values.values()))
        visited = "every point" if spec.num_samples == len(points) else f"{spec.num_samples} of them"
        lines.append(f"grid: {count_text(len(points), 'point')}, {visited} in a seeded random order")
        for point in points[:GRID_LINES]:
            lines.append("  " + ", ".join(f"{path}={value}" for path, value in zip(values, point)))
        if len(points) > GRID_LINES:
            lines.append(f"  ... and {len(points) - GRID_LINES} more")
    return lines


def resource_lines(spec: SweepSpec) -> list[str]:
    """Return the plan's lines on resources: Train workers, evaluator, judge, peak GPUs and estimated GPU-hours."""
    cfg, evaluation = spec.base, spec.evaluation
    per_worker = train_resources(cfg)
    workers = cfg.scaling.num_workers
    train_gpus = workers * per_worker.get("GPU", 0)
    how = [cfg.finetune + " fine-tuning", *(["FSDP"] if cfg.train.fsdp else []),
           *(["gradient checkpointing"] if cfg.train.gradient_checkpointing else [])]
    if cfg.scaling.local_mode:
        lines = [f"trial driver: {amounts_text(trial_resources(spec.resources_per_trial, spec.base))} (it trains in its own process: Ray Train's "
                 f"local mode, {', '.join(how)})",
                 "train workers: none (base.scaling.num_workers: 0)"]
    else:
        lines = [f"trial driver: {amounts_text(spec.resources_per_trial)} (it only coordinates)",
                 f"train workers: {workers} x {amounts_text(per_worker)} = {count_text(train_gpus, 'GPU')}, "
                 f"{count_text(workers * per_worker.get('CPU', 0), 'CPU')}; {', '.join(how)}"]
    lines.append(f"training memory: {training_memory(cfg)}")

    replica_gpus = generator_gpus(evaluation)
    base_gpus = evaluation.num_replicas * replica_gpus
    params = parameters_from_name(cfg.model)
    weights = ""
    if params and replica_gpus:
        weights = f", {approx_bytes(2 * params / replica_gpus)} of bf16 weights per GPU"
    each = placement(evaluation.backend).describe(evaluation)
    lines.append(f"evaluator: {evaluation.backend}, {count_text(evaluation.num_replicas, 'replica')} x {each}"
                 f"{weights}; the base model's deployment is held for the whole sweep")
    # LoRA adapters are served by the base deployment; a full-weights checkpoint gets one of its own.
    own_eval_gpus = base_gpus if cfg.finetune == "full" else 0.0
    if cfg.finetune == "full":
        lines.append(f"  each trial's checkpoint: its own deployment of {count_text(base_gpus, 'GPU')} while it is scored")
    held_judge = 0.0
    for judge in evaluation.judge_names():
        gpus, judge_line = judge_gpus(evaluation, judge)
        held_judge += gpus
        lines.append(f"judge: {judge_line}")

    held = base_gpus + held_judge
    trial_peak = max(train_gpus, own_eval_gpus)
    sweep_peak = spec.max_concurrent_trials * trial_peak + held
    lines.append(f"GPUs: {trial_peak:g} per trial at its peak; the sweep at most {sweep_peak:g} "
                 f"({count_text(spec.max_concurrent_trials, 'trial')} at once + {held:g} held by the evaluator and judge)")
    lines += estimate_lines(spec, held)
    return lines


def estimate_lines(spec: SweepSpec, held_gpus: float) -> list[str]:
    """Return the estimated duration and GPU-hours, from the spec's per-trial estimate; a note when it has none."""
    estimate = spec.estimate
    if estimate.gpu_hours_per_trial is None and estimate.hours_per_trial is None:
        return ["GPU-hours: no estimate (set estimate.gpu_hours_per_trial and estimate.hours_per_trial)"]
    lines, total = [], 0.0
    # The estimate is for one training seed; a trial with replicates trains and scores K times in a row.
    k = spec.replicates
    times = f" x {k} replicates" if k > 1 else ""
    if estimate.gpu_hours_per_trial is not None:
        per_trial, how = estimate.gpu_hours_per_trial, f"{estimate.gpu_hours_per_trial:g}"
        evaluation = estimate.gpu_hours_per_evaluation
        epochs = _longest_run(spec)
        if spec.evaluate_epochs != "last" and evaluation is not None:
            per_trial += (epochs - 1) * evaluation
            how = f"({estimate.gpu_hours_per_trial:g} + {epochs - 1} more evaluations x {evaluation:g})"
        total = spec.num_samples * k * per_trial
        lines.append(f"GPU-hours of the trials: {spec.num_samples}{times} x {how} = {total:g}")
        if spec.early_stopping is not None and evaluation is not None:
            grace = spec.early_stopping.grace_epochs
            training = estimate.gpu_hours_per_trial - evaluation
            stopped = training * grace / epochs + grace * evaluation
            lines.append(f"early stopping: a trial stopped at epoch {grace} of {epochs} costs "
                         f"{training:g} x {grace}/{epochs} of training + {grace} x {evaluation:g} of evaluation = "
                         f"{stopped:.3g} GPU-hours, {per_trial - stopped:.3g} less than run to the end; how many stop "
                         "depends on the readings (the savings measured on recorded tables: docs/benchmarks.md)")
        if spec.racing is not None and evaluation is not None:
            first = evaluation / spec.racing.slices
            lines.append(f"racing: an evaluation stopped after its first of {spec.racing.slices} slices costs "
                         f"{first:.3g} GPU-hours, {evaluation - first:.3g} less than a full one; how many stop depends "
                         "on the readings (the savings measured on recorded tables: docs/benchmarks.md)")
    if estimate.hours_per_trial is not None:
        rounds = math.ceil(spec.num_samples / spec.max_concurrent_trials)
        hours = rounds * k * estimate.hours_per_trial
        lines.append(f"duration: {count_text(rounds, 'round')} of {count_text(spec.max_concurrent_trials, 'trial')}{times} x "
                     f"{estimate.hours_per_trial:g} h = {hours:g} h; held GPUs: {held_gpus:g} x {hours:g} h = "
                     f"{held_gpus * hours:g} GPU-hours")
        if estimate.gpu_hours_per_trial is not None:
            lines.append(f"GPU-hours in all: {total + held_gpus * hours:g}")
    return lines


def _longest_run(spec: SweepSpec) -> int:
    """Return the epochs of a trial's longest run: the top of a searched train.epochs, else base.train.epochs."""
    if "train.epochs" in spec.search_space:
        return int(spec.search_space["train.epochs"].extremes()[-1])
    return spec.base.train.epochs


def check_lines(spec: SweepSpec, resume: bool) -> list[str]:
    """Run the checks that need no cluster and no download; return what was checked and what was not."""
    checked = ["schema, search space and objectives (every value the search can take gives a valid base config; "
               "each benchmark has its data: generated, a data_dir file or a Hub source, nothing downloaded)",
               "Train scaling (as Ray Train reads it)"]
    unchecked = []
    remote = [path for path in data_paths(spec.base, spec.search_space)
              if data_kind(path) == "hub" or (is_tiny(path) and not tiny_ready(path))]
    if remote:
        unchecked.append(f"data {', '.join(remote)} (a dry run downloads no Hub data and builds no tiny LRM)")
    else:
        check_data(spec.base, spec.search_space)
        checked.append("data: the largest data the search can ask for loads (" + ", ".join(data_paths(spec.base, spec.search_space)) + ")")
    if is_tiny(spec.base.model) and not tiny_ready(spec.base.model):
        unchecked.append(f"model {spec.base.model} (built when the sweep starts)")
    elif model_kind(spec.base.model) == "hub":
        unchecked.append(f"model {spec.base.model} (a Hub id; not downloaded)")

    if "://" in spec.storage_path:
        unchecked.append(f"Tune state at {spec.experiment_path} (remote storage is not contacted)")
    else:
        check_resume_state(spec, resume)
        checked.append(f"Tune state at {spec.experiment_path}: " + ("there to resume" if resume else "a new sweep"))
    # Stores are opened by the run itself, first thing, on the machine that runs it (a cluster's head).
    for field, uri in (("mlflow.tracking_uri", spec.mlflow.tracking_uri), ("optuna.storage", spec.optuna.storage)):
        if uri is not None:
            unchecked.append(f"{field} {redact_uri(uri)} (not opened in a dry run)")
    unchecked.append("that the cluster has the GPUs, nodes and memory above (--cluster FILE names its node types)")
    return [f"checked: {line}" for line in checked] + [f"not checked: {line}" for line in unchecked]


def render_plan(spec: SweepSpec, resume: bool = False, cluster: str | Path | None = None) -> str:
    """Return the dry run's report of a validated spec: search, resources, checks; ConfigError on bad input.

    With `cluster` (a cluster-launcher YAML) it also names the node types the trials land on and scale up.
    """
    study = f"{spec.study_name} in {redact_uri(spec.optuna.storage)}" if spec.optuna.storage else "in Tune's state"
    out = [f"sweep {spec.name}: dry run, nothing started",
           f"model: {spec.base.model} ({spec.base.finetune}), data: {spec.base.data.path}",
           f"tracking: MLflow {redact_uri(spec.mlflow.tracking_uri)} (experiment {spec.experiment_name}); "
           f"Optuna study {study}; Tune state {spec.experiment_path}"]
    sections = [("Search", search_lines(spec)), ("Resources", resource_lines(spec))]
    if cluster is not None:
        sections.append((f"Cluster ({cluster})", cluster_lines(spec, cluster)))
    sections.append(("Checks", check_lines(spec, resume)))
    for title, lines in sections:
        out += ["", title, *(f"  {line}" for line in lines)]
    return "\n".join(out) + "\n"


