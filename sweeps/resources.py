"""What a sweep's parts reserve on a Ray cluster: a trial's process, its Train workers, the evaluator and the judges.

The dry run prints these, the runner asks Tune for them, and the cluster check matches them to node types.
"""

from __future__ import annotations

import re

from evaluators.config import EvalConfig
from evaluators.judges import judge_entry
from evaluators.placement import placement
from trainables.config import AlignConfig
from trainables.locations import is_tiny
from trainables.schema import ConfigError


# "s1.1-32B", "DeepSeek-R1-Distill-Qwen-7B", "Qwen2.5-0.5B": the size the name gives, in billions.
SIZE_IN_NAME = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[Bb](?![A-Za-z0-9])")


GIB = 2**30


def parameters_from_name(model: str) -> float | None:
    """Return the parameter count the model's name states ("32B" gives 32e9), or None when it states none."""
    match = SIZE_IN_NAME.search(model.rstrip("/").split("/")[-1])
    return float(match.group(1)) * 1e9 if match else None


def amounts_text(resources: dict[str, float]) -> str:
    """Return resources as the dry run prints them: `{CPU: 1, memory: 512 MiB}`."""
    return "{" + ", ".join(f"{name}: {amount / 2**20:g} MiB" if name == "memory" else f"{name}: {amount:g}"
                           for name, amount in resources.items()) + "}"


def count_text(number: float, noun: str) -> str:
    """Return "1 GPU", "2 GPUs"."""
    return f"{number:g} {noun}" + ("" if number == 1 else "s")


def approx_bytes(num_bytes: float) -> str:
    """Return a size as "~N GiB", or "~N MiB" below one GiB."""
    return f"~{num_bytes / GIB:,.0f} GiB" if num_bytes >= GIB else f"~{num_bytes / 2**20:,.0f} MiB"


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


def trial_resources(resources_per_trial: dict[str, float], base: AlignConfig) -> dict[str, float]:
    """Return what a trial's own process reserves: resources_per_trial, plus a worker's share when it trains itself.

    In local mode (base.scaling.num_workers: 0) Ray Train runs the loop in the trial's process, so the
    trial holds the CPUs its training uses; otherwise Train's workers reserve their own.
    """
    total = dict(resources_per_trial)
    if base.scaling.local_mode:
        for name, amount in train_resources(base).items():
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
    return f"{approx_bytes(per_worker)} per worker ({params / 1e9:g}B parameters: {what}); activations come on top"


def generator_gpus(cfg: EvalConfig) -> float:
    """Return the GPUs one generator replica reserves: the engine's parallel ranks for vLLM."""
    return placement(cfg.backend).gpus(cfg)


def judge_gpus(cfg: EvalConfig, judge: str) -> tuple[float, str]:
    """Return (GPUs one judge's deployment holds for the whole sweep, a line describing it)."""
    entry, judge_options = judge_entry(judge), cfg.options_for(judge)
    gpus = entry.num_gpus(cfg, generator_gpus=cfg.num_replicas * generator_gpus(cfg))
    if entry.hosting == "serve":
        replica_count, gpus_each = entry.serve_replicas(cfg)
        model = entry.model(judge_options)
        params = parameters_from_name(model) if model else None
        memory = f", {approx_bytes(2 * params)} of bf16 weights" if params else ""
        replicas = count_text(replica_count, "replica")
        each = count_text(gpus_each, "GPU")
        about = f" ({model})" if model else ""
        return gpus, f"{judge}{about}: {replicas} x {each}{memory}, held for the whole sweep"
    if entry.hosting == "generator":
        return gpus, (f"{judge}: a {cfg.backend} deployment of its own, {count_text(cfg.num_replicas, 'replica')} x "
                      f"{count_text(generator_gpus(cfg), 'GPU')}, held for the whole sweep")
    return 0.0, f"{judge}: runs in the trial on CPU"


def evaluator_demand(cfg: EvalConfig) -> dict[str, float]:
    """Return what one generator replica reserves."""
    return placement(cfg.backend).demand(cfg)
