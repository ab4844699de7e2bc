"""Early stopping across objectives: stop a trial whose readings at an epoch are dominated by the sweep's points.

Ray Tune's schedulers (ASHA, HyperBand, median stopping) and Optuna's pruners rank trials on one metric.
The sweep has several, and every reading carries a 95% interval, so the rule here is a dominance test
that gives each trial the benefit of its doubt:

    a trial is stopped at epoch K when some recorded point's readings are at least as good as the best
    end of the trial's 95% interval on every objective, and better on one.

The trial's whole interval box then lies in the region a measured point already dominates: even its
most favourable reading could not reach the front. The points are every non-collapsed reading a
finished trial reported last, and with `evaluate_epochs: fidelity` (each epoch a point of its own)
every non-collapsed reading any trial reported. A trial whose epoch-K readings are flagged collapsed
(mostly incoherent replies, never a front point) is stopped too, when `stop_collapsed` says so.

`dominating_point` is the rule alone, which `bench.replay` also runs against recorded tables; the
scheduler adds the bookkeeping Tune needs. A stopped trial keeps its last evaluated readings: its MLflow
run is tagged with the epoch and the reason (`STOPPED_EPOCH_TAG`, `STOPPED_REASON_TAG`) and ends FINISHED.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from evaluators.reading import Reading

STOPPED_EPOCH_TAG = "early_stopping.epoch"
STOPPED_REASON_TAG = "early_stopping.reason"
EPOCH_KEY = "epoch"  # the epoch a report reads (sweeps.trial reports it with every epoch's readings)


def best_end(reading: Mapping[str, Any], name: str, direction: str) -> float:
    """Return the most favourable end of a reading's 95% interval (its value when it has no interval)."""
    return Reading.read(reading, name).best_end(direction)


def dominating_point(reading: Mapping[str, Any], points: Sequence[Mapping[str, Any]],
                     directions: Mapping[str, str]) -> Mapping[str, Any] | None:
    """Return a point whose values are at least as good as `reading`'s best interval end on every objective and
    better on one, or None when no point rules the reading out."""
    for point in points:
        if any(point.get(name) is None for name in directions):
            continue
        at_least, better = True, False
        for name, direction in directions.items():
            ours, theirs = best_end(reading, name, direction), float(point[name])
            sign = 1.0 if direction == "min" else -1.0
            if sign * theirs > sign * ours:
                at_least = False
                break
            better = better or sign * theirs < sign * ours
        if at_least and better:
            return point
    return None


def stop_reason(reading: Mapping[str, Any], points: Sequence[Mapping[str, Any]], directions: Mapping[str, str],
                stop_collapsed: bool) -> str | None:
    """Return why a trial with this epoch's `reading` should stop (a sentence), or None to go on."""
    if stop_collapsed and reading.get("collapsed"):
        return "collapsed: mostly incoherent replies"
    point = dominating_point(reading, points, directions)
    if point is None:
        return None
    readings = ", ".join(f"{name} {float(point[name]):.1f}" for name in directions)
    return f"dominated: every 95% interval is beaten by {point.get('trial_id', 'a recorded point')} ({readings})"


class DominatedTrialStopper(FIFOScheduler):
    """Tune scheduler: trials run in order (FIFO); at each epoch's report, `stop_reason` may stop one.

    It holds only plain data, so Tune can pickle it with the sweep's state. A resumed sweep gets it back as
    Tune saved it with the Tuner, before any trial ran: it knows fewer points and stops less, never wrongly.
    """

    def __init__(self, directions: Mapping[str, str], *, epoch_points: bool, grace_epochs: int = 1,
                 stop_collapsed: bool = False, tracking_uri: str | None = None, experiment_id: str | None = None,
                 parent_run_id: str | None = None):
        super().__init__()
        self.directions = dict(directions)
        self.epoch_points, self.grace_epochs, self.stop_collapsed = epoch_points, grace_epochs, stop_collapsed
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.points: list[dict[str, Any]] = []
        self.stopped: dict[str, tuple[int, str]] = {}  # trial id -> (epoch, reason)

    def _point(self, trial, result: Mapping[str, Any]) -> dict[str, Any] | None:
        if result.get("collapsed") or any(name not in result for name in self.directions):
            return None
        epoch = result.get(EPOCH_KEY)
        label = f"{trial.trial_id}@e{int(epoch)}" if self.epoch_points and epoch is not None else trial.trial_id
        return {"trial_id": label, **{name: float(result[name]) for name in self.directions}}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get(EPOCH_KEY)
        if epoch is None or any(name not in result for name in self.directions):
            return TrialScheduler.CONTINUE
        # With fidelity the trial's own earlier epochs count too: a run that got worse on every objective stops.
        reason = (stop_reason(result, self.points, self.directions, self.stop_collapsed)
                  if epoch >= self.grace_epochs else None)
        if self.epoch_points and (point := self._point(trial, result)) is not None:
            self.points.append(point)  # each epoch is a point of the front
        if reason is None:
            return TrialScheduler.CONTINUE
        self.stopped[trial.trial_id] = (int(epoch), reason)
        self._record(result, int(epoch), reason)  # the driver's TrialRecorder prints the trial's line from it
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        if not self.epoch_points and trial.trial_id not in self.stopped and (point := self._point(trial, result)):
            self.points.append(point)  # a trial's last reading is its point

    def _record(self, result: Mapping[str, Any], epoch: int, reason: str) -> None:
        """End the trial's MLflow run FINISHED with that epoch's readings, tagged with the epoch and reason.

        The driver does it, not the trial: Tune may end the trial's process before its thread, blocked in the
        report that is being answered, runs again. The trial adds its time by phase when it does run.
        """
        run_id = result.get("mlflow_run_id")
        if not (self.tracking_uri and run_id):
            return
        from sweeps import tracking

        client = tracking.client(self.tracking_uri)
        client.set_tag(run_id, STOPPED_EPOCH_TAG, str(epoch))
        client.set_tag(run_id, STOPPED_REASON_TAG, reason)
        client.set_tag(run_id, tracking.COLLAPSED_TAG, "true" if result.get("collapsed") else "false")
        if "time_total_s" in result:
            tracking.log_metrics(client, run_id, {f"{tracking.TIME_PREFIX}trial_s": float(result["time_total_s"])})
        client.set_terminated(run_id, status="FINISHED")


def was_stopped(tags: Mapping[str, str]) -> bool:
    """Return whether a trial's MLflow tags say the early-stopping scheduler stopped it."""
    return STOPPED_EPOCH_TAG in tags
