"""Replay samplers against recorded grids: how many trials, and how much compute, each needs to find the front.

    python -m bench.replay bench/results/grid_tiny_seed0.json bench/results/grid_tiny_seed1.json
    python -m bench.replay TABLE --samplers auto,random --trials 8 --replays 30 --concurrency 2

Nothing is trained. Each replay builds the sweep's own searcher (`sweeps.search_space.build_searcher`: Ray's
OptunaSearch with the sampler the spec runs, constraints included) from the spec with `sampler=NAME` and
`seed=R`, and asks it for `--trials` points. Each proposed point is snapped to the nearest recorded grid
point (per searched path: the same choice, the nearest whole number, the nearest level on a log scale for a
loguniform range); the searcher is told that point's real readings, as a sweep reports them. With
`--concurrency` above 1, trials run side by side and finish in the order their recorded wall times give,
so a sampler proposes while others are still running, as in Tune. A proposal that exactly repeats a finished
one costs nothing, as a sweep reuses an exact repeat.

After each finished trial the harness computes the sweep's front as `safetytax sweep` does (collapsed trials
excluded, `sweeps.report.sweep_front`) and its hypervolume against the table's reference point, as a
fraction of the hypervolume of the whole table's front. It prints, per sampler: that fraction after 4, 8,
16 and 32 trials (median and quartiles over the replays), and the trials and compute (training steps plus
evaluated items) needed to reach 90% and 95%.
"""

from __future__ import annotations

import argparse
import json
import heapq
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.grid_table import GridPoint, GridTable

CHECKPOINTS = (4, 8, 16, 32)
TARGETS = (0.90, 0.95)


@dataclass
class Replay:
    """One replay: after each finished trial, the hypervolume fraction reached and the compute spent so far."""

    fractions: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    repeats: int = 0
    seconds: float = 0.0
    met_bar: bool = False  # whether the replay's final front meets the bar (`meets_bar`)

    def trials_to(self, target: float) -> float:
        """Return the trials needed to reach `target` of the table's front hypervolume (inf if never)."""
        return next((k + 1 for k, f in enumerate(self.fractions) if f >= target - 1e-12), math.inf)

    def compute_to(self, target: float) -> float:
        k = self.trials_to(target)
        return self.compute[int(k) - 1] if math.isfinite(k) else math.inf

    def fraction_at(self, trials: int) -> float:
        return self.fractions[min(trials, len(self.fractions)) - 1] if self.fractions else 0.0


class Snapper:
    """Maps a proposed point to the nearest recorded grid point of a table."""

    def __init__(self, table: GridTable):
        self.table = table
        self.index = {self.key(p.point): p for p in table.points}
        missing = math.prod(len(v) for v in table.grid.values()) - len(self.index)
        if missing:
            raise ValueError(f"the table lacks {missing} grid points; record it again with python -m bench.record_grid")

    def key(self, point: dict[str, Any]) -> tuple:
        return tuple(point[path] for path in self.table.grid)

    def nearest(self, proposed: dict[str, Any]) -> GridPoint:
        return self.index[self.key({path: snap(self.table, path, proposed[path]) for path in self.table.grid})]


def snap(table: GridTable, path: str, value: Any) -> Any:
    """Return the recorded grid value of `path` nearest a proposed value: the same choice, the nearest number, the
    nearest level on a log scale for a loguniform range."""
    values = table.grid[path]
    kind = next(iter(table.space[path]))
    if kind == "choice" or not isinstance(value, (int, float)):
        if value not in values:
            raise ValueError(f"{path}={value!r} is not among the recorded values {values}")
        return value
    if kind == "loguniform":
        return min(values, key=lambda v: abs(math.log(v) - math.log(value)))
    return min(values, key=lambda v: abs(v - value))


def table_front_volume(table: GridTable) -> float:
    """Return the hypervolume of the whole table's front, as a sweep over every grid point would report it."""
    return front_volume(table.points, table)


def front_volume(points: list[GridPoint], table: GridTable) -> float:
    """Return the hypervolume of the sweep front (collapsed points excluded) of `points`."""
    from sweeps.pareto import hypervolume
    from sweeps.report import sweep_front

    records = [{**{name: p.value(name) for name in table.objectives}, "collapsed": p.collapsed} for p in points]
    front = sweep_front(records, table.objectives)
    return hypervolume([records[i] for i in front], table.objectives, table.reference)


