"""The sweep's front as MLflow shows it: trial records from the child runs, tags, plots, CSV and hypervolume.

MLflow is the source of truth: a resumed sweep, or `safetytax pareto` long after, rebuilds the same
front from the child runs. Only FINISHED trials are candidates; failed ones are listed, never plotted.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from evaluators.reading import flat_keys, is_count_key
from sweeps import early_stopping, tracking
from sweeps.objectives import Constraint, feasible
from sweeps.params import PARAM_KINDS
from sweeps.pareto import hypervolume, pareto_front, reference_point
from sweeps.plots import front_png
from sweeps.plots_html import front_html
from sweeps.readings import format_reading, has_field, interval, is_collapsed, shared_count
from sweeps.spec import SweepSpec

PLOT_PNG, PLOT_HTML, FRONT_CSV = "pareto_front.png", "pareto_front.html", "pareto_front.csv"
# The point users look for: half the base model's harmful score, reasoning within 5 points of the base.
TARGET_HARM_FRACTION, TARGET_ACCURACY_DROP = 0.5, 5.0


@dataclass
class SweepLayout:
    """What the front needs to know about a sweep: objectives with directions, the reference point, searched fields."""

    directions: dict[str, str]
    reference: dict[str, float]
    searched: list[str]
    constraints: list[Constraint] = field(default_factory=list)
    epoch_points: bool = False  # evaluate_epochs: fidelity: each evaluated epoch of a trial is a point of its own

    @classmethod
    def from_spec(cls, spec: SweepSpec) -> SweepLayout:
        epoch_points = spec.evaluate_epochs == "fidelity"
        searched = [*spec.search_space, *(["train.epochs"] if epoch_points else [])]
        return cls(spec.directions(), spec.reference_point(), searched, spec.parsed_constraints(), epoch_points)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> SweepLayout:
        """Return the layout of a sweep from its parent run's params (the flattened spec)."""
        objectives = json.loads(params["objectives"])
        directions = {o["name"]: o["direction"] for o in objectives}
        reference = reference_point(directions, {o["name"]: o.get("reference") for o in objectives})
        searched = []
        for key, value in params.items():
            parts = key.split(".")
            # search_space.PATH.KIND[.BUNDLE.FIELD]: the searched path ends where its kind begins.
            kind_at = next((i for i, part in enumerate(parts) if part in PARAM_KINDS and i > 1), None)
            if parts[0] != "search_space" or kind_at is None or value == "null":
                continue
            path = ".".join(parts[1:kind_at])
            if path not in searched:
                searched.append(path)
        constraints = [Constraint.parse(text) for text in json.loads(params.get("constraints", "[]"))]
        epoch_points = params.get("evaluate_epochs") == "fidelity"
        if epoch_points:  # each epoch is a point: its epoch count is shown as if searched
            searched.append("train.epochs")
        return cls(directions, reference, searched, constraints, epoch_points)

    @property
    def group_by(self) -> str | None:
        """Return the searched field that names a trial's data source (a bundle, or a file), or None."""
        return next((path for path in ("data", "data.path") if path in self.searched), None)


def target_bounds(base: dict[str, float]) -> dict[str, float] | None:
    """Return {harmful_score: at most, reasoning_accuracy: at least} for the target region, or None without a base."""
    if "harmful_score" not in base or "reasoning_accuracy" not in base:
        return None
    return {"harmful_score": base["harmful_score"] * TARGET_HARM_FRACTION,
            "reasoning_accuracy": base["reasoning_accuracy"] - TARGET_ACCURACY_DROP}


def in_target(trials: list[dict], base: dict[str, float]) -> list[int]:
    """Return the indices of finished trials inside the target region (none without a base point)."""
    bounds = target_bounds(base)
    if bounds is None:
        return []
    return [i for i, t in enumerate(trials)
            if not t.get("collapsed") and t.get("harmful_score") is not None and t.get("reasoning_accuracy") is not None
            and t["harmful_score"] <= bounds["harmful_score"]
            and t["reasoning_accuracy"] >= bounds["reasoning_accuracy"]]


