"""cluster.yaml: Ray's own validation accepts it, and it keeps the cluster's safety properties.

No cloud call is made: Ray's schema check, its defaults merge and (where boto3 is installed) its
security-group rule builder run offline, and the setup's input check runs in a local bash.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from sweeps.cluster_fit import INSTANCE_RESOURCES

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
TWIN_YAML = REPO / "cluster.local.yaml"
# GPUs per instance of the types this cluster may use; a new type needs its resources in sweeps/cluster_fit.py.
GPUS_PER_INSTANCE = {name: int(resources.get("GPU", 0)) for name, resources in INSTANCE_RESOURCES.items()}
GPU_FAMILIES = ("p", "g", "dl", "trn", "inf")
NODE_TYPE_LABEL = "safetytax/node-type"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def worker_types(cluster: dict) -> dict[str, dict]:
    return {name: node for name, node in cluster["available_node_types"].items() if name != cluster["head_node_type"]}


def test_ray_validates_the_file_and_its_defaults_merge(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(cluster)
    # What `ray up` validates after merging the AWS defaults (the cloud bootstrap comes after this).
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_ray_validation_catches_a_broken_copy(cluster):
    # Guards the test above: the validator this file relies on does reject a bad cluster file.
    from ray.autoscaler._private.util import validate_config

    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu8_h100"]["min_workers"] = "zero"
    with pytest.raises(Exception, match="zero"):
        validate_config(broken)


def test_only_ssh_is_open_to_the_outside(cluster):
    for name, node in cluster["available_node_types"].items():
        # A node type with its own groups or interfaces would bypass the cluster's security group.
        assert "SecurityGroupIds" not in node["node_config"], name
        assert "NetworkInterfaces" not in node["node_config"], name
    # Ray creates the group with node-to-node traffic and SSH; any rule added here must be SSH as well.
    for rule in cluster["provider"].get("security_group", {}).get("IpPermissions", []):
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule


def test_the_rules_ray_creates_open_only_ssh(cluster):
    pytest.importorskip("boto3", reason="Ray's AWS module needs boto3 (the aws extra)")
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    extra = cluster["provider"].get("security_group", {}).get("IpPermissions", [])
    rules = _create_default_inbound_rules({"sg-cluster"}, extra)
    public = [r for r in rules if r.get("IpRanges") or r.get("Ipv6Ranges") or r.get("PrefixListIds")]
    assert public, "expected Ray's SSH rule"
    for rule in public:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule
    for rule in rules:
        if rule not in public:
            assert {pair["GroupId"] for pair in rule["UserIdGroupPairs"]} == {"sg-cluster"}, rule


def test_services_on_the_head_bind_loopback(cluster):
    commands = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in commands
    mlflow = shlex.split(commands[commands.index("mlflow server"):].split(">")[0])
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()


def test_mlflow_keeps_runs_on_the_head_and_artifacts_in_s3(cluster):
    commands = " ".join(cluster["head_start_ray_commands"])
    mlflow = shlex.split(commands[commands.index("mlflow server"):].split(">")[0])
    backend = mlflow[mlflow.index("--backend-store-uri") + 1]
    assert "sqlite:////home/ubuntu/" in backend  # persistent file on the head's EBS disk by default
    assert mlflow[mlflow.index("--artifacts-destination") + 1].startswith("${SAFETYTAX_BUCKET")


def test_gpu_types_autoscale_from_zero_and_the_head_has_no_gpu(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    head_type = head["node_config"]["InstanceType"]
    assert not head_type.split(".")[0].startswith(GPU_FAMILIES), head_type
    assert head.get("resources", {}).get("GPU", 0) == 0
    gpus = {}
    for name, node in worker_types(cluster).items():
        assert node["min_workers"] == 0, name
        instance = node["node_config"]["InstanceType"]
        assert instance in GPUS_PER_INSTANCE, f"{name}: add {instance}'s resources to sweeps/cluster_fit.py"
        gpus[name] = GPUS_PER_INSTANCE[instance]
    assert 8 in gpus.values(), "no 8-GPU node type for 32B training"
    assert 1 in gpus.values(), "no 1-GPU node type for evaluators and the judge"


def test_workers_can_reach_s3_for_checkpoints(cluster):
    # Train workers write checkpoints to storage_path (s3://), so every GPU node needs an instance profile.
    for name, node in worker_types(cluster).items():
        assert node["node_config"].get("IamInstanceProfile"), name


def test_no_secrets_in_the_file_and_the_env_file_is_not_committed(cluster):
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|aws_secret_access_key", text, re.IGNORECASE)
    assert not re.search(r"HF_TOKEN\s*[=:]", text)
    [(remote, local)] = cluster["file_mounts"].items()
    assert remote.endswith("safetytax.env")
    ignored = subprocess.run(["git", "check-ignore", "-q", local], cwd=REPO)
    assert ignored.returncode == 0, f"{local} holds tokens and must be git-ignored"


@pytest.mark.parametrize(("env_file", "error"), [
    ("SAFETYTAX_REPO=https://example.org/safetytax.git\nSAFETYTAX_COMMIT=abc123\nSAFETYTAX_BUCKET=s3://b/p\n", None),
    ("SAFETYTAX_REPO=https://example.org/safetytax.git\nSAFETYTAX_BUCKET=s3://b/p\n", "SAFETYTAX_COMMIT"),
    ("SAFETYTAX_REPO=https://example.org/safetytax.git\nSAFETYTAX_COMMIT=abc123\nSAFETYTAX_BUCKET=/data\n",
     "SAFETYTAX_BUCKET must be s3://"),
])
def test_setup_refuses_an_incomplete_env_file(cluster, tmp_path, env_file, error):
    (tmp_path / "safetytax.env").write_text(env_file)
    check = cluster["setup_commands"][0]
    result = subprocess.run(["bash", "-c", check], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    if error is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert error in result.stderr


# ---- cluster.local.yaml, the one-machine twin ---------------------------------------------------------


@pytest.fixture(scope="module")
def twin() -> dict:
    return yaml.safe_load(TWIN_YAML.read_text())


def test_the_twin_and_the_aws_file_declare_the_same_node_types(cluster, twin):
    assert set(twin["available_node_types"]) == set(cluster["available_node_types"])
    assert twin["head_node_type"] == cluster["head_node_type"]
    assert ({name: node["min_workers"] for name, node in worker_types(twin).items()}
            == {name: node["min_workers"] for name, node in worker_types(cluster).items()})
    for config in (cluster, twin):  # trials tag the node type they trained on from this label
        for name, node in worker_types(config).items():
            assert node["labels"][NODE_TYPE_LABEL] == name


def test_the_twin_runs_on_the_fake_provider_with_cpu_only_stand_ins(cluster, twin):
    from ray.autoscaler._private.util import validate_config

    validate_config(twin)
    assert twin["provider"]["type"] == "fake_multinode"
    assert 0 < twin["idle_timeout_minutes"] <= 1, "the rehearsal watches idle workers go back"
    for name, node in worker_types(twin).items():
        gpus = GPUS_PER_INSTANCE[cluster["available_node_types"][name]["node_config"]["InstanceType"]]
        assert node["resources"].get("GPU", 0) == 0, name
        assert node["resources"][name] == gpus, f"{name}: one unit of the custom resource per GPU it stands for"
    assert twin["available_node_types"][twin["head_node_type"]]["max_workers"] == 0


def test_both_clusters_run_with_token_auth(cluster, twin):
    """`ray start` runs open unless RAY_AUTH_MODE=token: every start command of both files sets it."""
    starts = [*cluster["head_start_ray_commands"], *cluster["worker_start_ray_commands"]]
    for command in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token ray start" in command, command
    # The head makes the token once, workers get the file over SSH, and a node without it refuses to start.
    assert any("ray get-auth-token --generate" in c for c in cluster["head_setup_commands"])
    assert cluster["cluster_synced_files"] == ["/home/ubuntu/.ray/auth_token"]
    assert any("test -s ~/.ray/auth_token" in c for c in cluster["worker_start_ray_commands"])
    # Every login shell (Ray's commands, `ray exec`, jobs run on the head) is a token-auth client.
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cluster["setup_commands"])
    # The twin is started by the commands its header gives: the token first, then the head with auth on.
    header = [line for line in TWIN_YAML.read_text().splitlines()[:8] if line.startswith("#   ")]
    assert "ray get-auth-token --generate" in header[0]
    assert any("RAY_AUTH_MODE=token ray start --head" in line for line in header)


def test_the_token_is_never_in_the_file_or_printed(cluster):
    text = CLUSTER_YAML.read_text()
    assert "RAY_AUTH_TOKEN=" not in text  # a token in a command line is in the process list and the logs
    [generate] = [c for c in cluster["head_setup_commands"] if "get-auth-token" in c]
    assert "> /dev/null" in generate  # `ray get-auth-token` prints the token; `ray up` would log it


def test_a_worker_without_the_token_stops_with_how_to_get_one(cluster, tmp_path):
    [check] = [c for c in cluster["worker_start_ray_commands"] if "auth_token" in c]
    result = subprocess.run(["bash", "-c", check], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert result.returncode != 0 and "ray up cluster.yaml" in result.stderr, result.stderr
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("a-token")
    assert subprocess.run(["bash", "-c", check], env={"HOME": str(tmp_path)}).returncode == 0


def test_hf_token_lives_in_the_hub_token_file_not_in_the_environment(cluster, tmp_path):
    """The login shell drops HF_TOKEN from the environment; the setup writes it to the Hub's token file."""
    (tmp_path / "safetytax.env").write_text("SAFETYTAX_BUCKET=s3://b/p\nHF_TOKEN=hf_test_token_value\n")
    [write] = [c for c in cluster["setup_commands"] if "huggingface/token" in c and ".bashrc" not in c]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert subprocess.run(["bash", "-c", write], env=env).returncode == 0
    token_file = tmp_path / ".cache" / "huggingface" / "token"
    assert token_file.read_text() == "hf_test_token_value" and token_file.stat().st_mode & 0o077 == 0
    [rc_line] = [c for c in cluster["setup_commands"] if ".bashrc" in c and "RAY_AUTH_MODE" in c]
    line = shlex.split(rc_line.split("echo ", 1)[1].split(" >> ")[0])[0]  # what goes into .bashrc
    shell = line.split("; . ~/venv/bin/activate")[0]  # no venv here
    result = subprocess.run(["bash", "-c", f"{shell}; env"], env=env, capture_output=True, text=True)
    assert "hf_test_token_value" not in result.stdout and "SAFETYTAX_BUCKET=s3://b/p" in result.stdout
    assert "RAY_AUTH_MODE=token" in result.stdout and f"HF_TOKEN_PATH={token_file}" in result.stdout


