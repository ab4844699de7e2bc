"""Record a dense grid of real trials of a sweep's search space, as a real sweep, into a table under bench/results/.

    python -m bench.record_grid --seed 0                 # sweeps/tiny.yaml on the tiny LRM of seed 0
    python -m bench.record_grid --seed 1 --levels train.learning_rate=5 --levels reasoning_mix=3

The grid: each `choice` keeps its values and each `int` range every whole number; a float range gets
`--levels` values (log-spaced for loguniform), its ends included. The sweep runs with Optuna's grid sampler,
in a fresh folder, through the same `run_sweep` as `safetytax sweep`, so every point is a real trial: trained,
evaluated, judged and recorded in MLflow. The table (bench/grid_table.py) is then read back from MLflow
and the trials' sample files. `python -m bench.replay` replays samplers against it.

With `--epochs-as-fidelity`, `train.epochs` (an int range of the space) leaves the grid: each grid point
trains once to the range's top, reading every epoch (`evaluate_epochs: fidelity`, a constant schedule), and
the table holds a point per epoch, `train.epochs` 1 to the top, with what that epoch's stage cost
(`GridPoint.stage`). The k-epoch point is exactly the k-epoch run (tests/test_train_resume.py), so the
replay can price the same grid as separate runs, as one run read at every epoch, and with early stopping.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.grid_table import GridPoint, GridTable, item_letters
from evaluators.reading import Reading, flat_keys

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_LEVELS = {"loguniform": 5, "uniform": 3}
# The readings a table keeps for each point (those the sweep reports, with their intervals).
READINGS = ("harmful_score", "harmful_score_plus", "reasoning_accuracy", "refusal_rate")



def _table_reading(metrics: dict, name: str) -> dict:
    """Return reading `name` of a run's metrics as the table stores it: value, ci_low, ci_high, n."""
    reading = Reading.read(metrics, name)
    return {"value": reading.value, "ci_low": reading.low, "ci_high": reading.high, "n": reading.n}


def grid_of(space: dict, levels: dict[str, int]) -> dict[str, list[Any]]:
    """Return {path: grid values} for a spec's search space (ParamSpec objects)."""
    from sweeps.search_space import grid_values

    grid = {}
    for path, param in space.items():
        if param.kind in ("choice", "int"):
            grid.update(grid_values({path: param}))
            continue
        low, high = param.loguniform if param.kind == "loguniform" else param.uniform
        k = levels.get(path, DEFAULT_LEVELS[param.kind])
        if k < 2:
            raise SystemExit(f"--levels {path}={k}: a range needs at least 2 levels (its ends)")
        if param.kind == "loguniform":
            grid[path] = [float(f"{math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (k - 1)):.4g}")
                          for i in range(k)]
        else:
            grid[path] = [round(low + i * (high - low) / (k - 1), 6) for i in range(k)]
    return grid


def _yaml_flow(values: list[Any]) -> str:
    return "{choice: " + json.dumps(values) + "}"


def _parse_levels(items: list[str]) -> dict[str, int]:
    levels = {}
    for item in items:
        path, _, count = item.partition("=")
        if not count.isdigit():
            raise SystemExit(f"--levels {item!r}: write PATH=COUNT, e.g. train.learning_rate=5")
        levels[path] = int(count)
    return levels


def _git_commit() -> str | None:
    """Return the checkout's commit, with -dirty when it has uncommitted changes (trainables.provenance reads it)."""
    from trainables.provenance import source_revision

    revision = source_revision()
    if revision["commit"] is None:
        return None
    return revision["commit"] + ("-dirty" if revision["dirty"] else "")


def read_points(client, outcome, grid: dict[str, list[Any]], kinds: dict[str, str], workdir: Path,
                evaluations: Path | None = None) -> list[GridPoint]:
    """Return one GridPoint per finished trial of the recorded sweep (with `evaluations`, the folder of the
    trials' per-epoch evaluations: one per epoch of each trial), in the grid's order."""
    from sweeps import tracking
    from sweeps.tracking import TIME_PREFIX

    points = []
    for run in tracking.trial_runs(client, outcome.experiment_id, outcome.parent_run_id):
        if run.info.status != "FINISHED":
            raise SystemExit(f"trial {run.data.tags.get(tracking.TRIAL_ID_TAG)} did not finish "
                             f"({run.info.status}); the table would have a hole; run the command again")
        if evaluations is not None:
            points += _epoch_points(client, run, grid, kinds, evaluations)
            continue
        metrics, params = run.data.metrics, run.data.params
        point = {path: _typed(params[path], grid[path]) for path in grid}
        readings = {name: _table_reading(metrics, name) for name in READINGS if name in metrics}
        steps = len(client.get_metric_history(run.info.run_id, "train_loss"))
        items_by_benchmark = {}
        folder = Path(client.download_artifacts(run.info.run_id, "samples", str(workdir)))
        for benchmark, kind in kinds.items():
            records = [json.loads(line) for line in (folder / f"{benchmark}.jsonl").read_text().splitlines() if line]
            items_by_benchmark[benchmark] = item_letters(kind, records)
        points.append(GridPoint(
            point=point, readings=readings, collapsed=bool(metrics.get("collapsed")),
            incoherent_rate=metrics.get("incoherent_rate"),
            cost={"train_steps": steps, "items": sum(len(v["verdicts"]) for v in items_by_benchmark.values()),
                  "seconds": {k[len(TIME_PREFIX):-2]: round(v, 3) for k, v in metrics.items()
                              if k.startswith(TIME_PREFIX)}},
            items=items_by_benchmark, trial_id=run.data.tags.get(tracking.TRIAL_ID_TAG, "")))
    order = {tuple(values): i for i, values in enumerate(itertools.product(*grid.values()))}
    return sorted(points, key=lambda p: order.get(tuple(p.point[path] for path in grid), len(order)))


