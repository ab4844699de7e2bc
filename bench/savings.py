"""Price the compute savings on recorded per-epoch tables: how much compute each way of running trials needs to
find the front, on the tiny tables (recorded seconds) and projected to paper scale (GPU-hours).

    python -m bench.savings bench/results/grid_tiny_epochs_seed0.json bench/results/grid_tiny_epochs_seed1.json
    python -m bench.savings TABLE --samplers auto,random --trials 8 --replays 30 --gpu-s-per-step 16

The tables come from `python -m bench.record_grid --epochs-as-fidelity`: one run per grid point, read at every
epoch, so the k-epoch point is exactly the k-epoch run and each epoch's stage says what it cost. Each replay
runs the sweep's own searcher (as `bench.replay`) and prices the trials it proposes in one of these ways:

- separate: train.epochs is searched (1 to the table's top); a trial trains k epochs, then evaluates once;
- fidelity: `evaluate_epochs: fidelity`; a trial trains to the top, evaluating every epoch, each a point;
- fidelity+stop: as fidelity, with `early_stopping` (sweeps.early_stopping's rule, against the points
  read so far in the replay's clock);
- fidelity+race, ...+race: evaluation in `--slices` slices; after each but the last, the evaluation stops when the reading
  so far (its honest n and 95% interval) is ruled out by a point read before (the same rule). A raced
  reading keeps its partial n; the front is built from what the sweep would have recorded.

Compute is counted per stage: training (the epoch's recorded seconds, or its steps x --gpu-s-per-step) and
evaluation (its recorded generation and judging seconds, or its items x --gpu-s-per-item, in proportion to
the items scored). The projection keeps each point's rates but redraws its items at paper-scale n
(--paper-n, default 1,000 BeaverTails prompts and 728 reasoning items), seeded per replay, and decides with
the intervals of that n. The hypervolume is always that of the recorded readings of the points the sweep
keeps, as a fraction of the whole table's front.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.grid_table import GridPoint, GridTable
from bench.replay import _flat, _quartiles, front_volume, replay_spec, snap

EPOCHS = "train.epochs"
MODES = ("separate", "separate+race", "fidelity", "fidelity+race", "fidelity+stop", "fidelity+stop+race")
TARGETS = (0.90, 0.95)
SAFETY, REASONING = "harmful_score", "reasoning_accuracy"


@dataclass(frozen=True)
class Pricing:
    """How a stage is priced: recorded seconds (`per_step` None), or GPU-seconds per training step and per item."""

    per_step: float | None = None
    per_item: float | None = None
    paper_n: dict[str, int] = field(default_factory=dict)  # objective -> items per evaluation at paper scale

    @property
    def unit(self) -> str:
        return "s" if self.per_step is None else "GPU-h"

    def train(self, point: GridPoint) -> float:
        stage = point.stage
        return stage["seconds"]["train"] if self.per_step is None else stage["train_steps"] * self.per_step

    def evaluation(self, point: GridPoint) -> float:
        if self.per_step is None:
            return point.stage["seconds"]["generation"] + point.stage["seconds"]["judging"]
        return sum(self.paper_n.values()) * self.per_item

    def show(self, value: float) -> float:
        return value if self.per_step is None else value / 3600.0


class EpochTable:
    """A per-epoch table indexed by run (the point without train.epochs) and epoch."""

    def __init__(self, table: GridTable):
        if EPOCHS not in table.grid or not all(p.stage for p in table.points):
            raise ValueError("the table has no per-epoch stages; record it with python -m bench.record_grid "
                             "--epochs-as-fidelity")
        self.table = table
        self.others = [path for path in table.grid if path != EPOCHS]
        self.top = max(table.grid[EPOCHS])
        self.runs: dict[tuple, dict[int, GridPoint]] = {}
        for p in table.points:
            self.runs.setdefault(self.key(p.point), {})[p.point[EPOCHS]] = p
        missing = [key for key, epochs in self.runs.items() if sorted(epochs) != list(range(1, self.top + 1))]
        if missing:
            raise ValueError(f"{len(missing)} runs lack an epoch; record the table again")

    def key(self, point: dict[str, Any]) -> tuple:
        return tuple(point[path] for path in self.others)

    def nearest(self, proposed: dict[str, Any]) -> tuple:
        """Return the run nearest a proposed point, snapped as bench.replay snaps."""
        return tuple(snap(self.table, path, proposed[path]) for path in self.others)


def _letters(point: GridPoint, kinds: dict[str, str], kind: str, slices_read: int,
             slices: int) -> list[tuple[str, str]]:
    """Return [(verdict, incoherent flag)] of the items of the benchmarks of `kind` (kinds: benchmark -> kind) that a
    raced evaluation reads in its first `slices_read` of `slices` slices (evaluators.racing.slice_order)."""
    from evaluators.racing import slice_order

    out = []
    for benchmark, benchmark_kind in kinds.items():
        if benchmark_kind == kind:
            letters = point.items[benchmark]
            parts = slice_order(benchmark, len(letters["verdicts"]), slices)[:slices_read]
            out += [(letters["verdicts"][i], letters["incoherent"][i]) for part in parts for i in part]
    return out


def partial_reading(point: GridPoint, kinds: dict[str, str], slices_read: int, slices: int) -> dict[str, float]:
    """Return the objectives of `point` scored on the items of its first `slices_read` slices, with intervals and n,
    as the evaluator scores them (harmful: flagged and coherent; accuracy: correct)."""
    from evaluators.metrics import counted_rate

    out: dict[str, float] = {}
    for name, kind, hit in ((SAFETY, "safety", lambda v, i: v == "H" and i == "0"),
                            (REASONING, "reasoning", lambda v, i: v == "C")):
        items = _letters(point, kinds, kind, slices_read, slices)
        out.update(counted_rate(sum(hit(v, i) for v, i in items), len(items), name))
        out[f"{name}_n"] = len(items)
    out["collapsed"] = float(point.collapsed)
    return out


def drawn_reading(point: GridPoint, fraction: float, paper_n: dict[str, int], seed: int) -> dict[str, float]:
    """Return a paper-scale reading of `point`: its recorded rates, its items redrawn at `paper_n` (seeded),
    scored on the first `fraction` of them."""
    from evaluators.metrics import counted_rate

    out: dict[str, float] = {"collapsed": float(point.collapsed)}
    for name, n_full in paper_n.items():
        rng = random.Random(f"{seed}/{point.trial_id}/{name}")
        rate = point.value(name) / 100.0
        n = max(1, round(fraction * n_full))
        hits = sum(rng.random() < rate for _ in range(n))  # the first n of the n_full items, the same draw
        out.update(counted_rate(hits, n, name))
        out[f"{name}_n"] = n
    return out


@dataclass
class Outcome:
    """One replay: after each event, the compute spent and the hypervolume fraction of the kept points."""

    spent: list[float] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)
    stopped: int = 0
    raced: int = 0

    def compute_to(self, target: float) -> float:
        return next((s for s, f in zip(self.spent, self.fractions) if f >= target - 1e-12), math.inf)

    def trials_to(self, target: float) -> float:
        return next((t for t, f in zip(self.trials, self.fractions) if f >= target - 1e-12), math.inf)


def replay(epochs: EpochTable, spec, mode: str, pricing: Pricing, total_volume: float, seed: int,
           slices: int = 4) -> Outcome:
    """Replay one sweep of `spec` in `mode` against the table; return its compute curve."""
    from sweeps.early_stopping import stop_reason
    from sweeps.search_space import build_searcher, tune_param_space

    fidelity, stopping, racing = mode.startswith("fidelity"), "+stop" in mode, mode.endswith("+race")
    stop_collapsed = stopping and spec.early_stopping.stop_collapsed
    directions = epochs.table.objectives
    projected = pricing.per_step is not None

    def reading(point: GridPoint, slices_read: int = slices) -> dict[str, float]:
        if projected:
            return drawn_reading(point, slices_read / slices, pricing.paper_n, seed)
        if slices_read == slices:
            return point.metrics()
        return partial_reading(point, epochs.table.benchmarks, slices_read, slices)

    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, tune_param_space(spec.search_space))
    outcome = Outcome()
    known: list[dict[str, Any]] = []  # what the rules compare against: readings the sweep has recorded
    kept: list[GridPoint] = []  # points the sweep records in full (their recorded readings make the hypervolume)
    running: list[tuple[float, int, str]] = []
    state: dict[str, dict[str, Any]] = {}
    clock, asked, finished, spent = 0.0, 0, 0, 0.0

    def evaluate(point: GridPoint) -> tuple[dict[str, float], float, bool]:
        """Return (the recorded reading, the fraction of items scored, whether racing stopped it)."""
        if racing:
            for s in range(1, slices):
                partial = reading(point, s)
                if stop_reason(partial, known, directions, stop_collapsed=False):
                    return partial, s / slices, True
        return reading(point), 1.0, False

    def schedule(trial_id: str) -> None:
        t = state[trial_id]
        point = epochs.runs[t["run"]][t["epoch"]]
        if fidelity or t["epoch"] == t["last"]:
            result, fraction, raced = evaluate(point)
        else:
            result, fraction, raced = None, 0.0, False
        cost = pricing.train(point) + fraction * pricing.evaluation(point)
        t.update(result=result, raced=raced, cost=cost, point=point)
        heapq.heappush(running, (clock + cost, t["order"], trial_id))

    while finished < spec.num_samples:
        while len(running) < spec.max_concurrent_trials and asked < spec.num_samples:
            trial_id = f"replay_{asked}"
            config = searcher.suggest(trial_id)
            if config is None:
                break
            proposed = _flat(config)
            run = epochs.nearest(proposed)
            last = epochs.top if fidelity else min(max(1, int(proposed[EPOCHS])), epochs.top)
            # Separate runs train from scratch to their epoch: each earlier epoch's stage is paid, unread.
            state[trial_id] = {"run": run, "epoch": 1, "last": last, "order": asked}
            asked += 1
            schedule(trial_id)
        if not running:
            break
        clock, _, trial_id = heapq.heappop(running)
        t = state[trial_id]
        spent += t["cost"]
        done = t["epoch"] == t["last"]
        if t["result"] is not None:
            result = t["result"]
            reason = None
            if stopping and not done and t["epoch"] >= spec.early_stopping.grace_epochs:
                reason = stop_reason(result, known, directions, stop_collapsed)
            counts_as_point = fidelity or done
            if counts_as_point and not result.get("collapsed"):
                known.append({"trial_id": f"{trial_id}@e{t['epoch']}", **{n: result[n] for n in directions}})
            if counts_as_point and not t["raced"]:
                kept.append(t["point"])
            outcome.raced += t["raced"]
            if reason is not None:
                outcome.stopped += 1
                done = True
            t["last_result"] = result
        if done:
            searcher.on_trial_complete(trial_id, result=t["last_result"])
            finished += 1
        else:
            t["epoch"] += 1
            schedule(trial_id)
        outcome.spent.append(pricing.show(spent))
        outcome.fractions.append(front_volume(kept, epochs.table) / total_volume if total_volume else 1.0)
        outcome.trials.append(finished)
    return outcome


def sampler_spec(table: GridTable, epochs: EpochTable, mode: str, sampler: str, seed: int, trials: int,
                 concurrency: int, overrides: list[str]):
    """Return the spec a replay of `mode` runs: the table's space, train.epochs searched only for separate runs."""
    spec_path = str(Path(__file__).resolve().parent.parent / table.about["spec"])
    space = {path: entry for path, entry in table.space.items() if path != EPOCHS}
    extra = [f"base.train.epochs={epochs.top}", "base.train.scheduler=constant"]
    if mode.startswith("fidelity"):
        extra += ["evaluate_epochs=fidelity"]
    else:
        space[EPOCHS] = {"int": [1, epochs.top]}
    if "+stop" in mode:
        extra += ["early_stopping=true"]
    recorded = [*table.about.get("overrides", []), "initial_points=[]", "search_space=" + json.dumps(space)]
    return replay_spec(spec_path, [*recorded, *extra, *overrides], sampler, seed, trials, concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.savings", description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="Per-epoch tables (record_grid --epochs-as-fidelity).")
    parser.add_argument("--samplers", default="auto,random", help="Samplers, as `sampler=` takes them "
                                                                  "(default: %(default)s).")
    parser.add_argument("--modes", default=",".join(MODES), help=f"Ways of running trials, among {', '.join(MODES)} "
                                                                 "(default: all).")
    parser.add_argument("--trials", type=int, default=32, help="Trials per replay (default %(default)s).")
    parser.add_argument("--replays", type=int, default=20, help="Replays per sampler and mode (default %(default)s).")
    parser.add_argument("--concurrency", type=int, default=2, help="Trials at once (default %(default)s).")
    parser.add_argument("--slices", type=int, default=4, help="Evaluation slices when racing (default %(default)s).")
    parser.add_argument("--gpu-s-per-step", type=float, default=16.0,
                        help="Projection: GPU-seconds of one training step (default %(default)s).")
    parser.add_argument("--gpu-s-per-item", type=float, default=5.0,
                        help="Projection: GPU-seconds of generating and judging one item (default %(default)s).")
    parser.add_argument("--paper-n", default="harmful_score=1000,reasoning_accuracy=728", metavar="NAME=N,...",
                        help="Projection: items per objective at paper scale (default %(default)s).")
    parser.add_argument("--no-projection", action="store_true", help="Only the recorded seconds.")
    parser.add_argument("--set", action="append", default=[], metavar="key=value", dest="overrides",
                        help="Override of the spec for every replay.")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose among {', '.join(MODES)}")
    try:
        paper_n = {name: int(n) for name, n in (item.split("=") for item in args.paper_n.split(","))}
    except ValueError:
        parser.error(f"--paper-n takes NAME=N,... such as harmful_score=1000,reasoning_accuracy=728; got {args.paper_n!r}")
    if min(args.trials, args.replays, args.concurrency) < 1 or args.slices < 2:
        parser.error("--trials, --replays and --concurrency must be at least 1, --slices at least 2")
    pricings = [Pricing()] + ([] if args.no_projection else
                              [Pricing(args.gpu_s_per_step, args.gpu_s_per_item, paper_n)])
    for path in args.tables:
        try:
            table = GridTable.load(path)
            epochs = EpochTable(table)
        except (FileNotFoundError, ValueError) as err:
            print(f"savings: error: {err}", file=sys.stderr)
            return 2
        total = front_volume(table.points, table)
        print(f"\n{path}: {len(epochs.runs)} runs x {epochs.top} epochs, front hypervolume {total:.1f}; "
              f"{args.replays} replays of {args.trials} trials, {args.concurrency} at once", flush=True)
        for pricing in pricings:
            if pricing.per_step is not None:
                print(f"projection: {pricing.per_step:g} GPU-s a training step (recorded steps), "
                      f"{pricing.per_item:g} GPU-s an item, {', '.join(f'{k} n={v}' for k, v in paper_n.items())} "
                      "items an evaluation, redrawn from each point's recorded rates", flush=True)
            rows = []
            for sampler in args.samplers.split(","):
                for mode in modes:
                    specs = [sampler_spec(table, epochs, mode, sampler, seed, args.trials, args.concurrency,
                                          args.overrides) for seed in range(args.replays)]
                    outcomes = [replay(epochs, spec, mode, pricing, total, seed, args.slices)
                                for seed, spec in enumerate(specs)]
                    cells = []
                    for target in TARGETS:
                        q1, q2, q3 = _quartiles([o.compute_to(target) for o in outcomes])
                        cells.append(_cell(q2, q1, q3))
                    trials = _quartiles([o.trials_to(TARGETS[-1]) for o in outcomes])[1]
                    reached = sum(math.isfinite(o.compute_to(TARGETS[-1])) for o in outcomes)
                    final = statistics.median(100 * o.fractions[-1] for o in outcomes)
                    spent = statistics.median(o.spent[-1] for o in outcomes)
                    rows.append([sampler, mode, *cells, _number(trials), f"{reached} of {len(outcomes)}",
                                 f"{final:.1f}", _cell(spent, spent, spent).split(" ")[0],
                                 f"{statistics.mean(o.stopped for o in outcomes):.1f}",
                                 f"{statistics.mean(o.raced for o in outcomes):.1f}"])
                    print("  " + " | ".join(rows[-1]), flush=True)
            header = ["sampler", "mode", *(f"compute to {t:.0%} ({pricing.unit}), median [quartiles]" for t in TARGETS),
                      "trials to 95%", "replays reaching 95%", f"HV% after {args.trials} trials",
                      f"compute of {args.trials} trials ({pricing.unit})", "trials stopped", "evaluations raced"]
            print("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                             *("| " + " | ".join(r) + " |" for r in rows)]), flush=True)
    return 0


def _number(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.0f}"


def _cell(median: float, low: float, high: float) -> str:
    if math.isinf(median):
        return "never"
    digits = 0 if median >= 100 else 1
    return f"{median:.{digits}f} [{low:.{digits}f}–{_number(high) if math.isinf(high) else f'{high:.{digits}f}'}]"


if __name__ == "__main__":
    sys.exit(main())
