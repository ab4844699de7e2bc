"""The request window, timeouts and re-sends of `complete_all`, with scripted calls (Serve's own run in test_serve*)."""

from __future__ import annotations

import pytest
from ray.exceptions import RayActorError

from evaluators import dispatch
from evaluators.dispatch import EvaluationIncomplete, GenerationTimeout, complete_all


class ScriptedCall:
    def __init__(self, outcome):
        self.outcome, self.cancelled = outcome, False

    def wait(self, timeout_s: float):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_BACKOFF_S", 0.0)


def test_requests_are_resent_after_a_replica_dies_and_follow_ups_are_sent():
    failures = {"a": 2}
    sent, answers = [], {}

    def send(request):
        sent.append(request)
        if failures.get(request, 0):
            failures[request] -= 1
            return ScriptedCall(RayActorError())
        return ScriptedCall(f"reply to {request}")

    def on_response(index, response):
        answers.setdefault(index, []).append(response)
        return "a2" if response == "reply to a" else None  # one follow-up, as budget forcing sends

    complete_all(send, ["a", "b"], on_response, window=2, timeout_s=5, max_retries=2, what="benchmark t")
    assert answers == {0: ["reply to a", "reply to a2"], 1: ["reply to b"]}
    assert sent.count("a") == 3


def test_when_retries_run_out_nothing_partial_is_returned():
    answers = []
    with pytest.raises(EvaluationIncomplete, match="benchmark t: a Serve replica failed.*re-sent 1 times"):
        complete_all(lambda r: ScriptedCall(RayActorError() if r == "b" else r), ["a", "b", "c"],
                     lambda i, response: answers.append(response), window=1, timeout_s=5, max_retries=1,
                     what="benchmark t")
    assert answers == ["a"]


def test_a_timeout_names_the_setting_and_cancels_what_is_in_flight():
    calls = []

    def send(request):
        calls.append(ScriptedCall(TimeoutError() if request == "slow" else request))
        return calls[-1]

    with pytest.raises(GenerationTimeout, match="benchmark math500: .*request_timeout_s=30s"):
        complete_all(send, ["slow", "x", "y"], lambda i, r: None, window=3, timeout_s=30, max_retries=3,
                     what="benchmark math500")
    assert [call.cancelled for call in calls] == [False, True, True]


def test_errors_a_new_replica_cannot_fix_are_raised_at_once():
    sent = []

    def send(request):
        sent.append(request)
        return ScriptedCall(ValueError("completion request needs a string `prompt`"))

    with pytest.raises(ValueError, match="needs a string"):
        complete_all(send, [{}], lambda i, r: None, window=1, timeout_s=5, max_retries=3, what="benchmark t")
    assert len(sent) == 1
