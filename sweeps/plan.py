"""The dry run of a sweep: its trial plan and what each trial needs, checked without starting anything.

`safetytax sweep CONFIG --dry-run` prints `render_plan(spec)`. Nothing is started or created (no Ray,
Serve, MLflow store or Optuna storage) and nothing is downloaded or built: data is loaded only when it
is a local file or already in the tiny LRM's cache, and the plan lists what it did not check.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

from evaluators.backends import placement
from evaluators.config import EvalConfig
from evaluators.judges import judge_entry
from sweeps.search_space import grid_values
from sweeps.spec import SweepSpec
from sweeps.tracking import redact_uri
from trainables.config import AlignConfig
from trainables.locations import data_kind, is_tiny, model_kind, tiny_ready
from trainables.private_apis import HEAD_NODE_RESOURCE
from trainables.schema import ConfigError

# "s1.1-32B", "DeepSeek-R1-Distill-Qwen-7B", "Qwen2.5-0.5B": the size the name gives, in billions.
SIZE_IN_NAME = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[Bb](?![A-Za-z0-9])")
GIB = 2**30
GRID_LINES = 100  # a longer grid is cut in the printout; its size is always given


def parameters_from_name(model: str) -> float | None:
    """Return the parameter count the model's name states ("32B" gives 32e9), or None when it states none."""
    match = SIZE_IN_NAME.search(model.rstrip("/").split("/")[-1])
    return float(match.group(1)) * 1e9 if match else None


def _amounts(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {amount / 2**20:g} MiB" if name == "memory" else f"{name}: {amount:g}"
                           for name, amount in resources.items()) + "}"


def _count(number: float, noun: str) -> str:
    return f"{number:g} {noun}" + ("" if number == 1 else "s")


def _gib(num_bytes: float) -> str:
    return f"~{num_bytes / GIB:,.0f} GiB" if num_bytes >= GIB else f"~{num_bytes / 2**20:,.0f} MiB"