def describe_target(trials: list[dict], base: dict[str, float]) -> str:
    """Return one line saying which trials, if any, halve the base model's harm at little cost in reasoning."""
    bounds = target_bounds(base)
    if bounds is None:
        return "target: no base-model point, so no target region"
    hits = [trials[i]["trial_id"] for i in in_target(trials, base)]
    region = (f"harmful_score <= {bounds['harmful_score']:.1f} and reasoning_accuracy >= "
              f"{bounds['reasoning_accuracy']:.1f}: half the base model's harm, at most {TARGET_ACCURACY_DROP:g} "
              "points of reasoning lost")
    return f"target ({region}): " + (f"reached by {', '.join(hits)}" if hits else "no trial reaches it")


def cheapest_feasible(trials: list[dict]) -> int | None:
    """Return the index of the feasible finished trial with the highest reasoning accuracy (the least tax), or None.

    Without constraints every finished trial is feasible; a collapsed one never is an option.
    """
    candidates = [i for i, t in enumerate(trials) if t.get("status") == "FINISHED" and t.get("feasible") is not False
                  and not t.get("collapsed") and t.get("reasoning_accuracy") is not None]
    return max(candidates, key=lambda i: (trials[i]["reasoning_accuracy"], -trials[i].get("harmful_score", 0.0)),
               default=None)


def describe_cheapest(trials: list[dict], constraints: list[Constraint]) -> str | None:
    """Return one line naming the cheapest feasible trial and its readings, or saying that none is feasible.

    None without constraints: every trial is then "feasible", and the line would only name the least-aligned one.
    """
    if not constraints:
        return None
    bounds = " and ".join(map(str, constraints))
    best = cheapest_feasible(trials)
    if best is None:
        return f"cheapest feasible trial ({bounds}): none is feasible"
    t = trials[best]
    readings = ", ".join(f"{name}={t[name]:.1f}" for name in ("harmful_score", "reasoning_accuracy") if name in t)
    group = f", {t['group']}" if t.get("group") else ""
    return f"cheapest feasible trial ({bounds}): {t['trial_id']} ({readings}{group})"


def trial_records(client, experiment_id: str, parent_run_id: str, layout: SweepLayout) -> list[dict]:
    """Return one record per child run: trial id, status, objective values (finished runs only), params, error."""
    records = []
    for run in tracking.trial_runs(client, experiment_id, parent_run_id):
        tags, metrics = run.data.tags, run.data.metrics
        record = {"trial_id": tags.get(tracking.TRIAL_ID_TAG, ""), "run_id": run.info.run_id,
                  "status": run.info.status, "params": {p: run.data.params.get(p) for p in layout.searched},
                  "checkpoint_dir": tags.get("checkpoint_dir", ""),
                  "seconds": {k[len(tracking.TIME_PREFIX):-len("_s")]: v for k, v in metrics.items()
                              if k.startswith(tracking.TIME_PREFIX) and k.endswith("_s")}}
        if layout.group_by:
            record["group"] = record["params"].get(layout.group_by)
        if run.info.status == "FINISHED":
            for name in layout.directions:
                for key in flat_keys(name):
                    if key in metrics:
                        record[key] = metrics[key]
            record["collapsed"] = tags.get(tracking.COLLAPSED_TAG) == "true"
            record.update({c.name: metrics[c.name] for c in layout.constraints if c.name in metrics})
        # Unknown (None) for unfinished trials and for sweeps without constraints, so tables stay quiet there.
        known = run.info.status == "FINISHED" and layout.constraints
        record["feasible"] = feasible(record, layout.constraints) if known else None
        if tags.get(tracking.ERROR_TAG):
            record["error"] = tags[tracking.ERROR_TAG].strip().splitlines()[-1]
        if early_stopping.was_stopped(tags):  # the scheduler stopped it: its readings are those of that epoch
            record["stopped_at"] = int(tags[early_stopping.STOPPED_EPOCH_TAG])
            record["stopped_reason"] = tags.get(early_stopping.STOPPED_REASON_TAG, "")
            record["saved_s"] = saved_seconds(client, run, record["stopped_at"])
        if layout.epoch_points and run.info.status == "FINISHED":
            records.extend(epoch_records(client, run.info.run_id, record, layout))
        else:
            records.append(record)
    return records


