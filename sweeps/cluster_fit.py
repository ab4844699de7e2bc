"""Which node types of a Ray cluster-launcher YAML hold each part of a trial, and which ones scale up from zero.

`safetytax sweep --dry-run --cluster FILE` prints `cluster_lines`. A node type's resources are the ones it
declares, else those Ray reads from its AWS instance type (INSTANCE_RESOURCES).
"""

from __future__ import annotations

from pathlib import Path

from sweeps.resources import amounts_text, evaluator_demand, train_resources, trial_resources
from sweeps.spec import SweepSpec
from trainables.private_apis import HEAD_NODE_RESOURCE
from trainables.schema import ConfigError


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


def cluster_lines(spec: SweepSpec, path: str | Path) -> list[str]:
    """Return the node types each part of a trial lands on, and those it scales up; ConfigError when none fits."""
    cluster = read_cluster(path)
    types = node_type_resources(cluster)
    head = cluster["head_node_type"]
    local = spec.base.scaling.local_mode  # the trial trains itself: it holds both requests
    demands = [("trial driver", "resources_per_trial + base.scaling.resources_per_worker (local mode)" if local
                else "resources_per_trial", trial_resources(spec.resources_per_trial, spec.base), 1),
               *([] if local else [
                   ("train worker", "base.scaling", train_resources(spec.base), spec.base.scaling.num_workers)]),
               ("evaluator replica", "evaluation", evaluator_demand(spec.evaluation), spec.evaluation.num_replicas)]
    lines, scaled = [], []
    for what, field, demand, count in demands:
        fits = fitting_types(demand, types)
        if not fits:
            raise ConfigError(f"{field}: no node type in {path} can hold one {what} {amounts_text(demand)} "
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
        lines.append(f"{count} x {what} {amounts_text(demand)}: {where}")
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
