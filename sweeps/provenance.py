"""Provenance of a sweep's readings in MLflow: `provenance.json` in the parent run and in every trial, and tags.

The parent run's record holds the driver's environment (`trainables.provenance`) and the evaluation's
(`evaluators.provenance`: benchmarks, judges, base model); a trial's holds the environment of the
process that trained and scored it, and the content hash of the model it scored. A few tags make
sweeps searchable in MLflow (`tags."provenance.transformers" = '5.25.0'`).

`--resume` compares the recorded parent record with the current one: a change that can move readings
(torch, transformers, peft, math-verify, vllm; a benchmark's items; a judge's model or rules; the base
model) refuses the resume unless `--accept-changes` is given, which records what changed.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path
from typing import Any

from evaluators.provenance import evaluation_changes
from sweeps import tracking
from trainables.provenance import environment, reading_changes, summary
from trainables.schema import ConfigError

PROVENANCE_FILE = "provenance.json"
CHANGES_TAG = "provenance.accepted_changes"


def sweep_record(service) -> dict[str, Any]:
    """Return the parent run's record: when, the driver's environment, and the evaluation's provenance."""
    return {"recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(), "evaluation": service.provenance()}


def trial_record(model_hash: str | None) -> dict[str, Any]:
    """Return a trial's record: the environment of this (trial) process and the hash of the model it scored."""
    return {"recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(), "scored_model_hash": model_hash}


def _tags(record: dict[str, Any]) -> dict[str, str]:
    env = record["environment"]
    project = env.get("project", {})
    tags = {f"provenance.{name}": str(version) for name, version in env.get("packages", {}).items() if version}
    tags["provenance.commit"] = str(project.get("commit") or "not a checkout")
    tags["provenance.dirty"] = str(project.get("dirty"))
    tags["provenance.python"] = env.get("python", "")
    gpu = env.get("gpu")
    tags["provenance.hardware"] = f"{gpu['count']}x {gpu['model']}" if gpu else f"CPU: {env.get('cpu')}"
    for judge in record.get("evaluation", {}).get("judges", []):
        tags[f"provenance.judge.{judge['name']}"] = (f"rules {judge['rules_hash'][:12]}, model "
                                                     f"{str(judge['model'].get('content_hash'))[:12]}")
    return tags


def log_record(client, run_id: str, record: dict[str, Any], name: str = PROVENANCE_FILE) -> None:
    """Log `record` as the run's `name` artifact and its searchable tags."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        tracking.log_artifact(client, run_id, path)
    for key, value in _tags(record).items():
        client.set_tag(run_id, key, value[:tracking.MAX_PARAM_LENGTH])


def recorded(client, run_id: str) -> dict[str, Any] | None:
    """Return the run's recorded provenance, or None when it has none (a sweep recorded before provenance)."""
    path = tracking.artifact_local_path(client, run_id, PROVENANCE_FILE)
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Return each difference between two parent records that can move a reading."""
    return (reading_changes(old.get("environment", {}), new.get("environment", {}))
            + evaluation_changes(old.get("evaluation", {}), new.get("evaluation", {})))


def check_resume(client, parent_run_id: str, current: dict[str, Any], accept_changes: bool) -> list[str]:
    """Return the accepted changes since the sweep's recorded provenance; ConfigError if any and not accepted."""
    old = recorded(client, parent_run_id)
    if old is None:
        return []
    found = changes(old, current)
    if found and not accept_changes:
        raise ConfigError(f"--resume: since this sweep started, {'; '.join(found)}. These can move readings, so "
                          f"finished and new trials would not be comparable. Resume in the recorded environment "
                          f"(provenance.json of the sweep's run), or pass --accept-changes to resume and record "
                          f"the change")
    return found


def record_resume(client, parent_run_id: str, current: dict[str, Any], accepted: list[str]) -> None:
    """Record a resume's environment beside the original, and the changes it was allowed to make."""
    stamp = current["recorded_at"].replace(":", "").replace("+", "_")
    log_record(client, parent_run_id, {**current, "accepted_changes": accepted}, f"provenance-resume-{stamp}.json")
    if accepted:
        earlier = client.get_run(parent_run_id).data.tags.get(CHANGES_TAG)
        text = "; ".join(accepted) if not earlier else f"{earlier} | {'; '.join(accepted)}"
        client.set_tag(parent_run_id, CHANGES_TAG, text[-tracking.MAX_PARAM_LENGTH:])


def describe(record: dict[str, Any] | None) -> str:
    """Return one line for `safetytax pareto`: the software, the hardware, the judge and the benchmarks."""
    if record is None:
        return "provenance: none recorded (a sweep from before provenance was recorded)"
    evaluation = record.get("evaluation", {})
    judges = ", ".join(f"{j['name']} (rules {j['rules_hash'][:8]})" for j in evaluation.get("judges", []))
    benchmarks = ", ".join(f"{b['name']} ({b['items']} items, {b['items_hash'][:8]})"
                           for b in evaluation.get("benchmarks", []))
    return f"provenance: {summary(record['environment'])}; judge {judges}; {benchmarks}"
