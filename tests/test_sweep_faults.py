"""Faults during real sweeps on CPU: a Train worker (or, in local mode, the trial itself) SIGKILLed mid-trial,
and the records it leaves.

Each test runs a real sweep (Ray Tune + Optuna, Ray Train, Serve, MLflow) of the random-weight tiny
model, so all are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from sweep_helpers import random_model_spec, store_overrides
from sweeps import tracking
from sweeps.loader import load_spec
from sweeps.trial import ATTEMPTS_TAG, CHECKPOINT_TAG, RESUMED_TAG, trial_config
from trainables import local_mode
from trainables.align import prepare_run
from trainables.checkpoints import resume_state_file
from trainables.sft import train_in_process

pytestmark = pytest.mark.slow
TOTAL_STEPS = 24


def _processes(driver_pid: int, title: str) -> list[psutil.Process]:
    """Return the processes this driver started whose command line holds `title` (never another program's)."""
    try:
        children = psutil.Process(driver_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if title in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _registered_checkpoint(runs_dir: Path) -> bool:
    """Return whether a mid-run checkpoint is registered (Ray Train's snapshot, or local mode's pointer names one)."""
    if any(runs_dir.glob(f"*/{local_mode.LATEST_FILE}")):
        return any(json.loads(p.read_text())["name"].startswith("step_")
                   for p in runs_dir.glob(f"*/{local_mode.LATEST_FILE}"))
    return any(runs_dir.glob("*/checkpoint_manager_snapshot.json")) and any(
        runs_dir.glob(f"*/step_*/{resume_state_file(0)}"))


# Who trains, and so who is killed: a Ray Train worker, or in local mode the trial's own process (Tune's
# function trainable), which a retry replaces.
TRAINING_PROCESSES = {1: "RayTrainWorker", 0: "ImplicitFunc"}


@pytest.mark.parametrize("num_workers", [1, 0], ids=["train-worker", "local-mode-trial"])
def test_a_killed_training_process_resumes_from_its_checkpoint_and_ends_as_if_undisturbed(
        tmp_path, tiny_assets, tiny_model_dir, num_workers):  # noqa: F811
    # One trial at a fixed point; dropout on, so the restored RNG state matters. A checkpoint every 4 steps.
    data = random_model_spec(tiny_assets, tiny_model_dir, sampler="grid", num_samples=1, max_failures=1,
                             search_space={"train.learning_rate": {"choice": [3e-3]}})
    data["base"]["lora"]["dropout"] = 0.1
    data["base"]["train"].update({"max_steps": TOTAL_STEPS, "per_device_batch_size": 2, "save_every_steps": 4,
                                  "epochs": 3})
    data["base"]["data"]["size"] = 16  # 8 steps per epoch: the run crosses epoch boundaries
    data["base"]["scaling"]["num_workers"] = num_workers
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    overrides = store_overrides(tmp_path, "worker-kill")
    command = [sys.executable, "-m", "sweeps.cli", "sweep", "sweep.yaml", *overrides, "--quiet"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    runs_dir = tmp_path / "runs"

    log_path = tmp_path / "sweep.log"
    with log_path.open("w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 1200
        while not _registered_checkpoint(runs_dir):  # the first mid-run checkpoint
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was saved in 20 minutes"
            time.sleep(0.2)
        workers = _processes(driver.pid, TRAINING_PROCESSES[num_workers])
        assert len(workers) == 1, f"no single {TRAINING_PROCESSES[num_workers]} process of this sweep was found"
        killed = workers[0].pid
        workers[0].kill()  # SIGKILL: no clean-up, as a preempted node or the OOM killer would do
        assert driver.wait(timeout=1500) == 0, log_path.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, 9)
            driver.wait()
    output = log_path.read_text()

    client = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("worker-kill").experiment_id
    children = [r for r in client.search_runs([experiment]) if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    assert len(children) == 1
    child = children[0]
    tags = child.data.tags
    assert child.info.status == "FINISHED", tags.get(tracking.ERROR_TAG)
    assert tags[ATTEMPTS_TAG] == "2"
    # The failed attempt's error is kept under its own name; the finished run carries no error tag.
    assert tracking.ERROR_TAG not in tags and tags["error.attempt1"], (killed, tags)
    # The retry picked up at a saved step, which the run's tag and the step log both show.
    resumed_at = int(tags[RESUMED_TAG])
    assert 4 <= resumed_at < TOTAL_STEPS and resumed_at % 4 == 0
    assert f"resuming from checkpoint step_{resumed_at} at step {resumed_at}/{TOTAL_STEPS}" in output
    # One loss per step, none logged twice, the same as the final checkpoint's training log.
    losses = client.get_metric_history(child.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, TOTAL_STEPS + 1))

    # The same point trained without interruption (one thread, as the Ray worker had) gives the same adapter.
    spec = load_spec(tmp_path / "sweep.yaml", overrides)
    cfg = trial_config(spec, {"train.learning_rate": 3e-3}, "undisturbed")
    run = prepare_run(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, undisturbed_log = train_in_process(cfg, run.features, run.model_path, checkpoint_dir=tmp_path / "ref",
                                              progress=False)
    finally:
        torch.set_num_threads(threads)
    retried = load_file(Path(tags[CHECKPOINT_TAG]) / "adapter_model.safetensors")
    reference = load_file(tmp_path / "ref" / "adapter_model.safetensors")
    assert retried.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(retried[key], value), key
    by_step = {m.step: m.value for m in losses}
    assert [by_step[s] for s in range(1, TOTAL_STEPS + 1)] == pytest.approx(undisturbed_log.step_losses, abs=1e-6)


SECRETS = {"HF_TOKEN": "hf_SecretTokenForTheTest42", "AWS_SECRET_ACCESS_KEY": "awsSecretKeyForTheTest42"}
TRACKING_PASSWORD = "dbPasswordForTheTest42"


def _start_mlflow(port: int, folder: Path, log) -> subprocess.Popen:
    """Start a real MLflow server on 127.0.0.1 over a SQLite store and local artifacts; return once it answers."""
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "art")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    """End the server and the workers it started (its own process group)."""
    for signal_number in (15, 9):
        try:
            os.killpg(process.pid, signal_number)
            process.wait(timeout=30)
            time.sleep(1)  # its job consumers leave after it
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _running_trials(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid where "
                               "t.key = 'safetytax.role' and t.value = 'trial' and r.status = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _files_with(folder: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def _assert_a_client_without_the_token_cannot_join(ray_tmp: Path, empty_home: Path, model_dir: Path) -> None:
    """The local Ray a sweep started refuses a client with no token; the token in ~/.ray lets one in."""
    import ray

    from tests.conftest import client_env, join_ray
    from trainables.local_ray import REFUSED_TOKEN

    # The session's GCS port, as Ray records it in its session folder; the GCS listens on the node's address.
    [port_file] = list(ray_tmp.rglob("session_latest/gcs_server_port_*"))
    address = f"{ray.util.get_node_ip_address()}:{port_file.read_text().strip()}"
    empty_home.mkdir()
    refused = join_ray(address, client_env(empty_home))
    assert "joined" not in refused.stdout and REFUSED_TOKEN in refused.stderr, refused.stderr[-2000:]
    token = Path.home() / ".ray" / "auth_token"  # Ray made it when the sweep started its session
    joined = join_ray(address, client_env(empty_home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)))
    assert "joined" in joined.stdout, joined.stderr[-2000:]
    # A safetytax command sent to that cluster without its token exits 2, saying how to get the token.
    evaluate = subprocess.run([sys.executable, "-m", "sweeps.cli", "evaluate", "--model", str(model_dir),
                               "--benchmarks", "tiny-arith", "--limit", "2"],
                              env=client_env(empty_home, RAY_ADDRESS=address), capture_output=True, text=True,
                              timeout=300)
    assert evaluate.returncode == 2, evaluate.stderr[-2000:]
    assert "refused this client's token" in evaluate.stderr and "docs/cluster.md" in evaluate.stderr


def test_mlflow_going_away_mid_sweep_loses_nothing_and_no_secret_is_written(tmp_path, tiny_assets,
                                                                              tiny_model_dir):  # noqa: F811
    # One sweep serves three checks (each costs minutes): an MLflow outage while trials run, the
    # credentials in the environment and in the tracking URI, which must appear nowhere it wrote, and
    # the token auth of the local Ray it started.
    from tests.conftest import free_port

    port = free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    # Ray's own folder for this sweep (short: Ray's socket paths must fit in 107 bytes), to read its logs.
    ray_tmp = Path(tempfile.mkdtemp(prefix="st-ray-", dir="/tmp"))
    data = random_model_spec(tiny_assets, tiny_model_dir, num_samples=2)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    uri = f"http://safetytax:{TRACKING_PASSWORD}@127.0.0.1:{port}"
    overrides = [*store_overrides(tmp_path, "mlflow-outage")[1:], f"mlflow.tracking_uri={uri}"]
    command = [sys.executable, "-m", "sweeps.cli", "sweep", "sweep.yaml", *overrides, "--quiet"]
    env = {**os.environ, **SECRETS, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp)}

    with (tmp_path / "mlflow.log").open("w") as server_log, (tmp_path / "sweep.log").open("w") as log:
        servers = [_start_mlflow(port, store, server_log)]
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 1200
            while not _running_trials(store / "mlflow.db"):  # a trial is training: take MLflow away
                assert driver.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no trial started in 20 minutes"
                time.sleep(0.5)
            _stop(servers[-1])
            outage_ends = time.monotonic() + 60
            # Meanwhile: the sweep's own local Ray keeps Ray's token auth; a client without the token stays out.
            _assert_a_client_without_the_token_cannot_join(ray_tmp, tmp_path / "client-home", tiny_model_dir)
            time.sleep(max(0.0, outage_ends - time.monotonic()))
            servers.append(_start_mlflow(port, store, server_log))
            assert driver.wait(timeout=1500) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        except BaseException:
            _stop(servers[-1])
            raise
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, 9)
                driver.wait()

        try:
            # Nothing was lost: both trials finished with their objectives, loss curve and samples.
            client = tracking.client(f"http://127.0.0.1:{port}")
            experiment = client.get_experiment_by_name("mlflow-outage").experiment_id
            runs = client.search_runs([experiment])
            children = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
            parent = next(r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "sweep")
            assert parent.info.status == "FINISHED" and len(children) == 2
            for child in children:
                assert child.info.status == "FINISHED", child.data.tags.get(tracking.ERROR_TAG)
                assert {"harmful_score", "reasoning_accuracy"} <= set(child.data.metrics)
                steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
                assert sorted(steps) == list(range(1, len(steps) + 1)) and steps
                assert client.list_artifacts(child.info.run_id, "samples")

            # No secret in any param, tag or artifact, in Tune's state, in Ray's logs or in the output.
            secrets = [*SECRETS.values(), TRACKING_PASSWORD]
            for run in runs:
                text = json.dumps({**run.data.params, **run.data.tags})
                assert not [s for s in secrets if s in text], run.info.run_name
                downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
                assert not _files_with(downloaded, secrets)
            assert not _files_with(tmp_path / "tune", secrets)
            assert list(ray_tmp.rglob("*.log")) or list(ray_tmp.rglob("*.out")), "Ray wrote no logs there"
            assert not _files_with(ray_tmp, secrets)
            assert not [s for s in secrets if s in (tmp_path / "sweep.log").read_text()]
        finally:
            _stop(servers[-1])
            shutil.rmtree(ray_tmp, ignore_errors=True)
