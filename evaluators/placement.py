"""Where one generator replica of each backend lands, and what it holds: GPUs, its resource bundle, its line in the dry run.

Kept apart from the backend modules so that the dry run and the service's checks read it without
importing torch or vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from evaluators.config import EvalConfig


@dataclass(frozen=True)
class Placement:
    """How one generator replica of a backend is placed."""

    gpus: Callable[[EvalConfig], float]  # GPUs one replica reserves
    demand: Callable[[EvalConfig], dict[str, float]]  # the resources one replica's bundle asks for
    describe: Callable[[EvalConfig], str]  # one replica's share, as the dry run prints it


def _engine_gpus(cfg: EvalConfig) -> float:
    # A vLLM engine holds one GPU per tensor- and pipeline-parallel rank, or what its own bundles say.
    if cfg.vllm.placement_bundles is not None:
        return float(sum(bundle.get("GPU", 0.0) for bundle in cfg.vllm.placement_bundles))
    return cfg.vllm.tensor_parallel_size * int(cfg.vllm.engine_kwargs.get("pipeline_parallel_size", 1))


def _engine_demand(cfg: EvalConfig) -> dict[str, float]:
    if cfg.vllm.placement_bundles is not None:  # the engine's own bundles, summed: e.g. [{CPU: 1}] on CPU
        demand: dict[str, float] = {}
        for bundle in cfg.vllm.placement_bundles:
            for resource, amount in bundle.items():
                demand[resource] = demand.get(resource, 0.0) + amount
        return demand
    accelerator = {f"accelerator_type:{cfg.vllm.accelerator_type}": 0.001} if cfg.vllm.accelerator_type else {}
    return {"GPU": _engine_gpus(cfg), **accelerator}


def _engine_describe(cfg: EvalConfig) -> str:
    gpus = _engine_gpus(cfg)
    return f"{gpus:g} GPU{'' if gpus == 1 else 's'} (tensor parallel {cfg.vllm.tensor_parallel_size})"


def _replica_demand(cfg: EvalConfig) -> dict[str, float]:
    return {"CPU": cfg.num_cpus_per_replica, "GPU": cfg.num_gpus_per_replica, **cfg.resources_per_replica}


def _replica_describe(cfg: EvalConfig) -> str:
    return "{" + f"CPU: {cfg.num_cpus_per_replica:g}, GPU: {cfg.num_gpus_per_replica:g}" + "}"


PLACEMENTS = {
    "transformers": Placement(gpus=lambda cfg: cfg.num_gpus_per_replica, demand=_replica_demand,
                              describe=_replica_describe),
    "vllm": Placement(gpus=_engine_gpus, demand=_engine_demand, describe=_engine_describe),
}


def placement(name: str) -> Placement:
    """Return how a replica of backend `name` is placed."""
    return PLACEMENTS[name]


def unplaceable(cfg: EvalConfig, cluster_resources: dict[str, float]) -> str | None:
    """Return why one replica of the configured backend can never be placed on these resources, or None."""
    demand = placement(cfg.backend).demand(cfg)
    lacking = {name: amount for name, amount in demand.items() if amount > cluster_resources.get(name, 0.0)}
    if not lacking:
        return None
    asked = ", ".join(f"{name}: {amount:g}" for name, amount in demand.items() if amount)
    have = ", ".join(f"{name}: {cluster_resources.get(name, 0.0):g}" for name in lacking)
    if cfg.backend == "vllm":
        fix = ("on a machine without GPUs install the CPU build of vLLM (README, 'Which vLLM'), which picks the CPU "
               "settings itself, or set evaluation.vllm.placement_bundles=[{CPU: 1}]; or use backend=transformers")
    else:
        fix = "lower evaluation.num_gpus_per_replica / num_cpus_per_replica, or resources_per_replica"
    return (f"one {cfg.backend} replica asks for {{{asked}}}, and this Ray session has {have}; it started on this "
            f"machine, so nothing will add the resources and the replica would wait forever. Fix: {fix}")
