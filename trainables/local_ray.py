"""The Ray session a command starts on this machine when none is running: no dashboard, and quiet about it.

The dashboard's polling takes CPU from training on a laptop, so a command that starts its own Ray leaves
it out. Ray's state API is served by the dashboard, though, and each Ray Train run starts a placement-group
cleaner that asks that API every second whether the run's controller is still alive. Without the
dashboard every ask fails and logs a warning (about 160 lines over the tiny LRM build). The cleaner exists
to free a dead controller's resources on a long-lived cluster; a local session ends with its command and
frees everything then. So the session installs a setup hook in every worker that drops that one warning,
and nothing else.

This module is imported in every worker process of such a session: it must stay free of heavy imports.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from trainables.private_apis import PLACEMENT_GROUP_CLEANER_LOGGER, existing_cluster_address

UNREACHABLE_STATE_API = "Failed to query Ray Train Controller actor state"
SETUP_HOOK = f"{__name__}.drop_unreachable_state_api_warnings"


class _DropUnreachableStateApi(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(UNREACHABLE_STATE_API)


def drop_unreachable_state_api_warnings() -> None:
    """Ray's worker setup hook: the placement-group cleaner's logger drops its "state API unavailable" warning."""
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).addFilter(_DropUnreachableStateApi())


_started_here = False


def started_here() -> bool:
    """True when `init_local_ray` started this process's Ray session: one machine, which no autoscaler grows."""
    import ray

    return _started_here and ray.is_initialized()


# What Ray's GCS answers a client that presents no token, or the wrong one, for a cluster with token auth
# ("Unauthenticated: RPC error: InvalidAuthToken: Authentication token is missing or incorrect", Ray 2.60).
REFUSED_TOKEN = "InvalidAuthToken"


# What Ray 2.60 raises when a starting node misses one of its start-up windows, which a machine busy with other
# work can: its raylet's 30 s to register with the GCS (a constant in node.py, with no setting), and the GCS's
# 30 s to write the port file it listens on (`wait_for_persisted_port` in _raylet). The start is tried again,
# after ending the processes the failed start left behind; any other failure is raised at once.
START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")
START_ATTEMPTS = 3


def init_local_ray(**kwargs: Any) -> None:
    """`ray.init` without the dashboard, for a command that starts its own session; kwargs go to `ray.init`.

    Where a cluster is already running (RAY_ADDRESS, or `ray start` on this node), `ray.init` joins it,
    dashboard and all, and the hook is harmless there. A session started here keeps Ray's default token
    authentication (a token in ~/.ray/auth_token, made on first use); a cluster that refuses this
    process's token is a ConfigError that says how to get the right one. A session started here is
    started again if its node times out while starting (`start_ray`).
    """
    import ray

    from trainables.schema import ConfigError

    global _started_here
    joins = kwargs.get("address") not in (None, "local") or existing_cluster_address() is not None
    try:
        start = ray.init if joins else start_ray  # only a session started here has a node start to retry
        start(include_dashboard=False, runtime_env={"worker_process_setup_hook": SETUP_HOOK}, **kwargs)
        _started_here = not joins
    except ConnectionError as err:
        if REFUSED_TOKEN not in f"{err} {err.__cause__}":
            raise
        raise ConfigError(
            f"the Ray cluster at {os.environ.get('RAY_ADDRESS', 'this node')} refused this client's token (none, or "
            "another cluster's). Fetch the cluster's token and point Ray at it: RAY_AUTH_MODE=token "
            "RAY_AUTH_TOKEN_PATH=<file> (docs/cluster.md, Authentication); on the cluster's head it is "
            "~/.ray/auth_token") from None


def start_ray(**kwargs: Any) -> None:
    """`ray.init(**kwargs)` for a new local session, started again when its node times out while starting."""
    import ray

    for attempt in range(1, START_ATTEMPTS + 1):
        before = _child_processes()
        try:
            ray.init(**kwargs)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for a node that did not start
            if not any(timeout in str(err) for timeout in START_TIMEOUTS) or attempt == START_ATTEMPTS:
                raise
            ray.shutdown()
            _end(_child_processes() - before)
            print(f"Ray's node did not start within Ray's 30 s (a busy machine?): {err}; starting Ray again, "
                  f"attempt {attempt + 1} of {START_ATTEMPTS}", file=sys.stderr, flush=True)


def _child_processes() -> set:
    """Return this process's descendants (psutil.Process objects)."""
    import psutil

    return set(psutil.Process().children(recursive=True))


def _end(processes: set) -> None:
    """SIGKILL what a failed Ray start left running (its GCS, raylet and agents), and wait for them to go."""
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(list(processes), timeout=30)
