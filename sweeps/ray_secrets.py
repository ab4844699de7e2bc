"""Keep cloud credentials out of Ray's logs: Tune must not copy them into each trial's runtime environment.

Ray Tune copies `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and `AWS_SECURITY_TOKEN`
from the driver's environment into every trial actor's `runtime_env.env_vars`, and Ray's runtime-env
agent writes each runtime environment it sets up, values included, to `runtime_env_agent.log`. The copy
adds nothing where the sweep runs: a local Ray's workers inherit the driver's environment through the
node, and on a cluster the nodes read credentials from their instance profile (`cluster.yaml`) or from
the environment `ray start` was given. So the sweep takes those names out of Tune's list.
"""

from __future__ import annotations

SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID")


def stop_tune_copying_credentials() -> None:
    """Remove the credential names from the set Tune propagates into trial actors (idempotent)."""
    from trainables.private_apis import stop_tune_propagating

    stop_tune_propagating(SECRET_ENV_VARS)
