"""Fixtures shared by the test suite: tiny models built in code and the optional ../shared/data folder."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.local_ray import start_ray  # ray.init, started again if Ray's node start times out

# Keep every test off the network and off the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Idle OpenMP threads sleep instead of spinning. The tests run several torch processes on few cores (pytest -n,
# a sweep's trials beside its Serve replicas, CI's vLLM tests beside the suite), and libgomp's spinning threads
# take the cores the others need: three tiny-model trainings at once took 79 s spinning and 23 s sleeping, two 49
# and 15 s; one alone is slower sleeping, 15 s against 9 (bench/omp_wait.py, docs/benchmarks.md). It changes no
# arithmetic, only how idle threads wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The MLflow servers the tests start (the outage test, the cluster rehearsal) run no MLflow jobs: the project
# uses none, and each server's eight job-consumer processes took 17-19 of its 33-34 CPU-seconds over its first
# minute, on the cores the tests share (measured with `mlflow server` alone, two runs each way).
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The modules that take most of the suite's time (docs/benchmarks.md, "The test suite"), heaviest first.
# `pytest -n` hands out whole modules in collection order, so these start first and the short modules fill
# in around them, instead of one long module starting last while the other workers sit idle.
HEAVIEST_MODULES = ("test_sweep_run.py", "test_sweep_faults.py", "test_cluster_rehearsal.py")


def pytest_collection_modifyitems(config, items):
    """Order modules: the heaviest, then those with slow tests, then the rest; tests keep their order within."""
    def weight(module: str) -> int:
        if module in HEAVIEST_MODULES:
            return HEAVIEST_MODULES.index(module)
        return len(HEAVIEST_MODULES) + (0 if module in slow_modules else 1)

    slow_modules = {item.path.name for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: weight(item.path.name))  # stable: the order within each module is kept


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real benchmark samples; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real data samples are only present on dev and CI machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def char_tokenizer():
    from trainables.tiny.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A randomly initialised tiny Qwen2 model and its tokenizer saved in HF format."""
    from trainables.tiny.model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-random")
    build_tiny_model(char_tokenizer, seed=0).save_pretrained(out)
    char_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory, tiny_model_dir) -> Path:
    """Local refusal and reasoning data in the tiny formats, beside the random-weight tiny model."""
    from trainables.tiny import tasks

    folder = tmp_path_factory.mktemp("assets")
    with (folder / "refusals.jsonl").open("w") as f:
        for request in tasks.harmful_requests("train"):
            f.write(json.dumps(tasks.refusal_row(request)) + "\n")
    with (folder / "reasoning.jsonl").open("w") as f:
        for e in tasks.reasoning_examples(64, seed=1):
            f.write(json.dumps({"prompt": e.prompt, "thinking": e.thinking, "answer": e.answer}) + "\n")
    return folder


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now, and that nothing started later takes.

    Chosen below the kernel's ephemeral range and above Ray's worker ports (10002-19999): the processes a
    test starts afterwards (Ray's servers, its workers) bind port 0 and get ephemeral ports, so a port the
    kernel handed out here could be theirs by the time the test binds it.
    """
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    # The system's randomness, not the `random` module's: tests seed that one (training does), and two
    # test processes (pytest -n) seeded alike would pick the same ports at once.
    candidates = range(20000, max(20001, ephemeral_low))
    for port in random.SystemRandom().sample(candidates, min(200, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a machine with no such range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def http_port():
    """A local Ray with Serve on a free 127.0.0.1 port, for one test module; shut down after it."""
    import ray
    from ray import serve

    port = free_port()
    start_ray(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def lively_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A random tiny Qwen2 with large weights, so greedy replies differ from prompt to prompt."""
    from trainables.tiny.model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-lively")
    build_tiny_model(char_tokenizer, seed=1, initializer_range=0.3).save_pretrained(out)
    char_tokenizer.save_pretrained(out)
    return out


AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def client_env(home: Path, **auth: str) -> dict[str, str]:
    """Return the environment of a Ray client whose only credentials are `auth` and what `home` holds.

    An empty `home` has no ~/.ray/auth_token, so with no `auth` the client presents no token at all.
    """
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARIABLES}
    # This interpreter's scripts (`ray`) first, also when its venv was not activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "HOME": str(home), "PATH": path, **auth}


def join_ray(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `ray.init(address=...)` in a new process with `env`; it prints "joined" when the cluster lets it in."""
    script = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print('joined')"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