def _epoch_points(client, run, grid: dict[str, list[Any]], kinds: dict[str, str],
                  evaluations: Path) -> list[GridPoint]:
    """Return a GridPoint per evaluated epoch of one trial that read every epoch (evaluate_epochs: fidelity)."""
    from evaluators.service import sample_file_name
    from sweeps import tracking
    from sweeps.tracking import EPOCH_TIME_PREFIX

    run_id, trial_id = run.info.run_id, run.data.tags.get(tracking.TRIAL_ID_TAG, "")

    def at_steps(name: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, name)}

    epochs = sorted(at_steps("epoch"))
    history = {name: at_steps(name) for name in
               [*(key for r in READINGS for key in flat_keys(r)),
                "collapsed", "incoherent_rate", "train/steps",
                *(f"{EPOCH_TIME_PREFIX}{phase}_s" for phase in ("train", "generation", "judging"))]}
    fixed = {path: _typed(run.data.params[path], grid[path]) for path in grid if path != EPOCHS_PATH}
    points, steps, train_s = [], 0, 0.0
    for epoch in epochs:
        seconds = {phase: round(history[f"{EPOCH_TIME_PREFIX}{phase}_s"][epoch], 3)
                   for phase in ("train", "generation", "judging")}
        steps += int(history["train/steps"][epoch])
        train_s += seconds["train"]
        at_epoch = {key: values[epoch] for key, values in history.items() if epoch in values}
        readings = {name: _table_reading(at_epoch, name) for name in READINGS if name in at_epoch}
        items = {}
        for benchmark, kind in kinds.items():
            path = evaluations / trial_id / f"epoch_{epoch}" / sample_file_name(benchmark)
            items[benchmark] = item_letters(kind, [json.loads(line) for line in path.read_text().splitlines() if line])
        evaluation_s = seconds["generation"] + seconds["judging"]
        points.append(GridPoint(
            point={**fixed, EPOCHS_PATH: epoch}, readings=readings, collapsed=bool(history["collapsed"][epoch]),
            incoherent_rate=history["incoherent_rate"].get(epoch),
            # What this epoch would cost as a run of its own: its epochs of training, then one evaluation.
            cost={"train_steps": steps, "items": sum(len(v["verdicts"]) for v in items.values()),
                  "seconds": {"train": round(train_s, 3), "generation": seconds["generation"],
                              "judging": seconds["judging"], "trial": round(train_s + evaluation_s, 3)}},
            items=items, trial_id=f"{trial_id}@e{epoch}",
            stage={"run": trial_id, "epoch": epoch, "train_steps": int(history["train/steps"][epoch]),
                   "seconds": seconds}))
    return points


EPOCHS_PATH = "train.epochs"


