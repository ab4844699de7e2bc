"""The cluster rehearsal: cluster.local.yaml started as docs/cluster.md says, a sweep submitted as a Ray job.

Everything is real: Ray's fake multi-node provider launches GPU node types as local raylets, an
`mlflow server` and moto's S3 server listen on 127.0.0.1, and `ray job submit` runs `safetytax sweep`
on the head. The test asserts what a user would check: no workers at the start, workers of the right
types while trials ask for them, one worker node killed mid-trial and the trial retried on a new node,
the job SUCCEEDED with the sweep's progress in its logs, every run in MLflow, and idle workers gone.

The cluster runs in a private --temp-dir, so no other process's `ray.init()` finds it (Ray reads
<temp-dir>/ray_current_cluster), and is stopped by killing its process group, never by `ray stop`,
which stops every Ray on the machine.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import client_env, free_port, join_ray
from trainables.private_apis import reread_ray_config

REPO = Path(__file__).resolve().parents[1]
TWIN = REPO / "cluster.local.yaml"
DOCS = REPO / "docs" / "cluster.md"
BUCKET = "safetytax"
JOB_ID = "rehearsal"
TRAIN_TYPE, EVALUATOR_TYPE = "gpu8_h100", "gpu1_h100"

# docs/cluster.md ("Rehearse it on your laptop") shows these commands with $NAME for each {name}.
# The token first: a process that asks the cluster anything before ~/.ray/auth_token exists caches "no
# token" for its lifetime, and on a fresh machine `ray start` writes the file only once it is running.
RAY_AUTH_TOKEN = "ray get-auth-token --generate"
RAY_START = ("ray start --head --port={gcs_port} --num-cpus=2 --temp-dir={temp_dir} --dashboard-host=127.0.0.1 "
             "--dashboard-port={dashboard_port} --dashboard-agent-listen-port={agent_port} --ray-client-server-port={client_port} "
             "--autoscaling-config={cluster_config}")
MLFLOW_SERVER = ("mlflow server --host 127.0.0.1 --port {mlflow_port} --backend-store-uri sqlite:///{mlflow_db} "
                 "--artifacts-destination s3://safetytax/mlflow-artifacts --workers 1")
JOB_SUBMIT = ("ray job submit --address http://127.0.0.1:{dashboard_port} --submission-id {job_id} --no-wait -- "
              "safetytax sweep {repo}/sweeps/tiny.yaml name=rehearsal num_samples=2 population_size=2 initial_points=[] "
              "max_concurrent_trials=1 search_space.data.size.choice=[30,60] search_space.train.epochs.int=[20,24] "
              "base.train.save_every_epoch=true base.scaling.num_workers=1 'base.scaling.resources_per_worker={{CPU: 1, gpu8_h100: 1}}' "
              "'evaluation.resources_per_replica={{gpu1_h100: 1}}' evaluation.limit=20 evaluation.cache_dir=null "
              "evaluation.http_port={serve_port} "
              "'resources_per_trial={{CPU: 0, memory: 536870912, \"node:__internal_head__\": 0.001}}' "
              "storage_path=s3://safetytax/sweeps base.storage_path=s3://safetytax/train base.output_dir={runs} "
              "mlflow.tracking_uri=http://127.0.0.1:{mlflow_port} mlflow.experiment=rehearsal "
              "optuna.storage=sqlite:///{optuna_db}")
RAY_STATUS = "ray status --address 127.0.0.1:{gcs_port}"
JOB_STATUS = "ray job status --address http://127.0.0.1:{dashboard_port} {job_id}"
JOB_LOGS = "ray job logs --address http://127.0.0.1:{dashboard_port} {job_id}"
DOCUMENTED = (RAY_AUTH_TOKEN, RAY_START, MLFLOW_SERVER, RAY_STATUS, JOB_SUBMIT, JOB_STATUS, JOB_LOGS)


def as_documented(template: str) -> str:
    """Return a command template as docs/cluster.md writes it: {name} as $NAME, {{ }} as braces."""
    return re.sub(r"(?<!\{)\{([a-z_]+)\}(?!\})", lambda m: "$" + m.group(1).upper(), template).replace(
        "{{", "{").replace("}}", "}")


def test_the_docs_show_the_commands_this_test_runs():
    text = re.sub(r"\\\n\s*", "", DOCS.read_text())  # shell line continuations
    text = re.sub(r"[ \t]+", " ", text)
    for template in DOCUMENTED:
        assert as_documented(template) in text, f"docs/cluster.md lacks: {as_documented(template)}"


class Processes:
    """The processes this test starts, each leading its own process group; `stop()` ends every group."""

    def __init__(self, log_dir: Path):
        self.log_dir, self.started = log_dir, []

    def start(self, name: str, command: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        process = subprocess.Popen(shlex.split(command), env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.started.append(process)
        return process

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.started:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 20
            while sig == signal.SIGTERM and time.monotonic() < deadline and any(
                    group_members(p.pid) for p in self.started):
                time.sleep(0.5)
        for process in self.started:
            process.poll()


def group_members(pgid: int) -> list[int]:
    """Return the live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def wait_for(what: str, check, timeout_s: float, interval_s: float = 1.0):
    """Return check()'s first truthy value, polling; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3).close()
        return True
    except OSError:
        return False


_last_state_error: list[str] = []  # why the dashboard last gave no nodes, for a start-up failure's message


def alive_nodes(dashboard: str) -> list:
    from ray.util.state import list_nodes

    try:
        return [n for n in list_nodes(address=dashboard, raise_on_missing_output=False) if n.state == "ALIVE"]
    except Exception as err:  # the dashboard is still starting
        _last_state_error[:] = [f"{type(err).__name__}: {err}"[:2000]]
        return []


def autoscaler_time(status: str) -> str | None:
    """Return the time in `ray status`'s header: when the autoscaler last reported (None before its first report)."""
    found = re.search(r"Autoscaler status: ([^=]+?) =", status)
    return found.group(1) if found else None