def epoch_records(client, run_id: str, record: dict, layout: SweepLayout) -> list[dict]:
    """Return one record per evaluated epoch of a finished trial: `TRIAL@eK`, train.epochs = K, epoch K's readings.

    With a constant schedule epoch K of the trial's run is the K-epoch run (docs/readings.md), so each is a
    point of the search of its own; the readings are the trial run's metrics at step K.
    """
    names = ["epoch", "collapsed", *(c.name for c in layout.constraints)]
    for name in layout.directions:
        names += flat_keys(name)
    history: dict[int, dict[str, float]] = {}
    for name in dict.fromkeys(names):
        for metric in client.get_metric_history(run_id, name):
            history.setdefault(metric.step, {})[name] = metric.value
    out = []
    steps = sorted(k for k, values in history.items() if k >= 1 and "epoch" in values)
    for step in steps:
        values = history[step]
        point = {**{k: v for k, v in record.items() if k not in ("stopped_at", "saved_s")},
                 **{k: v for k, v in values.items() if k not in ("epoch", "collapsed")},
                 "trial_id": f"{record['trial_id']}@e{step}", "params": {**record["params"], "train.epochs": step},
                 "collapsed": bool(values.get("collapsed", 0.0)), "epoch": step,
                 # Only the epoch the scheduler stopped at is marked: the earlier ones are points like any other.
                 **({"stopped_at": step, "saved_s": record.get("saved_s", 0.0)}
                    if record.get("stopped_at") == step else {}),
                 # The run's time is counted once, with its last epoch: one training run made every point.
                 "seconds": record["seconds"] if step == steps[-1] else {}}
        if layout.constraints:
            point["feasible"] = feasible(point, layout.constraints)
        out.append(point)
    return out or [record]


def saved_seconds(client, run, stopped_at: int) -> float:
    """Return the seconds a trial stopped at epoch `stopped_at` did not spend: its epochs left, each priced at the
    mean of its own epochs' training, generation and judging seconds (sweeps.trial logs them per epoch)."""
    planned = int(float(run.data.params.get("train.epochs", stopped_at)))
    per_epoch = 0.0
    for phase in ("train", "generation", "judging"):
        history = client.get_metric_history(run.info.run_id, f"{tracking.EPOCH_TIME_PREFIX}{phase}_s")
        per_epoch += sum(m.value for m in history) / len(history) if history else 0.0
    return max(0, planned - stopped_at) * per_epoch


def compute_spent_and_saved(trials: list[dict]) -> tuple[float, float]:
    """Return (seconds the trials spent, seconds early stopping and racing saved them by their estimates)."""
    spent = sum(t.get("seconds", {}).get("trial", 0.0) for t in trials)
    saved = sum(t.get("saved_s", 0.0) + t.get("seconds", {}).get(tracking.RACING_SAVED, 0.0) for t in trials)
    return spent, saved


def describe_compute(trials: list[dict]) -> str | None:
    """Return one line on the compute the trials spent and what early stopping and racing saved; None when neither
    stopped anything."""
    stopped = sum(bool(t.get("stopped_at")) for t in trials)
    raced = sum(bool(t.get("seconds", {}).get(tracking.RACING_SAVED)) for t in trials)
    if not stopped and not raced:
        return None
    spent, saved = compute_spent_and_saved(trials)
    share = saved / (spent + saved) if spent + saved else 0.0
    what = [*([f"early stopping stopped {stopped}"] if stopped else []),
            *([f"racing cut {raced} short"] if raced else [])]
    return (f"compute: {spent:.0f} s of trials; {' and '.join(what)}, saving ~{saved:.0f} s ({100 * share:.0f}% of "
            "what running them in full would have cost: a stopped trial's epochs left at the mean of its own epochs, "
            "a raced evaluation's unread slices at the pace of those it read)")


def sweep_front(trials: list[dict], directions: dict[str, str]) -> list[int]:
    """Return the indices of the Pareto front among trials that did not collapse (a broken model is no option)."""
    healthy = [i for i, t in enumerate(trials) if not t.get("collapsed")]
    return [healthy[j] for j in pareto_front([trials[i] for i in healthy], directions)]


def _extra_columns(trials: list[dict]) -> list[str]:
    """Return the per-trial fields beyond the objectives that these records carry (none for old runs)."""
    return [key for key in ("group", "feasible", "collapsed") if has_field(trials, key)]


def _mark(value) -> str:
    return "-" if value is None else ("yes" if value is True else "no" if value is False else str(value))