@dataclass(frozen=True)
class Bar:
    """What the embedded default's sweep must find: a point with harm at most `harm` at accuracy at least
    `accuracy`, and at least `points` distinct front points (the front never holds a collapsed trial)."""

    harm: float = 10.0
    accuracy: float = 50.0
    points: int = 3

    @classmethod
    def parse(cls, text: str) -> Bar:
        harm, accuracy, points = text.split(",")
        return cls(float(harm), float(accuracy), int(points))


def meets_bar(points: list[GridPoint], table: GridTable, bar: Bar) -> bool:
    """Return whether the sweep front of `points` meets `bar` (objectives harmful_score and reasoning_accuracy)."""
    from sweeps.report import sweep_front

    records = [{**{name: p.value(name) for name in table.objectives}, "collapsed": p.collapsed} for p in points]
    front = [records[i] for i in sweep_front(records, table.objectives)]
    distinct = {(r["harmful_score"], r["reasoning_accuracy"]) for r in front}
    return len(distinct) >= bar.points and any(
        r["harmful_score"] <= bar.harm and r["reasoning_accuracy"] >= bar.accuracy for r in front)


def replay_spec(spec_path: str | None, overrides: list[str], sampler: str, seed: int, trials: int, concurrency: int):
    """Return the sweep spec a replay runs: the table's spec, with this sampler, seed, budget and concurrency."""
    from sweeps.loader import load_spec

    # The study lives in memory unless the overrides name a storage (a test reads the study back).
    return load_spec(spec_path, ["optuna.storage=null", *overrides, f"sampler={sampler}", f"seed={seed}",
                                 f"num_samples={trials}", f"max_concurrent_trials={concurrency}"])


def replay_once(table: GridTable, spec, snapper: Snapper, total_volume: float, bar: Bar = Bar()) -> Replay:
    """Run one replay of `spec`'s searcher against `table`; return its curve."""
    from sweeps.search_space import build_searcher, tune_param_space

    started = time.perf_counter()
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, tune_param_space(spec.search_space))
    replay = Replay()
    running: list[tuple[float, int, str, GridPoint, bool]] = []  # (finish time, order, trial id, point, repeat)
    finished_proposals: set[tuple] = set()
    proposals: dict[str, tuple] = {}
    seen: list[GridPoint] = []
    clock, asked, spent = 0.0, 0, 0.0
    while len(seen) < spec.num_samples:
        while len(running) < spec.max_concurrent_trials and asked < spec.num_samples:
            trial_id = f"replay_{asked}"
            config = searcher.suggest(trial_id)
            if config is None:  # a grid sampler that has run out
                break
            proposed = _flat(config)
            proposal = tuple(sorted((k, repr(v)) for k, v in proposed.items()))
            repeat = proposal in finished_proposals
            point = snapper.nearest(proposed)
            duration = 0.0 if repeat else float(point.cost["seconds"].get("trial", 1.0))
            heapq.heappush(running, (clock + duration, asked, trial_id, point, repeat))
            proposals[trial_id] = proposal
            asked += 1
        if not running:
            break
        clock, _, trial_id, point, repeat = heapq.heappop(running)
        searcher.on_trial_complete(trial_id, result=point.metrics())
        finished_proposals.add(proposals[trial_id])
        replay.repeats += repeat
        spent += 0.0 if repeat else point.compute
        seen.append(point)
        replay.fractions.append(front_volume(seen, table) / total_volume if total_volume > 0 else 1.0)
        replay.compute.append(spent)
    replay.met_bar = meets_bar(seen, table, bar)
    replay.seconds = time.perf_counter() - started
    return replay


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return OptunaSearch's suggestion as {dotted path: value} (it unflattens on '/', never on '.')."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _quantile(ordered: list[float], q: float) -> float:
    """Return the q-quantile of sorted values, interpolated between neighbours; inf when a neighbour is inf."""
    position = q * (len(ordered) - 1)
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    if math.isinf(low) or math.isinf(high):
        return math.inf
    return low + (high - low) * (position - math.floor(position))


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return _quantile(ordered, 0.25), _quantile(ordered, 0.5), _quantile(ordered, 0.75)


def _show(value: float, budget: int | None, digits: int = 0) -> str:
    """Return a count or a compute for a table cell; one never reached reads ">BUDGET" (trials) or "never"."""
    if math.isinf(value):
        return f">{budget}" if budget is not None else "never"
    return f"{value:.{digits}f}"