def after_autoscaler_updates(rehearsal: dict, updates: int) -> str:
    """Return `ray status` once the autoscaler has reported `updates` times more than when first asked.

    Each report follows an update in which it looked at the demand and launched what it asked for,
    so what `ray status` then shows is what the autoscaler decided, not what it has yet to decide.
    """
    times: list[str] = []

    def reported() -> str | None:
        status = ray_cli(RAY_STATUS, rehearsal, retry_on="No cluster status")
        if (time_ := autoscaler_time(status)) and time_ not in times:
            times.append(time_)
        return status if len(times) > updates else None

    return wait_for(f"{updates} autoscaler updates", reported, 120)


def active_in_status(status: str) -> list[str]:
    """Return the "Active:" lines of `ray status`, e.g. ["1 ray.head.default", "1 gpu1_h100"]."""
    block = status.split("Active:", 1)[1].split("Pending:", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def pending_in_status(status: str) -> list[str]:
    """Return the "Pending:" lines of `ray status` that name a node being launched (none: [])."""
    block = status.split("Pending:", 1)[1].split("Recent failures:", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and "no pending" not in line]


def node_types(nodes) -> list[str]:
    return sorted(n.labels.get("safetytax/node-type", "head" if n.is_head_node else "?") for n in nodes)


NODE_ID_VARIABLE = b"RAY_OVERRIDE_NODE_ID_FOR_TESTING="  # the fake provider's node id, in each process of a node


def training_node_id() -> str | None:
    """Return the node id of the node whose Train worker runs now, read from that process itself (instantly,
    where Ray's state API can trail by seconds), or None while no Train worker runs."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RayTrainWorker" in (entry / "cmdline").read_bytes():
                environ = (entry / "environ").read_bytes().split(b"\0")
                return next(v[len(NODE_ID_VARIABLE):].decode() for v in environ if v.startswith(NODE_ID_VARIABLE))
        except (OSError, StopIteration):
            continue
    return None


def kill_node(node_id: str) -> list[str]:
    """SIGKILL every process of one fake node (its raylet, agents and workers), as if the machine died;
    return their titles.

    They are found by the node id Ray's fake provider puts in each one's environment, on the whole machine:
    Ray starts each worker in a process group of its own, so the head's group holds only the raylets and
    agents, and a worker left alive would go on training until it noticed its raylet had gone.
    """
    killed = []
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if NODE_ID_VARIABLE + node_id.encode() in environ:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(title)
    return killed


def start_head(processes: Processes, values: dict, env: dict, dashboard: str) -> subprocess.Popen:
    """Run the documented `ray start` until the head is up; once more if it timed out (Ray allows a raylet 30 s)."""
    for attempt in (1, 2):
        head = processes.start(f"ray_start_{attempt}", RAY_START.format(**values), env)
        deadline = time.monotonic() + 300
        while (head.poll() is None or head.returncode == 0) and time.monotonic() < deadline:
            if alive_nodes(dashboard):
                return head
            time.sleep(2)
        log = (processes.log_dir / f"ray_start_{attempt}.log").read_text()
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if "timed out during startup" not in log or attempt == 2:
            pytest.fail(f"ray start failed, or its head never listed itself as alive; the dashboard's last "
                        f"answer: {_last_state_error or 'none'}\n{log[-3000:]}")
        time.sleep(5)


@pytest.fixture
def rehearsal(tmp_path, monkeypatch):
    """The cluster, MLflow and S3 servers of the rehearsal, started as the docs say; every process stopped after."""
    import boto3

    from s3_server import start_s3_server
    from trainables.tiny.lrm import ensure_tiny_lrm

    ensure_tiny_lrm()  # built once and cached; the job would otherwise build it
    # The job agent's port too: every local Ray session on the machine (another test's sweep, a killed sweep's
    # orphaned agent) binds Ray's default 52365, and a head whose agent cannot listen takes no jobs.
    ports = {name: free_port() for name in ("gcs_port", "dashboard_port", "agent_port", "client_port",
                                           "mlflow_port", "serve_port")}
    values = {**ports, "temp_dir": f"/tmp/st-ray-{os.getpid()}", "repo": str(REPO), "job_id": JOB_ID,
              "runs": str(tmp_path / "runs"), "mlflow_db": str(tmp_path / "mlflow.db"),
              "optuna_db": str(tmp_path / "optuna.db"),
              "cluster_config": str(tmp_path / "cluster.local.yaml")}
    # The twin as shipped, with workers pointed at this test's GCS port instead of 6379.
    config = yaml.safe_load(TWIN.read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{ports['gcs_port']}"
    Path(values["cluster_config"]).write_text(yaml.safe_dump(config))

    s3 = start_s3_server()
    processes = Processes(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(s3.env(), RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
               AUTOSCALER_HEARTBEAT_TIMEOUT_S="10", RAY_AUTH_MODE="token",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for name, value in {**s3.env(), "RAY_AUTH_MODE": "token"}.items():
        monkeypatch.setenv(name, value)  # this process reads the bucket and the cluster's state too
    # Ray reads RAY_AUTH_MODE into a per-process config once: after an earlier test in this process has
    # imported Ray (auth mode then "disabled"), this process would send no token and the dashboard would
    # answer every state query "Unauthorized". Re-read it, as Ray does itself when it turns token auth on.
    reread_ray_config()
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        subprocess.run(shlex.split(RAY_AUTH_TOKEN), env=env, check=True, capture_output=True, timeout=120)
        processes.start("mlflow_server", MLFLOW_SERVER.format(**values), env)
        dashboard = f"http://127.0.0.1:{ports['dashboard_port']}"
        start_head(processes, values, env, dashboard)
        wait_for("the MLflow server", lambda: http_ok(f"http://127.0.0.1:{ports['mlflow_port']}/health"), 120)
        yield {"values": values, "env": env, "dashboard": dashboard,
               "tracking_uri": f"http://127.0.0.1:{ports['mlflow_port']}", "log_dir": tmp_path}
    finally:
        processes.stop()
        s3.stop()
        leftover = lambda: [pid for p in processes.started for pid in group_members(p.pid)]  # noqa: E731
        deadline = time.monotonic() + 30  # SIGKILLed processes take a moment to go
        while leftover() and time.monotonic() < deadline:
            time.sleep(1)
        assert not leftover(), f"processes left running: {leftover()}"
        shutil.rmtree(values["temp_dir"], ignore_errors=True)


def ray_cli(template: str, rehearsal: dict, retry_on: str | None = None, timeout_s: float = 180) -> str:
    """Return the stdout of a documented `ray` command; retried while its error says `retry_on`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = subprocess.run(shlex.split(template.format(**rehearsal["values"])), env=rehearsal["env"],
                                capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            return result.stdout
        if not (retry_on and retry_on in result.stderr + result.stdout and time.monotonic() < deadline):
            pytest.fail(f"{template.split(' --')[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        time.sleep(3)


def assert_only_the_token_gets_in(rehearsal: dict) -> None:
    """A client without the cluster's token, or with a wrong one, is refused by the job API and by
    `ray.init(address=...)` with Ray's authentication error; the same client with the token is let in."""
    from trainables.local_ray import REFUSED_TOKEN

    values, empty_home = rehearsal["values"], rehearsal["log_dir"] / "client-home"
    empty_home.mkdir(exist_ok=True)
    gcs, jobs = f"127.0.0.1:{values['gcs_port']}", f"http://127.0.0.1:{values['dashboard_port']}"
    job_list = shlex.split(f"ray job list --address {jobs}")
    clients = {"no token": client_env(empty_home),
               "a wrong token": client_env(empty_home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-clusters-token")}
    for client, env in clients.items():
        listed = subprocess.run(job_list, env=env, capture_output=True, text=True, timeout=180)
        said = listed.stdout + listed.stderr
        assert listed.returncode != 0 and re.search(r"Unauthorized|401|authenticat", said, re.I), (client, said[-2000:])
        joined = join_ray(gcs, env)
        said = joined.stdout + joined.stderr
        assert "joined" not in joined.stdout and REFUSED_TOKEN in said, (client, said[-2000:])
    with_token = client_env(empty_home, RAY_AUTH_MODE="token",
                            RAY_AUTH_TOKEN_PATH=str(Path.home() / ".ray" / "auth_token"))
    assert subprocess.run(job_list, env=with_token, capture_output=True, timeout=180).returncode == 0
    joined = join_ray(gcs, with_token)
    assert "joined" in joined.stdout, joined.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_submitted_sweep_scales_workers_from_zero_survives_a_lost_node_and_gives_them_back(rehearsal):
    import boto3
    from mlflow.tracking import MlflowClient
    from ray.job_submission import JobSubmissionClient

    from sweeps import tracking
    from sweeps.trial import RESUMED_TAG
    from trainables.checkpoints import resume_state_file

    dashboard = rehearsal["dashboard"]
    # A cluster with no workers, and the autoscaler starts none while nothing asks: it has updated twice.
    idle_status = after_autoscaler_updates(rehearsal, 2)
    assert active_in_status(idle_status) == ["1 ray.head.default"], idle_status
    assert not pending_in_status(idle_status), idle_status
    assert node_types(alive_nodes(dashboard)) == ["head"]

    ray_cli(JOB_SUBMIT, rehearsal, retry_on="No available agent", timeout_s=600)  # the head's job agent starts after `ray start`
    assert_only_the_token_gets_in(rehearsal)  # the job API is up: the submit above was let in with the token
    seen_types: set[str] = set()

    bucket = boto3.client("s3")
    # Polled in this process: a `ray` CLI call every few seconds would take a core from the sweep.
    jobs = JobSubmissionClient(dashboard)

    def job_ended() -> str | None:
        status = str(jobs.get_job_status(JOB_ID))
        return next((s for s in ("SUCCEEDED", "FAILED", "STOPPED") if s in status), None)

    def checkpointed_run() -> str | None:
        """Return the Train run that has saved an epoch checkpoint and no final one: it is training."""
        listed = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET, Prefix="train/").get("Contents", [])]
        saved = {key.split("/")[1] for key in listed if "/epoch_" in key and key.endswith(resume_state_file(0))}
        finished = {key.split("/")[1] for key in listed if "/final/" in key}
        return next(iter(sorted(saved - finished)), None)

    def fail_if_the_job_ended(what: str) -> None:
        if job_ended():  # fail now, with the job's own account, rather than wait out the timeout
            pytest.fail(f"the job ended {job_ended()} before {what}:\n{jobs.get_job_logs(JOB_ID)[-4000:]}")

    polls = itertools.count(1)

    def mid_training() -> str | None:
        if next(polls) % 50 == 0:  # now and then: each ask of the job API costs more than a bucket listing
            fail_if_the_job_ended("a node could be lost mid-training")
        return checkpointed_run()

    # Kill the first trial's training node mid-training, not mid-start-up: once its first epoch checkpoint
    # is being saved to the bucket, epochs before its final one. Only the bucket is polled, and the node is
    # read from its Train worker's own process, so the kill lands within a poll of the checkpoint.
    try:
        killed_run = wait_for("the first trial to train past its first epoch", mid_training, 900, 0.1)
        killed_node = training_node_id()
        assert killed_node, "no Train worker runs while its run saves checkpoints"
        killed = kill_node(killed_node)
        assert any("RayTrainWorker" in title for title in killed), killed  # the training process died with it
        assert checkpointed_run() == killed_run, "the run finished training before its node was killed"
    finally:
        (rehearsal["log_dir"] / "job.log").write_text(jobs.get_job_logs(JOB_ID))  # kept for the post-mortem

    def job_finished():
        seen_types.update(node_types(alive_nodes(dashboard)))
        return job_ended()

    wait_for("the job to end", job_finished, 900, 3)
    status = ray_cli(JOB_STATUS, rehearsal)
    logs = ray_cli(JOB_LOGS, rehearsal)
    (rehearsal["log_dir"] / "job.log").write_text(logs)
    assert "succeeded" in status.lower(), logs[-4000:]
    assert {TRAIN_TYPE, EVALUATOR_TYPE} <= seen_types, seen_types
    for progress in ("base model: harmful_score=", "[1/2] trial", "[2/2] trial", "hypervolume:"):
        assert progress in logs, progress

    client = MlflowClient(rehearsal["tracking_uri"])
    experiment = client.get_experiment_by_name("rehearsal")
    [parent] = client.search_runs([experiment.experiment_id], f"tags.`{tracking.ROLE_TAG}` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert "pareto_front.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    trials = tracking.trial_runs(client, experiment.experiment_id, parent.info.run_id)
    assert len(trials) == 2
    for trial in trials:
        assert trial.info.status == "FINISHED", trial.data.tags.get("error")
        assert {"harmful_score", "reasoning_accuracy"} <= set(trial.data.metrics)
        assert trial.data.tags["node_type"] == TRAIN_TYPE  # trained on a worker, not on the head
        assert trial.data.tags[tracking.PARETO_TAG] in ("true", "false")
    assert any(t.data.tags[tracking.PARETO_TAG] == "true" for t in trials)
    # The killed trial finished on another node, either way docs/cluster.md ("Retries and faults") gives:
    # the trial failed and Tune ran it again (attempts 2), or Ray Train restarted its worker group within
    # the attempt (attempts 1). It resumed from the last checkpoint Ray Train had registered before the node
    # died, or from step 0 if none was (registration trails the upload). Either way nothing is lost or
    # counted twice: one loss value per step, from the first step to the last.
    [killed] = [t for t in trials if killed_run == f"rehearsal-{t.data.tags[tracking.TRIAL_ID_TAG]}"]
    assert killed.data.tags["attempts"] in ("1", "2"), killed.data.tags
    assert all(t.data.tags["node_id"] != killed_node for t in trials)
    resumed_at = [int(step) for step in killed.data.tags.get(RESUMED_TAG, "").split(", ") if step]
    assert all(step > 0 for step in resumed_at), killed.data.tags
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, len(steps) + 1)) and steps
    outcome = "Tune retried the trial" if killed.data.tags["attempts"] == "2" else "Ray Train restarted its workers"
    start = f"resumed at step {resumed_at[0]}" if resumed_at else "started again from step 0 (no checkpoint registered)"
    print(f"lost node: {outcome}; it {start} of {len(steps)}")
    # Checkpoints travelled through the bucket.
    keys = [o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    assert any(k.startswith("train/") and "/final/" in k for k in keys), keys[:20]
    assert any(k.startswith("sweeps/rehearsal/") for k in keys)

    # Idle workers go back after the twin's idle timeout.
    wait_for("the idle workers to be released", lambda: node_types(alive_nodes(dashboard)) == ["head"], 240, 3)
    assert active_in_status(ray_cli(RAY_STATUS, rehearsal)) == ["1 ray.head.default"]