def search_lines(spec: SweepSpec) -> list[str]:
    """Return the plan's lines on the search: sampler, trials, concurrency, each searched field, and the grid."""
    choice = spec.sampler_choice()
    runs = ""
    if spec.replicates > 1:
        runs = (f", each trained and scored with {spec.replicates} training seeds (train.seed {spec.base.train.seed} "
                f"to {spec.base.train.seed + spec.replicates - 1}): {spec.num_samples * spec.replicates} training "
                "runs and evaluations")
    lines = [f"sampler: {choice.describe()}, seed {spec.seed}" + (f"; {choice.reason}" if spec.sampler == "auto" else ""),
             f"{_count(spec.num_samples, 'trial')}, at most {spec.max_concurrent_trials} at once{runs}",
             "objectives: " + ", ".join(f"{o.name} {o.direction}" for o in spec.objectives),
             "search space:"]
    for path, param in spec.search_space.items():
        if param.bundles:
            lines.append(f"  {path}: choice of {_count(len(param.bundles), 'bundle')}")
            lines += [f"    {name}: " + ", ".join(f"{path}.{k}={v}" for k, v in fields.items())
                      for name, fields in param.bundles.items()]
        else:
            lines.append(f"  {path}: {param.kind} {list(param.bounds_or_choices(param.kind))}")
    if spec.evaluate_epochs != "last":
        epochs = _longest_run(spec)
        each = ("each epoch K is a point of its own on the front (the K-epoch run)"
                if spec.evaluate_epochs == "fidelity" else "the trial's readings are its last epoch's")
        lines.append(f"evaluate_epochs: {spec.evaluate_epochs}: each trial evaluates every epoch's checkpoint, up to "
                     f"{_count(epochs, 'evaluation')} a trial where last evaluates one; {each}. The estimate below "
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
        lines.append(f"tried first: {_count(len(spec.initial_points), 'initial point')}"
                     + (", the rest sampled" if len(spec.initial_points) < spec.num_samples else ""))
        lines += ["  " + ", ".join(f"{path}={value}" for path, value in point.items()) for point in spec.initial_points]
    if spec.sampler == "grid":
        values = grid_values(spec.search_space)
        points = list(itertools.product(*values.values()))
        visited = "every point" if spec.num_samples == len(points) else f"{spec.num_samples} of them"
        lines.append(f"grid: {_count(len(points), 'point')}, {visited} in a seeded random order")
        for point in points[:GRID_LINES]:
            lines.append("  " + ", ".join(f"{path}={value}" for path, value in zip(values, point)))
        if len(points) > GRID_LINES:
            lines.append(f"  ... and {len(points) - GRID_LINES} more")
    return lines


def train_resources(cfg: AlignConfig) -> dict[str, float]:
    """Return what one Train worker reserves, as Ray Train reads `scaling` (defaults included); ConfigError if it can't."""
    from ray.train import ScalingConfig  # a plain dataclass: nothing starts

    workers = cfg.scaling.world_size  # local mode: the one process that trains reserves a worker's share
    try:
        scaling = ScalingConfig(num_workers=workers, use_gpu=cfg.scaling.use_gpu,
                                resources_per_worker=cfg.scaling.resources_per_worker)
    except ValueError as err:
        raise ConfigError(f"base.scaling: {err}") from None
    return {name: total / workers for name, total in scaling.total_resources.items()}


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """Return what a trial's own process reserves: resources_per_trial, plus a worker's share when it trains itself.

    In local mode (base.scaling.num_workers: 0) Ray Train runs the loop in the trial's process, so the
    trial holds the CPUs its training uses; otherwise Train's workers reserve their own.
    """
    total = dict(spec.resources_per_trial)
    if spec.base.scaling.local_mode:
        for name, amount in train_resources(spec.base).items():
            total[name] = total.get(name, 0.0) + amount
    return total


def training_memory(cfg: AlignConfig) -> str:
    """Return the estimated model state per Train worker (weights, gradients, AdamW moments), or why it is unknown."""
    if is_tiny(cfg.model):
        return "the tiny LRM: well under 1 GiB"
    params = parameters_from_name(cfg.model)
    if params is None:
        return f"unknown (the name {cfg.model} states no size such as 7B)"
    width, dtype = (2, "bf16") if cfg.scaling.use_gpu else (4, "float32")
    if cfg.finetune == "full":
        # Weights, gradients and both AdamW moments are kept in the training dtype.
        per_worker = 4 * width * params / (cfg.scaling.num_workers if cfg.train.fsdp else 1)
        what = f"weights, gradients and AdamW moments in {dtype}" + (
            f", sharded over {cfg.scaling.num_workers} workers" if cfg.train.fsdp else "")
    else:
        per_worker = width * params  # frozen weights; the adapter and its optimiser state are small
        what = f"frozen weights in {dtype}; the LoRA adapter is small"
    return f"{_gib(per_worker)} per worker ({params / 1e9:g}B parameters: {what}); activations come on top"


def generator_gpus(cfg: EvalConfig) -> float:
    """Return the GPUs one generator replica reserves: the engine's parallel ranks for vLLM."""
    return placement(cfg.backend).gpus(cfg)


def judge_gpus(cfg: EvalConfig, judge: str) -> tuple[float, str]:
    """Return (GPUs one judge's deployment holds for the whole sweep, a line describing it)."""
    entry, judge_options = judge_entry(judge), cfg.options_for(judge)
    gpus = entry.num_gpus(cfg, generator_gpus=cfg.num_replicas * generator_gpus(cfg))
    if entry.hosting == "serve":
        options = entry.deployment(cfg)
        model = entry.model(judge_options)
        params = parameters_from_name(model) if model else None
        memory = f", {_gib(2 * params)} of bf16 weights" if params else ""
        replicas = _count(options["num_replicas"], "replica")
        each = _count(options["ray_actor_options"].get("num_gpus", 0), "GPU")
        about = f" ({model})" if model else ""
        return gpus, f"{judge}{about}: {replicas} x {each}{memory}, held for the whole sweep"
    if entry.hosting == "generator":
        return gpus, (f"{judge}: a {cfg.backend} deployment of its own, {_count(cfg.num_replicas, 'replica')} x "
                      f"{_count(generator_gpus(cfg), 'GPU')}, held for the whole sweep")
    return 0.0, f"{judge}: runs in the trial on CPU"


def resource_lines(spec: SweepSpec) -> list[str]:
    """Return the plan's lines on resources: Train workers, evaluator, judge, peak GPUs and estimated GPU-hours."""
    cfg, evaluation = spec.base, spec.evaluation
    per_worker = train_resources(cfg)
    workers = cfg.scaling.num_workers
    train_gpus = workers * per_worker.get("GPU", 0)
    how = [cfg.finetune + " fine-tuning", *(["FSDP"] if cfg.train.fsdp else []),
           *(["gradient checkpointing"] if cfg.train.gradient_checkpointing else [])]
    if cfg.scaling.local_mode:
        lines = [f"trial driver: {_amounts(trial_resources(spec))} (it trains in its own process: Ray Train's "
                 f"local mode, {', '.join(how)})",
                 "train workers: none (base.scaling.num_workers: 0)"]
    else:
        lines = [f"trial driver: {_amounts(spec.resources_per_trial)} (it only coordinates)",
                 f"train workers: {workers} x {_amounts(per_worker)} = {_count(train_gpus, 'GPU')}, "
                 f"{_count(workers * per_worker.get('CPU', 0), 'CPU')}; {', '.join(how)}"]
    lines.append(f"training memory: {training_memory(cfg)}")

    replica_gpus = generator_gpus(evaluation)
    base_gpus = evaluation.num_replicas * replica_gpus
    params = parameters_from_name(cfg.model)
    weights = ""
    if params and replica_gpus:
        weights = f", {_gib(2 * params / replica_gpus)} of bf16 weights per GPU"
    each = placement(evaluation.backend).describe(evaluation)
    lines.append(f"evaluator: {evaluation.backend}, {_count(evaluation.num_replicas, 'replica')} x {each}"
                 f"{weights}; the base model's deployment is held for the whole sweep")
    # LoRA adapters are served by the base deployment; a full-weights checkpoint gets one of its own.
    own_eval_gpus = base_gpus if cfg.finetune == "full" else 0.0
    if cfg.finetune == "full":
        lines.append(f"  each trial's checkpoint: its own deployment of {_count(base_gpus, 'GPU')} while it is scored")
    held_judge = 0.0
    for judge in evaluation.judge_names():
        gpus, judge_line = judge_gpus(evaluation, judge)
        held_judge += gpus
        lines.append(f"judge: {judge_line}")

    held = base_gpus + held_judge
    trial_peak = max(train_gpus, own_eval_gpus)
    sweep_peak = spec.max_concurrent_trials * trial_peak + held
    lines.append(f"GPUs: {trial_peak:g} per trial at its peak; the sweep at most {sweep_peak:g} "
                 f"({_count(spec.max_concurrent_trials, 'trial')} at once + {held:g} held by the evaluator and judge)")
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
        lines.append(f"duration: {_count(rounds, 'round')} of {_count(spec.max_concurrent_trials, 'trial')}{times} x "
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


def data_paths(spec: SweepSpec) -> list[str]:
    """Return every data path a trial can read: base data, reasoning data and any searched path."""
    paths = [spec.base.data.path] + ([spec.base.reasoning_data.path] if spec.base.reasoning_data else [])
    for field in ("data.path", "reasoning_data.path"):
        if field in spec.search_space:
            paths += [str(v) for v in spec.search_space[field].extremes()]
        section = field.partition(".")[0]
        bundles = spec.search_space[section].bundles if section in spec.search_space else None
        paths += [str(fields["path"]) for fields in (bundles or {}).values() if "path" in fields]
    return list(dict.fromkeys(paths))


def check_lines(spec: SweepSpec, resume: bool) -> list[str]:
    """Run the checks that need no cluster and no download; return what was checked and what was not."""
    checked = ["schema, search space and objectives (every value the search can take gives a valid base config; "
               "each benchmark has its data: generated, a data_dir file or a Hub source, nothing downloaded)",
               "Train scaling (as Ray Train reads it)"]
    unchecked = []
    remote = [path for path in data_paths(spec)
              if data_kind(path) == "hub" or (is_tiny(path) and not tiny_ready(path))]
    if remote:
        unchecked.append(f"data {', '.join(remote)} (a dry run downloads no Hub data and builds no tiny LRM)")
    else:
        from sweeps.runner import check_data

        check_data(spec)
        checked.append("data: the largest data the search can ask for loads (" + ", ".join(data_paths(spec)) + ")")
    if is_tiny(spec.base.model) and not tiny_ready(spec.base.model):
        unchecked.append(f"model {spec.base.model} (built when the sweep starts)")
    elif model_kind(spec.base.model) == "hub":
        unchecked.append(f"model {spec.base.model} (a Hub id; not downloaded)")

    if "://" in spec.storage_path:
        unchecked.append(f"Tune state at {spec.experiment_path} (remote storage is not contacted)")
    else:
        from sweeps.runner import check_resume_state

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


# What Ray reads from an AWS instance type when a node type declares no resources (cluster.yaml's GPU
# types): vCPUs, GPUs and the accelerator_type resource. A type missing here must declare its resources.
INSTANCE_RESOURCES = {
    "m7i.4xlarge": {"CPU": 16},
    "p5.48xlarge": {"CPU": 192, "GPU": 8, "accelerator_type:H100": 1},
    "p5e.48xlarge": {"CPU": 192, "GPU": 8, "accelerator_type:H200": 1},
    "p5en.48xlarge": {"CPU": 192, "GPU": 8, "accelerator_type:H200": 1},
    "p5.4xlarge": {"CPU": 16, "GPU": 1, "accelerator_type:H100": 1},
    "g6e.xlarge": {"CPU": 4, "GPU": 1, "accelerator_type:L40S": 1},
    "g6e.2xlarge": {"CPU": 8, "GPU": 1, "accelerator_type:L40S": 1},
    "g5.xlarge": {"CPU": 4, "GPU": 1, "accelerator_type:A10G": 1},
    "g5.2xlarge": {"CPU": 8, "GPU": 1, "accelerator_type:A10G": 1},
}
UNPLACED = ("memory", "object_store_memory")  # every node has some; the plan does not size them


def read_cluster(path: str | Path) -> dict:
    """Return a Ray cluster-launcher YAML as data; ConfigError naming --cluster when it is missing or is not one."""
    from trainables.schema import read_yaml

    if not Path(path).is_file():
        raise ConfigError(f"--cluster: file {path} does not exist (give cluster.yaml or cluster.local.yaml)")
    data = read_yaml(Path(path))
    if not isinstance(data.get("available_node_types"), dict) or data.get("head_node_type") not in data[
            "available_node_types"]:
        raise ConfigError(f"--cluster: {path} is not a Ray cluster config (it needs available_node_types and a "
                          "head_node_type among them)")
    return data


def node_type_resources(cluster: dict) -> dict[str, dict[str, float] | None]:
    """Return each node type's Ray resources: declared ones, else its instance type's; None when unknown."""
    found = {}
    for name, node in cluster["available_node_types"].items():
        declared = {k: float(v) for k, v in (node.get("resources") or {}).items()}
        instance = (node.get("node_config") or {}).get("InstanceType")
        resources = {**{k: float(v) for k, v in INSTANCE_RESOURCES.get(instance, {}).items()}, **declared}
        if not resources:
            found[name] = None
            continue
        if name == cluster["head_node_type"]:
            resources[HEAD_NODE_RESOURCE] = 1.0
        found[name] = resources
    return found


def fitting_types(demand: dict[str, float], types: dict[str, dict[str, float] | None]) -> list[str]:
    """Return the node types one bundle of `demand` fits on (memory is not compared)."""
    asked = {k: v for k, v in demand.items() if v > 0 and k not in UNPLACED}
    return [name for name, have in types.items()
            if have is not None and all(have.get(k, 0.0) >= v for k, v in asked.items())]


def evaluator_demand(cfg: EvalConfig) -> dict[str, float]:
    """Return what one generator replica reserves."""
    return placement(cfg.backend).demand(cfg)


def cluster_lines(spec: SweepSpec, path: str | Path) -> list[str]:
    """Return the node types each part of a trial lands on, and those it scales up; ConfigError when none fits."""
    cluster = read_cluster(path)
    types = node_type_resources(cluster)
    head = cluster["head_node_type"]
    local = spec.base.scaling.local_mode  # the trial trains itself: it holds both requests
    demands = [("trial driver", "resources_per_trial + base.scaling.resources_per_worker (local mode)" if local
                else "resources_per_trial", trial_resources(spec), 1),
               *([] if local else [
                   ("train worker", "base.scaling", train_resources(spec.base), spec.base.scaling.num_workers)]),
               ("evaluator replica", "evaluation", evaluator_demand(spec.evaluation), spec.evaluation.num_replicas)]
    lines, scaled = [], []
    for what, field, demand, count in demands:
        fits = fitting_types(demand, types)
        if not fits:
            raise ConfigError(f"{field}: no node type in {path} can hold one {what} {_amounts(demand)} "
                              f"(node types: {', '.join(types)}); change the request or add a node type")
        nodes = cluster["available_node_types"]
        workers = [name for name in fits if name != head]
        where = ", ".join(f"{name} ({nodes[name].get('min_workers', 0)} at start, up to "
                          f"{nodes[name].get('max_workers', cluster.get('max_workers'))})" for name in workers)
        if head in fits:
            # The autoscaler launches nodes only for what running nodes cannot hold.
            where = f"{head}" + (f" while it has room, then {where}" if workers else "")
        elif len(workers) > 1:
            where = "one of " + where
        if count > 1:
            together = fitting_types({k: count * v for k, v in demand.items()}, types)
            where += f"; all {count} on one node: {', '.join(together) if together else 'no node type'}"
        lines.append(f"{count} x {what} {_amounts(demand)}: {where}")
        if head not in fits:
            scaled += [name for name in workers if nodes[name].get("min_workers", 0) == 0]
    unknown = [name for name, have in types.items() if have is None]
    if unknown:
        lines.append(f"not matched: {', '.join(unknown)} (no resources declared and an instance type this plan "
                     "does not know)")
    scaled = list(dict.fromkeys(scaled))
    lines.append("scaled up from zero when trials ask: " + (", ".join(scaled) if scaled else "none (the trials "
                                                                                           "fit on running nodes)"))
    return lines