def _typed(text: str, values: list[Any]) -> Any:
    """Return the grid value whose logged text is `text` (MLflow logs params as strings)."""
    for value in values:
        if str(value) == text or (isinstance(value, float) and math.isclose(float(text), value, rel_tol=1e-9)):
            return value
    raise SystemExit(f"logged value {text!r} is not in the grid {values}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.record_grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=None, help="Sweep file whose search space is recorded (default: the "
                                                      "embedded sweeps/tiny.yaml).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the tiny LRM (tiny://lrm?seed=N); ignored "
                                                            "when the spec's model is not tiny://lrm.")
    parser.add_argument("--levels", action="append", default=[], metavar="PATH=COUNT",
                        help="Grid values of a float range, its ends included (default: 5 for loguniform, "
                             "3 for uniform). Repeat for each path.")
    parser.add_argument("--out", default=None, help="Table to write (default: bench/results/"
                                                    "grid_<spec name>_seed<N>.json).")
    parser.add_argument("--workdir", default=None, help="Folder for the sweep's MLflow store and state "
                                                        "(default: a fresh temporary folder, removed after).")
    parser.add_argument("--concurrency", type=int, default=2, help="Trials at once (max_concurrent_trials).")
    parser.add_argument("--epochs-as-fidelity", action="store_true",
                        help="Train each grid point once to the top of the train.epochs range, reading every "
                             "epoch (evaluate_epochs: fidelity), and record a point per epoch from 1 up.")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="More overrides of the spec.")
    args = parser.parse_args(argv)

    from sweeps.loader import load_spec
    from trainables.schema import ConfigError

    try:
        # The user's overrides shape the space the grid covers; a grid has no initial points.
        spec = load_spec(args.spec, ["initial_points=[]", *args.overrides])
        grid = grid_of(spec.search_space, _parse_levels(args.levels))
        swept = dict(grid)
        fidelity = []
        if args.epochs_as_fidelity:
            param = spec.search_space.get(EPOCHS_PATH)
            if param is None or param.kind != "int":
                raise ConfigError(f"--epochs-as-fidelity: search_space.{EPOCHS_PATH} must be an int range")
            del swept[EPOCHS_PATH]
            top = param.int_range[1]
            grid[EPOCHS_PATH] = list(range(1, top + 1))
            fidelity = ["evaluate_epochs=fidelity", f"base.train.epochs={top}"]
        size = math.prod(len(v) for v in swept.values())
        if fidelity:  # the whole space is replaced, so that train.epochs leaves it
            if any(param.bundles for param in spec.search_space.values()):
                raise ConfigError("--epochs-as-fidelity: a search space with bundles is not supported")
            grid_space = ["search_space=" + json.dumps({path: {"choice": values} for path, values in swept.items()})]
        else:
            grid_space = [f"search_space.{path}={_yaml_flow(values)}" for path, values in swept.items()]
        overrides = ["sampler=grid", "initial_points=[]", f"num_samples={size}",
                     f"max_concurrent_trials={args.concurrency}", f"name=grid-{spec.name}-seed{args.seed}",
                     *grid_space, *fidelity]
        if spec.base.model.startswith("tiny://lrm"):
            overrides.append(f"base.model=tiny://lrm?seed={args.seed}")
        overrides = [*args.overrides, *overrides]
    except ConfigError as err:
        print(f"record_grid: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else RESULTS / f"grid_{spec.name}_seed{args.seed}.json"
    commit = _git_commit()  # the code that runs the trials, before anything can change it
    with tempfile.TemporaryDirectory(prefix="record-grid-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        overrides += [f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db", f"optuna.storage=sqlite:///{workdir}/optuna.db",
                      f"storage_path={workdir}/runs", f"base.output_dir={workdir}/outputs"]
        try:
            grid_spec = load_spec(args.spec, overrides)
        except ConfigError as err:
            print(f"record_grid: error: {err}", file=sys.stderr)
            return 2
        print(f"recording {size} grid points of {spec.name} (" + " x ".join(f"{len(v)} {p}" for p, v in swept.items())
              + (f", every epoch up to {grid[EPOCHS_PATH][-1]} read" if fidelity else "") + f") in {workdir}",
              flush=True)
        from sweeps import tracking
        from sweeps.runner import run_sweep

        started = time.monotonic()
        outcome = run_sweep(grid_spec, verbose=0)
        if not outcome.finished:
            print("record_grid: the sweep stopped early; nothing written", file=sys.stderr)
            return 1
        client = tracking.client(outcome.tracking_uri)
        kinds = {name: _kind(name) for name in grid_spec.evaluation.benchmarks}
        evaluations = (Path(grid_spec.base.output_dir) / "evaluations" / grid_spec.name) if fidelity else None
        points = read_points(client, outcome, grid, kinds, workdir / "artifacts", evaluations)
        from sweeps.provenance import recorded

        # What the readings came from: the LRM's content hash (its build differs from machine to machine),
        # each benchmark's items hash, the judge's rules and the versions, as the sweep recorded them.
        provenance = recorded(client, outcome.parent_run_id)
    import importlib.metadata as metadata

    table = GridTable(
        about={"command": "python -m bench.record_grid " + " ".join(argv if argv is not None else sys.argv[1:]),
               "spec": args.spec or "sweeps/tiny.yaml", "overrides": args.overrides, "model": grid_spec.base.model, "seed": args.seed,
               "recorded": datetime.date.today().isoformat(), "commit": commit,
               "sweep_seconds": round(time.monotonic() - started, 1),
               "versions": {name: metadata.version(name) for name in ("torch", "transformers", "peft", "ray", "optuna")},
               "provenance": provenance},
        space={path: _space_entry(param) for path, param in spec.search_space.items()},
        grid=grid, objectives=spec.directions(), reference=spec.reference_point(), base=outcome.base,
        benchmarks=kinds, points=points)
    table.save(out)
    print(f"wrote {out}: {len(points)} points, {sum(p.collapsed for p in points)} collapsed, "
          f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
    return 0


def _kind(benchmark: str) -> str:
    from evaluators.benchmarks import get_benchmark

    return get_benchmark(benchmark).kind


def _space_entry(param) -> dict[str, Any]:
    return param.model_dump(mode="json", by_alias=True, exclude_none=True)


if __name__ == "__main__":
    sys.exit(main())