def test_the_twin_opens_with_its_command():
    head = TWIN_YAML.read_text().splitlines()[:8]
    assert any("ray start --head" in line and "--autoscaling-config=cluster.local.yaml" in line for line in head)


# ---- `safetytax sweep --dry-run --cluster` ----------------------------------------------------------------

ON_THE_TWIN = ["base.scaling.num_workers=1", "base.scaling.resources_per_worker={CPU: 1, gpu8_h100: 1}",
               "evaluation.resources_per_replica={gpu1_h100: 1}",
               'resources_per_trial={CPU: 0, memory: 536870912, "node:__internal_head__": 0.001}']


def dry_run(capsys, *args) -> tuple[int, str]:
    code = main(["sweep", str(REPO / "sweeps" / "tiny.yaml"), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_dry_run_names_the_node_types_the_trials_scale_up(capsys):
    code, out = dry_run(capsys, *ON_THE_TWIN, "--dry-run", "--cluster", str(TWIN_YAML))
    assert code == 0, out
    section = out[out.index("Cluster ("):out.index("Checks")]
    assert "trial driver {CPU: 0, memory: 512 MiB, node:__internal_head__: 0.001}: ray.head.default\n" in section
    assert "train worker {CPU: 1, gpu8_h100: 1}: gpu8_h100 (0 at start, up to 2)" in section
    assert "evaluator replica {CPU: 0, GPU: 0, gpu1_h100: 1}: gpu1_h100 (0 at start, up to 2)" in section
    assert "scaled up from zero when trials ask: gpu8_h100, gpu1_h100\n" in section


def test_in_local_mode_the_trial_reserves_what_its_training_needs(capsys):
    # tiny.yaml trains in the trial's own process (num_workers: 0): no Train worker to place, and the trial
    # goes where its training's resources are.
    code, out = dry_run(capsys, "base.scaling.resources_per_worker={CPU: 1, gpu8_h100: 1}", "--dry-run",
                        "--cluster", str(TWIN_YAML))
    assert code == 0, out
    assert "trial driver: {CPU: 1, memory: 512 MiB, gpu8_h100: 1} (it trains in its own process: Ray Train's " \
           "local mode, lora fine-tuning)\ntrain workers: none" in out.replace("\n  ", "\n")
    section = out[out.index("Cluster ("):out.index("Checks")]
    assert "trial driver {CPU: 1, memory: 512 MiB, gpu8_h100: 1}: gpu8_h100 (0 at start, up to 2)" in section
    assert "train worker" not in section


def test_the_dry_run_reads_gpus_from_aws_instance_types(capsys):
    code, out = dry_run(capsys, "base.scaling.num_workers=8", "base.scaling.use_gpu=true",
                        "base.scaling.resources_per_worker={CPU: 4, GPU: 1}", "--dry-run", "--cluster",
                        str(CLUSTER_YAML))
    assert code == 0, out
    assert "all 8 on one node: gpu8_h100\n" in out  # only the p5.48xlarge has 8 GPUs
    # The evaluator asks for no GPU here, so it waits on the head and nothing scales for it.
    assert "evaluator replica {CPU: 0, GPU: 0}: ray.head.default while it has room" in out


@pytest.mark.parametrize(("workers", "field"), [
    ("1", "base.scaling"),
    # tiny.yaml's own local mode: the trial trains, so its request holds the worker's.
    ("0", "resources_per_trial + base.scaling.resources_per_worker (local mode)"),
])
def test_a_request_no_node_type_can_hold_fails_naming_the_field(capsys, workers, field):
    code, out = dry_run(capsys, f"base.scaling.num_workers={workers}",
                        "base.scaling.resources_per_worker={CPU: 1, gpu4_a100: 1}", "--dry-run", "--cluster",
                        str(TWIN_YAML))
    assert code == 2
    assert f"{field}: no node type in" in out and "gpu4_a100" in out


@pytest.mark.parametrize(("args", "error"), [
    (["--cluster", "cluster.local.yaml"], "--cluster is read by --dry-run only"),
    (["--dry-run", "--cluster", "no-such-cluster.yaml"], "--cluster: file no-such-cluster.yaml does not exist"),
])
def test_cluster_option_errors(capsys, args, error):
    code, out = dry_run(capsys, *args)
    assert code == 2 and error in out
