"""A Ray session the project starts itself: no dashboard, and no warning about the state API it lacks."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from trainables.local_ray import CLEANER_LOGGER, UNREACHABLE_STATE_API, drop_unreachable_state_api_warnings


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
