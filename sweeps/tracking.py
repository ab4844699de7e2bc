"""MLflow records of a sweep: one parent run per sweep and one child run per trial, keyed so resuming never duplicates.

Runs are found by tags, not remembered in memory: the parent by the sweep's Tune folder
(`safetytax.sweep_dir`), a child by its parent and its Tune trial id (`safetytax.trial_id`). A resumed
sweep, a retried trial and the driver's failure hook all reach the same run. Everything goes through
`MlflowClient` with explicit run ids, so trials in other processes (or on other nodes) log safely.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.credentials import is_credential
from trainables.schema import ConfigError

ROLE_TAG = "safetytax.role"
SWEEP_DIR_TAG = "safetytax.sweep_dir"
TRIAL_ID_TAG = "safetytax.trial_id"
PARENT_TAG = "mlflow.parentRunId"
ERROR_TAG = "error"
PARETO_TAG = "pareto_optimal"
COLLAPSED_TAG = "collapsed"  # the trial's replies are mostly incoherent: a broken model, off the front
TIME_PREFIX = "time/"  # a trial's wall time by phase, in seconds; sweeps.report sums them into the sweep's share
EPOCH_TIME_PREFIX = "epoch_time/"  # with every epoch read: each epoch's seconds by phase, logged at its step
RACING_SAVED = "racing_saved"  # seconds racing saved the trial, logged as time/racing_saved_s

MAX_PARAM_LENGTH = 6000  # MLflow 3's limit on a param value
BATCH = 100  # MLflow's limit on params per log_batch call


def resolve_tracking_uri(uri: str) -> str:
    """Return `uri` with a relative SQLite file or folder made absolute (trials run in other directories)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().resolve())
    if "://" not in uri:
        return Path(uri).expanduser().resolve().as_uri()
    if uri.startswith("file://"):
        return Path(urllib.parse.urlparse(uri).path).expanduser().resolve().as_uri()
    return uri


# Where `mlflow ui` serves by default; the README starts it on this address.
LOCAL_UI = "http://127.0.0.1:5000"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Return the address of a run's page in MLflow's UI: the tracking server's, or `mlflow ui`'s for a local store.

    A run's own page opens as a training run (parameters, metrics, artifacts), whatever view a fresh
    browser would pick for the experiment.
    """
    base = LOCAL_UI
    if tracking_uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(tracking_uri)  # no user:password in a printed link: the browser asks
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        base = urllib.parse.urlunsplit(parts._replace(netloc=host)).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def redact_uri(uri: str) -> str:
    """Return `uri` without a password in its user-info part."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def credentials_to_env(uri: str) -> str:
    """Return an http(s) tracking URI without its user:password, moved to MLflow's own variables instead.

    MLflow reads MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in every process (trials inherit
    them through the local Ray), so the password never sits in Tune's pickled state or in a log line.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or (parts.username is None and parts.password is None):
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username or "")
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def check_tracking_uri(uri: str, timeout_s: float = 10.0) -> str:
    """Return the resolved tracking URI once the store answers; raise ConfigError naming the URI otherwise."""
    resolved = resolve_tracking_uri(uri)
    shown = redact_uri(uri)
    if resolved.startswith("sqlite:///"):
        folder = Path(resolved[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise ConfigError(f"mlflow.tracking_uri: {shown}: folder {folder} does not exist; create it or point "
                              "the URI elsewhere")
    if resolved.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(resolved.rstrip("/") + "/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered; auth or routing problems surface on the first MLflow call below
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(f"mlflow.tracking_uri: cannot reach {shown} ({reason}); start the server (e.g. "
                              "`mlflow server --host 127.0.0.1 --port 5000`) or fix the URI") from None
    try:
        client(resolved).search_experiments(max_results=1)
    except Exception as err:  # the store's own errors vary by backend; all mean "unusable"
        raise ConfigError(f"mlflow.tracking_uri: {shown} is not a usable MLflow store: {err}") from None
    return resolved


def client(tracking_uri: str):
    """Return an MlflowClient bound to `tracking_uri`."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(mlflow_client, name: str) -> str:
    """Return the id of the named experiment, creating it if needed."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise ConfigError(f"mlflow.experiment: {name!r} is deleted in this store; restore it in the MLflow UI "
                              "or choose another name")
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name)
    except Exception:  # another process created it first
        return mlflow_client.get_experiment_by_name(name).experiment_id


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Return nested config data as {dotted.key: text}, dropping keys that look like credentials."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        if is_credential(key):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name + "."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        flat[name] = redact_uri(text)[:MAX_PARAM_LENGTH] if "://" in text else text[:MAX_PARAM_LENGTH]
    return flat


def log_params(mlflow_client, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches; params the run already has (a retried or resumed trial) are skipped.

    MLflow params are immutable, and a trial's params never change between its attempts.
    """
    from mlflow.entities import Param

    logged = mlflow_client.get_run(run_id).data.params
    todo = [Param(k, v) for k, v in params.items() if k not in logged]
    for start in range(0, len(todo), BATCH):
        mlflow_client.log_batch(run_id, params=todo[start:start + BATCH])