def summarize(name: str, replays: list[Replay], trials: int) -> list[str]:
    """Return the table cells for one sampler: fractions at the checkpoints, then trials and compute to targets."""
    cells = [name]
    for k in CHECKPOINTS:
        if k > trials:
            cells.append("")
            continue
        q1, q2, q3 = _quartiles([100 * r.fraction_at(k) for r in replays])
        cells.append(f"{q2:.1f} [{q1:.1f}–{q3:.1f}]")
    for target in TARGETS:
        q1, q2, q3 = _quartiles([r.trials_to(target) for r in replays])
        cells.append(f"{_show(q2, trials)} [{_show(q1, trials)}–{_show(q3, trials)}]")
    for target in TARGETS:
        cells.append(_show(_quartiles([r.compute_to(target) for r in replays])[1], None))
    cells.append(f"{statistics.mean(r.repeats for r in replays):.1f}")
    cells.append(f"{sum(r.met_bar for r in replays)} of {len(replays)}")
    cells.append(f"{statistics.mean(r.seconds for r in replays):.1f}")
    return cells


HEADER = (["sampler", *(f"HV% at {k}" for k in CHECKPOINTS), *(f"trials to {t:.0%}" for t in TARGETS),
           *(f"compute to {t:.0%}" for t in TARGETS), "exact repeats", "meet the bar", "replay s"])


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="Recorded tables (bench/results/grid_*.json).")
    parser.add_argument("--samplers", default="auto,gp,tpe,nsga2,random",
                        help="Comma-separated sampler names, as `sampler=` takes them (default: %(default)s).")
    parser.add_argument("--trials", type=int, default=32, help="Trials per replay: the sweep's num_samples "
                                                               "(default %(default)s).")
    parser.add_argument("--replays", type=int, default=30, help="Replays per sampler, with sampler seeds 0 to "
                                                                "N-1 (default %(default)s).")
    parser.add_argument("--concurrency", type=int, default=1, help="Trials running at once: max_concurrent_trials "
                                                                   "(default %(default)s).")
    parser.add_argument("--spec", default=None, help="Sweep file whose searcher is replayed (default: the one the "
                                                     "table records).")
    parser.add_argument("--set", action="append", default=[], metavar="key=value", dest="overrides",
                        help="Override of the spec for every replay, e.g. --set population_size=4.")
    parser.add_argument("--bar", default="10,50,3", metavar="HARM,ACCURACY,POINTS",
                        help="The bar a replay's final front must meet: a point with harm at most HARM at accuracy "
                             "at least ACCURACY, and at least POINTS distinct front points (default %(default)s, "
                             "the embedded default's).")
    args = parser.parse_args(argv)
    try:
        bar = Bar.parse(args.bar)
    except ValueError:
        parser.error(f"--bar takes HARM,ACCURACY,POINTS such as 10,50,3; got {args.bar!r}")
    if args.trials < 1 or args.replays < 1 or args.concurrency < 1:
        parser.error("--trials, --replays and --concurrency must be at least 1")

    from trainables.schema import ConfigError

    for path in args.tables:
        try:
            table = GridTable.load(path)
            snapper = Snapper(table)
        except (FileNotFoundError, ValueError) as err:
            print(f"replay: error: {err}", file=sys.stderr)
            return 2
        spec_path = args.spec or str(Path(__file__).resolve().parent.parent / table.about["spec"])
        total = table_front_volume(table)
        print(f"\n{path}: {len(table.points)} points, front hypervolume {total:.1f}; {args.replays} replays of "
              f"{args.trials} trials, {args.concurrency} at once", flush=True)
        rows = []
        for name in args.samplers.split(","):
            try:
                # The space the table recorded, whatever the spec file holds today.
                recorded = [*table.about.get("overrides", []), "search_space=" + json.dumps(table.space)]
                specs = [replay_spec(spec_path, [*recorded, *args.overrides], name, seed, args.trials,
                                     args.concurrency) for seed in range(args.replays)]
            except ConfigError as err:
                print(f"  {name}: not replayed: {err}", flush=True)
                continue
            replays = [replay_once(table, spec, snapper, total, bar) for spec in specs]
            label = name if name != "auto" else f"auto ({specs[0].sampler_choice().describe()})"
            rows.append(summarize(label, replays, args.trials))
            print("  " + " | ".join(rows[-1]), flush=True)
        print(markdown(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