def front_table(trials: list[dict], front: list[int], directions: dict[str, str], searched: list[str],
                base: dict[str, float]) -> str:
    """Return every trial as a text table, front first and marked with *, then the base model's point.

    A reading shows its 95% interval as `4.2 [1.1–20.2]`; the item count goes in the column header when
    every trial shares it, else after each reading. Group, feasibility and collapse get columns when the
    records carry them.
    """
    on_front = set(front)
    points = trials + ([base] if base else [])
    shared = {n: shared_count(points, n) for n in directions}
    # Every checked record carries `collapsed`; the column appears only when it has a "yes" to show.
    extra = [key for key in _extra_columns(trials) if key != "collapsed" or any(map(is_collapsed, trials))]
    columns = ["", "trial", *(n + (f" (n={shared[n]})" if shared[n] is not None else "") for n in directions),
               *extra, *searched, "status"]
    rows = []
    for i in sorted(range(len(trials)), key=lambda i: (i not in on_front, i)):
        t = trials[i]
        rows.append(["*" if i in on_front else "", t["trial_id"],
                     *(format_reading(t, n, with_n=shared[n] is None) for n in directions),
                     *(_mark(t.get(key)) if key != "collapsed" or t.get(key) else "" for key in extra),
                     *(str(t["params"].get(p)) for p in searched),
                     t["status"] + (f": {t['error']}" if t.get("error") else "")
                     + (f" (stopped early at epoch {t['stopped_at']})" if t.get("stopped_at") else "")])
    if base:
        rows.append(["", "base model", *(format_reading(base, n, with_n=shared[n] is None) for n in directions),
                     *("-" for _ in extra), *("-" for _ in searched), "reference"])
    widths = [max(len(str(r[c])) for r in [columns, *rows]) for c in range(len(columns) - 1)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + str(row[-1])
             for row in [columns, *rows]]
    summary = f"{len(front)} of {len(trials)} trials on the Pareto front (*)"
    collapsed = sum(is_collapsed(t) for t in trials)
    if collapsed:
        summary += f"; {collapsed} collapsed (mostly incoherent replies)"
    elif has_field(trials, "collapsed"):
        summary += "; none collapsed"
    stopped = sum(bool(t.get("stopped_at")) for t in trials)
    if stopped:
        summary += f"; {stopped} stopped early (dominated or collapsed at an epoch)"
    if any(interval(p, n) for p in points for n in directions):
        summary += "; [low–high]: 95% interval"
    return "\n".join([*lines, summary])


def _csv_reading(trial: dict, key: str):
    value = trial.get(key, "")
    return int(value) if is_count_key(key) and value != "" else value  # MLflow stores every count as a float


def _write_csv(path: Path, trials: list[dict], front: list[int], layout: SweepLayout) -> Path:
    readings = [key for n in layout.directions for key in flat_keys(n) if key == n or has_field(trials, key)]
    extra = _extra_columns(trials)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial_id", "run_id", *readings, *extra, *layout.searched, "checkpoint_dir"])
        for i in front:
            t = trials[i]
            writer.writerow([t["trial_id"], t["run_id"], *(_csv_reading(t, r) for r in readings),
                             *(_mark(t.get(key)) for key in extra),
                             *(t["params"].get(p) for p in layout.searched), t["checkpoint_dir"]])
    return path


def record_front(client, parent_run_id: str, layout: SweepLayout, trials: list[dict], base: dict[str, float],
                 title: str) -> tuple[list[int], float, Path | None]:
    """Tag every child run, log the plots, CSV and hypervolume to the parent; return (front, hypervolume, plot path)."""
    front = sweep_front(trials, layout.directions)
    # A run is on the front when any of its points is (with evaluate_epochs: fidelity, one point per epoch).
    runs_on_front = {trials[i]["run_id"] for i in front}
    for run_id in dict.fromkeys(t["run_id"] for t in trials):
        client.set_tag(run_id, tracking.PARETO_TAG, "true" if run_id in runs_on_front else "false")
    volume = hypervolume([trials[i] for i in front], layout.directions, layout.reference)
    finished = sum(t["status"] == "FINISHED" for t in trials)
    tracking.log_metrics(client, parent_run_id, {
        "hypervolume": volume, "front_size": len(front), "trials_finished": finished,
        "trials_failed": sum(t["status"] == "FAILED" for t in trials),
        "trials_collapsed": sum(bool(t.get("collapsed")) for t in trials)})
    client.set_tag(parent_run_id, "hypervolume_reference",
                   ", ".join(f"{k}={v:g}" for k, v in layout.reference.items()))
    client.set_tag(parent_run_id, "target", describe_target(trials, base))
    if target_bounds(base) is not None:
        tracking.log_metrics(client, parent_run_id, {"trials_in_target": len(in_target(trials, base))})
    share = orchestration_share(trials)
    if share is not None:
        tracking.log_metrics(client, parent_run_id, {"orchestration_share": share})
    spent, saved = compute_spent_and_saved(trials)
    stopped = sum(bool(t.get("stopped_at")) for t in trials)
    tracking.log_metrics(client, parent_run_id, {"compute_spent_s": spent, "compute_saved_s": saved,
                                                 "trials_stopped_early": stopped})
    target = target_bounds(base)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [
            front_png(trials, front, layout.directions, folder / PLOT_PNG, base=base, title=title, target=target),
            front_html(trials, front, layout.directions, folder / PLOT_HTML, base=base, title=title, target=target),
            _write_csv(folder / FRONT_CSV, trials, front, layout),
        ]
        for path in files:
            tracking.log_artifact(client, parent_run_id, path)
    return front, volume, tracking.artifact_local_path(client, parent_run_id, PLOT_PNG)