def log_metrics(mlflow_client, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log finite numeric metrics at one step."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    for start in range(0, len(batch), 1000):
        mlflow_client.log_batch(run_id, metrics=batch[start:start + 1000])


def log_new_metrics(mlflow_client, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log the metrics that have no value at `step` yet: a retried trial or a re-logging resume adds no duplicates."""
    todo = {name: value for name, value in metrics.items()
            if step not in {m.step for m in mlflow_client.get_metric_history(run_id, name)}}
    log_metrics(mlflow_client, run_id, todo, step=step)


def log_curve(mlflow_client, run_id: str, name: str, values: list[float]) -> None:
    """Log a step metric (e.g. the training loss), one value per step starting at 1; steps already logged are kept."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    logged = {m.step for m in mlflow_client.get_metric_history(run_id, name)}
    batch = [Metric(name, float(v), now, step) for step, v in enumerate(values, start=1)
             if math.isfinite(v) and step not in logged]
    for start in range(0, len(batch), 1000):
        mlflow_client.log_batch(run_id, metrics=batch[start:start + 1000])


def _search(mlflow_client, experiment: str, filters: dict[str, str]) -> list:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filters.items())
    return list(mlflow_client.search_runs([experiment], filter_string=query, max_results=1000,
                                          order_by=["attributes.start_time DESC"]))


def find_sweep_run(mlflow_client, experiment: str, sweep_dir: str):
    """Return the newest parent run recorded for the sweep folder `sweep_dir`, or None."""
    runs = _search(mlflow_client, experiment, {ROLE_TAG: "sweep", SWEEP_DIR_TAG: sweep_dir})
    return runs[0] if runs else None


def latest_sweep_run(mlflow_client, experiment: str):
    """Return the newest parent run of any sweep in the experiment, or None."""
    runs = _search(mlflow_client, experiment, {ROLE_TAG: "sweep"})
    return runs[0] if runs else None


def start_sweep_run(mlflow_client, experiment: str, sweep_dir: str, run_name: str, tags: Mapping[str, str]):
    """Return a new parent run for the sweep."""
    return mlflow_client.create_run(experiment, run_name=run_name,
                                    tags={ROLE_TAG: "sweep", SWEEP_DIR_TAG: sweep_dir, **tags})


def trial_runs(mlflow_client, experiment: str, parent_run_id: str) -> list:
    """Return the child runs of a sweep, oldest first."""
    return list(reversed(_search(mlflow_client, experiment, {PARENT_TAG: parent_run_id, ROLE_TAG: "trial"})))


def trial_run(mlflow_client, experiment: str, parent_run_id: str, trial_id: str, run_name: str | None = None):
    """Return the child run of `trial_id`, creating it when `run_name` is given and none exists; else None."""
    runs = _search(mlflow_client, experiment, {PARENT_TAG: parent_run_id, TRIAL_ID_TAG: trial_id})
    if runs or run_name is None:
        return runs[-1] if runs else None  # the oldest, if two processes ever raced to create it
    return mlflow_client.create_run(experiment, run_name=run_name,
                                    tags={PARENT_TAG: parent_run_id, ROLE_TAG: "trial", TRIAL_ID_TAG: trial_id})


def mark_failed(mlflow_client, run_id: str, error: str) -> None:
    """Record a trial's error text and end its run as FAILED."""
    mlflow_client.set_tag(run_id, ERROR_TAG, error[-MAX_PARAM_LENGTH:])
    mlflow_client.set_terminated(run_id, status="FAILED")


def archive_error(mlflow_client, run, attempt: int) -> None:
    """Move an earlier attempt's `error` tag to `error.attempt<N>`, so a run that succeeds later reads clean."""
    error = run.data.tags.get(ERROR_TAG)
    if error is None or attempt < 1:
        return
    mlflow_client.set_tag(run.info.run_id, f"{ERROR_TAG}.attempt{attempt}", error)
    mlflow_client.delete_tag(run.info.run_id, ERROR_TAG)


def end_running_trials(mlflow_client, experiment: str, parent_run_id: str, status: str = "KILLED") -> list[str]:
    """End every child run still RUNNING with `status` (after Ctrl-C); return their trial ids."""
    stopped = []
    for run in trial_runs(mlflow_client, experiment, parent_run_id):
        if run.info.status == "RUNNING":
            mlflow_client.set_terminated(run.info.run_id, status=status)
            stopped.append(run.data.tags.get(TRIAL_ID_TAG, run.info.run_id))
    return stopped


def log_artifact(mlflow_client, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Copy one local file into the run's artifacts."""
    mlflow_client.log_artifact(run_id, str(path), artifact_path)


def artifact_local_path(mlflow_client, run_id: str, name: str) -> Path | None:
    """Return a local path to the run's artifact `name` (downloaded when the store is remote), or None."""
    if not any(f.path == name for f in mlflow_client.list_artifacts(run_id)):
        return None
    root = mlflow_client.get_run(run_id).info.artifact_uri
    if root.startswith("/") or root.startswith("file:"):
        return Path(urllib.parse.urlparse(root).path) / name
    return Path(mlflow_client.download_artifacts(run_id, name))
