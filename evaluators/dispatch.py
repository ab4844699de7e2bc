"""Sending completion requests to Serve: a bounded window in flight, a timeout each, re-sends when a replica dies.

`complete_all` works with any backend: it takes `send(request)`, which returns a pending call
(`HandleCall` over a deployment handle, `FutureCall` over an HTTP thread), and a callback that may
answer a response with a follow-up request (the answer phase of budget forcing).
"""

from __future__ import annotations

import functools
import logging
import time
import urllib.error
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from trainables.schema import RunFailure

logger = logging.getLogger(__name__)
RETRY_BACKOFF_S = 0.5


class GenerationTimeout(RunFailure):
    """A generation request outlived request_timeout_s: a run-time failure (the input was valid), exit 1.

    The message names the benchmark and the settings that would make it fit.
    """


class EvaluationIncomplete(RuntimeError):
    """Requests still failed after max_retries; no partial result is reported."""


# Errors a replaced replica can fix: the replica died, was unreachable, or shed load.
SERVE_RETRYABLE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError, BackPressureError)


def is_retryable_http_error(err: Exception) -> bool:
    """Return True for HTTP errors a restarted replica can fix: refused connections and 5xx answers."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500
    return isinstance(err, (urllib.error.URLError, ConnectionError))


def _is_retryable(err: Exception) -> bool:
    return isinstance(err, SERVE_RETRYABLE) or is_retryable_http_error(err)


def complete_all(send: Callable, requests: list[dict], on_response: Callable[[int, dict], dict | None], *,
                 window: int, timeout_s: float, max_retries: int, what: str) -> None:
    """Send every request, and each follow-up `on_response(index, response)` returns, `window` at a time.

    `send(request)` returns a pending call with `wait(timeout_s)` and `cancel()`. A request whose
    replica died is re-sent up to `max_retries` times; then EvaluationIncomplete is raised.
    """
    queue: deque = deque((i, request, 0) for i, request in enumerate(requests))
    in_flight: deque = deque()
    last_pause = float("-inf")
    try:
        while queue or in_flight:
            while queue and len(in_flight) < window:
                index, request, attempts = queue.popleft()
                sent = time.monotonic()
                in_flight.append((index, request, attempts, send(request), sent, sent + timeout_s))
            index, request, attempts, call, sent, deadline = in_flight.popleft()
            try:
                response = call.wait(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise GenerationTimeout(
                    f"{what}: a request to Serve took longer than request_timeout_s={timeout_s:g}s; raise "
                    "request_timeout_s, or lower generation.max_new_tokens or max_batch_size (under evaluation. "
                    "in a sweep spec), and run again"
                ) from None
            except Exception as err:
                if not _is_retryable(err):
                    raise
                if attempts >= max_retries:
                    raise EvaluationIncomplete(
                        f"{what}: a Serve replica failed and a request was re-sent {max_retries} times "
                        f"(max_retries); the evaluation stops without a partial result. Last error: {err}"
                    ) from err
                logger.warning("%s: re-sending a request (attempt %d of %d) after %s: %s", what, attempts + 1,
                               max_retries, type(err).__name__, err)
                if sent > last_pause:  # one pause per failure: requests sent before it failed together
                    time.sleep(RETRY_BACKOFF_S * 2**attempts)  # give Serve time to replace the replica
                    last_pause = time.monotonic()
                queue.appendleft((index, request, attempts + 1))
                continue
            follow_up = on_response(index, response)
            if follow_up is not None:
                queue.append((index, follow_up, 0))
    finally:
        for _, _, _, call, _, _ in in_flight:
            call.cancel()


class HandleCall:
    """A request sent through a Serve deployment handle."""

    def __init__(self, response):
        self.response = response

    def wait(self, timeout_s: float) -> dict:
        return self.response.result(timeout_s=timeout_s)

    def cancel(self) -> None:
        self.response.cancel()


class FutureCall:
    """A request carried by a thread (HTTP to a vLLM app)."""

    def __init__(self, future):
        self.future = future

    def wait(self, timeout_s: float) -> dict:
        return self.future.result(timeout=timeout_s)

    def cancel(self) -> None:
        self.future.cancel()


@functools.cache
def http_pool(size: int) -> ThreadPoolExecutor:
    """Return the threads that carry HTTP requests to vLLM apps, shared by every evaluation of a process."""
    return ThreadPoolExecutor(max_workers=size, thread_name_prefix="safetytax-http")