# MLflow's UI opens an experiment of this kind as model training (runs, metrics, charts), not as GenAI traces.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI


def tag_experiment(client, experiment_id: str) -> None:
    """Mark the sweep's experiment as model training, so MLflow's UI shows its runs and charts first."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def describe_sweep(client, parent_run_id: str, layout: SweepLayout, trials: list[dict], front: list[int],
                   base: dict[str, float], study: str | None = None) -> str:
    """Return, and set as the parent run's description, where the front is and which trial is the cheapest feasible."""
    finished = sum(t["status"] == "FINISHED" for t in trials)
    lines = [f"**Pareto front**: {len(front)} of {finished} finished trials ({len(trials)} in all). Plots: the "
             f"artifacts `{PLOT_HTML}` (interactive) and `{PLOT_PNG}`; the front's trials and their settings: "
             f"`{FRONT_CSV}`; the child runs on it carry the tag `{tracking.PARETO_TAG}=true`.",
             *(["", cheapest + "."] if (cheapest := describe_cheapest(trials, layout.constraints)) else []),
             "", describe_target(trials, base) + ".",
             *(["", computed + "."] if (computed := describe_compute(trials)) else [])]
    if study:
        lines += ["", f"Optuna's own view of the search: `optuna-dashboard {study}`."]
    note = "\n".join(lines)
    client.set_tag(parent_run_id, NOTE_TAG, note)
    return note


def orchestration_share(trials: list[dict]) -> float | None:
    """Return the fraction of the trials' wall time spent neither in training steps nor in generation, or None.

    Summed over the trials that recorded their time (trials that reused an earlier result took none);
    the rest is Ray Train start-up, model load, checkpoints, scoring and MLflow logging.
    """
    timed = [t["seconds"] for t in trials if t.get("seconds", {}).get("trial")]
    total = sum(s["trial"] for s in timed)
    if not total:
        return None
    useful = sum(s.get("train_train_steps", 0.0) + s.get("evaluation_generation", 0.0) for s in timed)
    return max(0.0, 1.0 - useful / total)


def describe_time(trials: list[dict]) -> str:
    """Return one line on where the trials' time went: the orchestration share and the main phases."""
    share = orchestration_share(trials)
    if share is None:
        return "time: no trial recorded its phases"
    timed = [t["seconds"] for t in trials if t.get("seconds", {}).get("trial")]
    phases = {"training steps": "train_train_steps", "Ray Train start-up": "train_startup",
              "generation": "evaluation_generation", "MLflow": "mlflow"}
    parts = ", ".join(f"{label} {sum(s.get(key, 0.0) for s in timed):.0f} s" for label, key in phases.items())
    return (f"time: {sum(s['trial'] for s in timed):.0f} s in {len(timed)} trials ({parts}); orchestration share "
            f"{100 * share:.0f}% (neither training steps nor generation)")


def base_point(params_metrics: dict[str, float]) -> dict[str, float]:
    """Return the base model's metrics from a parent run's metrics (logged as base_model/NAME)."""
    prefix = "base_model/"
    return {k[len(prefix):]: v for k, v in params_metrics.items() if k.startswith(prefix)}
